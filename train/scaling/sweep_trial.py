"""One trial of the learning-rate sweep: a width, a parameterization, a learning rate.

It trains with the trainer's optimizer step and lr rule (train/step.py) on pieces of the
token shards, may stop early against the finished trials of its width, and leaves a run
folder (config.json, metrics.jsonl, result.json) that `python -m train.scaling.collapse`
reads. A trial whose result.json exists is not trained again, so a re-run resumes.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import write_json
from model import BTLMLMHeadModel
from model.hardware import flush_denormals
from train.data import MicroBatch, PieceBatches, open_shard_sets
from train.lr import LRSchedule
from train.metrics import MetricsLog
from train.scaling.curves import final_loss, reference_from_runs
from train.scaling.early_stop import ReferenceCurve, StopRule
from train.scaling.runs import load_run
from train.scaling.sweep_config import SweepConfig
from train.scaling.widths import width_config
from train.step import optimizer_step


def open_data(config: SweepConfig, eos_id: int, vocab_size: int) -> tuple[PieceBatches, PieceBatches]:
    """Training and held-out pieces; the two orders differ (seeds 0 and 1) and are the same for every trial."""
    d = config.data
    sets = open_shard_sets(d.root, [d.shard_seq_len], [d.train_split, d.validation_split], eos_id, vocab_size, None)
    return (PieceBatches(sets[(d.shard_seq_len, d.train_split)], config.seq_len, 0),
            PieceBatches(sets[(d.shard_seq_len, d.validation_split)], config.seq_len, 1))


def trial_name(param: str, width: int, lr: float, seed: int) -> str:
    return f"{param}-w{width}-lr{lr:.3g}-s{seed}"


def group_reference(trials_dir: Path, param: str, width: int,
                    config: SweepConfig) -> tuple[ReferenceCurve | None, float | None]:
    """(reference curve, best final train loss) from the finished trials of one width, or (None, None)."""
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
    write_json(folder / "config.json", run_config, sort_keys=False)
    optimizer = torch.optim.AdamW(model.get_mup_param_groups(lr, config.weight_decay), lr=lr,
                                  betas=tuple(config.betas), eps=config.eps, weight_decay=config.weight_decay)
    schedule = LRSchedule(lr, tokens_per_step, int(config.warmup_fraction * total_tokens), total_tokens,
                          config.decay_to, "linear")
    metrics = MetricsLog(folder / "metrics.jsonl", True)
    es = config.early_stop
    rule = StopRule(es.fraction, es.margin, es.fit_from, es.z) if es.enabled else None
    decide_at = max(int(math.ceil(es.fraction * config.steps)), 1)
    status, prediction, first_loss = "finished", None, None
    fractions, losses = [], []
    t0 = time.perf_counter()
    model.train()
    for step in range(config.steps):
        lr_now = schedule.apply(optimizer, step)
        ids = train_data.batch(step * config.batch_size, config.batch_size)
        step_result = optimizer_step(model, optimizer, [MicroBatch(ids, None)], config.clip)
        value = step_result.loss
        metrics.write({"kind": "train", "step": step + 1, "tokens": (step + 1) * tokens_per_step,
                       "loss": value, "lr": lr_now})
        first_loss = value if first_loss is None else first_loss
        if not step_result.finite or value > config.diverge_factor * first_loss:
            status = "diverged"
            break
        fractions.append((step + 1) / config.steps)
        losses.append(value)
        if rule is not None and step + 1 == decide_at and step + 1 < config.steps:
            reference, best = group_reference(folder.parent, param, width, config)
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
        result["train_final"] = final_loss(np.arange(1, len(losses) + 1, dtype=np.float64), np.asarray(losses),
                                           config.steps, es.final_fraction)
        result["val_loss"] = validation_loss(model, val_data, config)
        if prediction is not None:
            prediction["actual_final"] = result["train_final"]
            prediction["error"] = prediction["predicted_final"] - result["train_final"]
    write_json(folder / "result.json", result, sort_keys=False)
    return result


@torch.no_grad()
def validation_loss(model, data: PieceBatches, config: SweepConfig) -> float:
    model.eval()
    total = 0.0
    for i in range(config.eval_batches):
        ids = data.batch(i * config.batch_size, config.batch_size)
        total += float(model(ids, labels=ids, return_logits=False).loss)
    return total / config.eval_batches
