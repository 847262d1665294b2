"""FlexAttention: ALiBi, causal and per-document masks in one compiled kernel, with no [T, T] tensor.

The ALiBi bias -slope_h * (i - j) is a ``score_mod`` evaluated inside the kernel; causal and
document structure is a ``BlockMask``, so blocks above the diagonal or across documents
are skipped, not computed and thrown away. On CUDA ``torch.compile`` turns this into one
Triton kernel for forward and backward. On CPU (torch 2.13) FlexAttention has no backward
and its forward needs a C++ compile per shape, so CPUs use the SDPA paths of sdpa.py;
the eager forward here is what the tests compare against the reference on any machine.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

_compiled = None
_causal_masks: OrderedDict[tuple, object] = OrderedDict()
MAX_CACHED = 4


def available(device: torch.device) -> bool:
    """FlexAttention is the kernel of choice on CUDA when this torch has it (2.5+)."""
    if device.type != "cuda":
        return False
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def _kernel(compiled: bool):
    global _compiled
    from torch.nn.attention.flex_attention import flex_attention

    if not compiled:
        return flex_attention
    if _compiled is None:
        _compiled = torch.compile(flex_attention, dynamic=False)
    return _compiled


def block_mask(q_len: int, kv_len: int, device: torch.device, segment_ids: torch.Tensor | None = None):
    """Causal (query i at position kv_len - q_len + i), and within one segment when ``segment_ids`` [B, T]."""
    from torch.nn.attention.flex_attention import create_block_mask

    offset = kv_len - q_len
    if segment_ids is not None:
        if offset:
            raise ValueError("per-document attention takes no cached positions")

        def document(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (segment_ids[b, q_idx] == segment_ids[b, kv_idx])

        return create_block_mask(document, segment_ids.shape[0], None, q_len, kv_len, device=device)
    key = (q_len, kv_len, str(device), torch.is_inference_mode_enabled())
    mask = _causal_masks.get(key)
    if mask is None:
        def causal(b, h, q_idx, kv_idx):
            return q_idx + offset >= kv_idx

        mask = _causal_masks[key] = create_block_mask(causal, None, None, q_len, kv_len, device=device)
        while len(_causal_masks) > MAX_CACHED:
            _causal_masks.popitem(last=False)
    return mask


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor | None, scale: float,
                   mask, compiled: bool = True) -> torch.Tensor:
    """softmax(q k^T * scale - slopes * (i - j)) v under ``mask`` (from block_mask); plain when slopes is None.

    q [B, H, Tq, D] holds the last Tq of the k, v positions [B, H, Tk, D]; slopes [H] include
    any ALiBi distance scaling.
    """
    score_mod = None
    if slopes is not None:
        slopes = slopes.float()
        offset = torch.tensor(k.shape[2] - q.shape[2], device=q.device)  # a tensor: no recompile per offset

        def score_mod(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * (q_idx + offset - kv_idx)

    return _kernel(compiled)(q, k, v, score_mod=score_mod, block_mask=mask, scale=scale)
