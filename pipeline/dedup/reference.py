"""Incremental dedup: the index every run publishes, and a later run against it.

Every run publishes ``<output>/index/``: per input file, the kept documents' ids, exact
text hashes, MinHash signatures and their place in the cleaned corpus (chunk, line),
plus ``index/manifest.json`` (the MinHash settings the signatures were made with).

``python -m pipeline.dedup ... reference=DIR`` deduplicates a new corpus within itself
and against DIR's cleaned corpus without normalizing, filtering or signing it again:
each index part becomes one *reference file* (first in the dense numbering) whose
prepare outputs are read from the index (``load_reference_file``). Every later step
runs on reference and new files alike, except that reference documents always rank
first under the keep rule and are never removed, and only the new files are written.
The only reference text read is that of documents in undecided candidate pairs, for
the exact Jaccard (``reference_texts``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from common.atomic import write_json
from common.config import to_dict
from pipeline.corpus_io import Rejected, SourceFile, iter_file
from pipeline.dedup.config import DedupStageConfig
from pipeline.dedup.layout import INDEX, Layout, load_npy, load_npz, save_npy, save_npz
from pipeline.dedup.prepare import HASH_DTYPE, STATUS_CODES, load_hash_rows, save_hash_rows
from pipeline.normalize import clean_text

INDEX_FORMAT = 1
REFERENCE_RANK = np.iinfo(np.int64).min  # before any keep rank: reference documents always win
# What the index's signatures and hashes depend on: a run against it must agree.
COMPATIBLE = ("normalize", "minhash")


def write_index_part(layout: Layout, file_no: int, written: dict[str, list], chunks: list[str]) -> None:
    """The index part of one input file: its kept documents (``written``: local index,
    id, chunk number, line) with their text hashes and signatures from prepare."""
    local = np.array(written["local"], dtype=np.int64)
    rows = load_hash_rows(layout, file_no)
    rows = rows[np.argsort(rows["local"])]
    at = np.searchsorted(rows["local"], local)
    signed = load_npy(layout.signature_docs(file_no))
    sig_rows = np.searchsorted(signed, local)
    has_sig = sig_rows < len(signed)
    has_sig[has_sig] = signed[sig_rows[has_sig]] == local[has_sig]
    if not has_sig.all() and len(signed):
        raise AssertionError(f"{layout.signature_docs(file_no)}: a kept document has no signature")
    sigs = load_npy(layout.signatures(file_no), mmap=True)
    valid = load_npy(layout.signature_valid(file_no))
    save_npz(
        layout.index_part(file_no),
        ids=np.array(written["id"], dtype=str),
        hi=rows["hi"][at],
        lo=rows["lo"][at],
        sig=np.asarray(sigs[sig_rows]) if len(signed) else np.empty((len(local), 0), dtype=np.uint32),
        valid=valid[sig_rows] if len(signed) else np.zeros(len(local), dtype=bool),
        chunk=np.array(written["chunk"], dtype=np.int64),
        line=np.array(written["line"], dtype=np.int64),
        chunks=np.array(chunks, dtype=str),
    )


def write_index_manifest(cfg: DedupStageConfig, folder: Path, kept: dict[int, int]) -> None:
    """``kept``: file number -> kept documents, for every file written."""
    write_json(folder / "manifest.json", {
        "format": INDEX_FORMAT,
        "settings": {key: to_dict(cfg)[key] for key in COMPATIBLE},
        "parts": [{"name": Layout.index_name(f), "documents": n} for f, n in sorted(kept.items())],
        "documents": int(sum(kept.values())),
    })


@dataclass(frozen=True)
class ReferenceIndex:
    folder: Path  # <reference>/index
    corpus: Path  # <reference>/corpus
    parts: list[Path]
    documents: list[int]
    manifest: dict[str, Any]


def open_reference(cfg: DedupStageConfig) -> ReferenceIndex:
    """The index of ``cfg.reference``, checked against this run's settings."""
    root = Path(cfg.reference)
    path = root / INDEX / "manifest.json"
    if not (root / "manifest.json").exists() or not path.exists():
        raise FileNotFoundError(f"reference {root} is not a finished dedup output with an index (no {path})")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: index format {manifest.get('format')}, this version reads {INDEX_FORMAT}")
    ours = {key: to_dict(cfg)[key] for key in COMPATIBLE}
    for key, value in ours.items():
        if manifest["settings"][key] != value:
            raise ValueError(f"reference {root} was built with {key} = {manifest['settings'][key]}, this run uses "
                             f"{value}: its signatures cannot be compared (use the same {key} settings)")
    parts = [root / INDEX / part["name"] for part in manifest["parts"]]
    return ReferenceIndex(root / INDEX, root / "corpus", parts, [p["documents"] for p in manifest["parts"]], manifest)


def load_reference_file(cfg: DedupStageConfig, layout: Layout, file_no: int, part: Path) -> dict:
    """Prepare outputs of a reference file, from its index part: every document a
    candidate that ranks before any new one."""
    with np.load(part, allow_pickle=False) as z:
        hi, lo, sig, valid = z["hi"], z["lo"], z["sig"], z["valid"]
    n = len(hi)
    rows = np.empty(n, dtype=HASH_DTYPE)
    rows["hi"], rows["lo"], rows["rank"], rows["local"] = hi, lo, REFERENCE_RANK, np.arange(n)
    save_hash_rows(cfg, layout, file_no, rows)
    save_npz(layout.meta(file_no), status=np.full(n, STATUS_CODES["candidate"], dtype=np.int8),
             rank=np.full(n, REFERENCE_RANK, dtype=np.int64), line=np.arange(1, n + 1, dtype=np.int64))
    if not cfg.duplicates.near:
        sig, valid = np.empty((0, cfg.minhash.num_perm), dtype=np.uint32), np.empty(0, dtype=bool)
    save_npy(layout.signatures(file_no), sig)
    save_npy(layout.signature_valid(file_no), valid)
    save_npy(layout.signature_docs(file_no), np.arange(len(sig), dtype=np.int64))
    return {"docs": n}


def reference_texts(corpus: Path, part: Path, rows: set[int]) -> Iterator[str]:
    """Cleaned text of the given documents of a reference file, in document order, read
    from the reference's cleaned corpus (only the chunks that hold them)."""
    if not rows:
        return
    chunk, line, chunks = load_npz(part, "chunk"), load_npz(part, "line"), load_npz(part, "chunks")
    wanted = sorted(rows)
    for c in sorted({int(chunk[r]) for r in wanted}):
        lines = {int(line[r]) for r in wanted if chunk[r] == c}
        name = str(chunks[c])
        folder, file_name = name.split("/", 1)
        sf = SourceFile(folder, file_name, corpus / name, "jsonl.zst")
        for item in iter_file(sf):
            if isinstance(item, Rejected):
                raise ValueError(f"reference corpus {corpus / name} line {item.line}: {item.reason}")
            if int(item.id.rsplit(":", 1)[1]) in lines:
                yield clean_text(item.text)
