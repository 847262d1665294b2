"""Curve math of a model family: smoothing, the final loss L(T), the L0 fit, the
normalized curve (L(t) - L0) / (L(T) - L0) on a grid of t/T, and the family's median.

The collapse report and the sweep's early stopping both build their reference here.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from train.scaling.early_stop import ReferenceCurve
from train.scaling.runs import Run


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Local straight-line fit over ``window`` consecutive points, evaluated at each point.

    Near the ends the window is shifted inwards rather than shrunk, so the last points
    are as well averaged as the middle ones; the line fit (instead of a plain mean)
    keeps a sloped curve unbiased there.
    """
    y = np.asarray(values, dtype=np.float64)
    n = len(y)
    width = min(max(window, 1), n)
    if width < 3:
        return y.copy()
    x = np.arange(n, dtype=np.float64)
    start = np.clip(np.arange(n) - width // 2, 0, n - width)
    stop = start + width

    def window_sum(v: np.ndarray) -> np.ndarray:
        c = np.concatenate([[0.0], np.cumsum(v)])
        return c[stop] - c[start]

    sx, sy, sxx, sxy = window_sum(x), window_sum(y), window_sum(x * x), window_sum(x * y)
    slope = (width * sxy - sx * sy) / (width * sxx - sx * sx)
    return (sy - slope * sx) / width + slope * x


def final_loss(steps: np.ndarray, losses: np.ndarray, total_steps: int, final_fraction: float) -> float:
    """L(T): a straight line through the last ``final_fraction`` of T, evaluated at T.

    Unbiased while the loss still falls at the end, unlike a trailing mean.
    """
    keep = steps >= total_steps * (1.0 - final_fraction)
    x, y = steps[keep], losses[keep]
    if len(x) < 3:
        x, y = steps[-3:], losses[-3:]
    if len(x) < 2 or np.ptp(x) == 0:
        return float(y[-1])
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope * total_steps + intercept)


def fit_l0(final_losses: Sequence[float], params: Sequence[int]) -> float:
    """L0 of L(N) = L0 + A * N^-alpha fitted to a family's final losses.

    For each candidate L0 below the smallest final loss, log(L - L0) against log N is a
    straight line; the candidate with the smallest residual wins (grid, then refined).
    """
    losses = np.asarray(final_losses, dtype=np.float64)
    n = np.log(np.asarray(params, dtype=np.float64))
    if len(losses) < 3 or len(np.unique(n)) < 3:
        raise ValueError("fitting L0 needs at least 3 runs of different sizes; give l0 or use l0_mode=zero")
    top = float(losses.min())

    def residual(l0: float) -> float:
        y = np.log(losses - l0)
        coef = np.polyfit(n, y, 1)
        if coef[0] >= 0:  # loss must fall with size
            return math.inf
        return float(np.sum((np.polyval(coef, n) - y) ** 2))

    lo, hi = 0.0, top * (1 - 1e-6)
    for _ in range(4):
        grid = np.linspace(lo, hi, 201)
        scores = np.array([residual(v) for v in grid])
        best = int(np.argmin(scores))
        if not math.isfinite(scores[best]):
            return 0.0
        step = grid[1] - grid[0]
        lo, hi = max(grid[best] - step, 0.0), min(grid[best] + step, top * (1 - 1e-6))
    return float(grid[best])


def normalized(run: Run, l0: float, final: float, smooth_window: int) -> np.ndarray:
    denom = final - l0
    if denom <= 0:
        raise ValueError(f"run {run.name}: final loss {final:.4f} is not above L0 = {l0:.4f}")
    return (smooth(run.losses, smooth_window) - l0) / denom


def tabulate(fractions: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Values on the grid; NaN where the run has no data."""
    out = np.interp(grid, fractions, values)
    out[(grid < fractions[0] - 1e-12) | (grid > fractions[-1] + 1e-12)] = np.nan
    return out


def fraction_grid(points: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, points + 1)[1:]


def normalized_on_grid(run: Run, l0: float, final: float, smooth_fraction: float, grid: np.ndarray) -> np.ndarray:
    window = max(int(round(smooth_fraction * run.total_steps)), 1)
    return tabulate(run.fractions, normalized(run, l0, final, window), grid)


def reference_from_runs(runs: list[Run], l0: float, smooth_fraction: float, final_fraction: float,
                        grid_points: int) -> ReferenceCurve:
    """The collapsed curve of finished runs (what a sweep predicts its trials with)."""
    grid = fraction_grid(grid_points)
    curves = [normalized_on_grid(r, l0, final_loss(r.steps, r.losses, r.total_steps, final_fraction),
                                 smooth_fraction, grid) for r in runs]
    return family_reference(curves, grid, l0)


def family_reference(curves: list[np.ndarray], grid: np.ndarray, l0: float) -> ReferenceCurve:
    """Median of tabulated normalized curves (robust to one bad run), where every curve has data."""
    stack = np.vstack(curves)
    covered = ~np.isnan(stack).any(axis=0)
    if covered.sum() < 2:
        raise ValueError("the runs' curves share fewer than 2 grid points")
    return ReferenceCurve(grid[covered], np.median(stack[:, covered], axis=0), l0)
