"""Loss-curve collapse of a model family, with early-stopping predictions.

    python -m train.scaling.collapse RUN_DIR [RUN_DIR ...] [--config configs/train/collapse.yaml] [key=value ...]

Each RUN_DIR holds metrics.jsonl and config.json as `make pretrain` (or a sweep trial)
writes them. Every run's training loss is normalized as (L(t) - L0) / (L(T) - L0) and
plotted against t/T; the family's collapsed curve is the median of the normalized curves
and each run's deviation is measured against the median of the OTHER runs (so one bad run
cannot hide in its own reference). For each run the tokens-per-parameter and the AdamW
timescale tau = 1 / (lr * weight_decay * T) are printed: a family collapses only when
both are shared. Leave-one-out early-stopping predictions of every finished run's final
loss from its first part are reported next to the actual final loss.

Writes <output>/collapse.json (its "reference" entry is the curve train.scaling.early_stop
and the sweep read) and <output>/collapse.png.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np

from common.atomic import write_json
from common.config import ConfigError, load_config, to_dict
from train.scaling.curves import family_reference, final_loss, fit_l0, fraction_grid, normalized_on_grid
from train.scaling.early_stop import StopRule, predict_final
from train.scaling.figures import plot_collapse
from train.scaling.runs import Run, load_run

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
    parser = argparse.ArgumentParser(prog="train.scaling.collapse", description=__doc__.splitlines()[0],
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
        print(f"train.scaling.collapse: error: {exc}", file=sys.stderr)
        return 2
    out = Path(config.output) if config.output else Path(run_dirs[0]).resolve().parent / "collapse"
    out.mkdir(parents=True, exist_ok=True)
    report["run_dirs"] = run_dirs
    write_json(out / "collapse.json", report, sort_keys=False)
    png = plot_collapse(runs, report, out / "collapse.png")
    print_report(report)
    print(f"results: {out / 'collapse.json'}\nfigure:  {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
