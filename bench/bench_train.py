"""Training-step speed and memory, side by side in one run (each case in its own process so
peak memory is its own):

  nanogpt-fp32   nanoGPT-style GPT (learned positions, GELU, full fp32 logits + cross-entropy),
                 d=256, 4 layers, seq 512, batch 8: the baseline
  nanogpt-bf16   the same under bf16 autocast
  demo-step      one optimizer step of `make pretrain` (train.trainer.Trainer with
                 configs/train/demo.yaml: BTLM demo model, chunked loss, its micro-batches,
                 data loading from memory-mapped shards) at the first phase's length
  matmul-peak    fp32 and bf16 matmul throughput of this machine (for MFU)
  demo-compiled  demo-step with `compile: true` (torch.compile; not in the default cases,
                 compiling takes minutes on a CPU; the warm-up step absorbs it)

    python bench/bench_train.py [--rounds 3] [--steps 2] [--threads 2] [--cases a,b] [--json out.json]

Cases run interleaved for several rounds (machine load drifts); reports the median step
time and tokens/s over all measured steps, the peak RSS above each process's state
before its first step, the demo step's data-loading share and its fraction of the
measured matmul peak (fp32 and bf16).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# --- the nanoGPT-style reference -------------------------------------------------------


def nanogpt(vocab: int, d: int, layers: int, heads: int, seq_len: int):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + self.c_proj(y)
            return x + self.proj(F.gelu(self.fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq_len, d)
            self.h = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(d)
            self.lm_head = nn.Linear(d, vocab, bias=False)
            self.lm_head.weight = self.wte.weight
            for name, p in self.named_parameters():  # nanoGPT's init
                if p.ndim == 2:
                    std = 0.02 / math.sqrt(2 * layers) if name.endswith(("c_proj.weight", "proj.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)
                else:
                    nn.init.zeros_(p) if name.endswith("bias") else nn.init.ones_(p)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    return GPT()


def case_nanogpt(args, bf16: bool) -> dict:
    import torch

    torch.manual_seed(0)
    model = nanogpt(50257, 256, 4, 4, 512)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    before = current_rss_mb()
    times = []
    for _ in range(args.steps + 1):
        ids = torch.randint(0, 50257, (8, 513), generator=gen)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"tokens_per_step": 8 * 512, "step_times": times[1:],
            "peak_mb_above_start": peak_rss_mb() - before, "loss": float(loss)}


def write_random_shards(root: Path, seq_lens: list[int], rows: dict[int, int]) -> None:
    """Token shards in the contract (random ids: this measures speed, not learning)."""
    import numpy as np
    import pyarrow as pa

    from pipeline.shard_format import FORMAT_VERSION, shard_name, shard_schema, split_dir

    rng = np.random.default_rng(0)
    for seq_len in seq_lens:
        for split in ("train", "validation"):
            n = rows[seq_len] if split == "train" else 2
            meta = {"format_version": FORMAT_VERSION, "tokenizer_sha256": "bench", "seq_len": seq_len,
                    "eos_id": 50256, "vocab_size": 50257, "split": split, "config": "{}"}
            schema = shard_schema(seq_len, meta)
            ids = rng.integers(0, 50257, size=n * seq_len, dtype=np.uint16)
            table = pa.table({
                "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids, pa.uint16()), seq_len),
                "doc_starts": pa.array([[0]] * n, pa.list_(pa.int32())),
                "source": pa.array(["bench"] * n),
            }, schema=schema)
            folder = split_dir(root, seq_len, split)
            folder.mkdir(parents=True, exist_ok=True)
            with pa.OSFile(str(folder / shard_name(0)), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
                w.write_table(table, max_chunksize=256)


def case_demo(args, compile_model: bool = False) -> dict:
    import torch

    from common.config import load_config
    from train.config import TrainConfig
    from train.distributed import init_distributed
    from train.trainer import Trainer

    base = load_config(TrainConfig, REPO / args.config)
    first = base.phases[0].seq_len
    rows_needed = base.tokens_per_batch // first * (args.steps + 2)
    with tempfile.TemporaryDirectory() as tmp:
        seq_lens = sorted({p.seq_len for p in base.phases})
        write_random_shards(Path(tmp), seq_lens, {L: max(base.tokens_per_batch // L * 4, rows_needed) for L in seq_lens})
        overrides = {"data": {"root": tmp, "tokenizer_sha256": None}, "run_dir": str(Path(tmp) / "run"),
                     "resume": "none", "log": {"progress": False}, "num_threads": args.threads,
                     "compile": compile_model}
        config = load_config(TrainConfig, REPO / args.config, overrides)
        trainer = Trainer(config, Path(tmp) / "run", init_distributed())
        before = current_rss_mb()
        records = [trainer.train_step() for _ in range(args.steps + 1)][1:]
    return {"tokens_per_step": config.tokens_per_batch, "seq_len": first, "precision": trainer.precision,
            "micro_batch_rows": trainer.micro_rows(first), "accumulation": trainer.batches[0].accumulation,
            "step_times": [r["step_s"] for r in records], "data_times": [r["data_s"] for r in records],
            "flops_per_token": trainer.model.flops_per_token(first),
            "peak_mb_above_start": peak_rss_mb() - before, "loss": records[-1]["loss"],
            "threads": torch.get_num_threads()}


def case_matmul(args) -> dict:
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ b
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        out[f"{name}_tflops"] = [2 * 2048**3 / t / 1e12 for t in times]
    return out


CASES = {"nanogpt-fp32": lambda a: case_nanogpt(a, False), "nanogpt-bf16": lambda a: case_nanogpt(a, True),
         "demo-step": case_demo, "matmul-peak": case_matmul, "demo-compiled": lambda a: case_demo(a, True)}
DEFAULT_CASES = ["nanogpt-fp32", "nanogpt-bf16", "demo-step", "matmul-peak"]


def summarize(runs: list[dict]) -> dict:
    """Medians over every measured step of every round; the largest peak memory."""
    out = {k: v for k, v in runs[-1].items() if not isinstance(v, list)}
    if "step_times" in runs[0]:
        step = statistics.median(t for r in runs for t in r["step_times"])
        out.update(step_s=step, tokens_per_s=out["tokens_per_step"] / step,
                   peak_mb_above_start=max(r["peak_mb_above_start"] for r in runs),
                   steps=sum(len(r["step_times"]) for r in runs))
        if "data_times" in runs[0]:
            out["data_s"] = statistics.median(t for r in runs for t in r["data_times"])
            out["data_fraction"] = out["data_s"] / step
        if "flops_per_token" in out:
            out["tflops"] = out["flops_per_token"] * out["tokens_per_s"] / 1e12
    for key in ("fp32_tflops", "bf16_tflops"):
        if key in runs[0]:
            out[key] = statistics.median(v for r in runs for v in r[key])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="measured steps per case and round (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all cases, interleaved")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", default="configs/train/demo.yaml")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # run one case in this process
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.case:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(CASES[args.case](args)))
        return
    # Cases alternate, round after round, so a change in machine load hits them alike.
    raw: dict[str, list[dict]] = {case: [] for case in args.cases.split(",")}
    for round_index in range(args.rounds):
        for case in raw:
            cmd = [sys.executable, __file__, "--case", case, "--steps", str(args.steps),
                   "--threads", str(args.threads), "--config", args.config]
            env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
            done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{case} failed:\n{done.stderr[-3000:]}")
            raw[case].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1} {case:14s} done", flush=True)
    results = {case: summarize(runs) for case, runs in raw.items()}
    for case, summary in results.items():
        print(f"{case:14s} {json.dumps(summary)}")
    base = results.get("nanogpt-fp32")
    demo = results.get("demo-step")
    if base and demo:
        results["ratios"] = {
            "demo_vs_nanogpt_fp32_tokens_per_s": demo["tokens_per_s"] / base["tokens_per_s"],
            "demo_vs_nanogpt_fp32_peak_memory": demo["peak_mb_above_start"] / base["peak_mb_above_start"],
        }
        peak = results.get("matmul-peak", {})
        key = f"{demo['precision']}_tflops"
        if key in peak:
            results["ratios"]["demo_fraction_of_matmul_peak"] = demo["tflops"] / peak[key]
        if "bf16_tflops" in peak:
            results["ratios"]["demo_fraction_of_bf16_matmul_peak"] = demo["tflops"] / peak["bf16_tflops"]
        print("ratios         " + json.dumps(results["ratios"]))
    compiled = results.get("demo-compiled")
    if demo and compiled:
        print(f"torch.compile: {compiled['tokens_per_s'] / demo['tokens_per_s']:.2f}x the demo step's tokens/s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
