"""ALiBi attention on SDPA's kernels without a [heads, T, T] bias tensor, and per-document attention.

Softmax ignores a constant added to a whole row, so the ALiBi bias -m * (i - j) of query i
and key j can be replaced by m * (j - c) for any per-row constant c. That term is a dot
product: append a column to every query and key, and attention with a plain causal mask
(SDPA's fast kernels, which skip the masked half) computes ALiBi. Queries go in chunks of
``CHUNK`` with c = the chunk's first position, so the bias near the diagonal stays below
m * CHUNK and the fp32 accumulator of the kernels keeps it to ~1e-5 of the exact result.

- fp32 / fp64: queries get m / scale, keys the exact position j - c (one column each).
- bf16 / fp16 hold positions and slopes only to 8 / 11 bits, so the keys carry the whole
  term m / scale * (j - c), computed in fp32 and split into ``_PARTS`` low-precision parts
  whose sum keeps fp32's 24 bits (the kernels add them back in fp32); queries get ones.

Per-document attention (``segment_ids``) never builds a [T, T] mask either: ALiBi depends
on i - j only, so each document is attended on its own slice of q, k, v; runs of short
documents share one small block with an explicit mask, so tiny documents cost few calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

CHUNK = 1024  # queries per kernel call: the error grows with it, the per-call overhead shrinks
# The CPU flash kernel and its backward with log-sum-exps (private ATen ops; absent: the public path).
_flash_cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_flash_cpu_backward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
SPLIT_CAUSAL = _flash_cpu is not None and _flash_cpu_backward is not None
MIN_LEN = 512  # below this the explicit mask is small and exact; the fused path barely helps
SHORT_BLOCK = 512  # consecutive documents shorter than MIN_LEN are attended together up to this span
_PARTS = {torch.bfloat16: 3, torch.float16: 2}  # low-precision parts that add up to an fp32 bias


def alibi_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, scale: float, dropout_p: float = 0.0,
    q_offset: int = 0,
) -> torch.Tensor:
    """softmax(q k^T * scale - slopes * (i - j), causal) v.

    q [B, H, Tq, D] holds positions q_offset .. q_offset + Tq - 1, k and v [B, H, q_offset + Tq, D]
    (a key/value cache followed by the new positions). ``slopes`` [H] already include any
    ALiBi distance scaling. Differentiable (autograd through the concatenations and SDPA).
    """
    B, H, T, D = q.shape
    if k.shape[2] != q_offset + T:
        raise ValueError(f"{k.shape[2]} keys for {T} queries after {q_offset} cached positions")
    if SPLIT_CAUSAL and q.device.type == "cpu" and dropout_p == 0.0:
        return _SplitCausalALiBi.apply(q, k, v, slopes, scale, q_offset)
    outputs = []
    for start, end, first, last, q_aug, k_aug, v_aug in _chunks(q, k, v, slopes, scale, q_offset):
        # Query first + r sees keys 0 .. first + r: causal aligned to the bottom-right corner.
        mask = causal_lower_right(end - start, last) if first else None
        out = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, attn_mask=mask, is_causal=not first,
                                             dropout_p=dropout_p, scale=scale)
        outputs.append(out[..., :D])
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


def _chunks(q, k, v, slopes, scale, q_offset: int):
    """The query chunks of CHUNK queries: (start, end, first, last, q_aug, k_aug, v_aug) each, where
    start..end index q and first..last are the chunk's absolute positions (keys 0 .. last - 1)."""
    T = q.shape[2]
    for start in range(0, T, CHUNK):
        end = min(start + CHUNK, T)
        first, last = q_offset + start, q_offset + end
        yield (start, end, first, last, *_augment(q[:, :, start:end], k, v, slopes, scale, first, last))


