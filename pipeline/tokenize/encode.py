"""Step 1, one task per corpus file: read, assign each document its split by id hash,
hash its raw text, encode in batches with EOS appended, and write the tokens to a part
file (Arrow IPC) in the step's folder. Returns the file's counts per split and source,
the text hashes of its holdout documents and what it rejected."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from common.storage import Location, location, spooled
from pipeline import split as splitting
from pipeline.corpus_io import Rejected, SourceFile, iter_file
from pipeline.corpus_write import reason_kind
from pipeline.tokenize.config import TokenizeConfig
from pipeline.tokenizer import Encoder, TokenizerInfo

PART_VERSION = 1  # bump when the part file layout or its summary changes
REJECTED_EXAMPLES = 20


def part_schema(dtype) -> pa.Schema:
    """One record per document; ``tokens`` in the shards' id type."""
    return pa.schema(
        [
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("split", pa.int8(), nullable=False),
            pa.field("repeats", pa.int16(), nullable=False),
            pa.field("text_sha256", pa.binary(32), nullable=False),
            pa.field("tokens", pa.list_(pa.from_numpy_dtype(dtype)), nullable=False),
        ]
    )


_ENCODERS: dict[tuple, Encoder] = {}  # one per worker process and setting


def _encoder(kind: str, tokenizer: TokenizerInfo, threads: int) -> Encoder:
    key = (kind, tokenizer, threads)
    if key not in _ENCODERS:
        _ENCODERS[key] = Encoder(kind, tokenizer, threads)
    return _ENCODERS[key]


def encode_file(cfg: TokenizeConfig, tokenizer: TokenizerInfo, encoder_kind: str, sf: SourceFile, part: Path | Location) -> dict[str, Any]:
    """Encode one corpus file into the part file ``part`` (committed whole); returns its summary."""
    encoder = _encoder(encoder_kind, tokenizer, cfg.run.encode_threads)
    schema = part_schema(tokenizer.dtype)
    split_cfg, weights = cfg.split, cfg.pack.source_weights
    counts: dict[str, dict[str, dict[str, int]]] = {}
    holdout: list[str] = []
    rejected: Counter = Counter()
    examples: list[dict[str, Any]] = []
    timing = {"read_s": 0.0, "encode_s": 0.0}
    batch: list = []

    def flush(writer) -> None:
        start = time.perf_counter()
        tokens, lengths = encoder.encode_with_eos([d.text for d in batch])
        timing["encode_s"] += time.perf_counter() - start
        splits, digests, reps = [], [], []
        for doc, n in zip(batch, lengths.tolist()):
            s = splitting.assign_split(doc.id, split_cfg.seed, split_cfg.validation_fraction, split_cfg.test_fraction)
            digest = splitting.text_sha256(doc.text)
            splits.append(s)
            digests.append(digest)
            reps.append(splitting.repeats(doc.id, doc.source, split_cfg.seed, weights) if s == splitting.TRAIN else 1)
            if s != splitting.TRAIN:
                holdout.append(digest.hex())
            entry = counts.setdefault(splitting.SPLITS[s], {}).setdefault(doc.source, {"documents": 0, "tokens": 0, "bytes": 0})
            entry["documents"] += 1
            entry["tokens"] += n
            entry["bytes"] += doc.nbytes
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
        columns = [
            pa.array([d.id for d in batch], pa.string()),
            pa.array([d.source for d in batch], pa.string()),
            pa.array(splits, pa.int8()),
            pa.array(reps, pa.int16()),
            pa.array(digests, pa.binary(32)),
            pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(tokens)),
        ]
        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
        batch.clear()

    with spooled(location(part)) as partial, pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        start = time.perf_counter()
        for item in iter_file(sf):
            if isinstance(item, Rejected):
                rejected[f"{item.source}\t{reason_kind(item.reason)}"] += 1
                if len(examples) < REJECTED_EXAMPLES:
                    examples.append({"file": item.file, "line": item.line, "reason": item.reason})
                continue
            batch.append(item)
            if len(batch) >= cfg.run.batch_docs:
                timing["read_s"] += time.perf_counter() - start
                flush(writer)
                start = time.perf_counter()
        timing["read_s"] += time.perf_counter() - start
        if batch:
            flush(writer)
    return {
        "counts": counts,
        "holdout_sha256": sorted(holdout),
        "rejected": dict(sorted(rejected.items())),
        "rejected_examples": examples,
        "timing": timing,
    }
