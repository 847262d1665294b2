"""Step 6, one task per input file: its kept records as cleaned-corpus chunks (the input
layout, text normalized, everything else unchanged), its part of the ledger (one row
per input record: status, reason, cluster and the kept representative) and its part of
the index a later run can deduplicate against (reference.py): every candidate, with the
removed ones' texts under index/removed/."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.corpus_io import SourceFile
from pipeline.corpus_write import ChunkWriter
from pipeline.dedup.config import DedupStageConfig
from pipeline.dedup.exchange import Piece
from pipeline.dedup.layout import Layout, local_output, open_npz, open_table
from pipeline.dedup.names import kept_documents
from pipeline.dedup.reference import REMOVED, write_index_part
from pipeline.dedup.report import add_row

LEDGER_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("bytes", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("cluster_id", pa.int64()),
        ("kept_id", pa.string()),
    ]
)


def write_file(cfg: DedupStageConfig, layout: Layout, file_no: int, sf: SourceFile, offsets: np.ndarray,
               answers: Piece | None, prefix: str) -> dict:
    """Write one file's kept records, ledger part and index part; returns its per-source
    counts. ``answers``: where the names and index rows of the documents kept in place of
    this file's duplicates are (names.py; None: it has no duplicates)."""
    lo_id = int(offsets[file_no])
    with open_npz(layout.clusters(file_no)) as arrays:
        kept, kind = arrays["kept"], arrays["kind"]
    elsewhere = kept_documents(file_no, answers)  # name and index row of each kept document
    columns: dict[str, list] = {name: [] for name in LEDGER_SCHEMA.names}
    counts: dict[str, dict[str, int]] = {}
    written: dict[str, list] = {key: [] for key in ("local", "id", "kept", "chunk", "line", "text_chunk", "text_line")}
    i = 0
    table = open_table(layout.table(file_no))
    with ChunkWriter(layout.corpus() / sf.folder, prefix=prefix, max_bytes=cfg.run.chunk_bytes) as writer, \
            ChunkWriter(layout.index() / REMOVED / sf.folder, prefix=prefix, max_bytes=cfg.run.chunk_bytes) as removed:
        for batch in table.iter_batches(batch_size=1024):  # one batch of texts in memory at a time
            b = batch.to_pydict()
            for j in range(len(b["id"])):
                status, reason, cluster, kept_id = b["status"][j], b["reason"][j], None, None
                if status == "candidate":
                    cluster = int(kept[i])
                    if cluster == lo_id + i:
                        status, reason, kept_id = "kept", None, b["id"][j]
                        record = json.loads(b["record"][j])
                        record["text"] = b["text"][j]
                        place = (*writer.write(record), -1, -1)
                    else:
                        status, reason, kept_id = "duplicate", "exact" if kind[i] == 1 else "near", elsewhere[cluster][0]
                        # an exact copy of a document in the index is never compared again: no text needed
                        kept_elsewhere = kind[i] == 1 and cluster >= offsets[layout.reference_files]
                        place = (-1, -1, -1, -1) if kept_elsewhere else (-1, -1, *removed.write({"text": b["text"][j]}))
                    for key, value in zip(written, (i, b["id"][j], cluster, *place)):
                        written[key].append(value)
                for name, value in zip(LEDGER_SCHEMA.names,
                                       (b["id"][j], b["source"][j], b["bytes"][j], status, reason, cluster, kept_id)):
                    columns[name].append(value)
                add_row(counts, b["source"][j], b["bytes"][j], status, reason)
                i += 1
    with local_output(layout.ledger_part(file_no)) as tmp:
        pq.write_table(pa.table(columns, schema=LEDGER_SCHEMA), tmp, compression="zstd")
    chunks = [f"{sf.folder}/{path.name}" for path in writer.files]
    write_index_part(layout, file_no, written, chunks, [f"{sf.folder}/{path.name}" for path in removed.files], offsets,
                     {doc: row for doc, (_, row) in elsewhere.items()})
    return counts


def chunk_prefixes(files: list[SourceFile]) -> list[str]:
    """Output chunk name prefix per input file: its name without the format suffix
    (sub-folders joined by "__"), or with the suffix kept where that would collide."""

    def stem(sf: SourceFile) -> str:
        name = sf.name
        for suffix in (".jsonl.zst", ".jsonl", ".parquet"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        return name.replace("/", "__")

    stems = [(sf.folder, stem(sf)) for sf in files]
    taken = {key: stems.count(key) for key in set(stems)}
    return [s if taken[(sf.folder, s)] == 1 else sf.name.replace("/", "__").replace(".", "_") for sf, (_, s) in zip(files, stems)]
