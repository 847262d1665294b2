"""The near-duplicate threshold, pinned: pairs planted at known exact Jaccard on both
sides of ``lsh.verify_threshold`` (0.8), and exactly the right ones removed.

Real documents of the sample corpus are edited word by word until the exact Jaccard of
the project's own shingle sets (``shingle_sets`` + ``jaccard`` of the normalized,
cleaned text) reaches each target; the job then runs with the exact check
(``lsh.verify=exact``, the default) and with the signature estimate alone
(``lsh.verify=estimate``).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from pipeline.corpus_io import Document, read_corpus
from pipeline.dedup.config import band_layout, hasher
from pipeline.lsh import band_keys
from pipeline.minhash import estimate_jaccard
from pipeline.normalize import clean_text, normalize_text
from pipeline.shingles import jaccard, shingle_sets
from tests.pipeline.test_dedup import _config, edit_to_jaccard, write_jsonl_zst

TARGETS = (0.78, 0.80, 0.82, 0.84, 0.88)
STEP = 0.005  # one edited word moves the Jaccard of these documents by less than this


def _shingles(cfg, texts: list[str]) -> list[np.ndarray]:
    return shingle_sets([clean_text(normalize_text(t)) for t in texts], cfg.minhash.ngram, cfg.minhash.unit)


def _originals(corpus: Path, cfg, count: int) -> list[str]:
    """Prose documents of the sample corpus, long enough for fine Jaccard steps and
    unlike each other (so the only duplicates are the planted ones)."""
    chosen: list[str] = []
    sets: list[np.ndarray] = []
    for item in read_corpus(corpus):
        if not isinstance(item, Document) or item.folder not in ("docs", "manpages"):
            continue
        text = normalize_text(item.text)
        if not 6000 <= len(clean_text(text)) <= 30000:
            continue
        (own,) = _shingles(cfg, [text])
        if all(jaccard(own, other) < 0.3 for other in sets):
            chosen.append(text)
            sets.append(own)
        if len(chosen) == count:
            return chosen
    pytest.fail(f"the sample corpus has only {len(chosen)} distinct prose documents of 6-30k characters")


@pytest.fixture(scope="module")
def planted(sample_corpus, tmp_path_factory) -> tuple[Path, list[str], list[float]]:
    """A corpus of the originals (source ``original``, first in id order: they are kept) and one
    edited copy of each (source ``variant``); returns its root, the copies' ids and their
    exact Jaccard with their original."""
    cfg = _config(Path("in"), Path("out"))
    originals = _originals(sample_corpus, cfg, len(TARGETS))
    rng = random.Random(0)
    copies = [edit_to_jaccard(text, target, rng, cfg.minhash.ngram)[0] for text, target in zip(originals, TARGETS)]
    pairs = _shingles(cfg, originals + copies)
    exact = [jaccard(pairs[k], pairs[len(TARGETS) + k]) for k in range(len(TARGETS))]
    root = tmp_path_factory.mktemp("planted")
    record = lambda text, source: {"text": text, "meta": {"redpajama_set_name": source}}
    write_jsonl_zst(root / "original" / "docs.jsonl.zst", [record(t, "original") for t in originals])
    write_jsonl_zst(root / "variant" / "docs.jsonl.zst", [record(t, "variant") for t in copies])
    ids = [f"variant/docs.jsonl.zst:{k + 1}" for k in range(len(TARGETS))]
    return root, ids, exact


def test_planted_pairs_sit_where_they_were_put(planted):
    _, _, exact = planted
    for target, j in zip(TARGETS, exact):
        assert target <= j < target + STEP, (target, j)
    assert exact[0] < 0.8 <= exact[1]  # both sides of the threshold


def _removed(out: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "ledger.parquet").to_pylist()
    return {r["id"]: r["kept_id"] for r in rows if r["status"] == "duplicate"}


@pytest.mark.slow
def test_exact_check_removes_exactly_the_pairs_at_or_above_the_threshold(ray_session, planted, tmp_path):
    from pipeline import dedup

    root, ids, exact = planted
    cfg = _config(root, tmp_path / "out", **{"lsh.verify": "exact"})
    assert cfg.lsh.verify_threshold == 0.8
    dedup.run(cfg)
    expected = {i: f"original/docs.jsonl.zst:{k + 1}" for k, (i, j) in enumerate(zip(ids, exact)) if j >= 0.8}
    assert _removed(tmp_path / "out") == expected
    assert len(expected) == 4  # 0.80, 0.82, 0.84, 0.88 go; 0.78 stays


@pytest.mark.slow
def test_estimate_removes_exactly_the_candidate_pairs_whose_estimate_reaches_the_threshold(ray_session, planted,
                                                                                           tmp_path):
    from pipeline import dedup

    root, ids, exact = planted
    cfg = _config(root, tmp_path / "out", **{"lsh.verify": "estimate"})
    dedup.run(cfg)
    texts = {d.id: clean_text(normalize_text(d.text)) for d in read_corpus(root) if isinstance(d, Document)}
    signatures, _ = hasher(cfg).signatures([texts[i] for i in ids] + [texts[f"original/docs.jsonl.zst:{k + 1}"]
                                                                      for k in range(len(ids))])
    copy, orig = signatures[: len(ids)], signatures[len(ids):]
    estimate = estimate_jaccard(copy, orig)
    keys = band_keys(signatures, *band_layout(cfg))
    candidate = (keys[: len(ids)] == keys[len(ids):]).any(axis=1)
    assert candidate.all()  # 21 bands of 6 rows find pairs at 0.78 and above
    assert np.abs(estimate - np.array(exact)).max() < 0.15  # the estimate is an estimate of the planted Jaccard
    expected = {i: f"original/docs.jsonl.zst:{k + 1}" for k, i in enumerate(ids) if estimate[k] >= cfg.lsh.verify_threshold}
    assert _removed(tmp_path / "out") == expected
