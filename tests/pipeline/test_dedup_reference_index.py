"""Incremental dedup against an index of everything the earlier run saw.

Real text (the sample corpus) split into an earlier dump ``a/`` and a new one ``b/``
so that duplicate chains cross the split: a new document whose only partner in the
earlier dump is a document that dump removed as a duplicate must be removed, naming
that cluster's kept document, exactly as one joint run over both dumps removes it.
The two ledgers together equal the joint run's, apart from the bridging case (a new
document joining two earlier clusters leaves both kept), which the report counts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard

from common.config import load_config
from pipeline.corpus_io import Document, read_corpus
from pipeline.dedup import DedupStageConfig, run
from pipeline.normalize import clean_text
from pipeline.shingles import exact_jaccard
from tests.helpers.text_edits import replace_words

pytestmark = pytest.mark.slow


def _write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    path.write_bytes(zstandard.ZstdCompressor().compress(body))


def _jaccard(a: str, b: str) -> float:
    return exact_jaccard(clean_text(a), clean_text(b), 13)


def _chain(text: str, rng: random.Random) -> tuple[str, str] | None:
    """(B, C): B near A = text, C near B, C not near A (its only partner is B)."""
    b = replace_words(text, 0.025, rng)
    c = replace_words(b, 0.025, rng)
    if _jaccard(text, b) >= 0.82 and _jaccard(b, c) >= 0.82 and _jaccard(text, c) < 0.76:
        return b, c
    return None


def build_dumps(sample: Path, root: Path) -> dict[str, list]:
    """Write root/old/a, root/new/b and root/joint/{a,b}; returns what was planted,
    as (dump, index in dump) pairs."""
    rng = random.Random(3)
    docs = [d for d in read_corpus(sample) if isinstance(d, Document)]
    old, new, planted = [], [], {"chains": [], "copies": [], "bridges": []}
    rec = lambda d, text: {"text": text, "meta": {"redpajama_set_name": d.source}}  # noqa: E731
    for d in docs:
        chain = _chain(d.text, rng) if len(d.text) >= 3000 and len(planted["chains"]) < 8 else None
        if chain is not None:  # A, B earlier (B removed there), C new: C's only partner is B
            planted["chains"].append((len(old), len(new)))
            old += [rec(d, d.text), rec(d, chain[0])]
            new.append(rec(d, chain[1]))
            if len(planted["copies"]) < 2:  # an exact copy of the removed B
                planted["copies"].append((len(old) - 2, len(new)))
                new.append(rec(d, chain[0]))
        elif len(d.text) >= 3000 and len(planted["bridges"]) < 2:  # X, Y earlier (apart), D new joins them
            x, y = replace_words(d.text, 0.025, rng), replace_words(d.text, 0.025, rng)
            if _jaccard(x, y) < 0.76 and min(_jaccard(d.text, x), _jaccard(d.text, y)) >= 0.82:
                planted["bridges"].append((len(old), len(new)))
                old += [rec(d, x), rec(d, y)]
                new.append(rec(d, d.text))
            else:
                old.append(rec(d, d.text))
        else:
            (old if len(old) <= len(new) else new).append(rec(d, d.text))
    for dump, folder, records in (("old", "a", old), ("new", "b", new)):
        _write(root / dump / folder / "part.jsonl.zst", records)
        _write(root / "joint" / folder / "part.jsonl.zst", records)
    return planted


def _config(inp: Path, out: Path, **overrides) -> DedupStageConfig:
    items = [f"input={inp}", f"output={out}", "run.progress=false", "run.partitions=4"]
    return load_config(DedupStageConfig, "configs/data/slimpajama.yaml", items + [f"{k}={v}" for k, v in overrides.items()])


def _ledger(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(out / "ledger.parquet").to_pylist()}


def test_incremental_equals_joint_run_apart_from_counted_bridging(ray_session, sample_corpus, tmp_path):
    planted = build_dumps(sample_corpus, tmp_path)
    assert len(planted["chains"]) >= 4 and len(planted["copies"]) == 2 and len(planted["bridges"]) == 2
    run(_config(tmp_path / "old", tmp_path / "old-out"))
    report = run(_config(tmp_path / "new", tmp_path / "new-out", reference=str(tmp_path / "old-out")))
    run(_config(tmp_path / "joint", tmp_path / "joint-out"))
    old, inc, joint = _ledger(tmp_path / "old-out"), _ledger(tmp_path / "new-out"), _ledger(tmp_path / "joint-out")
    a, b = "a/part.jsonl.zst:", "b/part.jsonl.zst:"

    # every new document: the joint run's status, reason and kept document
    assert sorted(inc) == sorted(i for i in joint if i.startswith("b/"))
    for doc_id, row in inc.items():
        assert (row["status"], row["reason"], row["kept_id"]) == (
            joint[doc_id]["status"], joint[doc_id]["reason"], joint[doc_id]["kept_id"]), doc_id
    # the earlier documents: the joint run's outcome, apart from the counted bridging case
    differ = sorted(i for i in old if (old[i]["status"], old[i]["kept_id"]) != (joint[i]["status"], joint[i]["kept_id"]))
    bridged = report["incremental"]["bridged_reference_documents"]
    assert bridged == len(differ) >= len(planted["bridges"])
    assert all(old[i]["status"] == "kept" and joint[i]["status"] == "duplicate" for i in differ)

    # what was planted: C (only partner the removed B) names A; a copy of B too
    for first, c in planted["chains"]:
        assert old[f"{a}{first + 2}"]["kept_id"] == f"{a}{first + 1}"  # B was removed, A kept
        assert inc[f"{b}{c + 1}"]["status"] == "duplicate" and inc[f"{b}{c + 1}"]["kept_id"] == f"{a}{first + 1}"
    for first, copy in planted["copies"]:
        assert (inc[f"{b}{copy + 1}"]["reason"], inc[f"{b}{copy + 1}"]["kept_id"]) == ("exact", f"{a}{first + 1}")
    for first, d in planted["bridges"]:
        assert inc[f"{b}{d + 1}"]["status"] == "duplicate"
        assert [old[f"{a}{first + k}"]["status"] for k in (1, 2)] == ["kept", "kept"]

    # the index holds every document that took part in dedup, kept and removed
    index = tmp_path / "old-out" / "index"
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["documents"] == sum(r["status"] in ("kept", "duplicate") for r in old.values())
    size = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
    removed_by_joint = sum(r["status"] == "duplicate" for i, r in joint.items() if i.startswith("b/"))
    print(f"\nnew documents removed: joint {removed_by_joint}, incremental "
          f"{sum(r['status'] == 'duplicate' for r in inc.values())}; bridged {bridged}; "
          f"index {size / manifest['documents']:.0f} bytes/doc over {manifest['documents']} documents")
