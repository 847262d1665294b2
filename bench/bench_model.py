"""Training throughput of the BTLM model against Hugging Face GPT-2 and a nanoGPT-style model.

Forward + backward tokens/s for one GPT-2-small-like shape, every model timed in the
same run, round robin, so machine noise hits them alike; medians over the rounds and
ratios to Hugging Face ``GPT2LMHeadModel`` are printed. Also reported: the cost of ALiBi
and of per-document ALiBi over plain causal attention (whole model, and attention alone),
compiled FlexAttention's forward against the mask-free SDPA path (``--flex``), and MFU on
a CUDA device.

    python bench/bench_model.py                      # d=512, 6 layers, seq 1024, CPU
    python bench/bench_model.py --dtype bf16 --rounds 7
    python bench/bench_model.py --attention-only --seq-len 8192 --n-head 4 --d-model 256 --skip-mask --flex
Needs the bench extra (transformers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import BTLMConfig, BTLMLMHeadModel  # noqa: E402
from model.hardware import cuda_peak_flops, flush_denormals  # noqa: E402


class NanoGPT(nn.Module):
    """nanoGPT's model.py in brief: learned positions, GELU MLP, SDPA causal attention, tied head."""

    def __init__(self, vocab: int, n_pos: int, d: int, n_layer: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(n_pos, d)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                dict(ln_1=nn.LayerNorm(d), c_attn=nn.Linear(d, 3 * d), c_proj=nn.Linear(d, d), ln_2=nn.LayerNorm(d),
                     c_fc=nn.Linear(d, 4 * d), mlp_proj=nn.Linear(4 * d, d))
            )
            for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            q, k, v = b["c_attn"](b["ln_1"](x)).split(x.shape[-1], dim=2)
            q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
            x = x + b["c_proj"](y)
            x = x + b["mlp_proj"](F.gelu(b["c_fc"](b["ln_2"](x)), approximate="tanh"))
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets[:, 1:].reshape(-1))


def build_models(args) -> dict[str, tuple[nn.Module, callable]]:
    d, L, H, T, V = args.d_model, args.n_layer, args.n_head, args.seq_len, 50257
    models = {}
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(vocab_size=V, n_positions=T, n_embd=d, n_layer=L, n_head=H, resid_pdrop=0.0,
                           embd_pdrop=0.0, attn_pdrop=0.0)
    hf_config._attn_implementation = "sdpa"
    hf = GPT2LMHeadModel(hf_config)
    models["hf-gpt2 (sdpa)"] = (hf, lambda m, x: m(input_ids=x, labels=x).loss)
    models["nanogpt (sdpa)"] = (NanoGPT(V, T, d, L, H), lambda m, x: m(x, x))
    common = dict(vocab_size=V, n_positions=max(T, 2048), n_embd=d, n_layer=L, n_head=H, mup_base_width=256,
                  initializer_range=0.073, mup_embeddings_scale=14.6, mup_output_alpha=2.22, mup_scale_qk_dot_by_d=True)
    btlm = BTLMLMHeadModel(BTLMConfig(**common))
    models["btlm alibi+swiglu"] = (btlm, lambda m, x: m(x, labels=x).loss)
    models["btlm alibi+swiglu, fused loss"] = (btlm, lambda m, x: m(x, labels=x, return_logits=False).loss)
    plain = BTLMLMHeadModel(BTLMConfig(**common, position_embedding_type="learned"))
    models["btlm learned pos (plain causal)"] = (plain, lambda m, x: m(x, labels=x).loss)
    return models


def step(model, loss_fn, x, device, dtype) -> None:
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = loss_fn(model, x)
    loss.backward()
    model.zero_grad(set_to_none=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_models(models, args, device, dtype) -> dict[str, list[float]]:
    x = torch.randint(0, 50257, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0)).to(device)
    for model, fn in models.values():
        model.to(device).train()
        step(model, fn, x, device, dtype)  # warm-up (allocations, kernels, ALiBi bias cache)
    results = {name: [] for name in models}
    tokens = args.batch * args.seq_len * args.steps
    for _ in range(args.rounds):
        for name, (model, fn) in models.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(model, fn, x, device, dtype)
            sync(device)
            results[name].append(tokens / (time.perf_counter() - t0))
    return results


def attention_only(args, device, dtype) -> dict[str, float]:
    """Attention forward+backward (ms): plain causal, ALiBi as an explicit mask, mask-free ALiBi,
    per-document ALiBi (documents of ``--doc-mean`` tokens on average), same shapes as the model."""
    from model.attention.positions import AlibiBias
    from model.attention.sdpa import alibi_causal_attention, document_attention, document_spans

    B, H, T, D = args.batch, args.n_head, args.seq_len, args.d_model // args.n_head
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    alibi = AlibiBias(H, None).to(device)
    slopes = alibi.scaled_slopes(T)
    scale = 1.0 / D
    segments = document_segments(B, T, args.doc_mean, device)
    runs = {
        "sdpa causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale),
        "alibi mask-free": lambda: alibi_causal_attention(q, k, v, slopes, scale),
        "alibi documents": lambda: document_attention(q, k, v, document_spans(segments), slopes, scale),
    }
    if not args.skip_mask:
        mask = alibi.bias(T, 0, dtype)
        runs["sdpa alibi mask"] = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    out = {}
    for name, attend in runs.items():
        times = []
        for _ in range(args.rounds * args.steps + 1):
            sync(device)
            t0 = time.perf_counter()
            attend().sum().backward()
            sync(device)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times[1:]) * 1e3
    out["documents per row"] = float((segments[:, 1:] != segments[:, :-1]).sum(1).float().mean() + 1)
    return out


