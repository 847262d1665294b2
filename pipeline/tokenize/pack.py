"""Step 2, one task per (split, length): stream the part files in corpus order, drop
train documents whose text hash equals a holdout document's, repeat train documents by
source weight, pack rows from the token stream, shuffle them across the split (seeded)
and write ``seq<L>/<split>/shard-*.arrow`` plus the folder manifest, in the step's folder
(the stage publishes them)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.atomic import temp_path
from pipeline import split as splitting
from pipeline.packing import Packer, RowSpool, write_shards
from pipeline.shard_format import FORMAT_VERSION, split_dir, token_dtype, write_manifest
from pipeline.tokenize.config import TokenizeConfig
from pipeline.tokenize.staging import local_inputs, local_output


def select_documents(
    batch: pa.RecordBatch, split: str, epoch: int, holdout: frozenset[bytes], removed: dict[str, dict[str, int]]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Token ids, per-document lengths and sources of the documents of ``batch`` that
    enter ``split``'s stream in this epoch.

    Train drops documents whose text hash equals a holdout document's (counted once, in
    epoch 0, into ``removed``) and keeps a document for ``repeats`` epochs. Selection is
    done with numpy masks: Arrow's filter would copy the list column batch by batch.
    """
    token_lists = batch.column("tokens")
    lengths = pc.list_value_length(token_lists).to_numpy()
    sources = batch.column("source").to_pylist()
    mask = batch.column("split").to_numpy() == splitting.SPLITS.index(split)
    if split == "train":
        if holdout:
            digests = batch.column("text_sha256").to_pylist()
            dirty = mask & np.fromiter((d in holdout for d in digests), dtype=bool, count=len(digests))
            if epoch == 0:
                for i in np.flatnonzero(dirty).tolist():
                    entry = removed.setdefault(sources[i], {"documents": 0, "tokens": 0})
                    entry["documents"] += 1
                    entry["tokens"] += int(lengths[i])
            mask &= ~dirty
        mask &= batch.column("repeats").to_numpy() > epoch
    tokens = token_lists.flatten().to_numpy()
    if mask.all():
        return tokens, lengths, sources
    return tokens[np.repeat(mask, lengths)], lengths[mask], [s for s, keep in zip(sources, mask.tolist()) if keep]


def split_stream(cfg: TokenizeConfig, split: str, parts: list[Path], holdout: frozenset[bytes],
                 removed: dict[str, dict[str, int]]) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """The documents of ``split`` in stream order, batch by batch: every epoch of the
    part files in corpus order (train repeats a document in ``repeats`` epochs)."""
    epochs = cfg.pack.max_repeats if split == "train" else 1
    for epoch in range(epochs):
        for part in parts:
            with pa.memory_map(str(part), "r") as mapped:
                reader = pa.ipc.open_file(mapped)
                for i in range(reader.num_record_batches):
                    yield select_documents(reader.get_batch(i), split, epoch, holdout, removed)


def pack_split(cfg: TokenizeConfig, split: str, seq_len: int, parts: list[Path], holdout: frozenset[bytes],
               folder: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """Pack, shuffle and write one split at one length under ``folder`` (seq<L>/<split>/ below it;
    a local folder or an object-store prefix)."""
    with local_inputs(parts) as local_parts, local_output(folder) as local_folder:
        return _pack_split(cfg, split, seq_len, local_parts, holdout, local_folder, metadata)


def _pack_split(cfg: TokenizeConfig, split: str, seq_len: int, parts: list[Path], holdout: frozenset[bytes],
                folder: Path, metadata: dict[str, str]) -> dict[str, Any]:
    eos_id, vocab_size = int(metadata["eos_id"]), int(metadata["vocab_size"])
    packer = Packer(seq_len, eos_id, token_dtype(vocab_size))
    spool = RowSpool(temp_path(folder / f"rows-seq{seq_len}-{split}.arrow"), seq_len, token_dtype(vocab_size))
    removed: dict[str, dict[str, int]] = {}
    documents: Counter = Counter()
    tokens: Counter = Counter()
    start = time.perf_counter()
    for ids, lengths, sources in split_stream(cfg, split, parts, holdout, removed):
        documents.update(sources)
        for source, n in zip(sources, lengths.tolist()):
            tokens[source] += n
        spool.write(packer.add(ids, lengths, sources))
    timing = {"pack_s": time.perf_counter() - start}

    start = time.perf_counter()
    remainder = packer.finish()
    spool.close()
    out = split_dir(folder, seq_len, split)
    entries = write_shards(spool.path, out, {**metadata, "seq_len": str(seq_len), "split": split},
                           cfg.pack.shuffle_seed, split, cfg.shards.max_bytes, cfg.shards.rows_per_batch)
    spool.path.unlink()
    rows = sum(e["rows"] for e in entries)
    manifest = {
        "format_version": FORMAT_VERSION,
        "split": split,
        "seq_len": seq_len,
        "eos_id": eos_id,
        "vocab_size": vocab_size,
        "tokenizer_sha256": metadata["tokenizer_sha256"],
        "rows": rows,
        "tokens": rows * seq_len,
        "padding_tokens": 0,  # rows are always full; the tail is the remainder below
        "documents": int(sum(documents.values())),
        "document_tokens": int(sum(tokens.values())),
        "source_tokens": dict(sorted(packer.source_tokens.items())),
        "remainder": {
            "tokens": remainder.tokens,
            "documents_started": remainder.documents_started,
            "eos": remainder.eos,
            "source_tokens": dict(sorted(remainder.source_tokens.items())),
        },
        "shards": entries,
    }
    write_manifest(out, manifest)
    timing["write_s"] = time.perf_counter() - start
    return {
        "split": split,
        "decontamination_removed": dict(sorted(removed.items())),
        "folder": {f"seq{seq_len}/{split}": {k: v for k, v in manifest.items() if k != "shards"} | {"shards": len(entries)}},
        "timing": timing,
    }
