"""Steps 4b and 4c (verify=exact): the exact Jaccard of the pairs the estimate left open.

4b. shingles: one task per input file computes, once, the shingle set of each of its
    documents that an undecided pair needs, streamed to one flat little-endian uint64
    file plus per-document bounds (memory does not grow with the number of pairs).
4c. verify: one task per partition reads both sets of each undecided pair with
    positioned reads and keeps the pair when their Jaccard reaches the threshold.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq

from pipeline.dedup.config import DedupStageConfig
from pipeline.dedup.exchange import Piece, read_piece
from pipeline.dedup.layout import Layout, RangeReader, file_of, load_npy, load_npz, open_write, save_npy
from pipeline.dedup.reference import reference_texts
from pipeline.normalize import clean_text
from pipeline.shingles import jaccard, shingle_sets

DOCS_PER_CHUNK = 256  # documents whose shingle sets are computed together


def shingles_file(cfg: DedupStageConfig, layout: Layout, file_no: int, offsets: np.ndarray,
                  reference: tuple[str, str] | None, unsure: Piece) -> dict:
    """Shingle sets of this file's documents that an undecided pair needs (``unsure``:
    where the exchange put them); a reference file's (``reference`` = its cleaned corpus
    and index part) come from that corpus."""
    lo_id = offsets[file_no]
    ids = np.unique(read_piece(unsure, file_no, np.dtype("<i8")))
    bounds = [0]
    rows = set((ids - lo_id).tolist())
    if reference is None:
        texts = _cleaned_texts(layout.table(file_no), rows)
    else:
        texts = reference_texts(Path(reference[0]), Path(reference[1]), rows)
    with open_write(layout.shingle_hashes(file_no)) as sink:
        while chunk := list(itertools.islice(texts, DOCS_PER_CHUNK)):
            for unique in shingle_sets(chunk, cfg.minhash.ngram, cfg.minhash.unit):
                sink.write(unique.astype("<u8", copy=False).tobytes())
                bounds.append(bounds[-1] + len(unique))
    save_npy(layout.shingle_bounds(file_no), np.array(bounds, dtype=np.int64))
    save_npy(layout.shingle_ids(file_no), ids.astype(np.int64))
    return {"documents": int(len(ids))}


def _cleaned_texts(table: Path, rows: set[int]) -> Iterator[str]:
    """Cleaned text of the given rows of a prepared document table, in row order, streamed."""
    if not rows:
        return
    i = 0
    for batch in pq.ParquetFile(table).iter_batches(batch_size=1024, columns=["text"]):
        for text in batch.column(0).to_pylist():
            if i in rows:
                yield clean_text(text)
            i += 1


class ShingleStore:
    """Shingle sets of the documents undecided pairs need, read with positioned reads.

    Nothing is memory-mapped: a verify task holds the two sets it compares, not the
    pages of every file it has touched (which would grow with the number of pairs).
    """

    def __init__(self, layout: Layout, offsets: np.ndarray):
        self.layout, self.offsets = layout, offsets
        self._files: dict[int, tuple[np.ndarray, np.ndarray, RangeReader]] = {}

    def __enter__(self) -> "ShingleStore":
        return self

    def __exit__(self, *exc) -> None:
        for _, _, reader in self._files.values():
            reader.close()
        self._files.clear()

    def get(self, dense: int) -> np.ndarray:
        f = int(file_of(self.offsets, dense))
        if f not in self._files:
            self._files[f] = (
                load_npy(self.layout.shingle_ids(f)),
                load_npy(self.layout.shingle_bounds(f)),
                RangeReader(self.layout.shingle_hashes(f)),
            )
        ids, bounds, reader = self._files[f]
        k = int(np.searchsorted(ids, dense))
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        return np.frombuffer(reader.read_at(8 * (hi - lo), 8 * lo), dtype="<u8")


def verify_partition(cfg: DedupStageConfig, layout: Layout, p: int, offsets: np.ndarray) -> dict:
    """Edges of partition p: the decided ones plus undecided pairs with Jaccard >= threshold."""
    edges, unsure = load_npz(layout.lsh(p), "edges"), load_npz(layout.lsh(p), "unsure")
    keep = np.zeros(len(unsure), dtype=bool)
    with ShingleStore(layout, offsets) as store:
        for i, (a, b) in enumerate(unsure.tolist()):
            keep[i] = jaccard(store.get(a), store.get(b)) >= cfg.lsh.verify_threshold
    save_npy(layout.verified(p), np.concatenate((edges, unsure[keep])).astype(np.int64))
    return {"edges": int(len(edges) + keep.sum())}
