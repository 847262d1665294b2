"""The learning rate, in one place: the warmup and decay curve in tokens, and each muP
group's lr (base lr x the group's muP scale x the curve's multiplier).

Pre-training, the learning-rate sweep and the coordinate check set learning rates
only through ``LRSchedule`` and ``set_group_lrs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from train.config import TrainConfig


def lr_multiplier(tokens: int, warmup_tokens: int, total_tokens: int, decay_to: float, shape: str = "linear") -> float:
    """Multiplier of each group's own lr after ``tokens`` training tokens.

    Linear warmup from 0 to 1 over ``warmup_tokens``, then one decay to ``decay_to``
    at ``total_tokens`` (linear as in BTLM, or cosine), constant afterwards.
    """
    if warmup_tokens > 0 and tokens < warmup_tokens:
        return tokens / warmup_tokens
    span = max(total_tokens - warmup_tokens, 1)
    progress = min(max((tokens - warmup_tokens) / span, 0.0), 1.0)
    if shape == "cosine":
        return decay_to + (1.0 - decay_to) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "linear":
        return 1.0 - (1.0 - decay_to) * progress
    raise ValueError(f"unknown schedule shape {shape!r} (linear or cosine)")


def group_lr_scales(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each group's muP lr multiplier (``lr_scale``, 1 when the group has none)."""
    return [group.get("lr_scale", 1.0) for group in optimizer.param_groups]


def set_group_lrs(optimizer: torch.optim.Optimizer, lr: float, multiplier: float = 1.0) -> float:
    """Group lr = base lr x the group's muP scale x ``multiplier``; returns base lr x multiplier."""
    for group, scale in zip(optimizer.param_groups, group_lr_scales(optimizer)):
        group["lr"] = lr * scale * multiplier
    return lr * multiplier


@dataclass(frozen=True)
class LRSchedule:
    """Warmup and decay in tokens; step ``s`` (0-based) is scheduled at the tokens seen after it."""

    lr: float  # muP base lr
    tokens_per_step: int
    warmup_tokens: int
    total_tokens: int
    decay_to: float
    shape: str = "linear"

    @classmethod
    def from_config(cls, c: TrainConfig) -> "LRSchedule":
        return cls(c.lr, c.tokens_per_batch, c.warmup_tokens, c.total_tokens, c.decay_to, c.schedule)

    def multiplier(self, step: int) -> float:
        tokens = (step + 1) * self.tokens_per_step
        return lr_multiplier(tokens, self.warmup_tokens, self.total_tokens, self.decay_to, self.shape)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr for ``step``; returns the base lr logged for it."""
        return set_group_lrs(optimizer, self.lr, self.multiplier(step))
