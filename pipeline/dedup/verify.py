"""Steps 4c and 4d (verify=exact): the exact Jaccard of the pairs the estimate left open.

4c. shingles: one task per file computes, once, the shingle set of each of its
    documents that an undecided pair needs and routes it to each partition that asked
    for it: its hashes in one routed file, (document, set size) rows in another, written
    in parts of at most PART_BYTES (memory does not grow with the number of pairs).
4d. verify: one task per partition reads the sets its undecided pairs need (one piece
    of the exchange) and keeps a pair when its Jaccard reaches the threshold.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

from common.storage import Location, location
from pipeline.dedup.candidates import REQUEST
from pipeline.dedup.config import DedupStageConfig
from pipeline.dedup.exchange import Piece, read_piece
from pipeline.dedup.layout import Layout, load_npz, open_table, save_npy
from pipeline.dedup.reference import reference_texts
from pipeline.dedup.routed import save_routed, write_routed
from pipeline.normalize import clean_text
from pipeline.shingles import jaccard, shingle_sets

DOCS_PER_CHUNK = 256  # documents whose shingle sets are computed together
PART_BYTES = 64 << 20  # rows a shingles task holds before it writes them as one part
HASH = np.dtype("<u8")
SET_ROW = np.dtype(("<i8", (2,)))  # (document, size of its set): its hashes follow the previous ones


def shingles_file(cfg: DedupStageConfig, layout: Layout, file_no: int, offsets: np.ndarray,
                  reference: tuple[str, str] | None, unsure: Piece | None) -> dict:
    """Shingle sets of this file's documents that an undecided pair needs (``unsure``:
    where the exchange put the requests), routed to the partitions that asked; a
    reference file's (``reference`` = its cleaned corpus and index part) come from that
    corpus. Returns how many parts it wrote."""
    asked = read_piece(unsure, file_no, REQUEST)
    asked = asked[np.lexsort((asked[:, 1], asked[:, 0]))]
    ids, first = np.unique(asked[:, 0], return_index=True)
    bounds = np.append(first, len(asked))
    rows = set((ids - offsets[file_no]).tolist())
    if reference is None:
        texts = _cleaned_texts(layout.table(file_no), rows)
    else:
        texts = reference_texts(location(reference[0], cfg.storage), location(reference[1], cfg.storage), rows)
    part = _Parts(layout, file_no, cfg.run.partitions)
    k = 0
    while chunk := list(itertools.islice(texts, DOCS_PER_CHUNK)):
        for unique in shingle_sets(chunk, cfg.minhash.ngram, cfg.minhash.unit):
            for partition in asked[bounds[k] : bounds[k + 1], 1]:
                part.add(ids[k], unique, partition)
            k += 1
        part.flush(PART_BYTES)
    part.flush(0)
    return {"documents": int(len(ids)), "parts": part.written}


class _Parts:
    """Shingle sets buffered (one entry per document and partition that asked for it),
    then written as routed parts: entries ordered by partition, no per-row sort."""

    def __init__(self, layout: Layout, file_no: int, partitions: int):
        self.layout, self.file_no, self.partitions = layout, file_no, partitions
        self.sets: list[np.ndarray] = []
        self.docs: list[int] = []
        self.dest: list[int] = []
        self.nbytes = 0
        self.written = 0

    def add(self, doc: int, hashes: np.ndarray, partition: int) -> None:
        self.sets.append(hashes)
        self.docs.append(int(doc))
        self.dest.append(int(partition))
        self.nbytes += HASH.itemsize * len(hashes)

    def flush(self, at_least: int) -> None:
        if self.nbytes == 0 or self.nbytes < at_least:
            return
        dest = np.array(self.dest, dtype=np.int64)
        sizes = np.array([len(h) for h in self.sets], dtype=np.int64)
        order = np.argsort(dest, kind="stable")
        offsets = np.zeros(self.partitions + 1, dtype=np.int64)
        np.cumsum(np.bincount(dest, weights=sizes, minlength=self.partitions).astype(np.int64), out=offsets[1:])
        hashes = np.concatenate([self.sets[i] for i in order]).astype(HASH, copy=False)
        write_routed(self.layout.shingle_part(self.file_no, self.written), offsets, HASH.itemsize, [hashes])
        save_routed(self.layout.shingle_sets(self.file_no, self.written),
                    np.stack((np.array(self.docs, dtype=np.int64), sizes), axis=1), dest, self.partitions)
        self.written += 1
        self.sets, self.docs, self.dest, self.nbytes = [], [], [], 0


def _cleaned_texts(table: Location, rows: set[int]) -> Iterator[str]:
    """Cleaned text of the given rows of a prepared document table, in row order, streamed."""
    if not rows:
        return
    i = 0
    for batch in open_table(table).iter_batches(batch_size=1024, columns=["text"]):
        for text in batch.column(0).to_pylist():
            if i in rows:
                yield clean_text(text)
            i += 1


def verify_partition(cfg: DedupStageConfig, layout: Layout, p: int, offsets: np.ndarray, sets: Piece | None,
                     hashes: Piece | None) -> dict:
    """Edges of partition p: the decided ones plus undecided pairs with Jaccard >= threshold."""
    edges, unsure = load_npz(layout.decided(p), "edges"), load_npz(layout.decided(p), "unsure")
    docs, flat = read_piece(sets, p, SET_ROW), read_piece(hashes, p, HASH, writable=False)  # the big one
    ends = np.cumsum(docs[:, 1])
    order = np.argsort(docs[:, 0])
    heads, starts, ends = docs[order, 0], (ends - docs[:, 1])[order], ends[order]

    def shingle_set(doc: int) -> np.ndarray:
        k = int(np.searchsorted(heads, doc))
        return flat[starts[k] : ends[k]]

    keep = np.zeros(len(unsure), dtype=bool)
    for i, (a, b) in enumerate(unsure.tolist()):
        keep[i] = jaccard(shingle_set(a), shingle_set(b)) >= cfg.lsh.verify_threshold
    save_npy(layout.verified(p), np.concatenate((edges, unsure[keep])).astype(np.int64))
    return {"edges": int(len(edges) + keep.sum())}
