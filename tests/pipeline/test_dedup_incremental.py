"""Incremental dedup: a new corpus against an earlier dedup output (``reference=DIR``).

The result must equal one run over the reference's cleaned corpus plus the new corpus
in which the reference documents win every cluster: the same status, reason and kept
document for every new record, the same cleaned corpus; and no reference document is
ever removed.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import dedup
from tests.pipeline.test_dedup import _config, build_corpus, edit_to_jaccard, real_documents, write_jsonl_zst

pytestmark = pytest.mark.slow


def _new_corpus(root: Path, old_ledger: dict[str, dict]) -> None:
    """gamma: copies and edits of reference documents, of each other, and fresh ones."""
    rng = random.Random(7)
    docs = real_documents(40)  # the same documents the reference corpus was built from
    fresh = real_documents(6, skip=40)
    rec = lambda text: {"text": text, "meta": {"redpajama_set_name": "RedPajamaGamma"}}  # noqa: E731
    kept_alpha = [i for i in range(20) if old_ledger[f"alpha/a.jsonl.zst:{i + 1}"]["status"] == "kept"]
    records = [
        rec(docs[kept_alpha[0]]),  # exact copy of a kept reference document
        rec(edit_to_jaccard(docs[kept_alpha[1]], 0.9, rng)[0]),  # near copies of reference documents
        rec(edit_to_jaccard(docs[25], 0.88, rng)[0]),
        rec(edit_to_jaccard(docs[2], 0.86, rng)[0]),  # docs[2] had a near copy removed in the reference run
        rec(fresh[0]),  # new documents, one with an exact and one with a near copy among the new ones
        rec(fresh[0]),
        rec(fresh[1]),
        rec(edit_to_jaccard(fresh[1], 0.9, rng)[0]),
        rec(fresh[2]),
        rec(edit_to_jaccard(docs[kept_alpha[2]], 0.4, rng)[0]),  # far from everything: kept
        rec("short"),
    ]
    write_jsonl_zst(root / "gamma" / "g.jsonl.zst", records, [b"{broken\n"])


def _ledger(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(out / "ledger.parquet").to_pylist()}


def _original_ids(reference: Path) -> dict[str, str]:
    """The id a document of the reference's cleaned corpus has there -> its id in the
    reference run (what the index records)."""
    names = {}
    for part in sorted((reference / "index").glob("*.npz")):
        with np.load(part, allow_pickle=False) as z:
            for doc_id, chunk, line in zip(z["ids"], z["chunk"], z["line"]):
                names[f"{z['chunks'][chunk]}:{line}"] = str(doc_id)
    return names


def test_incremental_run_equals_one_run_over_reference_and_new(ray_session, tmp_path):
    old_root, new_root, joint_root = tmp_path / "old", tmp_path / "new", tmp_path / "joint"
    build_corpus(old_root)
    reference = tmp_path / "reference"
    dedup.run(_config(old_root, reference))
    old_ledger = _ledger(reference)
    _new_corpus(new_root, old_ledger)

    incremental = tmp_path / "incremental"
    report = dedup.run(_config(new_root, incremental, reference=str(reference)))
    # One run over the reference's cleaned corpus and the new corpus: the reference's
    # folders sort first, so under keep=smallest_id its documents win every cluster.
    shutil.copytree(reference / "corpus", joint_root)
    shutil.copytree(new_root / "gamma", joint_root / "gamma")
    joint = tmp_path / "joint-out"
    dedup.run(_config(joint_root, joint))

    inc, both, names = _ledger(incremental), _ledger(joint), _original_ids(reference)
    assert all(r["status"] == "kept" for i, r in both.items() if not i.startswith("gamma/"))  # none removed
    assert sorted(inc) == sorted(i for i in both if i.startswith("gamma/"))
    for doc_id, row in inc.items():
        other = both[doc_id]
        assert (row["status"], row["reason"]) == (other["status"], other["reason"]), doc_id
        assert row["kept_id"] == names.get(other["kept_id"], other["kept_id"]), doc_id
    # what the new documents became
    status = {i: (r["status"], r["reason"], r["kept_id"]) for i, r in inc.items()}
    assert status["gamma/g.jsonl.zst:1"][:2] == ("duplicate", "exact") and status["gamma/g.jsonl.zst:1"][2].startswith("alpha/")
    assert all(status[f"gamma/g.jsonl.zst:{k}"][:2] == ("duplicate", "near") for k in (2, 3, 4))
    assert status["gamma/g.jsonl.zst:6"] == ("duplicate", "exact", "gamma/g.jsonl.zst:5")
    assert status["gamma/g.jsonl.zst:8"] == ("duplicate", "near", "gamma/g.jsonl.zst:7")
    assert [status[f"gamma/g.jsonl.zst:{k}"][0] for k in (5, 7, 9, 10)] == ["kept"] * 4
    assert status["gamma/g.jsonl.zst:11"][:2] == ("filtered", "short")
    assert status["gamma/g.jsonl.zst:12"][0] == "rejected"
    # the same cleaned corpus of the new documents, and the same counts
    inc_files = {p.relative_to(incremental / "corpus"): p.read_bytes() for p in (incremental / "corpus").rglob("*.zst")}
    joint_files = {p.relative_to(joint / "corpus"): p.read_bytes() for p in (joint / "corpus" / "gamma").rglob("*.zst")}
    assert inc_files == joint_files
    assert report["sources"]["RedPajamaGamma"] == json.loads((joint / "report.json").read_text())["sources"]["RedPajamaGamma"]


def test_reference_with_other_minhash_settings_is_refused(ray_session, tmp_path):
    build_corpus(tmp_path / "old")
    dedup.run(_config(tmp_path / "old", tmp_path / "reference"))
    with pytest.raises(ValueError, match="minhash"):
        dedup.run(_config(tmp_path / "old", tmp_path / "again", reference=str(tmp_path / "reference"), **{"minhash.ngram": 5}))
    with pytest.raises(FileNotFoundError, match="not a finished dedup output"):
        dedup.run(_config(tmp_path / "old", tmp_path / "again", reference=str(tmp_path / "old")))
