"""Incremental dedup: the index every run publishes, and a later run against it.

Every run publishes ``<output>/index/``: per input file, every document that took part
in dedup (kept and removed alike) with its id, exact text hash, MinHash signature, the
kept document of its cluster (``kept_part``, ``kept_row``: a row of this index, -1
where that document lies outside it) and where its text is: kept documents in the
cleaned corpus (``chunk``, ``line``), removed ones in ``index/removed/`` (``text_chunk``,
``text_line``; not for an exact copy of an indexed document, which no later run
compares again: it never represents its exact group); plus ``index/manifest.json`` (the MinHash settings the signatures were
made with).

``python -m pipeline.dedup ... reference=DIR`` deduplicates a new corpus within itself
and against everything DIR's run saw, without normalizing, filtering or signing it
again: each index part becomes one *reference file* (first in the dense numbering)
whose prepare outputs are read from the index (``load_reference_file``), and each
removed reference document gets an edge to its cluster's kept document
(``reference_edges``). Every later step runs on reference and new files alike, except
that reference documents are never removed and rank first under the keep rule (kept
ones before removed ones), so a new copy of a removed document is removed with its
cluster's kept document as ``kept_id``, exactly as one joint run would. Only the new
files are written. The one difference from a joint run: a new document that joins two
earlier clusters leaves both kept documents in place (a joint run keeps one); the
report counts them (``bridged``). The only reference text read is that of documents in
undecided candidate pairs, for the exact Jaccard (``reference_texts``).
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from common.config import to_dict
from common.storage import Location, location, write_json
from pipeline.components import best_members
from pipeline.corpus_io import Rejected, SourceFile, iter_file
from pipeline.dedup.config import DedupStageConfig
from pipeline.dedup.layout import INDEX, Layout, file_of, load_npy, load_npz, open_npz, part_key, save_npy, save_npz
from pipeline.dedup.prepare import HASH_DTYPE, STATUS_CODES, load_hash_rows, save_hash_rows
from pipeline.dedup.routed import read_routed, save_routed
from pipeline.kernel import file_key
from pipeline.normalize import clean_text

INDEX_FORMAT = 2  # 2: every document that took part in dedup, with its cluster's kept document
REFERENCE_RANK = np.iinfo(np.int64).min  # before any keep rank: reference documents always win ...
REMOVED_RANK = REFERENCE_RANK + 1  # ... the kept one of a cluster before the ones it removed
REMOVED = "removed"  # index/removed/: texts of the removed documents (for the exact Jaccard)
# What the index's signatures and hashes depend on: a run against it must agree.
COMPATIBLE = ("normalize", "minhash")
EDGE = np.dtype(("<i8", (2,)))  # (removed reference document, its cluster's kept one)


def write_index_part(layout: Layout, file_no: int, written: dict[str, list], chunks: list[str],
                     removed_chunks: list[str], offsets: np.ndarray, kept_rows: dict[int, int]) -> None:
    """The index part of one input file: every candidate (``written``: local index, id,
    kept dense id, place in the corpus or in index/removed) with its text hash and
    signature from prepare, and its cluster's kept document as a row of this index
    (``kept_rows``: the row of each kept document of another file, as its file answered)."""
    local = np.array(written["local"], dtype=np.int64)
    rows = load_hash_rows(layout, file_no)
    rows = rows[np.argsort(rows["local"])]
    at = np.searchsorted(rows["local"], local)
    signed = load_npy(layout.signature_docs(file_no))
    sig_rows = np.searchsorted(signed, local)
    has_sig = sig_rows < len(signed)
    has_sig[has_sig] = signed[sig_rows[has_sig]] == local[has_sig]
    if not has_sig.all() and len(signed):
        raise AssertionError(f"{layout.signature_docs(file_no)}: a candidate document has no signature")
    sigs = load_npy(layout.signatures(file_no), mmap=True)
    valid = load_npy(layout.signature_valid(file_no))
    kept_part, kept_row = _index_rows(layout, offsets, file_no, np.array(written["kept"], dtype=np.int64), kept_rows)
    save_npz(
        layout.index_part(file_no),
        ids=np.array(written["id"], dtype=str),
        hi=rows["hi"][at],
        lo=rows["lo"][at],
        sig=np.asarray(sigs[sig_rows]) if len(signed) else np.empty((len(local), 0), dtype=np.uint32),
        valid=valid[sig_rows] if len(signed) else np.zeros(len(local), dtype=bool),
        kept_part=kept_part,
        kept_row=kept_row,
        chunk=np.array(written["chunk"], dtype=np.int64),
        line=np.array(written["line"], dtype=np.int64),
        chunks=np.array(chunks, dtype=str),
        text_chunk=np.array(written["text_chunk"], dtype=np.int64),
        text_line=np.array(written["text_line"], dtype=np.int64),
        removed_chunks=np.array(removed_chunks, dtype=str),
    )


def _index_rows(layout: Layout, offsets: np.ndarray, file_no: int, dense: np.ndarray,
                kept_rows: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(part, row) in this run's index of documents given by dense id: a row is the
    document's rank among its file's candidates (file_no's own from its metadata, other
    files' as ``kept_rows`` gives them); (-1, -1) for a document of this run's own
    reference (outside the index this run publishes)."""
    R = layout.reference_files
    files = file_of(offsets, dense)
    part, row = np.where(files >= R, files - R, -1).astype(np.int64), np.full(len(dense), -1, dtype=np.int64)
    own, other = files == file_no, (files != file_no) & (files >= R)
    if own.any():
        candidate = load_npz(layout.meta(file_no), "status") == STATUS_CODES["candidate"]
        row[own] = (np.cumsum(candidate) - 1)[dense[own] - offsets[file_no]]
    row[other] = [kept_rows[d] for d in dense[other].tolist()]
    return part, row


