"""Causal ALiBi attention without a [heads, T, T] bias tensor.

Softmax ignores a constant added to a whole row, so the ALiBi bias -m * (i - j) of query i
and key j can be replaced by m * (j - c) for any per-row constant c. That term is a dot
product: append m / scale to every query and (j - c) to every key, and attention with a
plain causal mask (SDPA's fast kernels, which skip the masked half) computes ALiBi.
Queries go in chunks of ``CHUNK`` with c = the chunk's first position, so the bias near
the diagonal stays below m * CHUNK and fp32 keeps it to ~1e-5 of the exact result
(the full-mask path: ~4e-7). Positions must be exact, so the path is for fp32 only;
bf16 (8-bit mantissa) falls back to the explicit mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

CHUNK = 1024  # queries per kernel call: the error grows with it, the per-call overhead shrinks
MIN_LEN = 512  # below this the explicit mask is small and exact; the fused path barely helps


def use_fused_alibi(q_len: int, past_len: int, has_segments: bool, dtype: torch.dtype) -> bool:
    """Whether a forward pass can take the mask-free path (training and prefill shapes)."""
    return dtype == torch.float32 and past_len == 0 and not has_segments and q_len >= MIN_LEN


def alibi_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, scale: float, dropout_p: float = 0.0
) -> torch.Tensor:
    """softmax(q k^T * scale - slopes * (i - j), causal) v for q, k, v of shape [B, H, T, D].

    ``slopes`` [H] already include any ALiBi distance scaling. Differentiable (autograd
    through the concatenations and SDPA).
    """
    B, H, T, D = q.shape
    q_extra = (slopes.to(q.dtype) / scale).view(1, H, 1, 1).expand(B, H, T, 1)
    q_aug = torch.cat((q, q_extra), dim=-1)
    v_aug = torch.cat((v, v.new_zeros(B, H, T, 1)), dim=-1)  # SDPA's fast kernels want equal head sizes
    positions = torch.arange(T, device=q.device, dtype=q.dtype)
    outputs = []
    for start in range(0, T, CHUNK):
        end = min(start + CHUNK, T)
        k_extra = (positions[:end] - start).view(1, 1, end, 1).expand(B, H, end, 1)
        k_aug = torch.cat((k[:, :, :end], k_extra), dim=-1)
        # Query start + r sees keys 0 .. start + r: causal aligned to the bottom-right corner.
        mask = causal_lower_right(end - start, end) if start else None
        out = F.scaled_dot_product_attention(
            q_aug[:, :, start:end], k_aug, v_aug[:, :, :end], attn_mask=mask, is_causal=not start,
            dropout_p=dropout_p, scale=scale,
        )
        outputs.append(out[..., :D])
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
