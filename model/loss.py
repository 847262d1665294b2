"""Language-model loss without materialising the full [tokens, vocab] logits.

The output projection, the logit multiplier and the cross-entropy are fused in one
autograd function that walks over rows in chunks: each chunk's logits live only while
its loss and its gradients (for the hidden states and the output weight) are computed,
so peak memory is one chunk of logits instead of the whole batch. The arithmetic is
the same as the unfused path, so the losses agree to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.precision import compute_dtype

IGNORE_INDEX = -100
CHUNK_ROWS = 128


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Hugging Face convention: position t predicts labels[t + 1]; the last position predicts nothing."""
    pad = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return torch.cat((labels[:, 1:], pad), dim=1)


def lm_loss_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    targets = shift_labels(labels)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def chunked_lm_loss(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, logit_scale: float, chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """Mean cross-entropy of ``(hidden @ weight.T) * logit_scale`` against shifted ``labels``."""
    targets = shift_labels(labels).reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    dtype = compute_dtype(flat.device, flat.dtype)
    return _FusedLinearCrossEntropy.apply(flat, weight, targets, float(logit_scale), chunk_rows, dtype)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, scale, chunk_rows, dtype):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)
            valid_all = targets != IGNORE_INDEX
            n_valid = valid_all.sum()
            inv_n = 1.0 / n_valid.clamp_min(1).float()
            loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            for start in range(0, hidden.shape[0], chunk_rows):
                h = hidden[start : start + chunk_rows].to(dtype)
                t = targets[start : start + chunk_rows]
                valid = valid_all[start : start + chunk_rows]
                logits = (h @ w.t()).float() * scale
                lse = torch.logsumexp(logits, dim=-1)
                tgt = t.clamp_min(0)
                picked = logits.gather(1, tgt[:, None]).squeeze(1)
                loss_sum += ((lse - picked) * valid).sum()
                if need_h or need_w:
                    # d(mean loss)/d(raw logits) = scale * (softmax - onehot) / n_valid
                    g = torch.exp_(logits.sub_(lse[:, None]))
                    g.scatter_add_(1, tgt[:, None], torch.full_like(lse[:, None], -1.0))
                    g.mul_((valid.float() * inv_n * scale)[:, None])
                    g = g.to(dtype)
                    if need_h:
                        grad_h[start : start + chunk_rows] = (g @ w).to(hidden.dtype)
                    if need_w:
                        if g.dtype == torch.float32:
                            grad_w.addmm_(g.t(), h)  # accumulates in place: no [vocab, d] temporary per chunk
                        else:
                            grad_w += (g.t() @ h).float()
            loss = torch.where(n_valid > 0, loss_sum * inv_n, torch.full_like(loss_sum, float("nan")))
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_h, grad_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_loss.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_loss).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None, None

