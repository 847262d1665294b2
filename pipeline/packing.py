"""Cut a stream of tokenized documents into rows of exactly ``seq_len`` tokens.

Documents (each already ending with EOS) are concatenated in stream order; every
``seq_len`` tokens make one row. A row records where documents start inside it
(``doc_starts``) so a trainer can reset attention at boundaries, and the source that
contributed most of its tokens (ties: the source seen first in the stream). The tail that
does not fill a row is kept as a counted remainder (tokens, document starts, EOS ids,
tokens per source), never silently dropped.

Rows are spooled unshuffled to a temporary Arrow file, then shuffled with a seeded
permutation across the whole split and written as size-bounded shards.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.shard_format import shard_name, shard_schema


@dataclass
class PackedRows:
    input_ids: np.ndarray  # uint16 [rows, seq_len]
    doc_starts: list[np.ndarray]  # int32 positions per row
    source: list[str]  # majority source per row

    def __len__(self) -> int:
        return len(self.source)


@dataclass
class Remainder:
    tokens: int = 0
    documents_started: int = 0
    eos: int = 0
    source_tokens: dict[str, int] = field(default_factory=dict)


class Packer:
    """Streaming packer: ``add`` documents, get full rows back, ``finish`` for the tail."""

    def __init__(self, seq_len: int, eos_id: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.source_names: list[str] = []
        self._codes: dict[str, int] = {}
        self._tokens = np.empty(0, dtype=np.uint16)
        self._token_source = np.empty(0, dtype=np.int32)
        self._starts = np.empty(0, dtype=np.int64)  # document starts in the buffer
        self.rows = 0
        self.documents = 0
        self.source_tokens: dict[str, int] = {}  # tokens in emitted rows, per source

    def _code(self, source: str) -> int:
        code = self._codes.get(source)
        if code is None:
            code = self._codes[source] = len(self.source_names)
            self.source_names.append(source)
        return code

    def add(self, tokens: np.ndarray, lengths: np.ndarray, sources: list[str]) -> PackedRows:
        """Append documents (``tokens`` = their ids concatenated, ``lengths`` each's count)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != len(tokens) or len(sources) != len(lengths):
            raise ValueError("tokens, lengths and sources of a batch do not agree")
        codes = np.fromiter((self._code(s) for s in sources), dtype=np.int32, count=len(sources))
        base = len(self._tokens)
        new_starts = base + np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(lengths) else np.empty(0, np.int64)
        keep = lengths > 0
        self.documents += int(keep.sum())
        buffer = np.concatenate((self._tokens, np.asarray(tokens, dtype=np.uint16)))
        token_source = np.concatenate((self._token_source, np.repeat(codes, lengths)))
        starts = np.concatenate((self._starts, new_starts[keep]))
        return self._emit(buffer, token_source, starts)

    def _emit(self, buffer: np.ndarray, token_source: np.ndarray, starts: np.ndarray) -> PackedRows:
        L = self.seq_len
        n = len(buffer) // L
        cut = n * L
        ids = buffer[:cut].reshape(n, L)
        bounds = np.searchsorted(starts, np.arange(n + 1, dtype=np.int64) * L)
        doc_starts = [(starts[bounds[r] : bounds[r + 1]] - r * L).astype(np.int32) for r in range(n)]
        row_sources = token_source[:cut].reshape(n, L)
        counts = np.stack([(row_sources == c).sum(axis=1) for c in range(len(self.source_names))], axis=1) if n else np.zeros((0, 0), np.int64)
        majority = counts.argmax(axis=1) if n else np.empty(0, np.int64)
        for c, name in enumerate(self.source_names):
            if n:
                self.source_tokens[name] = self.source_tokens.get(name, 0) + int(counts[:, c].sum())
        self.rows += n
        self._tokens = buffer[cut:].copy()
        self._token_source = token_source[cut:].copy()
        self._starts = starts[bounds[n]:] - cut
        return PackedRows(ids, doc_starts, [self.source_names[m] for m in majority.tolist()])

    def finish(self) -> Remainder:
        """The tokens that did not fill a row, counted (the packer is then empty)."""
        per_source = np.bincount(self._token_source, minlength=len(self.source_names))
        remainder = Remainder(
            tokens=len(self._tokens),
            documents_started=len(self._starts),
            eos=int((self._tokens == self.eos_id).sum()),
            source_tokens={name: int(per_source[c]) for c, name in enumerate(self.source_names) if per_source[c]},
        )
        self._tokens = np.empty(0, dtype=np.uint16)
        self._token_source = np.empty(0, dtype=np.int32)
        self._starts = np.empty(0, dtype=np.int64)
        return remainder


# --- rows to shards -----------------------------------------------------------------

SHARD_OVERHEAD_BYTES = 64 << 10  # schema + metadata + footer of one Arrow IPC file
BATCH_OVERHEAD_BYTES = 1 << 10  # message header and alignment of one record batch


def rows_to_batch(rows: PackedRows, schema: pa.Schema) -> pa.RecordBatch:
    """One Arrow record batch of packed rows in the shard schema."""
    seq_len = rows.input_ids.shape[1]
    ids = pa.FixedSizeListArray.from_arrays(pa.array(rows.input_ids.reshape(-1), pa.uint16()), seq_len)
    counts = np.fromiter((len(d) for d in rows.doc_starts), dtype=np.int32, count=len(rows.doc_starts))
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    values = np.concatenate(rows.doc_starts).astype(np.int32) if len(rows.doc_starts) else np.empty(0, np.int32)
    doc_starts = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))
    source = pa.array(rows.source, pa.string())
    return pa.RecordBatch.from_arrays([ids, doc_starts, source], schema=schema)


