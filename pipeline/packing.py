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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.shard_format import rows_table, shard_name, shard_schema, write_shard


@dataclass
class PackedRows:
    input_ids: np.ndarray  # [rows, seq_len], the shards' id type
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
    """Streaming packer: ``add`` documents, get full rows back, ``finish`` for the tail.

    Sources are tracked per document, not per token: tokens per (row, source) are summed
    over the pieces that document starts and row starts cut the stream into, so the cost
    grows with documents + rows rather than with tokens.
    """

    def __init__(self, seq_len: int, eos_id: int, dtype=np.uint16):
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.dtype = np.dtype(dtype)
        self.source_names: list[str] = []
        self._codes: dict[str, int] = {}
        self._tokens = np.empty(0, dtype=self.dtype)
        self._starts = np.empty(0, dtype=np.int64)  # document starts in the buffer
        self._start_codes = np.empty(0, dtype=np.int64)  # their sources
        self._open_code = -1  # source of the document running into the buffer from before
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
        codes = np.fromiter((self._code(s) for s in sources), dtype=np.int64, count=len(sources))
        new_starts = len(self._tokens) + np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(lengths) else np.empty(0, np.int64)
        keep = lengths > 0
        self.documents += int(keep.sum())
        self._tokens = np.concatenate((self._tokens, np.asarray(tokens, dtype=self.dtype)))
        self._starts = np.concatenate((self._starts, new_starts[keep]))
        self._start_codes = np.concatenate((self._start_codes, codes[keep]))
        return self._emit()

    def _tokens_per_source(self, rows: int, end: int) -> np.ndarray:
        """Tokens of each source in each of ``rows`` rows of the buffer's first ``end`` tokens: [rows, sources]."""
        inside = self._starts[self._starts < end]
        pieces = np.union1d(np.arange(rows, dtype=np.int64) * self.seq_len, inside)
        owner = np.searchsorted(inside, pieces, side="right")  # 1 + last document start <= piece
        codes = np.concatenate(([self._open_code], self._start_codes))[owner]
        sizes = np.diff(np.append(pieces, end))
        row = np.minimum(pieces // self.seq_len, rows - 1)
        width = len(self.source_names)
        return np.bincount(row * width + codes, weights=sizes, minlength=rows * width).astype(np.int64).reshape(rows, width)

    def _emit(self) -> PackedRows:
        L = self.seq_len
        n = len(self._tokens) // L
        cut = n * L
        ids = self._tokens[:cut].reshape(n, L)
        bounds = np.searchsorted(self._starts, np.arange(n + 1, dtype=np.int64) * L)
        doc_starts = [(self._starts[bounds[r] : bounds[r + 1]] - r * L).astype(np.int32) for r in range(n)]
        majority: list[int] = []
        if n:
            counts = self._tokens_per_source(n, cut)
            majority = counts.argmax(axis=1).tolist()  # ties: the source seen first
            for c, total in enumerate(counts.sum(axis=0).tolist()):
                name = self.source_names[c]
                self.source_tokens[name] = self.source_tokens.get(name, 0) + total
            if bounds[n]:
                self._open_code = int(self._start_codes[bounds[n] - 1])
        self.rows += n
        self._tokens = self._tokens[cut:].copy()
        self._starts = self._starts[bounds[n]:] - cut
        self._start_codes = self._start_codes[bounds[n]:]
        return PackedRows(ids, doc_starts, [self.source_names[m] for m in majority])

    def finish(self) -> Remainder:
        """The tokens that did not fill a row, counted (the packer is then empty)."""
        per_source = self._tokens_per_source(1, len(self._tokens))[0] if len(self._tokens) else np.zeros(0, np.int64)
        remainder = Remainder(
            tokens=len(self._tokens),
            documents_started=len(self._starts),
            eos=int((self._tokens == self.eos_id).sum()),
            source_tokens={self.source_names[c]: int(k) for c, k in enumerate(per_source.tolist()) if k},
        )
        self._tokens = np.empty(0, dtype=self.dtype)
        self._starts = np.empty(0, dtype=np.int64)
        self._start_codes = np.empty(0, dtype=np.int64)
        self._open_code = -1
        return remainder


# --- rows to shards -----------------------------------------------------------------

SHARD_OVERHEAD_BYTES = 64 << 10  # schema + metadata + footer of one Arrow IPC file
BATCH_OVERHEAD_BYTES = 1 << 10  # message header and alignment of one record batch


class RowSpool:
    """Unshuffled rows of one (seq_len, split), appended to a temporary Arrow file."""

    def __init__(self, path: Path, seq_len: int, dtype=np.uint16):
        self.path = Path(path)
        self.schema = shard_schema(seq_len, dtype=dtype)
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)
        self.rows = 0

    def write(self, rows: PackedRows) -> None:
        if len(rows):
            self._writer.write_table(rows_table(rows.input_ids, rows.doc_starts, rows.source, self.schema))
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
    id_type = table.schema.field("input_ids").type.value_type
    schema = shard_schema(seq_len, metadata, id_type.to_pandas_dtype())
    order = shuffle_order(table.num_rows, seed, seq_len, split)
    doc_counts = pc.list_value_length(table.column("doc_starts")).to_numpy(zero_copy_only=False)
    name_bytes = pc.binary_length(table.column("source")).to_numpy(zero_copy_only=False)
    row_bytes = id_type.bit_width // 8 * seq_len + 4 * doc_counts.astype(np.int64) + name_bytes.astype(np.int64) + 8
    assignment = shard_assignment(row_bytes[order], max_bytes, rows_per_batch)
    bounds = np.searchsorted(assignment, np.arange(int(assignment.max()) + 2 if len(assignment) else 1))
    # Token rows are gathered with numpy from the mapped chunks (several times faster than
    # Arrow's take on fixed-size lists; one shard in memory at a time); the small columns
    # go through Arrow.
    id_chunks = [c.flatten().to_numpy().reshape(-1, seq_len) for c in table.column("input_ids").chunks]
    rest = table.select(["doc_starts", "source"])
    entries = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for index in range(len(bounds) - 1):
        take = order[bounds[index] : bounds[index + 1]]
        picked = rest.take(pa.array(take)).combine_chunks()
        input_ids = pa.FixedSizeListArray.from_arrays(pa.array(gather_rows(id_chunks, take, seq_len).reshape(-1)), seq_len)
        part = pa.Table.from_arrays([input_ids, *picked.columns], schema=schema)
        name = shard_name(index)
        entries.append(write_shard(out_dir / name, part, rows_per_batch))
        if entries[-1]["bytes"] > max_bytes:
            raise AssertionError(f"{out_dir / name}: {entries[-1]['bytes']} bytes exceeds shards.max_bytes={max_bytes}")
    source.close()
    return entries


def gather_rows(chunks: list[np.ndarray], take: np.ndarray, width: int) -> np.ndarray:
    """Rows ``take`` (indices over all chunks in order) of 2-D id chunks, in that order."""
    out = np.empty((len(take), width), dtype=chunks[0].dtype if chunks else np.uint16)
    offsets = np.cumsum([0] + [len(c) for c in chunks])
    which = np.searchsorted(offsets, take, side="right") - 1
    by_chunk = np.argsort(which, kind="stable")
    edges = np.searchsorted(which[by_chunk], np.arange(len(chunks) + 1))
    for c, chunk in enumerate(chunks):
        rows = by_chunk[edges[c] : edges[c + 1]]
        if len(rows):
            out[rows] = chunk[take[rows] - offsets[c]]
    return out
