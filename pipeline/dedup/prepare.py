"""Step 1, one task per input file: read, normalize, clean once, filter, and sign the
candidates. Writes the file's document table (parquet, streamed in row groups), the
MinHash signatures of its candidates and its exact-hash rows routed by partition."""

from __future__ import annotations

import json
from contextlib import ExitStack

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from common.storage import Location
from pipeline.corpus_io import Rejected, SourceFile, iter_file
from pipeline.dedup.config import DedupStageConfig, hasher, keep_rank
from pipeline.dedup.layout import Layout, local_output, save_npy, save_npz
from pipeline.dedup.routed import load_routed, save_routed
from pipeline.filters import build_filter
from pipeline.normalize import clean_text, normalize_text

STATUS_CODES = {"candidate": 0, "filtered": 1, "rejected": 2}
HASH_DTYPE = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("rank", "<i8"), ("local", "<i8")])
ROUTED_HASH_DTYPE = np.dtype(HASH_DTYPE.descr + [("file", "<i8")])  # as exchanged: with the file number
TABLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("line", pa.int64()),
        ("source", pa.string()),
        ("bytes", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("text", pa.large_string()),
        ("record", pa.large_string()),
        ("raw", pa.string()),
    ]
)
_ROW_GROUP_BYTES = 16 << 20  # text buffered before a parquet row group is written


def prepare_file(cfg: DedupStageConfig, layout: Layout, file_no: int, sf: SourceFile) -> dict:
    """Read, normalize, filter and sign one input file; returns its document count."""
    keep_filter = build_filter(cfg.filters)
    table = _TableWriter(layout.table(file_no))
    hashes = []
    signer = _Signer(cfg)
    for local, item in enumerate(iter_file(sf)):
        if isinstance(item, Rejected):
            table.add(item.id, item.line, item.source, item.nbytes, "rejected", item.reason, None, None, item.raw)
            continue
        text = normalize_text(item.text) if cfg.normalize.enabled else item.text
        cleaned = clean_text(text)  # once: the short rule measures it, MinHash shingles it
        reason = keep_filter(text, item.source, cleaned=cleaned)
        record = dict(item.record)
        record["text"] = None  # the text lives in its own column
        line = int(item.id.rsplit(":", 1)[1])
        status = "filtered" if reason else "candidate"
        table.add(item.id, line, item.source, item.nbytes, status, reason, text, json.dumps(record, ensure_ascii=False), None)
        if status == "candidate":
            digest = xxhash.xxh3_128_digest(text.encode("utf-8"))
            hi, lo = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
            hashes.append((hi, lo, keep_rank(cfg.duplicates, item.source, item.nbytes), local))
            signer.add(local, cleaned)
    n = len(table.status)
    signer.save(layout, file_no)
    hash_rows = np.array(hashes, dtype=HASH_DTYPE) if hashes else np.empty(0, dtype=HASH_DTYPE)
    save_hash_rows(cfg, layout, file_no, hash_rows)
    ranks = np.zeros(n, dtype=np.int64)
    ranks[hash_rows["local"]] = hash_rows["rank"]
    save_npz(layout.meta(file_no), status=np.array(table.status, dtype=np.int8), rank=ranks,
             line=np.array(table.lines, dtype=np.int64))
    table.close()
    return {"docs": n}


class _TableWriter:
    """The per-file document table, streamed to parquet in row groups (bounded memory)."""

    def __init__(self, path: Location):
        self.commit = ExitStack()
        self.writer = pq.ParquetWriter(self.commit.enter_context(local_output(path)), TABLE_SCHEMA, compression="zstd")
        self.cols: dict[str, list] = {k: [] for k in TABLE_SCHEMA.names}
        self.buffered = 0
        self.status: list[int] = []
        self.lines: list[int] = []

    def add(self, id_, line, source, nbytes, status, reason, text, record, raw) -> None:
        for key, value in zip(TABLE_SCHEMA.names, (id_, line, source, nbytes, status, reason, text, record, raw)):
            self.cols[key].append(value)
        self.status.append(STATUS_CODES[status])
        self.lines.append(line)
        self.buffered += nbytes
        if self.buffered >= _ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self.cols["id"]:
            self.writer.write_table(pa.table(self.cols, schema=TABLE_SCHEMA))
        self.cols = {k: [] for k in TABLE_SCHEMA.names}
        self.buffered = 0

    def close(self) -> None:
        self._flush()
        self.writer.close()
        self.commit.close()  # the table appears under its name, whole


class _Signer:
    """MinHash signatures of a file's candidates, computed in batches as they are read
    (so the cleaned text is made once and never stored)."""

    def __init__(self, cfg: DedupStageConfig):
        self.enabled = cfg.duplicates.near
        self.mh = hasher(cfg)
        self.batch = cfg.run.batch_docs
        self.local: list[int] = []
        self.pending: list[str] = []
        self.sigs: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []

    def add(self, local: int, cleaned: str) -> None:
        if not self.enabled:
            return
        self.local.append(local)
        self.pending.append(cleaned)
        if len(self.pending) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            sig, valid = self.mh.signatures(self.pending)
            self.sigs.append(sig)
            self.valid.append(valid)
            self.pending = []

    def save(self, layout: Layout, file_no: int) -> None:
        self._flush()
        k = self.mh.num_perm
        save_npy(layout.signatures(file_no), np.concatenate(self.sigs) if self.sigs else np.empty((0, k), dtype=np.uint32))
        save_npy(layout.signature_valid(file_no), np.concatenate(self.valid) if self.valid else np.empty(0, dtype=bool))
        save_npy(layout.signature_docs(file_no), np.array(self.local, dtype=np.int64))


def save_hash_rows(cfg: DedupStageConfig, layout: Layout, file_no: int, rows: np.ndarray) -> None:
    """A file's exact-hash rows (HASH_DTYPE), routed to their partitions for the exact step."""
    routed = np.empty(len(rows), dtype=ROUTED_HASH_DTYPE)
    for name in HASH_DTYPE.names:
        routed[name] = rows[name]
    routed["file"] = file_no
    save_routed(layout.hash_rows(file_no), routed, (rows["hi"] % np.uint64(cfg.run.partitions)).astype(np.int64),
                cfg.run.partitions)


def load_hash_rows(layout: Layout, file_no: int) -> np.ndarray:
    """Every exact-hash row of a file (HASH_DTYPE), in partition order."""
    routed = load_routed(layout.hash_rows(file_no), ROUTED_HASH_DTYPE)
    rows = np.empty(len(routed), dtype=HASH_DTYPE)
    for name in HASH_DTYPE.names:
        rows[name] = routed[name]
    return rows


def file_offsets(doc_counts: list[int]) -> np.ndarray:
    """First dense id of every file (and the total at the end) from the prepare results."""
    offsets = np.zeros(len(doc_counts) + 1, dtype=np.int64)
    np.cumsum(doc_counts, out=offsets[1:])
    return offsets