class RowSpool:
    """Unshuffled rows of one (seq_len, split), appended to a temporary Arrow file."""

    def __init__(self, path: Path, seq_len: int):
        self.path = Path(path)
        self.schema = shard_schema(seq_len)
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)
        self.rows = 0

    def write(self, rows: PackedRows) -> None:
        if len(rows):
            self._writer.write_batch(rows_to_batch(rows, self.schema))
            self.rows += len(rows)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def shuffle_order(num_rows: int, seed: int, seq_len: int, split: str) -> np.ndarray:
    """The seeded permutation of a whole split's rows (one stream per length and split)."""
    split_key = int.from_bytes(hashlib.sha256(split.encode()).digest()[:4], "big")
    return np.random.default_rng([seed, seq_len, split_key]).permutation(num_rows)


def shard_assignment(row_bytes: np.ndarray, max_bytes: int, rows_per_batch: int) -> np.ndarray:
    """Shard index of each row (rows in write order), keeping every shard under max_bytes."""
    if len(row_bytes) == 0:
        return np.empty(0, dtype=np.int64)
    largest = int(row_bytes.max())
    # Worst case per shard: the budget, one row past it, and a batch header per batch.
    budget = max_bytes - SHARD_OVERHEAD_BYTES - largest
    per_row_overhead = BATCH_OVERHEAD_BYTES / max(1, rows_per_batch)
    budget_rows = row_bytes + per_row_overhead
    if budget <= BATCH_OVERHEAD_BYTES + largest:
        raise ValueError(
            f"shards.max_bytes={max_bytes} is too small for rows of {largest} bytes; "
            f"use at least {SHARD_OVERHEAD_BYTES + 3 * (largest + BATCH_OVERHEAD_BYTES)}"
        )
    starts = np.concatenate(([0.0], np.cumsum(budget_rows)[:-1]))
    return (starts // budget).astype(np.int64)


def write_shards(
    spool_path: Path,
    out_dir: Path,
    metadata: dict[str, str],
    seed: int,
    split: str,
    max_bytes: int,
    rows_per_batch: int,
) -> list[dict]:
    """Shuffle the spooled rows of a split and write them as shard files.

    Each shard is written under a temporary name and renamed when complete. Returns one
    manifest entry per shard: name, rows, bytes, sha256.
    """
    source = pa.memory_map(str(spool_path), "r")  # rows stay on disk, mapped
    table = pa.ipc.open_file(source).read_all()
    seq_len = int(metadata["seq_len"])
    schema = shard_schema(seq_len, metadata)
    order = shuffle_order(table.num_rows, seed, seq_len, split)
    doc_counts = pc.list_value_length(table.column("doc_starts")).to_numpy(zero_copy_only=False)
    name_bytes = pc.binary_length(table.column("source")).to_numpy(zero_copy_only=False)
    row_bytes = 2 * seq_len + 4 * doc_counts.astype(np.int64) + name_bytes.astype(np.int64) + 8
    assignment = shard_assignment(row_bytes[order], max_bytes, rows_per_batch)
    bounds = np.searchsorted(assignment, np.arange(int(assignment.max()) + 2 if len(assignment) else 1))
    entries = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for index in range(len(bounds) - 1):
        take = order[bounds[index] : bounds[index + 1]]
        part = table.take(pa.array(take)).combine_chunks().replace_schema_metadata(schema.metadata)
        name = shard_name(index)
        entries.append(write_ipc_file(out_dir / name, part, rows_per_batch))
        if entries[-1]["bytes"] > max_bytes:
            raise AssertionError(f"{out_dir / name}: {entries[-1]['bytes']} bytes exceeds shards.max_bytes={max_bytes}")
    source.close()
    return entries


def partial_path(path: Path) -> Path:
    """A temporary name private to this process: a stray writer from a killed run (its Ray
    workers can outlive it briefly) never shares a half-written file with a re-run."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_ipc_file(path: Path, table: pa.Table, rows_per_batch: int) -> dict:
    """Write ``table`` as an Arrow IPC file atomically; return its manifest entry."""
    partial = partial_path(path)
    with pa.OSFile(str(partial), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=rows_per_batch)
    digest = hashlib.sha256()
    with open(partial, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    size = partial.stat().st_size
    os.replace(partial, path)
    return {"name": path.name, "rows": table.num_rows, "bytes": size, "sha256": digest.hexdigest()}
