"""``python -m pipeline.stats``: statistics and integrity checks of token shards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.shard_format import split_dir
from pipeline.stats import collect, render
from tests.pipeline.test_tokenize import SEQ_LENS, tokenize
from tests.pipeline.test_tokenize_data import write_corpus

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("stats")
    corpus = write_corpus(root / "corpus", max_files=40, chunk_bytes=200_000)
    output = root / "tokens"
    tokenize(corpus, output, "run.keep_work=false")
    return output


def test_stats_report_counts_and_passes_checks(tokens):
    report = collect(tokens)
    assert report["ok"], render(report)
    names = [f["folder"] for f in report["folders"]]
    assert {f"seq{L}/{s}" for L in SEQ_LENS for s in ("train", "validation", "test")} == set(names)
    for f in report["folders"]:
        manifest = json.loads((split_dir(tokens, f["seq_len"], f["split"]) / "manifest.json").read_text())
        assert f["rows"] == manifest["rows"] and f["tokens"] == f["rows"] * f["seq_len"]
        assert f["eos"] + manifest["remainder"]["eos"] == manifest["documents"]
        assert 0 < f["documents_per_row"] and 0 <= f["fraction_documents_split"] <= 1
        assert abs(sum(v["share"] for v in f["source_tokens"].values()) - 1) < 1e-3
        assert all(f["checks"].values())
    assert report["holdout_tokens"][f"seq{SEQ_LENS[0]}"] > 0
    text = render(report)
    assert "tokens per source" in text and "all checks passed" in text


def test_stats_cli_json_and_failure_on_a_tampered_shard(tokens, tmp_path):
    out = subprocess.run([sys.executable, "-m", "pipeline.stats", str(tokens), "--json"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ok"] is True
    # An out-of-vocabulary id written into a copy of one folder must fail two checks.
    folder = split_dir(tokens, SEQ_LENS[0], "validation")
    broken = tmp_path / f"seq{SEQ_LENS[0]}" / "validation"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text((folder / "manifest.json").read_text())
    shard = sorted(folder.glob("shard-*.arrow"))[0]
    table = pa.ipc.open_file(pa.memory_map(str(shard))).read_all()
    ids = table.column("input_ids").to_pylist()
    ids[0][0] = 60000
    bad = table.set_column(0, table.schema.field("input_ids"), pa.array(ids, table.schema.field("input_ids").type))
    with pa.ipc.new_file(str(broken / shard.name), bad.schema) as writer:
        writer.write_table(bad)
    report = collect(tmp_path)
    checks = report["folders"][0]["checks"]
    assert not report["ok"] and not checks["ids_below_vocab_size"] and not checks["shards_match_manifest"]
    out = subprocess.run([sys.executable, "-m", "pipeline.stats", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 1 and "FAILED" in out.stdout
