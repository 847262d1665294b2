"""Training-step speed and memory, side by side in one run (each case in its own process so
peak memory is its own):

  nanogpt-fp32   nanoGPT-style GPT (learned positions, GELU, full fp32 logits + cross-entropy),
                 d=256, 4 layers, seq 512, batch 8: the baseline
  nanogpt-bf16   the same under bf16 autocast
  demo-step      one optimizer step of `make pretrain` (train.trainer.Trainer with
                 configs/train/demo.yaml: BTLM demo model, chunked loss, its micro-batches,
                 data loading from memory-mapped shards) at the first phase's length, fp32
  demo-bf16      the same in bf16 (autocast)
  demo-long      the demo step at the last phase's length (8,192), plain causal ALiBi
  demo-long-docs the same with data.reset_attention_at_documents: true (per-document attention;
                 the rows hold documents of exponentially distributed length, mean --doc-mean)
  matmul-peak    fp32 and bf16 matmul throughput of this machine (for MFU)
  demo-compiled  demo-step with `compile: true` (torch.compile; not in the default cases,
                 compiling takes minutes on a CPU; the warm-up step absorbs it)

    python bench/bench_train.py [--rounds 3] [--steps 2] [--threads 2] [--cases a,b] [--json out.json]

The default cases add nanogpt-bf16 and demo-bf16 only on CPUs with bf16 matrix units (AMX,
AVX512-BF16; elsewhere bf16 is emulated and slower than fp32). Cases run interleaved for
several rounds (machine load drifts); reports the median step time and tokens/s over all
measured steps, the peak RSS above each process's state before its first step, the demo
step's data-loading share, its fraction of the measured matmul peak of its precision, and
the per-document / plain causal step-time ratio at the long length.
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


def write_random_shards(root: Path, seq_lens: list[int], rows: dict[int, int], doc_mean: float = 0.0) -> None:
    """Token shards in the contract (random ids: this measures speed, not learning). With
    ``doc_mean`` > 0 the rows hold documents of exponentially distributed length (seeded)."""
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
            starts = [[0] for _ in range(n)]
            if doc_mean > 0:
                ends = np.cumsum(np.maximum(rng.exponential(doc_mean, size=int(3 * n * seq_len / doc_mean) + 10), 1))
                ends = ends[ends < n * seq_len].astype(np.int64)
                starts = [[0] + [int(e - r * seq_len) for e in ends if r * seq_len < e < (r + 1) * seq_len]
                          for r in range(n)]
            table = pa.table({
                "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids, pa.uint16()), seq_len),
                "doc_starts": pa.array(starts, pa.list_(pa.int32())),
                "source": pa.array(["bench"] * n),
            }, schema=schema)
            folder = split_dir(root, seq_len, split)
            folder.mkdir(parents=True, exist_ok=True)
            with pa.OSFile(str(folder / shard_name(0)), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
                w.write_table(table, max_chunksize=256)


def case_demo(args, compile_model: bool = False, precision: str = "fp32", phase: int = 0,
              documents: bool = False) -> dict:
    import numpy as np
    import torch

    from common.config import load_config
    from train.config import TrainConfig
    from train.distributed import init_distributed
    from train.trainer import Trainer

    base = load_config(TrainConfig, REPO / args.config)
    seq_len = base.phases[phase].seq_len
    rows_needed = base.tokens_per_batch // seq_len * (args.steps + 2)
    with tempfile.TemporaryDirectory() as tmp:
        seq_lens = sorted({p.seq_len for p in base.phases})
        write_random_shards(Path(tmp), seq_lens, {L: max(base.tokens_per_batch // L * 4, rows_needed) for L in seq_lens},
                            args.doc_mean if documents else 0.0)
        overrides = {"data": {"root": tmp, "tokenizer_sha256": None, "reset_attention_at_documents": documents},
                     "run_dir": str(Path(tmp) / "run"), "resume": "none", "log": {"progress": False},
                     "num_threads": args.threads, "compile": compile_model, "precision": precision}
        config = load_config(TrainConfig, REPO / args.config, overrides)
        trainer = Trainer(config, Path(tmp) / "run", init_distributed())
        trainer.step = trainer.plans[phase].first_step
        before = current_rss_mb()
        records = [trainer.train_step() for _ in range(args.steps + 1)][1:]
        docs_per_row = None
        if documents:
            shards = trainer.batches[phase].shards
            docs_per_row = float(shards.segment_ids(np.arange(len(shards))).max(axis=1).mean() + 1)
    return {"tokens_per_step": config.tokens_per_batch, "seq_len": seq_len, "precision": trainer.precision,
            "micro_batch_rows": trainer.micro_rows(seq_len), "accumulation": trainer.batches[phase].accumulation,
            "step_times": [r["step_s"] for r in records], "data_times": [r["data_s"] for r in records],
            "flops_per_token": trainer.model.flops_per_token(seq_len), "documents_per_row": docs_per_row,
            "peak_mb_above_start": peak_rss_mb() - before, "loss": records[-1]["loss"],
            "threads": torch.get_num_threads()}


def case_matmul(args) -> dict:
    """fp32 matmul throughput, and bf16 on CPUs with bf16 matrix units (emulated bf16 on others
    runs at a few GFLOP/s: a figure of no use that takes minutes)."""
    import torch

    from model.hardware import cpu_has_bf16_matmul

    out = {}
    dtypes = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if cpu_has_bf16_matmul() else [])
    for name, dtype in dtypes:
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
         "demo-step": case_demo, "demo-bf16": lambda a: case_demo(a, precision="bf16"),
         "demo-long": lambda a: case_demo(a, phase=-1), "demo-long-docs": lambda a: case_demo(a, phase=-1, documents=True),
         "matmul-peak": case_matmul, "demo-compiled": lambda a: case_demo(a, True)}


def default_cases() -> list[str]:
    from model.hardware import cpu_has_bf16_matmul

    bf16 = ["nanogpt-bf16", "demo-bf16"] if cpu_has_bf16_matmul() else []
    return ["nanogpt-fp32", "demo-step", *bf16, "demo-long", "demo-long-docs", "matmul-peak"]


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
    parser.add_argument("--cases", help=f"comma-separated, of {', '.join(CASES)} (default: the goals' cases)")
    parser.add_argument("--doc-mean", type=float, default=2000.0,
                        help="mean document length (tokens) of demo-long-docs")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # run one case in this process
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.case:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(CASES[args.case](args)))
        return
    import torch

    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    features = [k for k in ("amx_bf16", "avx512_bf16", "avx512_f", "avx2") if caps.get(k)]
    print(f"# torch {torch.__version__}, {caps.get('cpu_name', 'cpu')}, features: {', '.join(features) or '-'}, "
          f"{args.threads} threads", flush=True)
    # Cases alternate, round after round, so a change in machine load hits them alike.
    raw: dict[str, list[dict]] = {case: [] for case in (args.cases.split(",") if args.cases else default_cases())}
    for round_index in range(args.rounds):
        for case in raw:
            cmd = [sys.executable, __file__, "--case", case, "--steps", str(args.steps),
                   "--threads", str(args.threads), "--config", args.config, "--doc-mean", str(args.doc_mean)]
            env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
            done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{case} failed:\n{done.stderr[-3000:]}")
            raw[case].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1} {case:14s} {json.dumps(raw[case][-1])}", flush=True)
    results = {case: summarize(runs) for case, runs in raw.items()}
    for case, summary in results.items():
        print(f"{case:14s} {json.dumps(summary)}")
    results["ratios"] = ratios(results)
    for key, value in results["ratios"].items():
        print(f"{key:44s} {value:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


def ratios(results: dict) -> dict[str, float]:
    """The goals' figures: demo step vs the nanoGPT-style step and vs the matmul peak of the same
    precision; per-document vs plain causal ALiBi at the long length."""
    out = {}
    peak = results.get("matmul-peak", {})
    for demo_case in ("demo-step", "demo-bf16"):
        demo = results.get(demo_case)
        if not demo:
            continue
        precision = demo["precision"]
        base = results.get(f"nanogpt-{precision}")
        if base:
            out[f"{demo_case}_vs_nanogpt_{precision}_tokens_per_s"] = demo["tokens_per_s"] / base["tokens_per_s"]
            out[f"{demo_case}_vs_nanogpt_{precision}_peak_memory"] = (demo["peak_mb_above_start"]
                                                                      / base["peak_mb_above_start"])
        if f"{precision}_tflops" in peak:
            out[f"{demo_case}_fraction_of_{precision}_matmul_peak"] = demo["tflops"] / peak[f"{precision}_tflops"]
    long, docs = results.get("demo-long"), results.get("demo-long-docs")
    if long and docs:
        out[f"documents_vs_plain_step_time_at_{long['seq_len']}"] = docs["step_s"] / long["step_s"]
        if f"{long['precision']}_tflops" in peak:
            out["demo-long_fraction_of_matmul_peak"] = long["tflops"] / peak[f"{long['precision']}_tflops"]
    compiled, demo = results.get("demo-compiled"), results.get("demo-step")
    if compiled and demo:
        out["compiled_vs_eager_tokens_per_s"] = compiled["tokens_per_s"] / demo["tokens_per_s"]
    return out


if __name__ == "__main__":
    main()
