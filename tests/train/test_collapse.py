"""Loss-curve collapse: normalization, L0 fit, deviations, tau and tokens-per-parameter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.config import load_config
from train.scaling.collapse import CollapseConfig, analyse, main
from train.scaling.curves import final_loss, fit_l0, smooth
from train.scaling.runs import Run, adamw_tau, load_run

L0 = 1.8


def shape(f: np.ndarray) -> np.ndarray:
    """A collapsed curve g with g(1) = 1: fast early drop, slow tail (as under a decaying LR)."""
    return 1.0 + 2.5 * np.exp(-f / 0.06) + 0.6 * (1.0 - f) ** 2


def family_run(name: str, params: int, total_steps: int, l0: float = L0, noise: float = 0.0, seed: int = 0,
               bump: float = 0.0) -> Run:
    steps = np.arange(1, total_steps + 1, dtype=np.float64)
    f = steps / total_steps
    reducible = 40.0 * params ** -0.3  # L(T) - L0 falls as a power of size
    loss = l0 + reducible * shape(f) + bump * np.exp(-((f - 0.5) / 0.08) ** 2)
    loss += np.random.default_rng(seed).normal(0.0, noise, size=len(f))
    return Run(name, steps, loss, total_steps, lr=1e-2, weight_decay=0.1, total_tokens=20 * params, params=params)


def config(**overrides) -> CollapseConfig:
    return load_config(CollapseConfig, "configs/train/collapse.yaml", {"output": None, **overrides})


FAMILY = [(1_000_000, 300), (2_000_000, 600), (4_000_000, 1200)]


def test_known_l0_collapses_family_onto_the_shape():
    runs = [family_run(f"n{n}", n, t) for n, t in FAMILY]
    report = analyse(runs, config(l0=L0, smooth_fraction=0.0, final_fraction=0.05))
    for row in report["runs"]:
        assert row["final_loss"] == pytest.approx(L0 + 40.0 * row["params"] ** -0.3, abs=1e-3)
        assert row["deviation"]["rms"] < 2e-3
    ref = report["reference"]
    f = np.asarray(ref["fractions"])
    assert np.allclose(ref["values"], shape(f), atol=5e-3)
    assert ref["values"][-1] == pytest.approx(1.0, abs=1e-3)


def test_wrong_l0_breaks_the_collapse():
    runs = [family_run(f"n{n}", n, t) for n, t in FAMILY]
    right = analyse(runs, config(l0=L0, smooth_fraction=0.0))["summary"]["max_rms_deviation"]
    wrong = analyse(runs, config(l0=0.0, smooth_fraction=0.0))["summary"]["max_rms_deviation"]
    assert wrong > 10 * right


def test_fit_l0_recovers_the_irreducible_loss():
    sizes = [1e6, 3e6, 1e7, 3e7]
    finals = [L0 + 40.0 * n ** -0.3 for n in sizes]
    assert fit_l0(finals, sizes) == pytest.approx(L0, abs=0.02)
    runs = [family_run(f"n{n}", n, t) for n, t in FAMILY]
    report = analyse(runs, config(l0_mode="fit", smooth_fraction=0.0))
    assert report["l0_source"] == "fit"
    assert report["l0"] == pytest.approx(L0, abs=0.05)


def test_fit_l0_needs_three_sizes():
    with pytest.raises(ValueError, match="at least 3 runs"):
        fit_l0([3.0, 2.8], [1e6, 2e6])


def test_deviation_flags_the_run_that_does_not_follow_the_family():
    runs = [family_run(f"n{n}", n, t, noise=0.003, seed=i) for i, (n, t) in enumerate(FAMILY)]
    runs.append(family_run("spiky", 3_000_000, 900, bump=0.3, seed=9))
    report = analyse(runs, config(l0=L0))
    dev = {row["name"]: row["deviation"]["rms"] for row in report["runs"]}
    assert dev["spiky"] > 5 * max(v for k, v in dev.items() if k != "spiky")


def test_tau_and_tokens_per_parameter():
    assert adamw_tau(1e-2, 0.1, 1000) == pytest.approx(1.0)
    assert adamw_tau(2e-2, 0.1, 1000) == pytest.approx(0.5)
    assert adamw_tau(1e-2, 0.0, 1000) == float("inf")
    run = family_run("a", 1_000_000, 300)
    assert run.tokens_per_parameter == pytest.approx(20.0)
    assert run.tau == pytest.approx(1 / (1e-2 * 0.1 * 300))


def test_smoothing_and_final_loss_are_unbiased_on_a_line():
    x = np.arange(1, 101, dtype=np.float64)
    y = 5.0 - 0.01 * x
    assert np.allclose(smooth(y, 9), y)
    noisy = y + np.random.default_rng(0).normal(0, 1.0, len(y))
    smoothed = smooth(noisy, 21)
    # the ends are averaged as well as the middle: no noisy last point
    assert abs(smoothed[-1] - y[-1]) < 0.8 and np.std(smoothed - y) < 0.45
    assert final_loss(x, y, 100, 0.1) == pytest.approx(4.0)


def write_run(folder, run: Run, tokens_per_batch: int = 2048, max_steps=None, upto=None):
    folder.mkdir(parents=True)
    cfg = {"model": {"config": "configs/model/btlm-w128.yaml", "overrides": {}}, "lr": run.lr,
           "weight_decay": run.weight_decay, "tokens_per_batch": tokens_per_batch,
           "total_tokens": run.total_steps * tokens_per_batch, "max_steps": max_steps}
    (folder / "config.json").write_text(json.dumps(cfg))
    n = len(run.steps) if upto is None else upto
    lines = [json.dumps({"kind": "train", "step": int(s), "loss": float(v)}) for s, v in zip(run.steps[:n], run.losses[:n])]
    lines.insert(3, json.dumps({"kind": "eval", "step": 3, "val_loss": {"2048": 9.0}}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_load_run_reads_metrics_and_counts_parameters(tmp_path):
    write_run(tmp_path / "r", family_run("r", 1_000_000, 50))
    run = load_run(tmp_path / "r", "non_embedding")
    assert len(run.steps) == 50 and run.finished
    assert run.total_tokens == 50 * 2048
    # btlm-w128: 4 pre-LN blocks of width 128 with biases, SwiGLU inner 341, tied embeddings
    d, inner = 128, 341
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + 2 * (d * inner + inner) + (inner * d + d)
    non_embedding = 4 * block + 2 * d
    assert run.params == non_embedding
    assert load_run(tmp_path / "r", "total").params == non_embedding + 50257 * d


def test_load_run_names_the_missing_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_run(tmp_path / "empty", "total")


def test_cli_writes_json_and_png_and_predicts_unfinished_runs(tmp_path, capsys):
    dirs = []
    for i, (n, t) in enumerate(FAMILY):
        run = family_run(f"n{n}", n, t, noise=0.002, seed=i)
        run.params = n
        write_run(tmp_path / run.name, run)
        dirs.append(str(tmp_path / run.name))
    half = family_run("partial", 3_000_000, 400)
    write_run(tmp_path / "partial", half, upto=160)
    dirs.append(str(tmp_path / "partial"))
    out = tmp_path / "out"
    assert main([*dirs, f"output={out}", "l0=1.8", "parameters=total"]) == 0
    report = json.loads((out / "collapse.json").read_text())
    assert (out / "collapse.png").stat().st_size > 10_000
    rows = {r["name"]: r for r in report["runs"]}
    assert not rows["partial"]["finished"]
    truth = 1.8 + 40.0 * 3_000_000 ** -0.3
    assert rows["partial"]["prediction"]["predicted_final"] == pytest.approx(truth, abs=0.02)
    for name in ("n1000000", "n2000000", "n4000000"):
        assert abs(rows[name]["prediction"]["error"]) < 0.02
    printed = capsys.readouterr().out
    assert "tau" in printed and "TPP" in printed
