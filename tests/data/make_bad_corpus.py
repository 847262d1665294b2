"""Write tests/data/bad/: a corpus of bad input mixed with good records.

Every kind of bad input the reader must survive is here, next to good records, and
``expected.json`` lists the exact outcome: the id of every good document (with its
source) and the id and reason of every rejection. Run it again to regenerate:

    python tests/data/make_bad_corpus.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

HERE = Path(__file__).resolve().parent
ROOT = HERE / "bad"

PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.",
    "Deduplication removes documents whose character shingles overlap with an earlier document.",
    "A zstd frame that ends early leaves the reader with a partial block it cannot decode.",
    "Caf\u00e9 cr\u00e8me, na\u00efve fa\u00e7ade, \u00fcber-stra\u00dfe and \u65e5\u672c\u8a9e text survive as UTF-8.",
    "def add(a, b):\n    return a + b\n",
]


def good(i: int, **meta: str) -> dict:
    return {"text": f"{PARAGRAPHS[i % len(PARAGRAPHS)]} (record {i})", "meta": dict(meta)}


def line(record: object) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


class Expect:
    def __init__(self) -> None:
        self.documents: dict[str, str] = {}  # id -> source
        self.rejected: dict[str, str] = {}  # id -> reason substring

    def doc(self, doc_id: str, source: str) -> None:
        self.documents[doc_id] = source

    def bad(self, doc_id: str, reason: str) -> None:
        self.rejected[doc_id] = reason


def write_jsonl(path: Path, lines: list[bytes], newline: bytes = b"\n", final_newline: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = newline.join(lines) + (newline if final_newline else b"")
    path.write_bytes(data)


def make_mixed_jsonl(exp: Expect) -> None:
    """web/mixed.jsonl: every per-line fault between good lines."""
    lines: list[bytes] = []

    def add(raw: bytes, reason: str | None, source: str = "web") -> None:
        lines.append(raw)
        doc_id = f"web/mixed.jsonl:{len(lines)}"
        if reason is None:
            exp.doc(doc_id, source)
        else:
            exp.bad(doc_id, reason)

    add(line(good(0)), None)
    add(b'{"text": "unterminated string, "meta": {}}', "invalid JSON")
    add(line(good(1, redpajama_set_name="RedPajamaCommonCrawl")), None, "RedPajamaCommonCrawl")
    add(b'{"text": "Latin-1 byte \xe9 is not UTF-8", "meta": {}}', "invalid UTF-8")
    add(line({"meta": {"redpajama_set_name": "RedPajamaC4"}}), "missing 'text'")
    add(line({"text": 42, "meta": {}}), "'text' is int")
    add(line({"text": None, "meta": {}}), "'text' is NoneType")
    add(line({"text": ["a", "list"], "meta": {}}), "'text' is list")
    add(line(["text", "not an object"]), "not an object")
    add(b'{"text": "lone surrogate \\ud800 here", "meta": {}}', "surrogate")
    add(line(good(2)), None)
    lines.append(b"")  # a blank line is not a record: neither read nor rejected
    add(line(good(3)), None)
    add(b'{"text": "cut off in the middle', "invalid JSON")
    add(line(good(4)), None)  # the last line has no trailing newline
    write_jsonl(ROOT / "web" / "mixed.jsonl", lines, final_newline=False)


def make_crlf_jsonl(exp: Expect) -> None:
    """web/windows.jsonl: CRLF line ends are still good records."""
    recs = [good(i) for i in range(3)]
    write_jsonl(ROOT / "web" / "windows.jsonl", [line(r) for r in recs], newline=b"\r\n")
    for i in range(3):
        exp.doc(f"web/windows.jsonl:{i + 1}", "web")


def make_empty(exp: Expect) -> None:
    (ROOT / "web").mkdir(parents=True, exist_ok=True)
    (ROOT / "web" / "empty.jsonl").write_bytes(b"")
    exp.bad("web/empty.jsonl:0", "empty file")
    (ROOT / "web" / "blank.jsonl").write_bytes(b"\n\n  \n")
    exp.bad("web/blank.jsonl:0", "empty file")


def make_truncated_zst(exp: Expect) -> None:
    """web/truncated.jsonl.zst: two zstd frames, the second cut in half.

    Records 1-5 sit in the complete first frame and must be read; the cut frame holds
    records 6-10, which come out as one rejection at line 6 (the rest of the file).
    """
    cctx = zstandard.ZstdCompressor(level=3)
    frame1 = cctx.compress(b"".join(line(good(i)) + b"\n" for i in range(5)))
    frame2 = cctx.compress(b"".join(line(good(i)) + b"\n" for i in range(5, 10)))
    (ROOT / "web" / "truncated.jsonl.zst").write_bytes(frame1 + frame2[: len(frame2) // 2])
    for i in range(5):
        exp.doc(f"web/truncated.jsonl.zst:{i + 1}", "web")
    exp.bad("web/truncated.jsonl.zst:6", "truncated or corrupt zstd stream")


def make_not_zstd(exp: Expect) -> None:
    (ROOT / "web" / "garbage.jsonl.zst").write_bytes(b"this file is plain text, not a zstd stream\n")
    exp.bad("web/garbage.jsonl.zst:1", "truncated or corrupt zstd stream")


def make_good_zst(exp: Expect) -> None:
    """code/chunk.jsonl.zst: good records whose source comes from meta."""
    cctx = zstandard.ZstdCompressor(level=3)
    recs = [good(5, redpajama_set_name="RedPajamaGithub") for _ in range(2)] + [good(6)]
    data = b"".join(line(r) + b"\n" for r in recs)
    (ROOT / "code").mkdir(parents=True, exist_ok=True)
    (ROOT / "code" / "chunk.jsonl.zst").write_bytes(cctx.compress(data))
    exp.doc("code/chunk.jsonl.zst:1", "RedPajamaGithub")
    exp.doc("code/chunk.jsonl.zst:2", "RedPajamaGithub")
    exp.doc("code/chunk.jsonl.zst:3", "code")
    # A nested folder belongs to its top-level source folder; the id keeps the sub-path.
    write_jsonl(ROOT / "code" / "part2" / "more.jsonl", [line(good(7))])
    exp.doc("code/part2/more.jsonl:1", "code")


def make_parquet(exp: Expect) -> None:
    """books/rows.parquet: a null text among good rows; books/corrupt.parquet: not parquet."""
    (ROOT / "books").mkdir(parents=True, exist_ok=True)
    texts = [f"{PARAGRAPHS[i]} (row {i + 1})" for i in range(4)]
    texts[2] = None
    metas = [{"redpajama_set_name": "RedPajamaBook"}, {"redpajama_set_name": None}, {}, {}]
    table = pa.table(
        {
            "text": pa.array(texts, type=pa.string()),
            "meta": pa.array(metas, type=pa.struct([("redpajama_set_name", pa.string())])),
        }
    )
    pq.write_table(table, ROOT / "books" / "rows.parquet", row_group_size=2)
    exp.doc("books/rows.parquet:1", "RedPajamaBook")
    exp.doc("books/rows.parquet:2", "books")
    exp.bad("books/rows.parquet:3", "'text' is NoneType")
    exp.doc("books/rows.parquet:4", "books")

    good_bytes = (ROOT / "books" / "rows.parquet").read_bytes()
    # Keep the magic bytes at both ends but destroy the footer: pyarrow must refuse it.
    corrupt = good_bytes[:4] + b"\x00" * (len(good_bytes) - 12) + b"\xff\xff\x00\x00PAR1"
    (ROOT / "books" / "corrupt.parquet").write_bytes(corrupt)
    exp.bad("books/corrupt.parquet:1", "unreadable parquet")


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    ROOT.mkdir(parents=True)
    exp = Expect()
    make_mixed_jsonl(exp)
    make_crlf_jsonl(exp)
    make_empty(exp)
    make_truncated_zst(exp)
    make_not_zstd(exp)
    make_good_zst(exp)
    make_parquet(exp)
    # Files that are not corpus files are ignored by the reader.
    (ROOT / "README.txt").write_text("Bad input for the reader's tests; see ../make_bad_corpus.py.\n")
    expected = {
        "documents": dict(sorted(exp.documents.items())),
        "rejected": dict(sorted(exp.rejected.items())),
    }
    (HERE / "bad_expected.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {ROOT}: {len(exp.documents)} good documents, {len(exp.rejected)} rejections")


if __name__ == "__main__":
    main()