def document_segments(B: int, T: int, mean: float, device) -> torch.Tensor:
    """Segment ids [B, T] of documents with exponentially distributed lengths (seeded)."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.empty(4 * B * T // max(int(mean), 1) + 8).exponential_(1.0 / mean, generator=gen).clamp_min(1)
    ends = lengths.cumsum(0).long()
    starts = torch.zeros(B * T, dtype=torch.long)
    starts[ends[ends < B * T]] = 1
    return starts.view(B, T).cumsum(1).to(device)


def flex_forward(args, device, dtype) -> dict[str, float]:
    """Forward only (CPUs have no FlexAttention backward): compiled FlexAttention with the ALiBi
    score_mod and a causal block mask against the mask-free SDPA path; the first call's compile time."""
    from model.attention import flex
    from model.attention.positions import AlibiBias
    from model.attention.sdpa import alibi_causal_attention

    B, H, T, D = args.batch, args.n_head, args.seq_len, args.d_model // args.n_head
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dtype) for _ in range(3))
    slopes = AlibiBias(H, None).to(device).scaled_slopes(T)
    t0 = time.perf_counter()
    mask = flex.block_mask(T, T, device)
    with torch.no_grad():
        flex.flex_attention(q, k, v, slopes, 1.0 / D, mask)
    sync(device)
    out = {"flex compile s": time.perf_counter() - t0}
    for name, attend in (("flex forward", lambda: flex.flex_attention(q, k, v, slopes, 1.0 / D, mask)),
                         ("sdpa mask-free forward", lambda: alibi_causal_attention(q, k, v, slopes, 1.0 / D))):
        times = []
        with torch.no_grad():
            for _ in range(args.rounds * args.steps + 1):
                sync(device)
                t0 = time.perf_counter()
                attend()
                sync(device)
                times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times[1:]) * 1e3
    return out


def report_models(models, results) -> None:
    ref = statistics.median(results["hf-gpt2 (sdpa)"])
    print(f"{'model':34s} {'params':>12s} {'tok/s median':>13s} {'min':>9s} {'max':>9s} {'vs HF':>7s}")
    for name, values in results.items():
        model = models[name][0]
        n = sum(p.numel() for p in model.parameters())
        med = statistics.median(values)
        print(f"{name:34s} {n:12,d} {med:13.0f} {min(values):9.0f} {max(values):9.0f} {med / ref:7.2f}")
    alibi = statistics.median(results["btlm alibi+swiglu"])
    plain = statistics.median(results["btlm learned pos (plain causal)"])
    print(f"ALiBi cost, whole model: {100 * (plain / alibi - 1):.1f}% more time per token than plain causal")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=2, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--doc-mean", type=float, default=2000.0, help="mean document length of the per-document case")
    p.add_argument("--attention-only", action="store_true", help="only the attention comparisons")
    p.add_argument("--skip-mask", action="store_true", help="leave out the explicit [H, T, T] mask (1 GiB at 8k)")
    p.add_argument("--flex", action="store_true", help="also compiled FlexAttention, forward only (minutes on a CPU)")
    p.add_argument("--keep-denormals", action="store_true",
                   help="do not flush subnormal floats (the trainer flushes them: ALiBi is much slower without)")
    args = p.parse_args()
    if not args.keep_denormals:
        flush_denormals()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {device}, threads={torch.get_num_threads()}, {args.dtype}, "
          f"denormals {'kept' if args.keep_denormals else 'flushed'}, "
          f"d={args.d_model} L={args.n_layer} H={args.n_head} T={args.seq_len} B={args.batch}, "
          f"{args.rounds} rounds x {args.steps} steps")
    if not args.attention_only:
        models = build_models(args)
        results = time_models(models, args, device, dtype)
        report_models(models, results)
    att = attention_only(args, device, dtype)
    causal = att["sdpa causal"]
    line = ", ".join(f"{name} {ms:.1f} ({ms / causal:.2f}x)" for name, ms in att.items() if name.startswith(("alibi", "sdpa a")))
    print(f"attention fwd+bwd (ms, x plain causal): causal {causal:.1f}, {line}; "
          f"{att['documents per row']:.1f} documents per row")
    print(f"per-document ALiBi / mask-free causal ALiBi: {att['alibi documents'] / att['alibi mask-free']:.2f}x")
    if args.flex:
        fx = flex_forward(args, device, dtype)
        print(f"FlexAttention forward {fx['flex forward']:.1f} ms vs mask-free SDPA forward "
              f"{fx['sdpa mask-free forward']:.1f} ms ({fx['flex forward'] / fx['sdpa mask-free forward']:.2f}x); "
              f"first call (compile) {fx['flex compile s']:.1f} s")
    if args.attention_only:
        return 0
    if device.type == "cuda":
        peak = cuda_peak_flops(device)
        btlm = models["btlm alibi+swiglu"][0]
        flops = btlm.flops_per_token(args.seq_len) * statistics.median(results["btlm alibi+swiglu"])
        mfu = f"{100 * flops / peak:.1f}%" if peak else "unknown peak"
        print(f"MFU (btlm alibi+swiglu, {torch.cuda.get_device_name(device)}): {mfu}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
