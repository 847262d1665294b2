"""Learning-rate sweep plumbing: trial order, optimum and drift, early stopping on a micro grid."""

from __future__ import annotations

import json

import pytest

from common.config import load_config
from tests.helpers.train_support import TINY_MODEL, write_token_dir
from train.scaling.mup_sweep import main, summarize, trial_order
from train.scaling.sweep_config import SweepConfig


def micro_config(tmp_path, **overrides) -> SweepConfig:
    model = tmp_path / "micro.yaml"
    model.write_text(TINY_MODEL)
    base = {"model": str(model), "widths": [16, 32], "head_dim": 8, "lrs": [1e-6, 1e-5, 1e-2, 2e-2],
            "steps": 20, "batch_size": 2, "seq_len": 64, "eval_batches": 2, "workers": 1, "progress": False,
            "data": {"root": str(tmp_path / "tokens"), "shard_seq_len": 256},
            "output": str(tmp_path / "sweep"), "compare": ["mup"],
            "early_stop": {"min_reference": 2, "margin": 0.05}}
    return load_config(SweepConfig, "configs/train/mup_sweep.yaml", _merge(base, overrides))


def _merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_trials_run_from_the_middle_learning_rate_outwards(tmp_path):
    config = micro_config(tmp_path, lrs=[1.0, 2.0, 4.0, 8.0, 16.0], widths=[8], seeds=[0])
    assert [lr for _, _, lr, _ in trial_order(config)] == [4.0, 2.0, 8.0, 1.0, 16.0]


def test_summary_reports_optimum_and_drift(tmp_path):
    config = micro_config(tmp_path, lrs=[1.0, 2.0, 4.0, 8.0], widths=[8, 16, 32], compare=["mup", "sp"])
    losses = {  # mup: optimum at 4 for every width; sp: optimum moves 8 -> 2 as the width grows
        ("mup", 8): [3.0, 2.5, 2.2, 2.4], ("mup", 16): [2.9, 2.4, 2.1, 2.3], ("mup", 32): [2.8, 2.3, 2.0, 2.2],
        ("sp", 8): [3.0, 2.6, 2.4, 2.3], ("sp", 16): [2.7, 2.3, 2.2, 2.5], ("sp", 32): [2.6, 2.1, 2.3, 2.9],
    }
    results = [{"parameterization": p, "width": w, "lr": lr, "seed": 0, "status": "finished", "val_loss": v,
                "steps": 10, "steps_done": 10, "prediction": None}
               for (p, w), vs in losses.items() for lr, v in zip(config.lrs, vs)]
    results.append({"parameterization": "sp", "width": 32, "lr": 1.0, "seed": 1, "status": "stopped",
                    "steps": 10, "steps_done": 3, "prediction": {"predicted_final": 9.0}})
    s = summarize(config, results)
    assert s["mup"]["drift_grid_steps"] == 0 and s["mup"]["transfers"]
    assert {w: o["lr"] for w, o in s["sp"]["optimum"].items()} == {"8": 8.0, "16": 4.0, "32": 2.0}
    assert s["sp"]["drift_grid_steps"] == 2 and not s["sp"]["transfers"]
    assert s["early_stop"]["stopped"] == 1 and s["early_stop"]["steps_saved"] == 7


@pytest.mark.slow
def test_micro_sweep_trains_and_stops_the_hopeless_trial(tmp_path):
    write_token_dir(tmp_path / "tokens", seq_lens=(256,))
    config_args = [f"{k}={json.dumps(v)}" for k, v in {
        "model": str(tmp_path / "micro.yaml"), "widths": [16, 32], "head_dim": 8, "lrs": [1e-6, 1e-5, 1e-2, 2e-2],
        "steps": 20, "batch_size": 2, "seq_len": 64, "eval_batches": 2, "workers": 1, "progress": False,
        "data.root": str(tmp_path / "tokens"), "data.shard_seq_len": 256, "output": str(tmp_path / "sweep"),
        "compare": ["mup"], "early_stop.min_reference": 2, "early_stop.margin": 0.05}.items()]
    (tmp_path / "micro.yaml").write_text(TINY_MODEL)
    assert main(config_args) == 0
    report = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 10_000
    trials = {(t["width"], t["lr"]): t for t in report["trials"]}
    assert len(trials) == 8
    for width in (16, 32):
        # the middle pair finishes first and becomes the reference; 1e-6 barely moves and is stopped
        assert trials[(width, 1e-5)]["status"] == "finished" and trials[(width, 1e-2)]["status"] == "finished"
        stopped = trials[(width, 1e-6)]
        assert stopped["status"] == "stopped" and stopped["steps_done"] == 6
        assert stopped["prediction"]["predicted_final"] > stopped["prediction"]["best_final"] + 0.05
        assert report["summary"]["mup"]["optimum"][str(width)]["lr"] in (1e-2, 2e-2)
        lines = (tmp_path / "sweep" / "trials" / stopped["name"] / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 6
    # a re-run finds every result and trains nothing again
    assert main(config_args) == 0
    again = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert again["trials"] == report["trials"]
