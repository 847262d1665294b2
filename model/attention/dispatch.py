"""Attention behind one call: ``attend(q, k, v, ctx, scale, dropout_p)``.

A forward pass builds one ``AttentionContext`` (``attention_context``) and hands it to
every layer. The context names the kernel (``choose_kernel``) and carries what that kernel
needs; all kernels compute the same function, causal attention with the ALiBi bias
``-slope_h * (i - j)`` when there are slopes, inside each document when there are segments.
The explicit-mask path (``"mask"``: SDPA with the full bias, or a boolean causal mask) is
the readable reference the other kernels are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.attention import flex, sdpa
from model.attention.positions import AlibiBias


@dataclass(frozen=True)
class AttentionContext:
    """What every layer's attention needs, computed once per forward pass."""

    kernel: str  # see choose_kernel
    slopes: torch.Tensor | None  # ALiBi slopes [n_head], distance scaling included; None = no ALiBi
    past_len: int = 0  # cached positions before the queries
    # Per kernel: the explicit mask ("mask": additive float, or boolean with True = attend), the
    # document spans ("documents", per row: segment starts + [T]) or the BlockMask ("flex").
    structure: object | None = None
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None  # (cos, sin) of the queries' positions


def choose_kernel(device: torch.device, q_len: int, past_len: int, alibi: bool, documents: bool,
                  dropout: bool) -> str:
    """The attention kernel of a forward pass: the first row that matches.

    | case                                                              | kernel      | how                                              |
    |-------------------------------------------------------------------|-------------|--------------------------------------------------|
    | ALiBi or documents, no cache, q_len > 1, no dropout, FlexAttention | "flex"      | one compiled kernel, score_mod + BlockMask (CUDA) |
    | ALiBi, no documents, q_len >= MIN_LEN                              | "alibi"     | mask-free SDPA, bias as extra q/k columns        |
    | documents                                                         | "documents" | each long document alone, short ones in blocks   |
    | ALiBi (short input, decode step)                                  | "mask"      | SDPA with the explicit ALiBi + causal bias       |
    | no ALiBi, no cache                                                | "causal"    | SDPA's is_causal fast path                       |
    | no ALiBi, one query after the cache                               | "full"      | SDPA, no mask: it sees the whole cache           |
    | no ALiBi, several queries after the cache                         | "mask"      | SDPA with a boolean causal mask                  |
    """
    if (alibi or documents) and past_len == 0 and q_len > 1 and not dropout and flex.available(device):
        return "flex"
    if alibi and not documents and q_len >= sdpa.MIN_LEN:
        return "alibi"
    if documents:
        return "documents"
    if alibi:
        return "mask"
    if past_len == 0:
        return "causal"
    return "full" if q_len == 1 else "mask"


def attention_context(q_len: int, past_len: int, segment_ids: torch.Tensor | None, alibi: AlibiBias | None,
                      rotary: tuple[torch.Tensor, torch.Tensor] | None, dtype: torch.dtype, device: torch.device,
                      dropout: bool) -> AttentionContext:
    """The context of a forward pass over ``q_len`` new positions after ``past_len`` cached ones.

    ``dtype`` is the compute dtype (an explicit ALiBi mask is built in it).
    """
    kernel = choose_kernel(device, q_len, past_len, alibi is not None, segment_ids is not None, dropout)
    slopes = alibi.scaled_slopes(past_len + q_len) if alibi is not None else None
    structure = None
    if kernel == "flex":
        structure = flex.block_mask(q_len, q_len, device, segment_ids)
    elif kernel == "documents":
        structure = sdpa.document_spans(segment_ids)
    elif kernel == "mask" and alibi is not None:
        structure = alibi.bias(q_len, past_len, dtype)  # ALiBi + causal, [1, H, T, past+T]
    elif kernel == "mask":
        q_pos = torch.arange(past_len, past_len + q_len, device=device)[:, None]
        structure = (torch.arange(past_len + q_len, device=device)[None, :] <= q_pos)[None, None]
    return AttentionContext(kernel, slopes, past_len, structure, rotary)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: AttentionContext, scale: float,
           dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v for q [B, H, Tq, D] and k, v [B, H, past_len + Tq, D]."""
    if ctx.kernel == "alibi":
        return sdpa.alibi_causal_attention(q, k, v, ctx.slopes, scale, dropout_p, ctx.past_len)
    if ctx.kernel == "documents":
        return sdpa.document_attention(q, k, v, ctx.structure, ctx.slopes, scale, dropout_p)
    if ctx.kernel == "flex":
        return flex.flex_attention(q, k, v, ctx.slopes, scale, ctx.structure)
    return masked_attention(q, k, v, ctx.structure, ctx.kernel == "causal", scale, dropout_p)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
                     scale: float, dropout_p: float = 0.0) -> torch.Tensor:
    """The reference: SDPA with an explicit mask (additive float or boolean), SDPA's causal mask, or none."""
    if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal,
                                          scale=scale)
