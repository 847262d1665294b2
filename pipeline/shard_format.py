"""The packed token shard format: the one contract between ``pipeline/`` and ``train/``.

Layout written by ``make tokenize``::

    <output>/manifest.json                      stage completion marker + report
    <output>/seq<L>/<split>/shard-00000.arrow   Arrow IPC *file* format
    <output>/seq<L>/<split>/manifest.json       shards, row counts, checksums

Schema (FORMAT_VERSION 1), one row = one training sequence of exactly ``seq_len`` tokens:

    input_ids   fixed_size_list<uint16>[seq_len]   GPT-2 BPE ids, EOS after every document
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

from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

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
SHARD_GLOB = "shard-*.arrow"


def shard_schema(seq_len: int, metadata: Mapping[str, Any] | None = None) -> pa.Schema:
    schema = pa.schema(
        [
            pa.field("input_ids", pa.list_(pa.uint16(), seq_len), nullable=False),
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


def read_metadata(path: str | Path) -> dict[str, str]:
    """Schema metadata of one shard, decoded to str, without reading its rows."""
    with pa.memory_map(str(path), "r") as source:
        schema = pa.ipc.open_file(source).schema
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}


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
