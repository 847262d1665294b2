"""Training throughput and MFU of a BTLM, one JSON line per sequence length (bench/gpu_check.sh runs it).

Each step is what the trainer does: bf16 autocast (on CUDA and on CPUs with bf16 matrix
units), forward with the chunked loss, backward, gradient clipping, AdamW over the muP
groups. Token ids are random: this measures speed, not learning. MFU = model FLOPs per
token (6 x matmul parameters + attention, ``flops_per_token``) x tokens/s / the device's
dense bf16 peak (model/hardware.py), or the measured matmul peak on a CPU.

    python bench/gpu_throughput.py                                  # ~1.3B BTLM at 2,048 and 8,192 tokens
    python bench/gpu_throughput.py --model tiny --device cpu --steps 2 --seq-lens 64,256   # the code path on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import BTLMConfig, BTLMLMHeadModel  # noqa: E402
from model.hardware import cpu_has_bf16_matmul, cuda_peak_flops, flush_denormals, measured_matmul_flops  # noqa: E402

# A ~1.3B BTLM: BTLM-3B-8K's recipe at width 2,048 (head 128), 24 layers.
MODELS = {
    "1.3b": ("configs/model/btlm-3b-8k.yaml", {"n_embd": 2048, "n_layer": 24, "n_head": 16, "n_inner": 5461}),
    "tiny": ("configs/model/btlm-demo.yaml", {"n_embd": 64, "n_layer": 2, "n_head": 2, "n_inner": 170,
                                               "mup_base_width": 64}),
}


def build(name: str, device: torch.device) -> BTLMLMHeadModel:
    path, overrides = MODELS[name]
    torch.manual_seed(0)
    return BTLMLMHeadModel(BTLMConfig.from_yaml(REPO / path, overrides=overrides)).to(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    units = [k for k in ("amx_bf16", "avx512_bf16", "avx512_f", "avx2") if caps.get(k)]
    return f"{caps.get('cpu_name', 'cpu')} ({', '.join(units) or 'no vector extensions reported'})"


def attention_kernel(model: BTLMLMHeadModel, seq_len: int, device: torch.device, dtype: torch.dtype) -> str:
    """The kernel the model picks for a training sequence of this length (model/attention/dispatch.py: choose_kernel)."""
    x = torch.zeros(1, seq_len, model.config.n_embd, device=device, dtype=dtype)
    return model.transformer.attention_context(seq_len, 0, None, x).kernel


def measure(model, seq_len: int, tokens: int, steps: int, warmup: int, device: torch.device, bf16: bool,
            peak: float | None) -> dict:
    batch = max(tokens // seq_len, 1)
    groups = model.get_mup_param_groups(1e-3, 0.1)
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), **fused)
    gen = torch.Generator(device="cpu").manual_seed(seq_len)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, loss = [], None
    warmup_start = time.perf_counter()
    for i in range(warmup + steps):
        ids = torch.randint(0, model.config.vocab_size, (batch, seq_len), generator=gen).to(device)
        sync()
        t0 = time.perf_counter()
        with autocast:
            loss = model(ids, labels=ids, return_logits=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if i == warmup - 1:
            warmup_s = time.perf_counter() - warmup_start
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    tokens_per_s = batch * seq_len / step_s
    flops = model.flops_per_token(seq_len) * tokens_per_s
    return {
        "seq_len": seq_len, "batch": batch, "steps": steps, "step_s": step_s, "tokens_per_s": tokens_per_s,
        "tflops": flops / 1e12, "peak_tflops": peak / 1e12 if peak else None, "mfu": flops / peak if peak else None,
        "warmup_s": warmup_s if warmup else 0.0, "loss": loss.item(),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="1.3b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seq-lens", default="2048,8192")
    p.add_argument("--tokens", type=int, default=16384, help="tokens per step (one forward pass)")
    p.add_argument("--steps", type=int, default=8, help="measured steps (median)")
    p.add_argument("--warmup", type=int, default=3, help="steps before measuring (compilation, allocator)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--compile", choices=["auto", "blocks", "none"], default="auto",
                   help="torch.compile each transformer block (auto: on CUDA)")
    p.add_argument("--peak-tflops", type=float, help="override the device's peak (dense bf16 on GPUs)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    flush_denormals()
    bf16 = args.precision == "bf16" or (args.precision == "auto" and (device.type == "cuda" or cpu_has_bf16_matmul()))
    if args.peak_tflops:
        peak = args.peak_tflops * 1e12
    elif device.type == "cuda":
        peak = cuda_peak_flops(device)
    else:
        peak = measured_matmul_flops("bf16" if bf16 else "fp32")
    compile_blocks = args.compile == "blocks" or (args.compile == "auto" and device.type == "cuda")
    name = device_name(device)
    for seq_len in (int(s) for s in args.seq_lens.split(",")):
        model = build(args.model, device).train()
        kernel = attention_kernel(model, seq_len, device, torch.bfloat16 if bf16 else torch.float32)
        if compile_blocks:
            for block in model.transformer.h:
                block.compile()
        result = measure(model, seq_len, args.tokens, args.steps, args.warmup, device, bf16, peak)
        line = {"model": f"btlm-{args.model}", "parameters": model.num_parameters(), "device": name,
                "precision": "bf16" if bf16 else "fp32", "attention": kernel, "compiled": compile_blocks,
                "torch": torch.__version__, **result}
        print(json.dumps(line), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
