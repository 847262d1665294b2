"""The packed token shard format: the one contract between ``pipeline/`` and ``train/``,
and its one writer and reader (shards and the per-folder manifest).

Layout written by ``make tokenize``::

    <output>/manifest.json                      stage completion marker + report
    <output>/tokenizer.json                     the tokenizer the shards were made with
    <output>/seq<L>/<split>/shard-00000.arrow   Arrow IPC *file* format
    <output>/seq<L>/<split>/manifest.json       shards, row counts, checksums

Schema (FORMAT_VERSION 1), one row = one training sequence of exactly ``seq_len`` tokens:

    input_ids   fixed_size_list<uint16>[seq_len]   token ids, EOS after every document;
                (uint32 when vocab_size > 65,536)   the tokenizer is named in the metadata
    doc_starts  list<int32>                        positions in the row where a document
                                                   begins (0 is listed only when a document
                                                   starts exactly at the row start)
    source      string                             source contributing most tokens to the row

Schema metadata (all values UTF-8 strings): see ``METADATA_KEYS``. ``config`` holds the
canonical JSON of the tokenize config that produced the shard.

A reader must call :func:`check_metadata` and refuse shards whose format version,
tokenizer, sequence length or EOS id differ from what it expects.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from common.atomic import atomic_path, write_json

FORMAT_VERSION = 1
METADATA_KEYS = (
    "format_version",
    "tokenizer_sha256",
    "seq_len",
    "eos_id",
    "vocab_size",
    "split",
    "config",
)
MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"  # the shards' tokenizer, beside the stage manifest
SHARD_GLOB = "shard-*.arrow"
UINT16_VOCAB = 1 << 16  # ids fit uint16 up to this vocabulary size


def token_dtype(vocab_size: int) -> np.dtype:
    """The id type of the shards of a vocabulary: uint16 while it fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= UINT16_VOCAB else np.uint32)


def shard_schema(seq_len: int, metadata: Mapping[str, Any] | None = None, dtype: Any = np.uint16) -> pa.Schema:
    schema = pa.schema(
        [
            pa.field("input_ids", pa.list_(pa.from_numpy_dtype(np.dtype(dtype)), seq_len), nullable=False),
            pa.field("doc_starts", pa.list_(pa.int32()), nullable=False),
            pa.field("source", pa.string(), nullable=False),
        ]
    )
    if metadata is not None:
        schema = schema.with_metadata({k: str(v) for k, v in metadata.items()})
    return schema


def split_dir(root: str | Path, seq_len: int, split: str) -> Path:
    return Path(root) / f"seq{seq_len}" / split


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.arrow"


# --- writing ------------------------------------------------------------------------


def rows_table(input_ids: np.ndarray, doc_starts: Sequence[np.ndarray], source: Sequence[str],
               schema: pa.Schema) -> pa.Table:
    """Rows ([rows, seq_len] ids, document starts and source of each row) in the shard schema."""
    seq_len = input_ids.shape[1]
    ids = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(input_ids).reshape(-1)), seq_len)
    counts = np.fromiter((len(d) for d in doc_starts), dtype=np.int32, count=len(doc_starts))
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    values = np.concatenate(doc_starts).astype(np.int32) if len(doc_starts) else np.empty(0, np.int32)
    starts = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))
    return pa.Table.from_arrays([ids, starts, pa.array(list(source), pa.string())], schema=schema)


def write_shard(path: Path, table: pa.Table, rows_per_batch: int) -> dict:
    """Write ``table`` as one shard (Arrow IPC file) atomically; return its manifest entry."""
    with atomic_path(path) as partial, open(partial, "wb") as fh:
        hashing = HashingWriter(fh)
        with pa.PythonFile(hashing, mode="w") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=rows_per_batch)
    return {"name": path.name, "rows": table.num_rows, "bytes": hashing.size, "sha256": hashing.sha256.hexdigest()}


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """The folder's manifest: the counts of the folder and its shards' entries (``shards``)."""
    return write_json(Path(folder) / MANIFEST_NAME, dict(manifest), indent=2, sort_keys=False)


class HashingWriter(io.RawIOBase):
    """A binary file wrapper that hashes what it writes (no second read of the file)."""

    def __init__(self, fh):
        self._fh = fh
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._fh.write(data)


# --- reading ------------------------------------------------------------------------


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The folder's manifest (None when it has none), its ``shards`` a list of entries."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards", []), list):
        raise ValueError(f"{path}: not a shard manifest (an object with a list of shards)")
    return manifest


def listed_shards(manifest: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The manifest's shard entries by file name (an entry may be a bare name)."""
    listed = {}
    for entry in (manifest or {}).get("shards", []):
        entry = entry if isinstance(entry, dict) else {"name": entry}
        if isinstance(entry.get("name"), str):
            listed[Path(entry["name"]).name] = entry
    return listed


def read_metadata(path: str | Path) -> dict[str, str]:
    """Schema metadata of one shard, decoded to str, without reading its rows."""
    with pa.memory_map(str(path), "r") as source:
        schema = pa.ipc.open_file(source).schema
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}


def iter_batches(path: str | Path) -> Iterator[pa.RecordBatch]:
    """The record batches of one shard, memory-mapped (no copy into RAM)."""
    reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
    for index in range(reader.num_record_batches):
        yield reader.get_batch(index)


def check_metadata(path: str | Path, metadata: Mapping[str, str], expected: Mapping[str, Any]) -> None:
    """Raise ValueError naming every key whose value differs from ``expected``."""
    problems = []
    for key, want in expected.items():
        got = metadata.get(key)
        if got is None:
            problems.append(f"{key}: missing (expected {want})")
        elif got != str(want):
            problems.append(f"{key}: shard has {got}, expected {want}")
    if problems:
        raise ValueError(f"shard {path} does not match: " + "; ".join(problems))