def _augment(q, k, v, slopes, scale, first: int, last: int):
    """q [B, H, n, D] at positions first.. plus the ALiBi columns; k, v over positions 0 .. last - 1."""
    B, H, n, _ = q.shape
    if q.dtype in _PARTS:
        bias = (slopes.float() / scale)[:, None] * torch.arange(-first, last - first, device=q.device)[None, :]
        k_extra = _split(bias, q.dtype).unsqueeze(0).expand(B, H, last, _PARTS[q.dtype])
        q_extra = q.new_ones(B, H, n, _PARTS[q.dtype])
    else:
        q_extra = (slopes.to(q.dtype) / scale).view(1, H, 1, 1).expand(B, H, n, 1)
        k_extra = torch.arange(-first, last - first, device=q.device, dtype=q.dtype).view(1, 1, last, 1)
        k_extra = k_extra.expand(B, H, last, 1)
    q_aug = torch.cat((q, q_extra), dim=-1)
    k_aug = torch.cat((k[:, :, :last], k_extra), dim=-1)
    v_aug = torch.cat((v[:, :, :last], v.new_zeros(B, H, last, q_extra.shape[-1])), dim=-1)
    return q_aug, k_aug, v_aug


class _SplitCausalALiBi(torch.autograd.Function):
    """CPU: each query chunk attends to the keys before it (no mask) and to its own square
    (causal) in two flash-kernel calls whose softmaxes are merged by their log-sum-exps, so no
    [n, T] mask is built and the masked half of every square is skipped. The backward runs
    the flash backward of both parts with the merged output and log-sum-exp, which is exact."""

    @staticmethod
    def forward(ctx, q, k, v, slopes, scale, q_offset):
        B, H, T, D = q.shape
        outs, lses = [], []
        for _, _, first, _, q_aug, k_aug, v_aug in _chunks(q, k, v, slopes, scale, q_offset):
            out, lse = _flash_cpu(q_aug, k_aug[:, :, first:], v_aug[:, :, first:], 0.0, True, scale=scale)
            if first:
                out_past, lse_past = _flash_cpu(q_aug, k_aug[:, :, :first], v_aug[:, :, :first], 0.0, False, scale=scale)
                merged = torch.logaddexp(lse, lse_past)
                out = (out.float() * (lse - merged).exp_().unsqueeze(-1)
                       + out_past.float() * (lse_past - merged).exp_().unsqueeze(-1)).to(q.dtype)
                lse = merged
            outs.append(out)
            lses.append(lse)
        ctx.save_for_backward(q, k, v, slopes, *outs, *lses)
        ctx.scale, ctx.q_offset = scale, q_offset
        y = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        return y[..., :D]

    @staticmethod
    def backward(ctx, grad):
        q, k, v, slopes, *saved = ctx.saved_tensors
        outs, lses = saved[: len(saved) // 2], saved[len(saved) // 2 :]
        scale, q_offset = ctx.scale, ctx.q_offset
        B, H, T, D = q.shape
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        chunks = _chunks(q, k, v, slopes, scale, q_offset)
        for i, (start, end, first, last, q_aug, k_aug, v_aug) in enumerate(chunks):
            g = F.pad(grad[:, :, start:end], (0, q_aug.shape[-1] - D))
            parts = [(first, last, True)] + ([(0, first, False)] if first else [])
            gq = None
            for lo, hi, causal in parts:
                gq_part, gk, gv = _flash_cpu_backward(g, q_aug, k_aug[:, :, lo:hi], v_aug[:, :, lo:hi], outs[i], lses[i],
                                                      0.0, causal, scale=scale)
                dk[:, :, lo:hi] += gk[..., :D]
                dv[:, :, lo:hi] += gv[..., :D]
                gq = gq_part if gq is None else gq + gq_part
            dq[:, :, start:end] = gq[..., :D]
        return dq, dk, dv, None, None, None


def _split(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 values [..., n] -> [..., n, parts] in ``dtype`` whose fp32 sum is the value to ~2^-24."""
    parts, rest = [], values.clamp_min(-torch.finfo(dtype).max / 4)  # far keys: -huge, never -inf (inf - inf)
    for _ in range(_PARTS[dtype]):
        part = rest.to(dtype)
        parts.append(part)
        rest = rest - part.float()
    return torch.stack(parts, dim=-1)


def document_spans(segment_ids: torch.Tensor) -> list[list[int]]:
    """Per row, the positions where a new segment starts, plus the row length: [[0, s1, ..., T], ...]."""
    T = segment_ids.shape[1]
    change = (segment_ids[:, 1:] != segment_ids[:, :-1]).cpu()
    return [[0, *(torch.nonzero(row).flatten() + 1).tolist(), T] for row in change]


def document_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: list[list[int]], slopes: torch.Tensor | None,
    scale: float, dropout_p: float = 0.0,
) -> torch.Tensor:
    """Causal attention within each document of ``spans`` (``document_spans(segment_ids)``, computed once
    per forward, not per layer); ALiBi when ``slopes`` [H] are given.

    Documents of MIN_LEN tokens or more run the mask-free kernels on their own slice; runs of
    shorter ones go together in blocks of up to SHORT_BLOCK tokens with an explicit mask.
    """
    B, H, T, D = q.shape
    rows = []
    for b, starts in enumerate(spans):
        pieces = _pieces(starts)
        sizes = [e - s for s, e, _ in pieces]
        qs, ks, vs = (t[b : b + 1].split(sizes, dim=2) for t in (q, k, v))
        outs = []
        for (s, e, docs), qp, kp, vp in zip(pieces, qs, ks, vs):
            if len(docs) == 2 and e - s >= MIN_LEN:  # one long document
                if slopes is None:
                    outs.append(F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, dropout_p=dropout_p,
                                                               scale=scale))
                else:
                    outs.append(alibi_causal_attention(qp, kp, vp, slopes, scale, dropout_p))
            else:
                mask = _block_mask(docs, slopes, qp.dtype, qp.device)
                outs.append(F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, dropout_p=dropout_p,
                                                           scale=scale))
        rows.append(outs[0] if len(outs) == 1 else torch.cat(outs, dim=2))
    return rows[0] if B == 1 else torch.cat(rows, dim=0)


def _pieces(starts: list[int]) -> list[tuple[int, int, list[int]]]:
    """Split a row at document starts into (start, end, document starts relative to start + [length]) pieces:
    each long document alone, consecutive short ones together up to SHORT_BLOCK tokens."""
    pieces: list[tuple[int, int, list[int]]] = []
    group: list[int] = []  # absolute starts of the short documents collected so far
    for s, e in zip(starts[:-1], starts[1:]):
        if group and (e - s >= MIN_LEN or e - group[0] > SHORT_BLOCK):
            pieces.append((group[0], s, [g - group[0] for g in group] + [s - group[0]]))
            group = []
        if e - s >= MIN_LEN:
            pieces.append((s, e, [0, e - s]))
        else:
            group.append(s)
    if group:
        pieces.append((group[0], starts[-1], [g - group[0] for g in group] + [starts[-1] - group[0]]))
    return pieces


def _block_mask(doc_starts: list[int], slopes: torch.Tensor | None, dtype: torch.dtype, device) -> torch.Tensor:
    """Additive mask [1, H or 1, n, n] of a block: ALiBi (if slopes) within each document, -inf elsewhere.

    fp32 on CPU whatever the inputs' dtype (SDPA accepts it), so low-precision inputs keep exact biases."""
    n = doc_starts[-1]
    pos = torch.arange(n, device=device)
    doc = torch.zeros(n, dtype=torch.long, device=device)
    doc[torch.tensor(doc_starts[1:-1], dtype=torch.long, device=device)] = 1
    doc = doc.cumsum(0)
    distance = (pos[:, None] - pos[None, :]).float()
    allowed = (distance >= 0) & (doc[:, None] == doc[None, :])
    if slopes is None:
        bias = torch.zeros(1, 1, n, n, device=device)
    else:
        bias = -slopes.float().view(1, -1, 1, 1) * distance
    bias = bias.masked_fill(~allowed, float("-inf"))
    return bias if device.type == "cpu" else bias.to(dtype)
