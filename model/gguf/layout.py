"""How a project model maps onto llama.cpp's graphs: ``jais`` for ALiBi, ``stablelm`` for rotary.

llama.cpp has no BTLM architecture, but its ``jais`` graph (Cerebras lineage) is the same
network: pre-LN blocks with LayerNorm and biases everywhere, fused QKV, attention scaled by
1/d_head, ALiBi from ``jais.attention.max_alibi_bias``, and a SwiGLU MLP computing
``ffn_down(ffn_up(x) * silu(ffn_gate(x)))`` (up = ``c_fc``, gate = ``c_fc2``). Its
``stablelm`` graph is the rotary variant: NeoX-style partial rotary, LayerNorm with bias, no
biases on the attention output and MLP, attention scaled by 1/sqrt(d_head).

Neither graph has a place for the muP multipliers, so they are folded into the weights
(token embedding x ``config.embedding_scale``; output matrix x ``config.output_logits_scale``,
written out even when tied), and a project attention scale that differs
from the graph's is folded into the query rows. Settings neither graph can express are
refused by name instead of writing a file that runs wrong.

The SwiGLU inner dimension can be zero-padded to a multiple of the quantization block:
padded rows of ``c_fc`` and ``c_fc2`` (and their biases) are zero, so the padded units
compute ``0 * silu(0) = 0``, and the padded columns of ``c_proj`` are zero too; the function
is unchanged and every matrix becomes block-quantizable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from model.config import BTLMConfig

JAIS = "jais"
STABLELM = "stablelm"
SLOPES_NAME = "transformer.relative_pe.slopes"


class GGUFExportError(ValueError):
    """The checkpoint uses a setting llama.cpp cannot represent, or its files are unusable."""


@dataclass
class TensorSpec:
    """One GGUF tensor: its name, numpy shape ([out, in] for matrices) and a loader of its values."""

    name: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]  # float32, C-contiguous, called once when the tensor is written


def architecture(config: BTLMConfig, origin: str) -> str:
    """The llama.cpp architecture for ``config``, or a GGUFExportError naming the setting."""

    def refuse(setting: str, why: str) -> None:
        raise GGUFExportError(f"{origin}: {setting}: {why}; llama.cpp cannot run this model as exported")

    if config.activation_function != "swiglu":
        refuse(f"activation_function={config.activation_function!r}",
               "llama.cpp's jais and stablelm graphs compute a gated SiLU (swiglu) MLP only")
    pe = config.position_embedding_type
    if pe == "learned":
        refuse("position_embedding_type='learned'", "neither the jais (ALiBi) nor the stablelm (rotary) graph has a learned position table")
    if pe == "alibi":
        if config.alibi_scaling is not None:
            refuse(f"alibi_scaling={config.alibi_scaling!r}", "llama.cpp's ALiBi has no distance scaling")
        return JAIS
    if config.use_bias:
        refuse("use_bias=true with position_embedding_type='rope'",
               "a rotary model exports as llama.cpp's stablelm, whose attention output and MLP have no biases")
    return STABLELM


def llama_alibi_slopes(n_head: int, max_bias: float) -> list[float]:
    """The per-head ALiBi slopes llama.cpp derives from ``max_alibi_bias`` (ggml_soft_max_ext)."""
    n_head_log2 = 2 ** math.floor(math.log2(n_head))
    m0 = 2.0 ** (-max_bias / n_head_log2)
    m1 = 2.0 ** (-(max_bias / 2.0) / n_head_log2)
    return [m0 ** (h + 1) if h < n_head_log2 else m1 ** (2 * (h - n_head_log2) + 1) for h in range(n_head)]


def max_alibi_bias(slopes: torch.Tensor, n_head: int, origin: str) -> float:
    """The ``max_alibi_bias`` that reproduces ``slopes``; refuses slopes llama.cpp cannot produce."""
    values = slopes.double().flatten().tolist()
    if len(values) != n_head or not all(v > 0 for v in values):
        raise GGUFExportError(f"{origin}: {SLOPES_NAME} must hold {n_head} positive slopes, got {values[:4]}...")
    max_bias = -math.log2(values[0]) * 2 ** math.floor(math.log2(n_head))
    expected = llama_alibi_slopes(n_head, max_bias)
    if not all(math.isclose(v, e, rel_tol=1e-5) for v, e in zip(values, expected)):
        raise GGUFExportError(
            f"{origin}: {SLOPES_NAME} are not the geometric ALiBi slopes llama.cpp computes from one "
            f"max_alibi_bias (closest: {max_bias:.4f} gives {expected[:3]}..., file has {values[:3]}...)"
        )
    return max_bias


def llama_attention_scale(arch: str, head_dim: int) -> float:
    return 1.0 / head_dim if arch == JAIS else head_dim**-0.5


def padded_size(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-pad the first dimension of ``t`` to ``n``."""
    if t.shape[0] == n:
        return t
    return torch.cat((t, t.new_zeros((n - t.shape[0], *t.shape[1:]))), dim=0)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).numpy())


