"""Learning-rate schedule shape and the phase plan."""

from __future__ import annotations

import math

import pytest

from train.config import Phase
from train.lr import lr_multiplier
from train.phases import phase_at, plan_phases


def test_linear_warmup_then_linear_decay_to_the_configured_fraction():
    warm, total, end = 1000, 11000, 0.0085
    mult = [lr_multiplier(t, warm, total, end) for t in range(0, 12001, 250)]
    assert mult[0] == 0.0
    assert lr_multiplier(500, warm, total, end) == pytest.approx(0.5)
    assert lr_multiplier(warm, warm, total, end) == pytest.approx(1.0)
    assert lr_multiplier(6000, warm, total, end) == pytest.approx((1 + end) / 2)
    assert lr_multiplier(total, warm, total, end) == pytest.approx(end)
    assert lr_multiplier(total + 5000, warm, total, end) == pytest.approx(end)
    peak = mult.index(max(mult))
    assert all(a <= b for a, b in zip(mult[:peak], mult[1 : peak + 1]))
    assert all(a >= b for a, b in zip(mult[peak:], mult[peak + 1 :]))
    # linear: constant slope during the decay
    slopes = {round(lr_multiplier(t + 1000, warm, total, end) - lr_multiplier(t, warm, total, end), 9)
              for t in range(warm, total - 1000, 1000)}
    assert len(slopes) == 1


def test_cosine_shape():
    warm, total, end = 100, 1100, 0.1
    assert lr_multiplier(100, warm, total, end, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(600, warm, total, end, "cosine") == pytest.approx(end + (1 - end) * 0.5)
    assert lr_multiplier(350, warm, total, end, "cosine") == pytest.approx(end + (1 - end) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_multiplier(1100, warm, total, end, "cosine") == pytest.approx(end)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier(1, 1, 2, 0.1, "step")


def test_phases_keep_tokens_per_step_and_switch_at_the_fraction():
    phases = [Phase(2048, 0.75), Phase(8192, 0.25)]
    plans = plan_phases(phases, tokens_per_batch=32768, total_tokens=32768 * 100)
    assert [(p.seq_len, p.first_step, p.steps, p.rows_per_step) for p in plans] == [
        (2048, 0, 75, 16), (8192, 75, 25, 4)]
    assert phase_at(plans, 74).seq_len == 2048 and phase_at(plans, 75).seq_len == 8192
    three = plan_phases([Phase(512, 0.5), Phase(1024, 0.3), Phase(4096, 0.2)], 8192, 8192 * 7)
    assert sum(p.steps for p in three) == 7
    assert all(p.rows_per_step * p.seq_len == 8192 for p in three)


def test_phase_fractions_must_sum_to_one(tmp_path):
    from common.config import ConfigError
    from tests.helpers.train_support import tiny_config

    with pytest.raises(ConfigError, match="phase fractions must sum to 1"):
        tiny_config(tmp_path, tmp_path, phases=[{"seq_len": 64, "fraction": 0.5}])
