"""`make coord-check`: does the parameterization keep activations width-independent?

    python -m train.scaling.coord_check [--config configs/train/coord_check.yaml] [key=value ...]

For every width, parameterization (muP and standard) and seed, trains a short BTLM a
few steps at a large constant learning rate and records the mean |activation| of the
embeddings, each attention and MLP output and the logits at every step. Under muP the
curves stay flat across width; under standard parameterization they grow. The verdict
is the slope of log(mean |activation|) against log(width): muP passes when every slope
stays below the tolerance, and standard parameterization is flagged when one exceeds it.
Each update is the trainer's own optimizer step (train/step.py), on the first tokens of
the token shards (`make coord-check` builds them first, as `make pretrain` does).

Writes <output>/coord_check.json and <output>/coord_check.png.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from common.atomic import write_json
from common.config import to_dict
from model import BTLMLMHeadModel
from model.hardware import flush_denormals
from train.data import MicroBatch, ShardError, ShardSet, expected_metadata
from train.lr import set_group_lrs
from train.scaling.cli import experiment_main
from train.scaling.figures import plot_coord_check
from train.scaling.widths import width_config
from train.step import optimizer_step

DEFAULT_CONFIG = "configs/train/coord_check.yaml"
LAYER_TYPES = ("embedding", "attn_out", "mlp_out", "logits")


@dataclass
class TokenSource:
    tokens_root: str  # packed shards (`make tokenize` output)
    shard_seq_len: int  # which seq<L> folder of the shards to read
    split: str
    eos_id: int


@dataclass
class CoordCheckConfig:
    model: str  # base model YAML (architecture and muP hyperparameters)
    widths: list[int]
    head_dim: int  # n_head = width / head_dim
    n_layer: int
    n_inner_ratio: float  # MLP width / model width
    parameterizations: dict[str, dict[str, Any]]  # name -> model overrides on top of the base
    seeds: list[int]
    steps: int  # forward passes recorded; an AdamW update follows each one
    lr: float  # constant, deliberately large
    batch_size: int
    seq_len: int
    tolerance: float  # largest slope of log activation vs log width still called flat
    control: str  # the parameterization expected to fail (a check that flags nothing is no check)
    expected_pass: str  # the parameterization expected to pass
    data: TokenSource
    output: str
    num_threads: int | None = None
    progress: bool = True


def real_tokens(source: TokenSource, num_tokens: int) -> np.ndarray:
    """The first ``num_tokens`` token ids of the configured shards."""
    try:
        shards = ShardSet(source.tokens_root, source.shard_seq_len, source.split,
                          expected_metadata(source.eos_id, None))
    except ShardError as exc:
        raise ShardError(f"{exc} (for the coordinate check: data.tokens_root, data.shard_seq_len)") from None
    return shards.first_tokens(num_tokens)


# --- one measurement --------------------------------------------------------------------------


def _mean_abs(t: torch.Tensor) -> float:
    return float(t.detach().float().abs().mean())


def measure(model_config, batches: torch.Tensor, lr: float, seed: int) -> dict[str, list[float]]:
    """Mean |activation| per layer type at each of len(batches) steps (step 0 = at init).

    Hidden layers of one type are averaged. The embedding includes mup_embeddings_scale
    and the logits the output multiplier: what the blocks and the loss actually see.
    Every forward pass is the one of an optimizer step (no clipping, constant lr).
    """
    torch.manual_seed(seed)
    model = BTLMLMHeadModel(model_config)
    model.train()
    optimizer = torch.optim.AdamW(model.get_mup_param_groups(lr, 0.0), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    set_group_lrs(optimizer, lr)
    seen: dict[str, list[float]] = {}

    def record(kind: str, scale: float = 1.0):
        def hook(_module, _inputs, output):
            out = output.logits if kind == "logits" else output[0] if isinstance(output, tuple) else output
            seen.setdefault(kind, []).append(_mean_abs(out) * scale)
        return hook

    handles = [model.transformer.wte.register_forward_hook(record("embedding", model_config.mup_embeddings_scale)),
               model.register_forward_hook(record("logits"))]
    for block in model.transformer.h:
        handles.append(block.attn.register_forward_hook(record("attn_out")))
        handles.append(block.mlp.register_forward_hook(record("mlp_out")))
    curves: dict[str, list[float]] = {k: [] for k in LAYER_TYPES}
    try:
        for ids in batches:
            seen.clear()
            optimizer_step(model, optimizer, [MicroBatch(ids, None)], clip=0.0, return_logits=True)
            for kind in LAYER_TYPES:
                curves[kind].append(float(np.mean(seen[kind])))
    finally:
        for h in handles:
            h.remove()
    return curves


# --- verdict ------------------------------------------------------------------------------------


def log_slope(widths: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of log(value) against log(width)."""
    x = np.log(np.asarray(widths, dtype=np.float64))
    y = np.log(np.maximum(np.asarray(values, dtype=np.float64), 1e-30))
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def verdict(means: dict[str, dict[str, dict[int, list[float]]]], widths: Sequence[int], tolerance: float,
            expected_pass: str, control: str) -> dict[str, Any]:
    """Slopes per parameterization, layer type and step; who is flat and who is flagged."""
    slopes: dict[str, dict[str, list[float]]] = {}
    flat: dict[str, bool] = {}
    worst: dict[str, dict[str, Any]] = {}
    for name, by_type in means.items():
        slopes[name] = {}
        worst_slope = (0.0, None, None)
        for kind, by_width in by_type.items():
            steps = len(by_width[widths[0]])
            per_step = [log_slope(widths, [by_width[w][s] for w in widths]) for s in range(steps)]
            slopes[name][kind] = per_step
            for s, slope in enumerate(per_step):
                if not math.isfinite(slope) or slope > worst_slope[0]:
                    worst_slope = (slope, kind, s)
        # Only growth fails: muP's readout multiplier makes the logits at init shrink as
        # width^-1/2 by design (they become O(1) once the output weights have moved).
        flat[name] = all(v <= tolerance for per in slopes[name].values() for v in per)
        worst[name] = {"slope": worst_slope[0], "layer_type": worst_slope[1], "step": worst_slope[2]}
    passed = flat.get(expected_pass, False)
    flagged = control in flat and not flat[control]
    return {"tolerance": tolerance, "slopes": slopes, "flat": flat, "worst": worst,
            "expected_pass": expected_pass, "control": control,
            "passed": passed, "control_flagged": flagged, "ok": passed and flagged}


