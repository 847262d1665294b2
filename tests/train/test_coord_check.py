"""Coordinate check: muP keeps activations flat across width, standard parameterization does not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from common.config import load_config
from tests.helpers.train_support import EOS, REPO, write_split, write_token_dir
from train.data import ShardError
from train.scaling.coord_check import CoordCheckConfig, log_slope, main, real_tokens, verdict

GPT2_EOS = 50256


def write_gpt2_token_dir(root):
    """The project's own code as GPT-2 BPE shards (train split, 256-token rows): real text, real ids."""
    tokenizer = Tokenizer.from_file(str(REPO / "pipeline" / "assets" / "tokenizer.json"))
    files = sorted(REPO.glob("train/*.py")) + sorted(REPO.glob("model/*.py"))
    docs = [tokenizer.encode(p.read_text(encoding="utf-8")).ids for p in files]
    write_split(root, 256, "train", docs, eos=GPT2_EOS, metadata={"vocab_size": 50257})
    return root


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


def test_missing_shards_are_a_clear_error(tmp_path):
    config = load_config(CoordCheckConfig, "configs/train/coord_check.yaml",
                         {"data": {"tokens_root": str(tmp_path / "none")}})
    with pytest.raises(ShardError, match=r"no shards .*make tokenize.*data\.tokens_root"):
        real_tokens(config.data, 100)
    assert main([f"data.tokens_root={tmp_path / 'none'}", f"output={tmp_path / 'out'}", "progress=false"]) == 2
    assert not (tmp_path / "out" / "coord_check.json").exists()


def test_tokens_from_shards_are_exactly_the_number_asked(tmp_path):
    root = write_token_dir(tmp_path / "tokens", seq_lens=(64,))
    config = load_config(CoordCheckConfig, "configs/train/coord_check.yaml",
                         {"data": {"tokens_root": str(root), "shard_seq_len": 64, "eos_id": EOS}})
    ids = real_tokens(config.data, 100)  # not a whole number of 64-token rows
    assert ids.shape == (100,) and ids.dtype == np.int64
    first_rows = real_tokens(config.data, 128)
    assert np.array_equal(ids, first_rows[:100])  # the first rows, in order
    with pytest.raises(ValueError, match="rows"):
        real_tokens(config.data, 10**9)
    wrong_eos = load_config(CoordCheckConfig, "configs/train/coord_check.yaml",
                            {"data": {"tokens_root": str(root), "shard_seq_len": 64, "eos_id": EOS + 1}})
    with pytest.raises(ShardError, match="eos_id"):
        real_tokens(wrong_eos.data, 100)


@pytest.mark.slow
def test_coord_check_passes_mup_and_flags_standard_parameterization(tmp_path, capsys):
    tokens = write_gpt2_token_dir(tmp_path / "tokens")
    out = tmp_path / "out"
    rc = main(["widths=[32,64,128]", "head_dim=16", "seeds=[0,1]", "steps=4", "batch_size=2", "seq_len=64",
               f"data.tokens_root={tokens}", "data.shard_seq_len=256", f"data.eos_id={GPT2_EOS}", f"output={out}",
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
