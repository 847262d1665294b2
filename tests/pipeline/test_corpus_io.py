"""Corpus I/O: bad input is quarantined with file, line and reason; good input is all read;
written chunks respect their size limit, appear atomically and read back unchanged."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.corpus_io import Document, Rejected, iter_file, list_source_files, read_corpus
from pipeline.corpus_write import ChunkWriter, Quarantine

DATA = Path(__file__).resolve().parents[1] / "data"
BAD = DATA / "bad"
EXPECTED = json.loads((DATA / "bad_expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bad_items() -> list:
    return list(read_corpus(BAD))


def test_every_good_record_is_read_with_its_source(bad_items):
    docs = {d.id: d.source for d in bad_items if isinstance(d, Document)}
    assert docs == EXPECTED["documents"]


def test_every_bad_record_is_rejected_with_its_reason(bad_items):
    rejected = {r.id: r for r in bad_items if isinstance(r, Rejected)}
    assert set(rejected) == set(EXPECTED["rejected"])
    for doc_id, reason in EXPECTED["rejected"].items():
        r = rejected[doc_id]
        assert reason in r.reason, (doc_id, r.reason)
        assert f"{r.file}:{r.line}" == r.id  # file and line are both recorded
        assert r.file == doc_id.rsplit(":", 1)[0]


def test_counts_add_up_per_file(bad_items):
    """Every non-blank line of a JSONL file is exactly one document or one rejection."""
    items_per_file = Counter(i.id.rsplit(":", 1)[0] for i in bad_items)
    for name in ("web/mixed.jsonl", "web/windows.jsonl", "code/part2/more.jsonl"):
        lines = (BAD / name).read_bytes().splitlines()
        assert items_per_file[name] == sum(1 for ln in lines if ln.strip()), name
    ids = [i.id for i in bad_items]
    assert len(ids) == len(set(ids)), "an id was emitted twice"
    assert len(bad_items) == len(EXPECTED["documents"]) + len(EXPECTED["rejected"])


def test_ids_are_folder_file_and_line(bad_items):
    for item in bad_items:
        folder, rest = item.id.split("/", 1)
        name, line = rest.rsplit(":", 1)
        assert (BAD / folder / name).is_file()
        assert int(line) >= 0
        if isinstance(item, Document):
            assert item.folder == folder and int(line) >= 1


def test_documents_keep_text_and_full_record(bad_items):
    mixed = (BAD / "web" / "mixed.jsonl").read_bytes().split(b"\n")
    for doc in bad_items:
        if isinstance(doc, Document) and doc.id.startswith("web/mixed.jsonl:"):
            line_no = int(doc.id.rsplit(":", 1)[1])
            assert doc.record == json.loads(mixed[line_no - 1])
            assert doc.text == doc.record["text"]


def test_truncated_zstd_keeps_records_before_the_cut():
    sf = next(f for f in list_source_files(BAD) if f.name == "truncated.jsonl.zst")
    items = list(iter_file(sf))
    assert [type(i).__name__ for i in items] == ["Document"] * 5 + ["Rejected"]
    assert items[-1].line == 6 and "truncated" in items[-1].reason


def test_truncated_single_frame_keeps_complete_blocks(tmp_path):
    """A one-frame file cut mid-way: lines decoded before the cut are read, none is lost."""
    lines = [json.dumps({"text": f"line {i} " + "x" * (i % 97), "meta": {}}) for i in range(20000)]
    blob = zstandard.ZstdCompressor(level=3).compress(("\n".join(lines) + "\n").encode())
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "cut.jsonl.zst").write_bytes(blob[: len(blob) * 2 // 3])
    items = list(read_corpus(tmp_path))
    docs = [i for i in items if isinstance(i, Document)]
    assert 0 < len(docs) < len(lines)
    assert [d.id for d in docs] == [f"s/cut.jsonl.zst:{n}" for n in range(1, len(docs) + 1)]
    assert [d.text for d in docs] == [json.loads(ln)["text"] for ln in lines[: len(docs)]]
    assert len(items) == len(docs) + 1 and isinstance(items[-1], Rejected)
    assert items[-1].line == len(docs) + 1


def test_parquet_ids_are_row_numbers(bad_items):
    rows = [i for i in bad_items if i.id.startswith("books/rows.parquet:")]
    assert [i.id.rsplit(":", 1)[1] for i in rows] == ["1", "2", "3", "4"]
    assert isinstance(rows[2], Rejected) and rows[2].line == 3


def test_source_comes_from_meta_else_folder(bad_items):
    by_id = {i.id: i for i in bad_items}
    assert by_id["code/chunk.jsonl.zst:1"].source == "RedPajamaGithub"
    assert by_id["code/chunk.jsonl.zst:3"].source == "code"
    assert by_id["books/rows.parquet:2"].source == "books"  # null set name falls back
    assert by_id["web/mixed.jsonl:5"].source == "RedPajamaC4"  # rejected, source still known


def test_list_source_files_is_sorted_and_skips_other_files():
    files = list_source_files(BAD)
    keys = [(f.folder, f.name) for f in files]
    assert keys == sorted(keys)
    assert all(f.format in ("jsonl", "jsonl.zst", "parquet") for f in files)
    assert not any(f.name.endswith(".txt") for f in files)


def test_quarantine_file_records_file_line_and_reason(bad_items, tmp_path):
    q_path = tmp_path / "q" / "quarantine.jsonl"
    with Quarantine(q_path) as q:
        for item in bad_items:
            if isinstance(item, Rejected):
                q.add(item)
    rows = [json.loads(ln) for ln in q_path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == q.total == len(EXPECTED["rejected"])
    for row in rows:
        assert {"file", "line", "reason", "id", "source"} <= set(row)
        assert EXPECTED["rejected"][row["id"]] in row["reason"]
    assert sum(n for (src, kind), n in q.counts.items() if kind == "invalid JSON") == 2


# --- writing ------------------------------------------------------------------------


def _records(n: int) -> list[dict]:
    words = "alpha beta gamma delta epsilon zeta eta theta caf\u00e9 \u65e5\u672c".split()
    return [
        {"text": " ".join(words[(i + k) % len(words)] for k in range(5 + i % 40)), "meta": {"i": i, "tag": "t"}}
        for i in range(n)
    ]


def test_chunk_writer_respects_size_limit(tmp_path):
    records = _records(500)
    limit = 4000
    with ChunkWriter(tmp_path / "src", prefix="part", max_bytes=limit) as writer:
        for r in records:
            writer.write(r)
    files = writer.files
    assert len(files) > 5
    assert [f.name for f in files] == [f"part-{i:05d}.jsonl.zst" for i in range(len(files))]
    dctx = zstandard.ZstdDecompressor()
    total = 0
    for f in files:
        raw = dctx.decompressobj().decompress(f.read_bytes())
        assert 0 < len(raw) <= limit
        total += raw.count(b"\n")
    assert total == len(records)
    assert not list((tmp_path / "src").glob("*.tmp"))


def test_chunk_writer_oversized_record_gets_its_own_chunk(tmp_path):
    big = {"text": "y" * 5000, "meta": {}}
    with ChunkWriter(tmp_path, max_bytes=1000) as writer:
        writer.write({"text": "small", "meta": {}})
        writer.write(big)
        writer.write({"text": "small again", "meta": {}})
    texts = [[d.text for d in iter_file(sf)] for sf in list_source_files(tmp_path)]
    assert texts == [["small"], ["y" * 5000], ["small again"]]


def test_chunk_writer_is_atomic(tmp_path):
    """Before close no final chunk name exists; a failure leaves no file behind."""
    out = tmp_path / "src"
    writer = ChunkWriter(out, max_bytes=1 << 20)
    writer.write({"text": "pending", "meta": {}})
    assert not list(out.glob("*.jsonl.zst"))  # only the temporary name so far
    assert [p.name for p in out.glob("*.tmp")] == [f"chunk-00000.jsonl.zst.{os.getpid()}.tmp"]
    assert list_source_files(tmp_path) == []  # readers never see a partial chunk
    writer.close()
    assert [p.name for p in out.glob("*.jsonl.zst")] == ["chunk-00000.jsonl.zst"]

    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError):
        with ChunkWriter(failed) as w:
            w.write({"text": "lost", "meta": {}})
            raise RuntimeError("crash mid-chunk")
    assert list(failed.iterdir()) == []


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.zst", "parquet"])
def test_round_trip(tmp_path, fmt):
    """read(write(x)) == x for every input format (text, meta and extra keys)."""
    records = _records(300)
    records[7]["text"] = "line one\nline two\r\n\ttabbed \"quoted\" \\ backslash \u2028 sep"
    records[8]["text"] = ""
    records[9]["text"] = "long line crossing read buffers " * 100_000  # ~3 MB, one record
    src = tmp_path / "corpus" / "mysource"
    src.mkdir(parents=True)
    if fmt == "jsonl":
        (src / "data.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )
    elif fmt == "jsonl.zst":
        with ChunkWriter(src, max_bytes=5000) as w:
            for r in records:
                w.write(r)
    else:
        pq.write_table(pa.Table.from_pylist(records), src / "data.parquet", row_group_size=64)
    items = list(read_corpus(tmp_path / "corpus"))
    assert all(isinstance(i, Document) for i in items)
    assert [d.record for d in items] == records
    assert {d.source for d in items} == {"mysource"}
    if fmt != "jsonl.zst":
        assert [d.id for d in items] == [f"mysource/data.{fmt}:{n}" for n in range(1, 301)]

    # and writing what was read gives the same records again
    out = tmp_path / "again" / "mysource"
    with ChunkWriter(out, max_bytes=7000) as w:
        for d in items:
            w.write(d.record)
    assert [d.record for d in read_corpus(tmp_path / "again")] == records


def test_files_directly_in_the_root_belong_to_the_root_folder(tmp_path):
    root = tmp_path / "RedPajamaArXiv"
    root.mkdir()
    (root / "arxiv_0.jsonl").write_text('{"text": "a paper", "meta": {}}\n', encoding="utf-8")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.jsonl").write_text('{"text": "skipped", "meta": {}}\n', encoding="utf-8")
    [doc] = list(read_corpus(root))
    assert doc.id == "RedPajamaArXiv/arxiv_0.jsonl:1" and doc.source == "RedPajamaArXiv"
