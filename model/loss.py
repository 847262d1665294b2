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

from model.hardware import compute_dtype

IGNORE_INDEX = -100
CHUNK_ROWS = 128  # rows per log-softmax on CPUs: a [128, 50257] fp32 block (26 MB) stays in a 32 MB L3
BLOCK_CHUNKS = 4  # chunks per weight-gradient update on CPUs (K = 512 rows per matmul)
DEVICE_CHUNK_ROWS = 2048  # on GPUs: fewer, larger kernels


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Hugging Face convention: position t predicts labels[t + 1]; the last position predicts nothing."""
    pad = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return torch.cat((labels[:, 1:], pad), dim=1)


def lm_loss_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    targets = shift_labels(labels)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def chunked_lm_loss(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, logit_scale: float,
    chunk_rows: int | None = None, block_chunks: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``(hidden @ weight.T) * logit_scale`` against shifted ``labels``."""
    targets = shift_labels(labels).reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    dtype = compute_dtype(flat.device, flat.dtype)
    cpu = flat.device.type == "cpu"
    rows = chunk_rows or (CHUNK_ROWS if cpu else DEVICE_CHUNK_ROWS)
    block = block_chunks or (BLOCK_CHUNKS if cpu else 1)
    return _FusedLinearCrossEntropy.apply(flat, weight, targets, float(logit_scale), rows, block, dtype)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Per chunk of rows: logits = (h * scale) @ W^T, an in-place log-softmax (one pass that
    stays in cache row by row), the loss gathered from it, then exp in place gives the softmax
    and the gradient softmax - onehot. The 1 / n_valid and the logit scale multiply the two
    gradient matmuls (alpha), not the [rows, vocab] block. The weight gradient is accumulated
    once per ``block`` chunks, so its [vocab, d] accumulator is read and written fewer times."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, scale, chunk_rows, block, dtype):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_grad = need_h or need_w
        N, V = hidden.shape[0], weight.shape[0]
        block_rows = min(chunk_rows * block if need_grad else chunk_rows, N)
        device = hidden.device
        with torch.autocast(device.type, enabled=False):
            w = weight.to(dtype)
            scaled = (hidden * scale).to(dtype)
            valid_all = targets != IGNORE_INDEX
            n_valid = valid_all.sum()
            alpha = float(scale / max(int(n_valid), 1))  # d(mean loss)/d(raw logits) = alpha * (softmax - onehot)
            loss_sum = torch.zeros((), dtype=torch.float32, device=device)
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=device) if need_w else None
            fp32 = dtype == torch.float32
            # fp32: log-softmax, softmax and gradient overwrite the logits in one buffer per block;
            # low precision: logits in dtype, log-softmax in fp32 per chunk, gradients back in dtype.
            grads = torch.empty(block_rows, V, dtype=dtype, device=device)
            logp = None if fp32 else torch.empty(min(chunk_rows, N), V, dtype=torch.float32, device=device)
            pending = 0  # rows of the current block whose gradient waits in ``grads``
            for start in range(0, N, chunk_rows):
                end = min(start + chunk_rows, N)
                n = end - start
                t = targets[start:end].clamp_min(0)
                valid = valid_all[start:end]
                if fp32:
                    out = grads[pending : pending + n]
                    torch.mm(scaled[start:end], w.t(), out=out)
                    torch.log_softmax(out, dim=-1, out=out)
                else:
                    out = logp[:n]
                    torch.log_softmax(scaled[start:end] @ w.t(), dim=-1, dtype=torch.float32, out=out)
                loss_sum -= (out.gather(1, t[:, None]).squeeze(1) * valid).sum()
                if not need_grad:
                    continue
                g = out.exp_() if fp32 else torch.exp(out, out=grads[pending : pending + n])
                g.scatter_add_(1, t[:, None], torch.full((n, 1), -1.0, dtype=g.dtype, device=device))
                if not bool(valid.all()):
                    g[~valid] = 0
                pending += n
                if pending + chunk_rows > block_rows or end == N:
                    first, G = end - pending, grads[:pending]
                    if need_h:
                        grad_h[first:end] = torch.mm(G, w).mul_(alpha).to(hidden.dtype)
                    if need_w:
                        if fp32:
                            rows_h = hidden[first:end] if hidden.dtype == torch.float32 else scaled[first:end] / scale
                            grad_w.addmm_(G.t(), rows_h, alpha=alpha)
                        else:
                            grad_w.add_(G.t() @ scaled[first:end], alpha=alpha / scale)
                    pending = 0
            loss = torch.where(n_valid > 0, loss_sum / n_valid.clamp_min(1), torch.full_like(loss_sum, float("nan")))
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_h, grad_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_loss.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_loss).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None, None, None


@torch.no_grad()
def token_losses(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, logit_scale: float,
                 chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Cross-entropy of every next-token prediction, [B, T - 1]: entry t is the loss of labels[:, t + 1]
    given positions <= t, without building the [B, T, vocab] logits (evaluation; no gradients)."""
    return target_losses(hidden[:, :-1], weight, labels[:, 1:], logit_scale, chunk_rows)


@torch.no_grad()
def target_losses(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, logit_scale: float,
                  chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Cross-entropy [B, T] of ``(hidden @ weight.T) * logit_scale`` against ``targets`` [B, T], chunk by chunk."""
    B, T, C = hidden.shape
    flat = hidden.reshape(-1, C)
    flat_targets = targets.reshape(-1)
    dtype = compute_dtype(flat.device, flat.dtype)
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
    with torch.autocast(hidden.device.type, enabled=False):
        w = weight.to(dtype)
        for start in range(0, flat.shape[0], chunk_rows):
            logits = (flat[start : start + chunk_rows].to(dtype) @ w.t()).float() * logit_scale
            picked = logits.gather(1, flat_targets[start : start + chunk_rows, None]).squeeze(1)
            out[start : start + chunk_rows] = torch.logsumexp(logits, dim=-1) - picked
    return out.view(B, T)