def write_index_manifest(cfg: DedupStageConfig, folder: Location, files: list[int]) -> None:
    """``files``: the file numbers written (one index part each)."""
    documents = [len(load_npz(folder / Layout.index_name(f), "ids")) for f in sorted(files)]
    write_json(folder / "manifest.json", {
        "format": INDEX_FORMAT,
        "settings": {key: to_dict(cfg)[key] for key in COMPATIBLE},
        "parts": [{"name": Layout.index_name(f), "documents": n} for f, n in zip(sorted(files), documents)],
        "documents": int(sum(documents)),
    })


@dataclass(frozen=True)
class ReferenceIndex:
    folder: Location  # <reference>/index
    corpus: Location  # <reference>/corpus
    parts: list[Location]
    documents: list[int]
    manifest: dict[str, Any]


def open_reference(cfg: DedupStageConfig) -> ReferenceIndex:
    """The index of ``cfg.reference``, checked against this run's settings."""
    root = location(cfg.reference, cfg.storage)
    path = root / INDEX / "manifest.json"
    if not (root / "manifest.json").exists() or not path.exists():
        raise FileNotFoundError(f"reference {root} is not a finished dedup output with an index (no {path})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: index format {manifest.get('format')}, this version reads {INDEX_FORMAT} "
                         f"(run the reference's dedup again to rebuild its index)")
    ours = {key: to_dict(cfg)[key] for key in COMPATIBLE}
    for key, value in ours.items():
        if manifest["settings"][key] != value:
            raise ValueError(f"reference {root} was built with {key} = {manifest['settings'][key]}, this run uses "
                             f"{value}: its signatures cannot be compared (use the same {key} settings)")
    parts = [root / INDEX / part["name"] for part in manifest["parts"]]
    return ReferenceIndex(root / INDEX, root / "corpus", parts, [p["documents"] for p in manifest["parts"]], manifest)


def load_reference_file(cfg: DedupStageConfig, layout: Layout, file_no: int, part: Location) -> dict:
    """Prepare outputs of a reference file, from its index part: every document a
    candidate that ranks before any new one (kept documents before removed ones), and
    the edges from each removed document to its cluster's kept one."""
    with open_npz(part) as z:
        hi, lo, sig, valid = z["hi"], z["lo"], z["sig"], z["valid"]
        kept_part, kept_row = z["kept_part"], z["kept_row"]
    n = len(hi)
    first = _part_offsets(part.parent)
    removed = (kept_part >= 0) & ((kept_part != file_no) | (kept_row != np.arange(n)))
    rank = np.where(removed, REMOVED_RANK, REFERENCE_RANK).astype(np.int64)
    rows = np.empty(n, dtype=HASH_DTYPE)
    rows["hi"], rows["lo"], rows["rank"], rows["local"] = hi, lo, rank, np.arange(n)
    save_hash_rows(cfg, layout, file_no, rows)
    save_npz(layout.meta(file_no), status=np.full(n, STATUS_CODES["candidate"], dtype=np.int8),
             rank=rank, line=np.arange(1, n + 1, dtype=np.int64))
    edges = np.stack([first[file_no] + np.flatnonzero(removed), first[kept_part[removed]] + kept_row[removed]], axis=1)
    at = (edges[:, 0] % cfg.run.partitions).astype(np.int64)
    save_routed(_edges_path(layout, file_no), edges, at, cfg.run.partitions)
    if not cfg.duplicates.near:
        sig, valid = np.empty((0, cfg.minhash.num_perm), dtype=np.uint32), np.empty(0, dtype=bool)
    save_npy(layout.signatures(file_no), sig)
    save_npy(layout.signature_valid(file_no), valid)
    save_npy(layout.signature_docs(file_no), np.arange(len(sig), dtype=np.int64))
    return {"docs": n}


