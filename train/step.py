"""The project's one optimizer step (the learning rate it uses is set by train/lr.py).

Pre-training (``Trainer.train_step``) and the scaling experiments (coordinate check,
learning-rate sweep) call the same function, so a change to accumulation, clipping or
the non-finite check reaches every measurement at once.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch

from train.data import MicroBatch
from train.parallel import to_float


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over the micro-batches (and ranks, when a reduction is given)
    grad_norm: float  # before clipping
    finite: bool  # False: the update was skipped


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[MicroBatch],
    clip: float,
    *,
    wrapped: torch.nn.Module | None = None,
    device: torch.device | None = None,
    autocast: Callable[[], ContextManager] = nullcontext,
    no_sync: Callable[[], ContextManager] | None = None,
    reduce_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    return_logits: bool = False,
) -> StepResult:
    """Forward and backward over the micro-batches, clip, and update unless non-finite.

    ``model`` owns the parameters that are clipped; the forward runs through ``wrapped``
    (DDP, torch.compile) when given. ``no_sync`` makes the context that skips the gradient
    all-reduce; it wraps every micro-batch but the last. ``reduce_loss`` averages the
    summed loss across ranks. ``clip`` <= 0 measures the norm without clipping. The
    gradients are cleared whether or not the update ran.
    """
    forward = model if wrapped is None else wrapped
    device = micro_batches[0].input_ids.device if device is None else device
    count = len(micro_batches)
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    for i, batch in enumerate(micro_batches):
        ids = batch.input_ids.to(device, non_blocking=True)
        seg = batch.segment_ids.to(device, non_blocking=True) if batch.segment_ids is not None else None
        sync = no_sync() if no_sync is not None and i < count - 1 else nullcontext()
        with sync:
            with autocast():
                loss = forward(ids, labels=ids, segment_ids=seg, return_logits=return_logits).loss / count
            loss.backward()
        loss_sum += loss.detach().float()
    loss_value = float(reduce_loss(loss_sum) if reduce_loss is not None else loss_sum)
    max_norm = clip if clip > 0 else float("inf")
    grad_norm = to_float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    finite = math.isfinite(loss_value) and math.isfinite(grad_norm)
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_value, grad_norm, finite)
