"""Early stopping: predicting a trial's final loss from its first 30% on a collapsed family."""

from __future__ import annotations

import numpy as np
import pytest

from train.scaling.early_stop import ReferenceCurve, StopRule, predict_final

L0 = 2.0


def shape(f):
    return 1.0 + 2.0 * np.exp(-f / 0.05) + 0.5 * (1.0 - f) ** 2


def trial(final: float, total_steps: int, noise: float, seed: int):
    f = np.arange(1, total_steps + 1) / total_steps
    loss = L0 + (final - L0) * shape(f) + np.random.default_rng(seed).normal(0, noise, len(f))
    return f, loss


@pytest.fixture
def reference():
    grid = np.linspace(0.005, 1.0, 200)
    return ReferenceCurve(grid, shape(grid), L0)


def test_prediction_from_first_30_percent_is_close(reference):
    for seed, (final, steps) in enumerate([(3.1, 400), (3.6, 250), (4.2, 900)]):
        f, loss = trial(final, steps, noise=0.02, seed=seed)
        p = predict_final(f, loss, reference, fit_from=0.1, upto=0.3)
        assert p.upto_fraction <= 0.3 + 1e-9
        assert abs(p.final_loss - final) < 0.02
        assert p.residual_rms == pytest.approx(0.02, rel=0.3)


def test_only_observations_up_to_the_fraction_are_used(reference):
    f, loss = trial(3.0, 300, noise=0.0, seed=0)
    loss[f > 0.3] = 100.0  # the future must not leak into the prediction
    assert predict_final(f, loss, reference, 0.1, 0.3).final_loss == pytest.approx(3.0, abs=1e-3)


def test_stop_rule_stops_the_bad_trial_and_keeps_the_good_one(reference):
    rule = StopRule(fraction=0.3, margin=0.05, fit_from=0.1)
    good_f, good = trial(3.02, 400, noise=0.02, seed=1)
    bad_f, bad = trial(3.40, 400, noise=0.02, seed=2)
    stop_good, p_good = rule.decide(good_f, good, reference, best_final=3.0)
    stop_bad, p_bad = rule.decide(bad_f, bad, reference, best_final=3.0)
    assert not stop_good and stop_bad
    assert p_bad.final_loss > p_good.final_loss
    assert rule.decide(bad_f, bad, reference, best_final=None)[0] is False  # nothing to compare with yet


def test_reference_round_trips_and_rejects_bad_input(tmp_path, reference):
    path = tmp_path / "collapse.json"
    import json

    path.write_text(json.dumps({"reference": reference.to_dict()}))
    again = ReferenceCurve.from_json(path)
    assert np.allclose(again.values, reference.values) and again.l0 == L0
    with pytest.raises(ValueError, match="increase"):
        ReferenceCurve(np.array([0.5, 0.2]), np.array([1.0, 1.0]), 0.0)
    with pytest.raises(ValueError, match="cannot predict"):
        predict_final([0.01, 0.02], [5.0, 4.9], reference, 0.1, 0.3)
    with pytest.raises(ValueError, match="fraction"):
        StopRule(fraction=1.2, margin=0.1, fit_from=0.1)


def test_standard_error_covers_the_actual_error_and_guards_noisy_trials(reference):
    truth = 3.3
    inside = 0
    for seed in range(40):
        f, loss = trial(truth, 120, noise=0.5, seed=seed)  # small batches: very noisy losses
        p = predict_final(f, loss, reference, 0.1, 0.3)
        inside += abs(p.final_loss - truth) <= 2 * p.stderr
    assert inside >= 34  # about 95% expected
    rule = StopRule(fraction=0.3, margin=0.05, fit_from=0.1, z=2.0)
    reckless = StopRule(fraction=0.3, margin=0.05, fit_from=0.1, z=0.0)
    assert not any(rule.decide(*trial(3.05, 120, noise=0.5, seed=s), reference, best_final=3.0)[0] for s in range(10))
    assert rule.decide(*trial(4.5, 120, noise=0.5, seed=4), reference, best_final=3.0)[0]
    # without the error bar, noise alone stops good trials now and then
    assert any(reckless.decide(*trial(3.05, 120, noise=0.5, seed=s), reference, best_final=3.0)[0] for s in range(10))
