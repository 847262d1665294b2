"""Loss-curve collapse of a model family, with early-stopping predictions.

    python -m train.collapse RUN_DIR [RUN_DIR ...] [--config configs/train/collapse.yaml] [key=value ...]

Each RUN_DIR holds metrics.jsonl and config.json as `make pretrain` (or a sweep trial)
writes them. Every run's training loss is normalized as (L(t) - L0) / (L(T) - L0) and
plotted against t/T; the family's collapsed curve is the median of the normalized curves
and each run's deviation is measured against the median of the OTHER runs (so one bad run
cannot hide in its own reference). For each run the tokens-per-parameter and the AdamW
timescale tau = 1 / (lr * weight_decay * T) are printed: a family collapses only when
both are shared. Leave-one-out early-stopping predictions of every finished run's final
loss from its first part are reported next to the actual final loss.

Writes <output>/collapse.json (its "reference" entry is the curve train.early_stop and
the sweep read) and <output>/collapse.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np

from common.config import ConfigError, load_config, to_dict
from train.early_stop import ReferenceCurve, StopRule, predict_final

DEFAULT_CONFIG = "configs/train/collapse.yaml"


@dataclass
class EarlyStopSection:
    fraction: float  # predict from this first fraction of training
    fit_from: float  # skip the warm-up part before this fraction
    margin: float  # loss units; used by sweeps


@dataclass
class CollapseConfig:
    l0: Optional[float]  # irreducible loss; null = per l0_mode
    l0_mode: Literal["fit", "zero"]  # fit: L(T) = L0 + A * N^-alpha over the family (>= 3 sizes)
    parameters: Literal["non_embedding", "total"]  # what N counts, for tokens-per-parameter and the fit
    smooth_fraction: float  # centred moving average of the loss over this fraction of T
    final_fraction: float  # L(T) = linear fit over the last fraction of T, evaluated at T
    grid_points: int  # fractions t/T the family curve is tabulated at
    skip_fraction: float  # deviations are reported for t/T >= this (warm-up excluded)
    early_stop: EarlyStopSection
    output: Optional[str]  # null = <parent of the first run>/collapse


# --- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    steps: np.ndarray  # optimizer steps of the loss records (1-based)
    losses: np.ndarray
    total_steps: int  # T: the step the schedule ends at
    lr: float  # peak (base) learning rate
    weight_decay: float
    total_tokens: int
    params: int

    @property
    def finished(self) -> bool:
        return len(self.steps) > 0 and int(self.steps[-1]) >= self.total_steps

    @property
    def fractions(self) -> np.ndarray:
        return self.steps / self.total_steps

    @property
    def tau(self) -> float:
        return adamw_tau(self.lr, self.weight_decay, self.total_steps)

    @property
    def tokens_per_parameter(self) -> float:
        return self.total_tokens / self.params


def adamw_tau(lr: float, weight_decay: float, steps: int) -> float:
    """AdamW's EMA timescale as a fraction of training: 1 / (lr * weight_decay * T)."""
    rate = lr * weight_decay * steps
    return math.inf if rate <= 0 else 1.0 / rate


def count_parameters(model_section: dict[str, Any], which: str) -> int:
    """Parameters of the run's model, built without initialization.

    Large models are built on the meta device (no memory); small ones on the CPU, where
    building is quicker than the meta device's one-time start-up.
    """
    import torch

    from model import BTLMConfig, BTLMLMHeadModel

    config = BTLMConfig.from_yaml(model_section["config"], model_section.get("overrides") or None)
    rough = config.vocab_size * config.n_embd + 12 * config.n_layer * config.n_embd**2
    with torch.device("meta" if rough > 50_000_000 else "cpu"):
        model = BTLMLMHeadModel(config, init=False)
    return model.num_parameters(exclude_embeddings=which == "non_embedding")