def tensor_specs(
    config: BTLMConfig, arch: str, read: Callable[[str], torch.Tensor], n_ff: int
) -> list[TensorSpec]:
    """Every tensor of the GGUF file, in writing order.

    ``read(name)`` gives a fresh float32 tensor in the native layout ([out, in]); ``n_ff`` is
    the (possibly zero-padded) SwiGLU inner dimension. Loaders read lazily, so a
    multi-billion-parameter checkpoint is converted one tensor at a time.
    """
    d, vocab = config.n_embd, config.vocab_size
    q_fold = config.attention_scale / llama_attention_scale(arch, config.head_dim)
    emb_scale = config.embedding_scale
    out_scale = config.output_logits_scale
    head_name = "transformer.wte.weight" if config.tie_word_embeddings else "lm_head.weight"

    def plain(name: str, pad_to: int | None = None) -> Callable[[], np.ndarray]:
        return lambda: _numpy(read(name) if pad_to is None else _rows(read(name), pad_to))

    def bias(name: str, size: int, pad_to: int | None = None) -> Callable[[], np.ndarray]:
        # A model without linear biases is the same function with zero biases (jais requires them).
        return plain(name, pad_to) if config.use_bias else (lambda: np.zeros(pad_to or size, dtype=np.float32))

    def query_folded(name: str) -> torch.Tensor:
        t = read(name)  # c_attn weight [3d, d] or bias [3d]: the first d rows make the queries
        if q_fold != 1.0:
            t[:d] *= q_fold
        return t

    specs = [
        TensorSpec("token_embd.weight", (vocab, d), lambda: _numpy(read("transformer.wte.weight").mul_(emb_scale))),
        TensorSpec("output_norm.weight", (d,), plain("transformer.ln_f.weight")),
        TensorSpec("output_norm.bias", (d,), plain("transformer.ln_f.bias")),
        TensorSpec("output.weight", (vocab, d), lambda: _numpy(read(head_name).mul_(out_scale))),
    ]
    for i in range(config.n_layer):
        p, b = f"transformer.h.{i}.", f"blk.{i}."
        qkv_w = p + "attn.c_attn.weight"
        specs += [
            TensorSpec(b + "attn_norm.weight", (d,), plain(p + "ln_1.weight")),
            TensorSpec(b + "attn_norm.bias", (d,), plain(p + "ln_1.bias")),
        ]
        if arch == JAIS:
            qkv_b = p + "attn.c_attn.bias"
            specs += [
                TensorSpec(b + "attn_qkv.weight", (3 * d, d), lambda n=qkv_w: _numpy(query_folded(n))),
                TensorSpec(b + "attn_qkv.bias", (3 * d,), (lambda n=qkv_b: _numpy(query_folded(n)))
                           if config.use_bias else bias(qkv_b, 3 * d)),
                TensorSpec(b + "attn_output.weight", (d, d), plain(p + "attn.c_proj.weight")),
                TensorSpec(b + "attn_output.bias", (d,), bias(p + "attn.c_proj.bias", d)),
            ]
        else:  # stablelm: separate Q, K, V, as llama.cpp's own converter writes them
            specs += [
                TensorSpec(b + f"attn_{part}.weight", (d, d),
                           lambda j=j, n=qkv_w: _numpy(query_folded(n)[j * d:(j + 1) * d]))
                for j, part in enumerate("qkv")
            ]
            specs.append(TensorSpec(b + "attn_output.weight", (d, d), plain(p + "attn.c_proj.weight")))
        specs += [
            TensorSpec(b + "ffn_norm.weight", (d,), plain(p + "ln_2.weight")),
            TensorSpec(b + "ffn_norm.bias", (d,), plain(p + "ln_2.bias")),
            TensorSpec(b + "ffn_up.weight", (n_ff, d), plain(p + "mlp.c_fc.weight", n_ff)),
            TensorSpec(b + "ffn_gate.weight", (n_ff, d), plain(p + "mlp.c_fc2.weight", n_ff)),
            TensorSpec(b + "ffn_down.weight", (d, n_ff),
                       lambda n=p + "mlp.c_proj.weight": _numpy(_rows(read(n).t(), n_ff).t())),
        ]
        if arch == JAIS:
            specs += [
                TensorSpec(b + "ffn_up.bias", (n_ff,), bias(p + "mlp.c_fc.bias", config.n_inner, n_ff)),
                TensorSpec(b + "ffn_gate.bias", (n_ff,), bias(p + "mlp.c_fc2.bias", config.n_inner, n_ff)),
                TensorSpec(b + "ffn_down.bias", (d,), bias(p + "mlp.c_proj.bias", d)),
            ]
    return specs


def add_hyperparameters(writer, config: BTLMConfig, arch: str, n_ff: int, alibi_max_bias: float | None) -> None:
    """The ``<arch>.*`` keys llama.cpp reads for this graph."""
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.n_head)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    if arch == JAIS:
        writer.add_max_alibi_bias(alibi_max_bias)
    else:
        writer.add_rope_dimension_count(config.rotary_dim)
        writer.add_rope_freq_base(config.rotary_base)
        writer.add_parallel_residual(False)  # ln_2 feeds the MLP: sequential residual
