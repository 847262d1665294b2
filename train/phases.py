"""The phase plan: which sequence length trains at which step (the lr is train/lr.py)."""

from __future__ import annotations

from dataclasses import dataclass


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