def load_run(run_dir: str | Path, parameters: str) -> Run:
    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / "config.json", run_dir / "metrics.jsonl"
    for path in (config_path, metrics_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a training run folder")
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
        planned = max(round(cfg["total_tokens"] / cfg["tokens_per_batch"]), 1)
        total_steps = min(planned, cfg["max_steps"]) if cfg.get("max_steps") else planned
        lr, weight_decay, model = float(cfg["lr"]), float(cfg["weight_decay"]), cfg["model"]
        total_tokens = total_steps * int(cfg["tokens_per_batch"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{config_path}: not a training config ({exc!r})") from None
    steps, losses = [], []
    for line_no, line in enumerate(metrics_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{metrics_path}:{line_no}: not JSON ({exc})") from None
        if record.get("kind") == "train" and isinstance(record.get("loss"), (int, float)):
            steps.append(int(record["step"]))
            losses.append(float(record["loss"]))
    if not steps:
        raise ValueError(f"{metrics_path} has no training loss records")
    if isinstance(cfg.get("params"), dict):  # sweep trials record their parameter counts
        params = int(cfg["params"][parameters])
    else:
        params = count_parameters(model, parameters)
    return Run(run_dir.name, np.asarray(steps, dtype=np.float64), np.asarray(losses), total_steps,
               lr, weight_decay, total_tokens, params)


# --- curve math -----------------------------------------------------------------------------------


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


def analyse(runs: list[Run], config: CollapseConfig) -> dict[str, Any]:
    """Normalization, family curve, deviations and leave-one-out predictions of a family."""
    if not runs:
        raise ValueError("no runs given")
    finished = [r for r in runs if r.finished]
    if not finished:
        raise ValueError("no run has finished (reached the last step of its schedule); nothing to normalize by")
    finals = {r.name: final_loss(r.steps, r.losses, r.total_steps, config.final_fraction) for r in finished}
    if config.l0 is not None:
        l0, l0_source = float(config.l0), "given"
    elif config.l0_mode == "fit":
        try:
            l0, l0_source = fit_l0([finals[r.name] for r in finished], [r.params for r in finished]), "fit"
        except ValueError as exc:
            print(f"collapse: {exc}; using L0 = 0", file=sys.stderr)
            l0, l0_source = 0.0, "zero (fit needs >= 3 finished sizes)"
    else:
        l0, l0_source = 0.0, "zero"
    grid = fraction_grid(config.grid_points)
    table = {r.name: normalized_on_grid(r, l0, finals[r.name], config.smooth_fraction, grid) for r in finished}
    reference = family_reference(list(table.values()), grid, l0)
    report_mask = grid >= config.skip_fraction
    rule = StopRule(config.early_stop.fraction, config.early_stop.margin, config.early_stop.fit_from)
    per_run = []
    for r in runs:
        row: dict[str, Any] = {
            "name": r.name, "finished": r.finished, "steps_done": int(r.steps[-1]), "total_steps": r.total_steps,
            "params": r.params, "total_tokens": r.total_tokens, "tokens_per_parameter": r.tokens_per_parameter,
            "lr": r.lr, "weight_decay": r.weight_decay, "tau": r.tau,
        }
        others = [table[o.name] for o in finished if o.name != r.name]
        loo = family_reference(others, grid, l0) if others else None
        if r.finished:
            row["final_loss"] = finals[r.name]
            if loo is not None:
                dev = table[r.name] - loo(grid)
                dev = np.where(report_mask, dev, np.nan)
                row["deviation"] = {
                    "rms": float(np.sqrt(np.nanmean(dev**2))),
                    "max_abs": float(np.nanmax(np.abs(dev))),
                    "at": {f"{f:g}": float(np.interp(f, grid, table[r.name] - loo(grid)))
                           for f in (0.1, 0.25, 0.5, 0.75)},
                    "curve": [None if not np.isfinite(v) else float(v) for v in dev],
                }
        if loo is not None or not r.finished:
            ref = loo if loo is not None else reference
            try:
                p = predict_final(r.fractions, r.losses, ref, rule.fit_from, rule.fraction)
                row["prediction"] = {"from_fraction": rule.fraction, "predicted_final": p.final_loss,
                                     "points": p.points, "stderr": p.stderr, "residual_rms": p.residual_rms}
                if r.finished:
                    err = p.final_loss - finals[r.name]
                    row["prediction"].update(actual_final=finals[r.name], error=err,
                                             relative_error=err / finals[r.name])
            except ValueError as exc:
                row["prediction"] = {"error_message": str(exc)}
        per_run.append(row)
    errors = [abs(row["prediction"]["error"]) for row in per_run if "error" in row.get("prediction", {})]
    spread = lambda key: _spread([row[key] for row in per_run])  # noqa: E731
    return {
        "config": to_dict(config), "l0": l0, "l0_source": l0_source, "grid": grid.tolist(),
        "reference": reference.to_dict(), "runs": per_run,
        "normalized": {name: [None if not np.isfinite(v) else float(v) for v in curve]
                       for name, curve in table.items()},
        "summary": {
            "runs": len(runs), "finished": len(finished),
            "tokens_per_parameter_spread": spread("tokens_per_parameter"), "tau_spread": spread("tau"),
            "max_rms_deviation": max((row["deviation"]["rms"] for row in per_run if "deviation" in row), default=None),
            "mean_abs_prediction_error": float(np.mean(errors)) if errors else None,
            "max_abs_prediction_error": float(np.max(errors)) if errors else None,
        },
    }


def _spread(values: list[float]) -> float | None:
    """max / min - 1 (0 = identical across the family)."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    return max(finite) / min(finite) - 1.0 if finite else None


# --- output --------------------------------------------------------------------------------------------


def plot(runs: list[Run], report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.asarray(report["grid"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = plt.cm.plasma(np.linspace(0, 0.85, max(len(runs), 1)))
    rows = {row["name"]: row for row in report["runs"]}
    for run, color in zip(runs, colors):
        row = rows[run.name]
        label = f"{run.name} (N={run.params / 1e6:.2f}M, TPP {run.tokens_per_parameter:.1f}, tau {run.tau:.2f})"
        window = max(int(round(report["config"]["smooth_fraction"] * run.total_steps)), 1)
        axes[0].plot(run.fractions, run.losses, color=color, lw=0.6, alpha=0.25)
        axes[0].plot(run.fractions, smooth(run.losses, window), color=color, lw=1.4, label=label)
        pred = row.get("prediction", {})
        if "predicted_final" in pred:
            axes[0].plot([1.0], [pred["predicted_final"]], marker="x", ms=8, color=color)
        curve = report["normalized"].get(run.name)
        if curve is not None:
            axes[1].plot(grid, np.asarray(curve, dtype=float), color=color, lw=1.2, label=run.name)
        if "deviation" in row:
            axes[2].plot(grid, np.asarray(row["deviation"]["curve"], dtype=float), color=color, lw=1.2, label=run.name)
    ref = report["reference"]
    axes[1].plot(ref["fractions"], ref["values"], color="black", ls="--", lw=1, label="family median")
    axes[0].axvline(report["config"]["early_stop"]["fraction"], color="gray", ls=":", lw=1)
    axes[0].set(xlabel="t / T", ylabel="training loss", title="training loss, raw and smoothed (x = prediction of L(T))")
    axes[1].set(xlabel="t / T", ylabel="(L(t) - L0) / (L(T) - L0)",
                title=f"collapsed (L0 = {report['l0']:.3f}, {report['l0_source']})")
    highest = max(float(np.nanmax(np.asarray(c, dtype=float))) for c in report["normalized"].values())
    axes[1].set_ylim(0.9, min(highest, 3.0))
    axes[2].axhline(0, color="black", lw=0.8)
    axes[2].set(xlabel="t / T", ylabel="normalized loss - median of the other runs", title="deviation from the family")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_report(report: dict[str, Any]) -> None:
    print(f"L0 = {report['l0']:.4f} ({report['l0_source']}); deviations for t/T >= {report['config']['skip_fraction']}")
    head = f"{'run':24s} {'params':>10s} {'tokens':>10s} {'TPP':>7s} {'lr':>8s} {'wd':>6s} {'T':>6s} {'tau':>7s} " \
           f"{'L(T)':>7s} {'rms dev':>8s} {'max dev':>8s} {'pred':>7s} {'err':>7s}"
    print(head)
    for row in report["runs"]:
        dev = row.get("deviation", {})
        pred = row.get("prediction", {})
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        print(f"{row['name'][:24]:24s} {row['params']:>10,d} {row['total_tokens']:>10,d} "
              f"{row['tokens_per_parameter']:7.2f} {row['lr']:8.2e} {row['weight_decay']:6.3f} {row['total_steps']:6d} "
              f"{row['tau']:7.3f} {fmt(row.get('final_loss'), '7.3f')} {fmt(dev.get('rms'), '8.4f')} "
              f"{fmt(dev.get('max_abs'), '8.4f')} {fmt(pred.get('predicted_final'), '7.3f')} {fmt(pred.get('error'), '+7.3f')}")
    s = report["summary"]
    for key, what in (("tokens_per_parameter_spread", "tokens-per-parameter"), ("tau_spread", "tau")):
        if s[key] is not None and s[key] > 0.05:
            print(f"note: {what} differs by {100 * s[key]:.0f}% across the runs; curves collapse only when it is shared")
    if s["mean_abs_prediction_error"] is not None:
        print(f"early stopping at t/T = {report['config']['early_stop']['fraction']}: mean |predicted - actual| "
              f"final loss {s['mean_abs_prediction_error']:.4f}, max {s['max_abs_prediction_error']:.4f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train.collapse", description=__doc__.splitlines()[0],
                                     epilog="key=value items override the config, e.g. l0=1.5 early_stop.fraction=0.2")
    parser.add_argument("items", nargs="+", metavar="RUN_DIR|key=value")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default: {DEFAULT_CONFIG})")
    args = parser.parse_args(argv)
    run_dirs = [i for i in args.items if "=" not in i or Path(i).exists()]
    overrides = [i for i in args.items if i not in run_dirs]
    try:
        config = load_config(CollapseConfig, args.config, overrides)
        runs = [load_run(d, config.parameters) for d in run_dirs]
        report = analyse(runs, config)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"train.collapse: error: {exc}", file=sys.stderr)
        return 2
    out = Path(config.output) if config.output else Path(run_dirs[0]).resolve().parent / "collapse"
    out.mkdir(parents=True, exist_ok=True)
    report["run_dirs"] = run_dirs
    tmp = out / "collapse.json.tmp"
    tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
    tmp.replace(out / "collapse.json")
    png = plot(runs, report, out / "collapse.png")
    print_report(report)
    print(f"results: {out / 'collapse.json'}\nfigure:  {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
