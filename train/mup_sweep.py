"""`make mup-sweep`: does the best learning rate transfer across width?

    python -m train.mup_sweep [--config configs/train/mup_sweep.yaml] [key=value ...]

Trains a grid of widths x learning rates for a short budget on the token shards, for
muP and for standard parameterization, in parallel worker processes. Under muP the
learning rate with the lowest loss stays put as the model widens; under standard
parameterization it drifts. Trials predicted (from the sweep's own finished trials,
collapsed) to end worse than the best of their width by a margin are stopped early.

Writes <output>/sweep.json, <output>/sweep.png and one folder per trial under
<output>/trials/ (metrics.jsonl + config.json, readable by `python -m train.collapse`).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from common.config import stage_cli, to_dict

DEFAULT_CONFIG = "configs/train/mup_sweep.yaml"


@dataclass
class DataSection:
    root: str  # `make tokenize` output
    shard_seq_len: int  # rows of this length are cut into seq_len pieces
    train_split: str
    validation_split: str


@dataclass
class EarlyStopSection:
    enabled: bool
    fraction: float  # decide after this fraction of a trial
    fit_from: float  # the warm-up before this fraction is not fitted
    margin: float  # stop when predicted final loss - z * its standard error > best final loss of the width + margin
    z: float
    min_reference: int  # finished trials of the same width needed before any stop
    l0: float  # irreducible loss used to normalize the reference (0 = plain ratio)
    smooth_fraction: float
    final_fraction: float
    grid_points: int


@dataclass
class SweepConfig:
    model: str  # base model YAML
    widths: list[int]
    head_dim: int
    n_layer: int
    n_inner_ratio: float
    parameterizations: dict[str, dict[str, Any]]  # name -> model overrides
    compare: list[str]  # which of the parameterizations to sweep
    lrs: list[float]  # base learning rates (muP: hidden weights get lr * base_width / width)
    seeds: list[int]
    steps: int  # optimizer steps per trial
    batch_size: int  # sequences per step
    seq_len: int
    warmup_fraction: float
    decay_to: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    clip: float
    eval_batches: int  # held-out batches for the loss that ranks learning rates
    diverge_factor: float  # stop a trial once its loss exceeds this x its first loss
    early_stop: EarlyStopSection
    data: DataSection
    workers: int  # trials in parallel
    threads_per_trial: int
    output: str
    progress: bool = True


# --- data -------------------------------------------------------------------------------------


class ChunkBatches:
    """Fixed-length pieces of packed shard rows, in one seeded order shared by every trial."""

    def __init__(self, shards, seq_len: int, seed: int):
        if shards.seq_len % seq_len:
            raise ValueError(f"seq_len {seq_len} does not divide the shards' row length {shards.seq_len}")
        self.shards = shards
        self.seq_len = seq_len
        self.per_row = shards.seq_len // seq_len
        self.order = np.random.default_rng(seed).permutation(len(shards) * self.per_row)

    def __len__(self) -> int:
        return len(self.order)

    def batch(self, start: int, size: int) -> torch.Tensor:
        idx = self.order[np.arange(start, start + size) % len(self.order)]
        rows, pieces = np.divmod(idx, self.per_row)
        tokens = self.shards.tokens(rows)
        out = np.stack([tokens[i, p * self.seq_len:(p + 1) * self.seq_len] for i, p in enumerate(pieces)])
        return torch.from_numpy(out.astype(np.int64))


def open_data(config: SweepConfig, eos_id: int, vocab_size: int) -> tuple[ChunkBatches, ChunkBatches]:
    from train.data import open_shard_sets

    d = config.data
    sets = open_shard_sets(d.root, [d.shard_seq_len], [d.train_split, d.validation_split], eos_id, vocab_size, None)
    return (ChunkBatches(sets[(d.shard_seq_len, d.train_split)], config.seq_len, 0),
            ChunkBatches(sets[(d.shard_seq_len, d.validation_split)], config.seq_len, 1))


# --- one trial ---------------------------------------------------------------------------------------


def trial_name(param: str, width: int, lr: float, seed: int) -> str:
    return f"{param}-w{width}-lr{lr:.3g}-s{seed}"


def _group_reference(trials_dir: Path, param: str, width: int, config: SweepConfig):
    """(reference curve, best final train loss) from the finished trials of one width, or (None, None)."""
    from train.collapse import final_loss, load_run, reference_from_runs

    es = config.early_stop
    runs = []
    for result in sorted(trials_dir.glob(f"{param}-w{width}-*/result.json")):
        data = json.loads(result.read_text(encoding="utf-8"))
        if data["status"] == "finished":
            runs.append(load_run(result.parent, "total"))
    if len(runs) < es.min_reference:
        return None, None
    best = min(final_loss(r.steps, r.losses, r.total_steps, es.final_fraction) for r in runs)
    return reference_from_runs(runs, es.l0, es.smooth_fraction, es.final_fraction, es.grid_points), best


def run_trial(config: SweepConfig, param: str, width: int, lr: float, seed: int) -> dict[str, Any]:
    """Train one grid point; writes metrics.jsonl, config.json and result.json into its folder."""
    from model import BTLMLMHeadModel
    from model.hardware import flush_denormals
    from train.coord_check import width_config
    from train.early_stop import StopRule
    from train.metrics import MetricsLog
    from train.schedule import lr_multiplier

    torch.set_num_threads(config.threads_per_trial)
    flush_denormals()
    name = trial_name(param, width, lr, seed)
    folder = Path(config.output) / "trials" / name
    if (folder / "result.json").exists():  # finished earlier: a re-run resumes the sweep
        return json.loads((folder / "result.json").read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").unlink(missing_ok=True)
    mc = width_config(config.model, width, config.head_dim, config.n_layer, config.n_inner_ratio,
                      config.parameterizations[param])
    train_data, val_data = open_data(config, mc.eos_token_id, mc.vocab_size)
    torch.manual_seed(seed)
    model = BTLMLMHeadModel(mc)
    tokens_per_step = config.batch_size * config.seq_len
    total_tokens = config.steps * tokens_per_step
    params = {"total": model.num_parameters(), "non_embedding": model.num_parameters(exclude_embeddings=True)}
    run_config = {"model": {"config": config.model, "overrides": {k: v for k, v in mc.to_dict().items()}},
                  "lr": lr, "weight_decay": config.weight_decay, "tokens_per_batch": tokens_per_step,
                  "total_tokens": total_tokens, "max_steps": None, "params": params, "seed": seed,
                  "parameterization": param, "width": width}
    (folder / "config.json").write_text(json.dumps(run_config, indent=1), encoding="utf-8")
    optimizer = torch.optim.AdamW(model.get_mup_param_groups(lr, config.weight_decay), lr=lr,
                                  betas=tuple(config.betas), eps=config.eps, weight_decay=config.weight_decay)
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    metrics = MetricsLog(folder / "metrics.jsonl", True)
    es = config.early_stop
    rule = StopRule(es.fraction, es.margin, es.fit_from, es.z) if es.enabled else None
    decide_at = max(int(math.ceil(es.fraction * config.steps)), 1)
    status, prediction, first_loss = "finished", None, None
    fractions, losses = [], []
    t0 = time.perf_counter()
    model.train()
    for step in range(config.steps):
        mult = lr_multiplier((step + 1) * tokens_per_step, int(config.warmup_fraction * total_tokens), total_tokens,
                             config.decay_to, "linear")
        for group, scale in zip(optimizer.param_groups, scales):
            group["lr"] = lr * scale * mult
        ids = train_data.batch(step * config.batch_size, config.batch_size)
        loss = model(ids, labels=ids, return_logits=False).loss
        loss.backward()
        if config.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        metrics.write({"kind": "train", "step": step + 1, "tokens": (step + 1) * tokens_per_step,
                       "loss": value, "lr": lr * mult})
        first_loss = value if first_loss is None else first_loss
        if not math.isfinite(value) or value > config.diverge_factor * first_loss:
            status = "diverged"
            break
        fractions.append((step + 1) / config.steps)
        losses.append(value)
        if rule is not None and step + 1 == decide_at and step + 1 < config.steps:
            reference, best = _group_reference(folder.parent, param, width, config)
            if reference is not None:
                try:
                    stop, p = rule.decide(fractions, losses, reference, best)
                except ValueError as exc:  # too few points in the reference's range
                    print(f"{name}: no early-stop prediction ({exc})", file=sys.stderr)
                else:
                    prediction = {"predicted_final": p.final_loss, "best_final": best, "at_step": step + 1,
                                  "stderr": p.stderr, "residual_rms": p.residual_rms}
                    if stop:
                        status = "stopped"
                        break
    metrics.close()
    result: dict[str, Any] = {"name": name, "parameterization": param, "width": width, "lr": lr, "seed": seed,
                              "status": status, "steps_done": step + 1, "steps": config.steps,
                              "params": params, "seconds": time.perf_counter() - t0, "prediction": prediction}
    if status == "finished":
        from train.collapse import final_loss

        result["train_final"] = final_loss(np.arange(1, len(losses) + 1, dtype=np.float64), np.asarray(losses),
                                           config.steps, es.final_fraction)
        result["val_loss"] = validation_loss(model, val_data, config)
        if prediction is not None:
            prediction["actual_final"] = result["train_final"]
            prediction["error"] = prediction["predicted_final"] - result["train_final"]
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
    tmp.replace(folder / "result.json")
    return result


@torch.no_grad()
def validation_loss(model, data: ChunkBatches, config: SweepConfig) -> float:
    model.eval()
    total = 0.0
    for i in range(config.eval_batches):
        ids = data.batch(i * config.batch_size, config.batch_size)
        total += float(model(ids, labels=ids, return_logits=False).loss)
    return total / config.eval_batches


# --- the sweep ------------------------------------------------------------------------------------


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


def plot(config: SweepConfig, results: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(config: SweepConfig) -> dict[str, Any]:
    unknown = [p for p in config.compare if p not in config.parameterizations]
    if unknown:
        raise ValueError(f"compare lists {unknown}, not among parameterizations {list(config.parameterizations)}")
    from model import BTLMConfig

    base = BTLMConfig.from_yaml(config.model)
    open_data(config, base.eos_token_id, base.vocab_size)  # fail here, not in every worker
    out = Path(config.output)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    jobs = trial_order(config)
    results: list[dict[str, Any]] = []
    from tqdm import tqdm

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
    tmp = out / "sweep.json.tmp"
    tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
    tmp.replace(out / "sweep.json")
    report["png"] = str(plot(config, results, summary, out / "sweep.png"))
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
    config, _ = stage_cli(SweepConfig, __doc__.splitlines()[0], DEFAULT_CONFIG, argv, prog="train.mup_sweep")
    from train.data import ShardError

    try:
        report = run(config)
    except (ShardError, FileNotFoundError, ValueError) as exc:
        print(f"train.mup_sweep: error: {exc}", file=sys.stderr)
        return 2
    print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
