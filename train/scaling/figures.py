"""The PNG figures of the scaling experiments (coordinate check, sweep, collapse)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.atomic import atomic_path  # noqa: E402
from train.scaling.curves import smooth  # noqa: E402
from train.scaling.runs import Run  # noqa: E402


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_coord_check(means, widths, layer_types: Sequence[str], verdict_: dict[str, Any], path: Path) -> Path:
    """Mean |activation| against width, one panel per parameterization and layer type."""
    names = list(means)
    fig, axes = plt.subplots(len(names), len(layer_types), figsize=(3.2 * len(layer_types), 2.8 * len(names)),
                             squeeze=False, sharex=True)
    for r, name in enumerate(names):
        for c, kind in enumerate(layer_types):
            ax = axes[r][c]
            by_width = means[name][kind]
            steps = len(by_width[widths[0]])
            colors = plt.cm.viridis(np.linspace(0, 0.9, steps))
            for s in range(steps):
                ax.plot(widths, [by_width[w][s] for w in widths], marker="o", ms=3, lw=1, color=colors[s],
                        label=f"step {s}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            _at_least_decade_span(ax, [v for w in widths for v in by_width[w]])
            worst = max(verdict_["slopes"][name][kind])
            ax.set_title(f"{name}: {kind}\nmax slope {worst:+.2f}", fontsize=9)
            ax.grid(alpha=0.3, which="both")
            if r == len(names) - 1:
                ax.set_xlabel("width")
            if c == 0:
                ax.set_ylabel("mean |activation|")
    axes[0][0].legend(fontsize=7)
    status = "PASS" if verdict_["ok"] else "FAIL"
    fig.suptitle(f"coordinate check ({status}: tolerance {verdict_['tolerance']} on the log-log slope)", fontsize=11)
    return save_figure(fig, path)


def _at_least_decade_span(ax, values: list[float], span: float = 10.0) -> None:
    """Show at least a factor ``span`` on the y axis, so noise on a flat curve looks flat."""
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo < span:
        mid = math.sqrt(lo * hi)
        ax.set_ylim(mid / math.sqrt(span), mid * math.sqrt(span))


def plot_sweep(config, results: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> Path:
    """Held-out loss against learning rate per width, one panel per parameterization."""
    params = list(config.compare)
    fig, axes = plt.subplots(1, len(params), figsize=(6 * len(params), 4.2), squeeze=False)
    widths = sorted(config.widths)
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(widths)))
    for ax, param in zip(axes[0], params):
        for width, color in zip(widths, colors):
            done = sorted((r["lr"], r["val_loss"]) for r in results
                          if r["parameterization"] == param and r["width"] == width and r["status"] == "finished")
            if done:
                ax.plot(*zip(*done), marker="o", color=color, label=f"width {width}")
            stopped = [(r["lr"], r["prediction"]["predicted_final"]) for r in results
                       if r["parameterization"] == param and r["width"] == width and r["status"] == "stopped"]
            if stopped:
                ax.scatter(*zip(*stopped), marker="o", facecolors="none", edgecolors=color, s=40)
            best = summary[param]["optimum"].get(str(width))
            if best:
                ax.scatter([best["lr"]], [best["val_loss"]], marker="*", s=160, color=color, zorder=5)
        drift = summary[param]["drift_grid_steps"]
        ax.set_xscale("log", base=2)
        ax.set(xlabel="learning rate (base)", ylabel="held-out loss after the budget",
               title=f"{param}: optimum drifts {drift} grid step(s) across width")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="* optimum, o stopped (predicted train loss)", title_fontsize=7)
    return save_figure(fig, path)


def plot_collapse(runs: list[Run], report: dict[str, Any], path: Path) -> Path:
    """Raw and smoothed losses, the collapsed curves and each run's deviation from the family."""
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
    return save_figure(fig, path)
