"""`make eval decontamination=DIR`: the shipped holdout task scored in full and on its
clean items, after `make decontaminate` checked a corpus that holds half of them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import zstandard

from common.config import load_config
from pipeline.decontaminate import DecontaminateConfig, run
from pipeline.decontaminate.evalsets import doc_sha256 as stage_sha256
from pipeline.normalize import clean_text
from tests.helpers.hf_support import REPO, real_texts, tiny_model, write_gpt2_shards, write_run_checkpoint
from train.clean_score import CleanScoreError, doc_sha256, selections
from train.harness import HarnessConfig, export_tasks

pytest.importorskip("lm_eval")
HOLDOUT = ["holdout.seq_len=256", "holdout.context_tokens=32", "holdout.continuation_tokens=8",
           "holdout.windows_per_document=2", "holdout.max_items=40"]


def test_the_stage_and_the_harness_name_items_alike():
    doc = {"context": "a b", "choices": ["x", "é"], "label": 1, "n": 2.5}
    assert doc_sha256(doc) == stage_sha256(doc)
    docs = {"t": [{"i": 0}, {"i": 1}, {"i": 2}]}
    listed = {"t": [{"index": 1, "sha256": doc_sha256({"i": 1})}], "other": []}
    assert selections(listed, docs, None) == {"t": {"full": [0, 1, 2], "clean": [0, 2]}}
    assert selections(listed, docs, 2) == {"t": {"full": [0, 1], "clean": [0]}}
    with pytest.raises(CleanScoreError, match="other task data"):
        selections({"t": [{"index": 1, "sha256": doc_sha256({"i": 9})}]}, docs, None)


@pytest.mark.slow
def test_clean_score_next_to_the_full_one(ray_session, tmp_path):
    texts = real_texts()[:12]
    shards = write_gpt2_shards(tmp_path / "tokens", texts, 256, "validation")
    tasks = tmp_path / "eval_tasks"  # what `make decontaminate` builds first
    cfg = load_config(HarnessConfig, REPO / "configs/eval/harness.yaml",
                      [f"export_tasks={tasks}", f"holdout.data_root={shards}", *HOLDOUT])
    export_tasks(cfg)
    items = [json.loads(line) for line in (tasks / "holdout_continuation.jsonl").read_text().splitlines()]

    corpus = tmp_path / "corpus" / "code" / "part.jsonl.zst"  # half the validation documents leaked into training
    corpus.parent.mkdir(parents=True)
    body = "".join(json.dumps({"text": t}) + "\n" for t in texts[:6])
    corpus.write_bytes(zstandard.ZstdCompressor().compress(body.encode()))
    report = run(load_config(DecontaminateConfig, REPO / "configs/data/decontaminate.yaml",
                             [f"input={corpus.parent.parent}", f"output={tmp_path / 'decontam'}",
                              f"eval_sets=[{tasks}]", "run.progress=false"]))
    found = {c["index"] for c in report["tasks"]["holdout_continuation"]["contaminated_items"]}
    whole = [item["context"] + item["choices"][item["label"]] for item in items]
    leaked = {i for i, w in enumerate(whole) if any(w in t for t in texts[:6]) and len(clean_text(w).split()) >= 13}
    assert leaked and leaked <= found and len(found) < len(items)  # items under 13 words cannot be checked

    run_dir = tmp_path / "run"
    write_run_checkpoint(tiny_model("alibi"), run_dir, step=3)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "train.harness", f"checkpoints={run_dir / 'checkpoints'}", f"holdout.data_root={shards}",
         *HOLDOUT, f"decontamination={tmp_path / 'decontam'}", "batch_size=8"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "eval" / "lm-eval-step-00000003.json").read_text())
    clean = result["clean"]["holdout_continuation"]
    assert (clean["items"], clean["clean_items"]) == (len(items), len(items) - len(found))
    assert result["n_samples"]["holdout_continuation"]["effective"] == len(items)
    for metric in ("acc", "acc_norm"):
        v = clean["metrics"][metric]
        assert v["full"] == result["metrics"]["holdout_continuation"][metric]["value"]
        n = clean["clean_items"]  # lm-eval's standard error of a mean of 0/1 scores
        assert 0.0 <= v["clean"] <= 1.0
        assert v["clean_stderr"] == pytest.approx(math.sqrt(v["clean"] * (1 - v["clean"]) / (n - 1)), rel=1e-6)
    assert "task (decontaminated)" in proc.stdout
    print("\n" + proc.stdout[proc.stdout.index("task (decontaminated)"):])
