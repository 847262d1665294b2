"""Learning-rate schedule in tokens and the phase plan (which seq_len at which step)."""

from __future__ import annotations

import math
from dataclasses import dataclass


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


@dataclass(frozen=True)
class PhasePlan:
    index: int
    seq_len: int
    first_step: int  # global step at which the phase begins
    steps: int
    rows_per_step: int  # sequences per optimizer step (tokens_per_batch / seq_len)


def plan_phases(phases: list, tokens_per_batch: int, total_tokens: int) -> list[PhasePlan]:
    """Steps of each phase so that every step holds ``tokens_per_batch`` tokens.

    The phase boundaries follow the cumulative fractions, rounded to whole steps, so
    the step counts always add up to ``round(total_tokens / tokens_per_batch)``.
    """
    total_steps = max(round(total_tokens / tokens_per_batch), 1)
    plans, cumulative, first = [], 0.0, 0
    for index, phase in enumerate(phases):
        cumulative += phase.fraction
        end = total_steps if index == len(phases) - 1 else round(cumulative * total_steps)
        plans.append(PhasePlan(index, phase.seq_len, first, max(end - first, 0), tokens_per_batch // phase.seq_len))
        first = end
    return plans


def phase_at(plans: list[PhasePlan], step: int) -> PhasePlan:
    for plan in plans:
        if step < plan.first_step + plan.steps:
            return plan
    return plans[-1]
