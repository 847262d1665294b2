"""Coordinate check: muP keeps activations flat across width, standard parameterization does not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.config import load_config
from train.coord_check import CoordCheckConfig, log_slope, main, real_tokens, verdict

REPO = Path(__file__).resolve().parents[1]


def write_text_corpus(folder: Path) -> Path:
    """The project's own documentation and code as SlimPajama-shaped records: real text."""
    folder.mkdir(parents=True)
    records = [{"text": p.read_text(encoding="utf-8"), "meta": {"redpajama_set_name": "RedPajamaGithub"}}
               for p in sorted(REPO.glob("train/*.py")) + sorted(REPO.glob("model/*.py"))]
    (folder / "chunk-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def test_log_slope_measures_power_laws():
    widths = [32, 64, 128, 256]
    assert log_slope(widths, [3.0] * 4) == pytest.approx(0.0, abs=1e-12)
    assert log_slope(widths, [w**0.5 for w in widths]) == pytest.approx(0.5)
    assert log_slope(widths, [7.0 / w for w in widths]) == pytest.approx(-1.0)


def test_verdict_fails_growth_and_accepts_shrinking_logits():
    widths = [64, 128, 256]
    flat = {"attn_out": {w: [1.0, 2.0] for w in widths}, "logits": {w: [w**-0.5, 1.0] for w in widths}}
    grows = {"attn_out": {w: [1.0, 0.01 * w] for w in widths}, "logits": {w: [1.0, 1.0] for w in widths}}
    v = verdict({"mup": flat, "sp": grows}, widths, 0.25, "mup", "sp")
    assert v["flat"] == {"mup": True, "sp": False}
    assert v["ok"] and v["worst"]["sp"] == {"slope": pytest.approx(1.0), "layer_type": "attn_out", "step": 1}
    assert not verdict({"mup": grows, "sp": grows}, widths, 0.25, "mup", "sp")["ok"]
    assert not verdict({"mup": flat, "sp": flat}, widths, 0.25, "mup", "sp")["ok"]  # a control that is not flagged


def test_missing_data_is_a_clear_error(tmp_path):
    config = load_config(CoordCheckConfig, "configs/train/coord_check.yaml",
                         {"data": {"tokens_root": str(tmp_path / "none"), "text_root": str(tmp_path / "none")}})
    with pytest.raises(FileNotFoundError, match="make corpus"):
        real_tokens(config.data, 100)


def test_tokens_from_shards_are_exactly_the_number_asked(tmp_path):
    from tests.test_train_support import EOS, write_token_dir

    root = write_token_dir(tmp_path / "tokens", seq_lens=(64,))
    config = load_config(CoordCheckConfig, "configs/train/coord_check.yaml",
                         {"data": {"tokens_root": str(root), "shard_seq_len": 64, "eos_id": EOS}})
    ids = real_tokens(config.data, 100)  # not a whole number of 64-token rows
    assert ids.shape == (100,)
    with pytest.raises(ValueError, match="rows"):
        real_tokens(config.data, 10**9)


@pytest.mark.slow
def test_coord_check_passes_mup_and_flags_standard_parameterization(tmp_path, capsys):
    corpus = write_text_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    rc = main(["widths=[32,64,128]", "head_dim=16", "seeds=[0,1]", "steps=4", "batch_size=2", "seq_len=64",
               f"data.tokens_root={tmp_path / 'no-shards'}", f"data.text_root={corpus}", f"output={out}",
               "progress=false"])
    report = json.loads((out / "coord_check.json").read_text())
    assert rc == 0, report["slopes"]
    assert report["flat"]["mup"] and not report["flat"]["sp"]
    # standard parameterization: hidden outputs grow roughly like width once trained
    assert max(report["slopes"]["sp"]["mlp_out"][1:]) > 0.75
    assert max(max(v) for v in report["slopes"]["mup"].values()) <= 0.25
    assert (out / "coord_check.png").stat().st_size > 10_000
    acts = report["mean_abs_activation"]["mup"]["attn_out"]
    assert set(acts) == {"32", "64", "128"} and all(len(v) == 4 and np.all(np.isfinite(v)) for v in acts.values())
    assert "PASS" in capsys.readouterr().out
