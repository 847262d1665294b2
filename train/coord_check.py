"""`make coord-check`: does the parameterization keep activations width-independent?

    python -m train.coord_check [--config configs/train/coord_check.yaml] [key=value ...]

For every width, parameterization (muP and standard) and seed, trains a short BTLM a
few steps at a large constant learning rate and records the mean |activation| of the
embeddings, each attention and MLP output and the logits at every step. Under muP the
curves stay flat across width; under standard parameterization they grow. The verdict
is the slope of log(mean |activation|) against log(width): muP passes when every slope
stays below the tolerance, and standard parameterization is flagged when one exceeds it.

Writes <output>/coord_check.json and <output>/coord_check.png.
"""

from __future__ import annotations

import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from common.config import stage_cli, to_dict
from model.hardware import flush_denormals

DEFAULT_CONFIG = "configs/train/coord_check.yaml"
LAYER_TYPES = ("embedding", "attn_out", "mlp_out", "logits")


@dataclass
class TokenSource:
    tokens_root: str  # packed shards (`make tokenize` output); used when present
    shard_seq_len: int  # which seq<L> folder of the shards to read
    split: str
    text_root: str  # else: SlimPajama-shaped *.jsonl[.zst] records, tokenised here
    tokenizer: str  # tokenizer.json for the text fallback
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


# --- model configs ------------------------------------------------------------------------


def width_config(base_model: str, width: int, head_dim: int, n_layer: int, n_inner_ratio: float,
                 overrides: dict[str, Any]):
    """The base model YAML at ``width`` with a parameterization's overrides applied.

    muP keeps the base file's mup_base_width, so mup_width_scale = base / width follows
    the width; standard parameterization sets every multiplier to 1 (see the YAML).
    """
    from model import BTLMConfig

    if width % head_dim:
        raise ValueError(f"width {width} is not a multiple of head_dim {head_dim}")
    shape = {"n_embd": width, "n_head": width // head_dim, "n_layer": n_layer,
             "n_inner": max(int(width * n_inner_ratio), 1)}
    return BTLMConfig.from_yaml(base_model, {**shape, **overrides})


# --- real tokens ----------------------------------------------------------------------------


def _read_records(path: Path):
    opener = path.open("rb")
    if path.name.endswith(".zst"):
        import zstandard

        stream = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(opener), encoding="utf-8")
    else:
        stream = io.TextIOWrapper(opener, encoding="utf-8")
    with stream:
        for line_no, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: not a record with a 'text' field ({exc})") from None
            yield text


def real_tokens(source: TokenSource, num_tokens: int) -> np.ndarray:
    """Exactly ``num_tokens`` real token ids: from the shards when built, else tokenised text."""
    shard_dir = Path(source.tokens_root) / f"seq{source.shard_seq_len}" / source.split
    if shard_dir.is_dir() and any(shard_dir.glob("shard-*.arrow")):
        from train.data import ShardSet, expected_metadata

        shards = ShardSet(source.tokens_root, source.shard_seq_len, source.split,
                          expected_metadata(source.eos_id, None))
        rows = math.ceil(num_tokens / source.shard_seq_len)
        if rows > len(shards):
            raise ValueError(f"{shard_dir} holds {len(shards)} rows; the check needs {rows}")
        return shards.tokens(np.arange(rows)).reshape(-1)[:num_tokens]
    files = sorted(p for p in Path(source.text_root).rglob("*") if p.name.endswith((".jsonl", ".jsonl.zst")))
    if not files:
        raise FileNotFoundError(
            f"no token shards in {shard_dir} and no *.jsonl[.zst] text under {source.text_root}: "
            "run `make corpus` (or `make tokenize`) first, or set data.text_root"
        )
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(source.tokenizer)
    ids: list[int] = []
    for path in files:
        for text in _read_records(path):
            ids.extend(tokenizer.encode(text).ids)
            ids.append(source.eos_id)
            if len(ids) >= num_tokens:
                return np.asarray(ids[:num_tokens], dtype=np.int64)
    raise ValueError(f"text under {source.text_root} gives {len(ids)} tokens; the check needs {num_tokens}")


# --- one measurement --------------------------------------------------------------------------


def _mean_abs(t: torch.Tensor) -> float:
    return float(t.detach().float().abs().mean())


def measure(model_config, batches: torch.Tensor, lr: float, seed: int) -> dict[str, list[float]]:
    """Mean |activation| per layer type at each of len(batches) steps (step 0 = at init).

    Hidden layers of one type are averaged. The embedding includes mup_embeddings_scale
    and the logits the output multiplier: what the blocks and the loss actually see.
    """
    from model import BTLMLMHeadModel

    torch.manual_seed(seed)
    model = BTLMLMHeadModel(model_config)
    model.train()
    optimizer = torch.optim.AdamW(model.get_mup_param_groups(lr, 0.0), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    seen: dict[str, list[float]] = {}

    def record(kind: str, scale: float = 1.0):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            seen.setdefault(kind, []).append(_mean_abs(out) * scale)
        return hook

    handles = [model.transformer.wte.register_forward_hook(record("embedding", model_config.mup_embeddings_scale))]
    for block in model.transformer.h:
        handles.append(block.attn.register_forward_hook(record("attn_out")))
        handles.append(block.mlp.register_forward_hook(record("mlp_out")))
    curves: dict[str, list[float]] = {k: [] for k in LAYER_TYPES}
    try:
        for ids in batches:
            seen.clear()
            out = model(ids, labels=ids)
            for kind in ("embedding", "attn_out", "mlp_out"):
                curves[kind].append(float(np.mean(seen[kind])))
            curves["logits"].append(_mean_abs(out.logits))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
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


# --- figure ------------------------------------------------------------------------------------------


def plot(means, widths, verdict_: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(means)
    fig, axes = plt.subplots(len(names), len(LAYER_TYPES), figsize=(3.2 * len(LAYER_TYPES), 2.8 * len(names)),
                             squeeze=False, sharex=True)
    for r, name in enumerate(names):
        for c, kind in enumerate(LAYER_TYPES):
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _at_least_decade_span(ax, values: list[float], span: float = 10.0) -> None:
    """Show at least a factor ``span`` on the y axis, so noise on a flat curve looks flat."""
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo < span:
        mid = math.sqrt(lo * hi)
        ax.set_ylim(mid / math.sqrt(span), mid * math.sqrt(span))


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
    from tqdm import tqdm

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
    png = plot(means, widths, result, out / "coord_check.png")
    tmp = out / "coord_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
    tmp.replace(out / "coord_check.json")
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
    config, _ = stage_cli(CoordCheckConfig, __doc__.splitlines()[0], DEFAULT_CONFIG, argv, prog="train.coord_check")
    try:
        report = run(config)
    except (FileNotFoundError, ValueError) as exc:
        print(f"train.coord_check: error: {exc}", file=sys.stderr)
        return 2
    print_summary(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
