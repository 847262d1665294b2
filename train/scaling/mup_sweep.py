"""`make mup-sweep`: does the best learning rate transfer across width?

    python -m train.scaling.mup_sweep [--config configs/train/mup_sweep.yaml] [key=value ...]

Trains a grid of widths x learning rates for a short budget on the token shards, for
muP and for standard parameterization, in parallel worker processes. Under muP the
learning rate with the lowest loss stays put as the model widens; under standard
parameterization it drifts. Trials predicted (from the sweep's own finished trials,
collapsed) to end worse than the best of their width by a margin are stopped early.
One trial is train/scaling/sweep_trial.py; this module orders, runs and summarizes them.

Writes <output>/sweep.json, <output>/sweep.png and one folder per trial under
<output>/trials/ (metrics.jsonl + config.json, readable by `python -m train.scaling.collapse`).
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from common.atomic import write_json
from common.config import to_dict
from model import BTLMConfig
from train.scaling.cli import experiment_main
from train.scaling.figures import plot_sweep
from train.scaling.sweep_config import SweepConfig
from train.scaling.sweep_trial import open_data, run_trial

DEFAULT_CONFIG = "configs/train/mup_sweep.yaml"


def trial_order(config: SweepConfig) -> list[tuple[str, int, float, int]]:
    """Width groups one after another, each from the middle learning rate outwards.

    The middle of the grid is the likeliest optimum, so the first trials of a group
    finish and become its early-stopping reference; the extremes come last and are the
    ones worth stopping.
    """
    lrs = sorted(config.lrs)
    mid = (len(lrs) - 1) / 2
    outward = sorted(range(len(lrs)), key=lambda i: (abs(i - mid), i))
    return [(p, w, lrs[i], s) for p in config.compare for w in sorted(config.widths)
            for s in config.seeds for i in outward]


def summarize(config: SweepConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Best learning rate per width and its drift across widths, in grid steps."""
    lrs = sorted(config.lrs)
    summary: dict[str, Any] = {}
    for param in config.compare:
        optimum = {}
        for width in sorted(config.widths):
            by_lr: dict[float, list[float]] = {}
            for r in results:
                if r["parameterization"] == param and r["width"] == width and r["status"] == "finished":
                    by_lr.setdefault(r["lr"], []).append(r["val_loss"])
            if by_lr:
                best_lr = min(by_lr, key=lambda lr: float(np.mean(by_lr[lr])))
                optimum[str(width)] = {"lr": best_lr, "grid_index": lrs.index(best_lr),
                                       "val_loss": float(np.mean(by_lr[best_lr])),
                                       "at_grid_edge": best_lr in (lrs[0], lrs[-1])}
        idx = [o["grid_index"] for o in optimum.values()]
        summary[param] = {"optimum": optimum, "drift_grid_steps": (max(idx) - min(idx)) if idx else None,
                          "transfers": bool(idx) and max(idx) - min(idx) <= 1}
    predicted = [r["prediction"] for r in results if r.get("prediction") and "error" in r["prediction"]]
    errors = [abs(p["error"]) for p in predicted]
    summary["early_stop"] = {
        "stopped": sum(r["status"] == "stopped" for r in results),
        "diverged": sum(r["status"] == "diverged" for r in results),
        "finished": sum(r["status"] == "finished" for r in results),
        "steps_saved": sum(r["steps"] - r["steps_done"] for r in results if r["status"] == "stopped"),
        "predicted_then_finished": len(predicted),
        "mean_abs_error": float(np.mean(errors)) if errors else None,
        "max_abs_error": float(np.max(errors)) if errors else None,
    }
    return summary


def run(config: SweepConfig) -> dict[str, Any]:
    unknown = [p for p in config.compare if p not in config.parameterizations]
    if unknown:
        raise ValueError(f"compare lists {unknown}, not among parameterizations {list(config.parameterizations)}")
    base = BTLMConfig.from_yaml(config.model)
    open_data(config, base.eos_token_id, base.vocab_size)  # fail here, not in every worker
    out = Path(config.output)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    jobs = trial_order(config)
    results: list[dict[str, Any]] = []
    progress = tqdm(total=len(jobs), desc="mup-sweep", unit="trial", disable=not config.progress)
    if config.workers <= 1:
        for job in jobs:
            results.append(run_trial(config, *job))
            progress.update(1)
    else:
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch threads
        with ProcessPoolExecutor(config.workers, mp_context=context) as pool:
            futures = [pool.submit(run_trial, config, *job) for job in jobs]
            for future in as_completed(futures):
                r = future.result()
                results.append(r)
                progress.set_postfix_str(f"{r['name']} {r['status']}")
                progress.update(1)
    progress.close()
    results.sort(key=lambda r: (r["parameterization"], r["width"], r["lr"], r["seed"]))
    summary = summarize(config, results)
    report = {"config": to_dict(config), "lrs": sorted(config.lrs), "summary": summary, "trials": results}
    write_json(out / "sweep.json", report, sort_keys=False)
    report["png"] = str(plot_sweep(config, results, summary, out / "sweep.png"))
    return report


def print_summary(report: dict[str, Any]) -> None:
    lrs = report["lrs"]
    print("\nheld-out loss per width x learning rate (s = stopped early, d = diverged):")
    print(f"{'':14s}" + "".join(f"{lr:>9.3g}" for lr in lrs))
    trials = report["trials"]
    for param, s in report["summary"].items():
        if param == "early_stop":
            continue
        for width in sorted({t["width"] for t in trials}):
            cells = []
            for lr in lrs:
                t = [t for t in trials if t["parameterization"] == param and t["width"] == width and t["lr"] == lr]
                if not t:
                    cells.append(f"{'-':>9s}")
                elif t[0]["status"] == "finished":
                    best = s["optimum"].get(str(width), {}).get("lr") == lr
                    cells.append(f"{t[0]['val_loss']:>8.3f}{'*' if best else ' '}")
                else:
                    cells.append(f"{t[0]['status'][0]:>9s}")
            print(f"{param + ' w' + str(width):14s}" + "".join(cells))
        print(f"  {param}: optimum drifts {s['drift_grid_steps']} grid step(s) across width "
              f"({'transfers' if s['transfers'] else 'does NOT transfer'})")
    e = report["summary"]["early_stop"]
    print(f"early stopping: {e['stopped']} stopped ({e['steps_saved']} steps saved), {e['diverged']} diverged, "
          f"{e['finished']} finished; predicted-then-finished {e['predicted_then_finished']}, "
          f"mean |predicted - actual| {e['mean_abs_error']}")
    print(f"results: {Path(report['config']['output']) / 'sweep.json'}\nfigure:  {report['png']}")


def main(argv: Sequence[str] | None = None) -> int:
    return experiment_main(SweepConfig, __doc__, DEFAULT_CONFIG, argv, "train.scaling.mup_sweep", run, print_summary)


if __name__ == "__main__":
    sys.exit(main())
