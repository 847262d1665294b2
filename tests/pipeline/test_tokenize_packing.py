"""Unit tests of the pure parts of tokenize: split, repetition, packing, shard sizing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline import split as splitting
from pipeline.packing import Packer, RowSpool, shard_assignment, shuffle_order, write_shards
from pipeline.shard_format import read_metadata, shard_schema

EOS = 50256


def make_docs(rng: np.random.Generator, n: int, max_len: int = 300) -> list[np.ndarray]:
    docs = []
    for _ in range(n):
        body = rng.integers(0, EOS, size=int(rng.integers(0, max_len)), dtype=np.uint16)
        docs.append(np.append(body, np.uint16(EOS)))
    return docs


def pack_all(docs, sources, seq_len, batch):
    packer = Packer(seq_len, EOS)
    rows, starts, majority = [], [], []
    for i in range(0, len(docs), batch):
        chunk = docs[i : i + batch]
        out = packer.add(np.concatenate(chunk), np.array([len(d) for d in chunk]), sources[i : i + batch])
        rows.append(out.input_ids)
        starts += [s.tolist() for s in out.doc_starts]
        majority += out.source
    return np.concatenate(rows), starts, majority, packer, packer.finish()


def test_packing_cuts_exact_rows_and_counts_the_tail():
    rng = np.random.default_rng(0)
    docs = make_docs(rng, 200)
    sources = [["a", "b", "c"][i % 3] for i in range(len(docs))]
    stream = np.concatenate(docs)
    rows, starts, majority, packer, remainder = pack_all(docs, sources, 512, batch=17)
    assert rows.shape[1] == 512 and rows.dtype == np.uint16
    n = len(stream) // 512
    assert rows.shape[0] == n == packer.rows
    assert (rows.reshape(-1) == stream[: n * 512]).all()
    assert remainder.tokens == len(stream) - n * 512
    assert remainder.eos == int((stream[n * 512 :] == EOS).sum())
    # Every document start lands in exactly one row or in the remainder.
    doc_offsets = np.concatenate(([0], np.cumsum([len(d) for d in docs])[:-1]))
    expected = [[int(o - r * 512) for o in doc_offsets if r * 512 <= o < (r + 1) * 512] for r in range(n)]
    assert starts == expected
    assert remainder.documents_started == int((doc_offsets >= n * 512).sum())
    assert sum(packer.source_tokens.values()) == n * 512
    assert sum(packer.source_tokens.values()) + sum(remainder.source_tokens.values()) == len(stream)


def test_packing_is_independent_of_batching():
    rng = np.random.default_rng(1)
    docs = make_docs(rng, 150)
    sources = ["x" if i % 4 else "y" for i in range(len(docs))]
    one = pack_all(docs, sources, 256, batch=len(docs))
    many = pack_all(docs, sources, 256, batch=3)
    assert (one[0] == many[0]).all() and one[1] == many[1] and one[2] == many[2]
    assert one[4] == many[4]


def test_majority_source_of_a_row():
    packer = Packer(10, EOS)
    docs = [np.array([1, 2, EOS], np.uint16), np.array([3, 4, 5, 6, 7, 8, EOS], np.uint16)]
    out = packer.add(np.concatenate(docs), np.array([3, 7]), ["small", "big"])
    assert out.source == ["big"] and out.doc_starts[0].tolist() == [0, 3]
    assert packer.source_tokens == {"small": 3, "big": 7}


def test_row_sources_match_a_per_token_count():
    rng = np.random.default_rng(2)
    docs = make_docs(rng, 300, max_len=900)  # many documents longer than a row
    sources = [str(rng.choice(["p", "q", "r", "s"])) for _ in docs]
    rows, _, majority, packer, remainder = pack_all(docs, sources, 128, batch=7)
    token_source = np.concatenate([np.full(len(d), i) for i, d in enumerate(docs)])
    token_source = np.array([sources[i] for i in token_source])
    first_seen = list(dict.fromkeys(sources))
    expected, totals = [], {}
    for r in range(len(rows)):
        names, counts = np.unique(token_source[r * 128 : (r + 1) * 128], return_counts=True)
        best = max(counts)
        expected.append(min((n for n, c in zip(names, counts) if c == best), key=first_seen.index))
        for n, c in zip(names, counts):
            totals[str(n)] = totals.get(str(n), 0) + int(c)
    assert majority == expected
    assert packer.source_tokens == totals
    names, counts = np.unique(token_source[len(rows) * 128 :], return_counts=True)
    assert remainder.source_tokens == {str(n): int(c) for n, c in zip(names, counts)}


def test_document_longer_than_several_rows():
    packer = Packer(4, EOS)
    doc = np.append(np.arange(1, 10, dtype=np.uint16), np.uint16(EOS))  # 10 tokens
    out = packer.add(doc, np.array([10]), ["s"])
    assert out.input_ids.shape == (2, 4)
    assert [s.tolist() for s in out.doc_starts] == [[0], []]
    rem = packer.finish()
    assert (rem.tokens, rem.documents_started, rem.eos) == (2, 0, 1)


def test_split_is_deterministic_and_near_its_fractions():
    ids = [f"src/file-{i // 1000}.jsonl.zst:{i % 1000 + 1}" for i in range(20000)]
    splits = [splitting.assign_split(d, 7, 0.05, 0.03) for d in ids]
    assert splits == [splitting.assign_split(d, 7, 0.05, 0.03) for d in ids]
    counts = np.bincount(splits, minlength=3) / len(ids)
    assert abs(counts[splitting.VALIDATION] - 0.05) < 0.01 and abs(counts[splitting.TEST] - 0.03) < 0.01
    other_seed = [splitting.assign_split(d, 8, 0.05, 0.03) for d in ids]
    assert other_seed != splits


def test_decontamination_is_by_raw_text_hash_and_only_for_train():
    holdout = {splitting.text_sha256("held out text")}
    assert splitting.is_contaminated(splitting.TRAIN, splitting.text_sha256("held out text"), holdout)
    assert not splitting.is_contaminated(splitting.TRAIN, splitting.text_sha256("held out text "), holdout)
    assert not splitting.is_contaminated(splitting.VALIDATION, splitting.text_sha256("held out text"), holdout)


def test_repeats_follow_the_weight():
    ids = [f"s/f:{i}" for i in range(10000)]
    reps = np.array([splitting.repeats(d, "web", 0, {"web": 2.3}) for d in ids])
    assert set(reps.tolist()) == {2, 3} and abs(reps.mean() - 2.3) < 0.02
    assert all(splitting.repeats(d, "other", 0, {"web": 2.3}) == 1 for d in ids[:100])
    assert all(splitting.repeats(d, "web", 0, {"web": 0.0}) == 0 for d in ids[:100])


def test_fractions_are_validated():
    with pytest.raises(ValueError, match="validation_fraction"):
        splitting.check_fractions(1.5, 0.0)
    with pytest.raises(ValueError, match="below 1"):
        splitting.check_fractions(0.6, 0.5)


def test_shard_assignment_bounds_bytes():
    row_bytes = np.full(1000, 4096 + 40)
    assignment = shard_assignment(row_bytes, max_bytes=200_000, rows_per_batch=16)
    assert (np.diff(assignment) >= 0).all() and assignment[0] == 0
    assert len(set(assignment.tolist())) > 1
    with pytest.raises(ValueError, match="too small"):
        shard_assignment(row_bytes, max_bytes=70_000, rows_per_batch=16)


def test_shards_shuffle_rows_stay_under_max_bytes_and_carry_metadata(tmp_path):
    rng = np.random.default_rng(2)
    docs = make_docs(rng, 400)
    packer = Packer(128, EOS)
    spool = RowSpool(tmp_path / "rows.arrow", 128)
    for i in range(0, len(docs), 50):
        chunk = docs[i : i + 50]
        spool.write(packer.add(np.concatenate(chunk), np.array([len(d) for d in chunk]), ["s"] * len(chunk)))
    spool.close()
    metadata = {"format_version": "1", "tokenizer_sha256": "x", "seq_len": "128", "eos_id": str(EOS),
                "vocab_size": "50257", "split": "train", "config": "{}"}
    entries = write_shards(spool.path, tmp_path / "out", metadata, seed=3, split="train", max_bytes=100_000, rows_per_batch=32)
    assert len(entries) > 1 and all(e["bytes"] <= 100_000 for e in entries)
    assert not list((tmp_path / "out").glob("*.tmp"))
    tables = [pa.ipc.open_file(pa.memory_map(str(tmp_path / "out" / e["name"]))).read_all() for e in entries]
    assert all(t.schema.equals(shard_schema(128)) for t in tables)
    assert read_metadata(tmp_path / "out" / entries[0]["name"]) == metadata
    shuffled = np.concatenate([np.stack(t.column("input_ids").to_numpy(zero_copy_only=False)) for t in tables])
    original = pa.ipc.open_file(pa.memory_map(str(spool.path))).read_all()
    unshuffled = np.stack(original.column("input_ids").to_numpy(zero_copy_only=False))
    order = shuffle_order(len(unshuffled), 3, 128, "train")
    assert not (order == np.arange(len(order))).all()
    assert (shuffled == unshuffled[order]).all()