def _part_offsets(index: Location) -> np.ndarray:
    """First dense id of each index part (reference files come first in a run's numbering)."""
    manifest = json.loads((index / "manifest.json").read_text())
    return np.cumsum([0] + [p["documents"] for p in manifest["parts"]]).astype(np.int64)


def _edges_path(layout: Layout, file_no: int) -> Location:
    return layout.meta(file_no).with_name(f"{file_key(file_no)}.edges.bin")


def reference_edges(layout: Layout, p: int, partitions: int) -> np.ndarray:
    """Edge partition p's (removed reference document, its cluster's kept document) edges."""
    parts = [read_routed(_edges_path(layout, f), partitions, p, EDGE) for f in range(layout.reference_files)]
    return np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.int64)


def bridged_documents(labels: np.ndarray, rank: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Kept reference documents that a joint run would have removed: every one but the
    best of a component that now holds several (new documents joined their clusters)."""
    kept_ref = fixed & (rank == REFERENCE_RANK)
    winner = best_members(labels, rank)
    joins = np.unique(labels[~fixed, 1])  # components with a new document
    return np.sort(labels[kept_ref & (winner != labels[:, 0]) & np.isin(labels[:, 1], joins), 0])


def bridged_path(layout: Layout, p: int) -> Location:
    return layout.kept(p).with_name(f"{part_key(p)}.bridged.npy")


def bridged(layout: Layout, partitions: int, reference: Location | None) -> dict:
    """The incremental run's part of report.json: what it was checked against and the
    kept reference documents a joint run would have removed (bridging)."""
    count = sum(len(load_npy(bridged_path(layout, p))) for p in range(partitions))
    return {"reference": str(reference), "bridged_reference_documents": int(count)}


def reference_texts(corpus: Location, part: Location, rows: set[int]) -> Iterator[str]:
    """Cleaned text of the given documents of a reference file, in document order: kept
    ones from the reference's cleaned corpus, removed ones from its index/removed/
    (only the chunks that hold them are read)."""
    if not rows:
        return
    with open_npz(part) as z:
        stored = (z["chunk"] >= 0) | (z["text_chunk"] >= 0)
        if not all(stored[r] for r in rows):
            raise ValueError(f"{part}: a document in an undecided pair has no stored text (index written by another version?)")
        in_corpus = _located(corpus, z["chunk"], z["line"], z["chunks"], rows)
        in_index = _located(part.parent / REMOVED, z["text_chunk"], z["text_line"], z["removed_chunks"], rows)
    for _, text in heapq.merge(in_corpus, in_index, key=lambda pair: pair[0]):
        yield text


def _located(root: Location, chunk: np.ndarray, line: np.ndarray, chunks: np.ndarray, rows: set[int]) -> Iterator[tuple[int, str]]:
    """(row, cleaned text) of the wanted rows stored under ``root``, in row order (the
    rows of one place were written in row order)."""
    wanted = sorted(r for r in rows if chunk[r] >= 0)
    names = [str(c) for c in chunks]
    for c in sorted({int(chunk[r]) for r in wanted}):
        row_of = {int(line[r]): r for r in wanted if chunk[r] == c}
        folder, file_name = names[c].split("/", 1)
        chunk_file = root / names[c]
        sf = SourceFile(folder, file_name, chunk_file.local_path or chunk_file, "jsonl.zst")
        for item in iter_file(sf):
            if isinstance(item, Rejected):
                raise ValueError(f"reference {root / names[c]} line {item.line}: {item.reason}")
            row = row_of.get(int(item.id.rsplit(":", 1)[1]))
            if row is not None:
                yield row, clean_text(item.text)