# --- the command -------------------------------------------------------------------------------------


def run(config: CoordCheckConfig) -> dict[str, Any]:
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    flush_denormals()
    widths = sorted(config.widths)
    if len(widths) < 2:
        raise ValueError("coordinate check needs at least two widths")
    for name in (config.expected_pass, config.control):
        if name not in config.parameterizations:
            raise ValueError(f"{name!r} is not one of parameterizations {list(config.parameterizations)}")
    need = config.steps * config.batch_size * config.seq_len
    ids = torch.from_numpy(real_tokens(config.data, need).astype(np.int64))
    batches = ids.view(config.steps, config.batch_size, config.seq_len)
    means: dict[str, dict[str, dict[int, list[float]]]] = {}
    jobs = [(n, w, s) for n in config.parameterizations for w in widths for s in config.seeds]
    raw: dict[tuple[str, int], list[dict[str, list[float]]]] = {}
    for name, width, seed in tqdm(jobs, desc="coord-check", disable=not config.progress, unit="run"):
        mc = width_config(config.model, width, config.head_dim, config.n_layer, config.n_inner_ratio,
                          config.parameterizations[name])
        raw.setdefault((name, width), []).append(measure(mc, batches, config.lr, seed))
    for (name, width), runs in raw.items():
        for kind in LAYER_TYPES:
            per_seed = np.asarray([r[kind] for r in runs])
            means.setdefault(name, {}).setdefault(kind, {})[width] = per_seed.mean(axis=0).tolist()
    result = verdict(means, widths, config.tolerance, config.expected_pass, config.control)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    report = {"config": to_dict(config), "widths": widths, "layer_types": list(LAYER_TYPES),
              "mean_abs_activation": {n: {k: {str(w): v for w, v in bw.items()} for k, bw in bt.items()}
                                      for n, bt in means.items()},
              **result}
    png = plot_coord_check(means, widths, LAYER_TYPES, result, out / "coord_check.png")
    write_json(out / "coord_check.json", report, sort_keys=False)
    report["png"] = str(png)
    return report


def print_summary(report: dict[str, Any]) -> None:
    tol = report["tolerance"]
    print(f"\nlog-log slope of mean |activation| vs width (widths {report['widths']}), largest over steps:")
    print(f"{'':8s}" + "".join(f"{k:>11s}" for k in report["layer_types"]) + "   verdict")
    for name, by_type in report["slopes"].items():
        cells = "".join(f"{max(v):+11.2f}" for v in by_type.values())
        state = "flat" if report["flat"][name] else "GROWS with width"
        print(f"{name:8s}{cells}   {state} (every slope <= {tol}: {report['flat'][name]})")
    ok = "PASS" if report["ok"] else "FAIL"
    print(f"\n{ok}: {report['expected_pass']} flat = {report['passed']}, "
          f"{report['control']} flagged = {report['control_flagged']}")
    print(f"results: {Path(report['config']['output']) / 'coord_check.json'}\nfigure:  {report['png']}")


def main(argv: Sequence[str] | None = None) -> int:
    return experiment_main(CoordCheckConfig, __doc__, DEFAULT_CONFIG, argv, "train.scaling.coord_check", run,
                           print_summary, exit_code=lambda report: 0 if report["ok"] else 1)


if __name__ == "__main__":
    sys.exit(main())
