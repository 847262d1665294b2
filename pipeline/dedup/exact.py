"""Step 2, one task per hash partition: documents with identical normalized text.

Each group of equal 128-bit text hashes gets one representative, its best document
under the keep rule (ties: the smallest id); every other member gets an edge to it and
is a non-representative, which keeps it out of the LSH bands. Non-representatives are
routed to their files (the bands and clusters steps read them by file)."""

from __future__ import annotations

import numpy as np

from pipeline.dedup.config import DedupStageConfig
from pipeline.dedup.exchange import Piece, read_piece
from pipeline.dedup.layout import Layout, file_of, save_npz
from pipeline.dedup.prepare import ROUTED_HASH_DTYPE
from pipeline.dedup.routed import save_routed


def exact_partition(cfg: DedupStageConfig, layout: Layout, p: int, offsets: np.ndarray, hashes: Piece) -> dict:
    rows = read_piece(hashes, p, ROUTED_HASH_DTYPE)
    ids = rows["local"] + offsets[rows["file"]]
    order = np.lexsort((ids, rows["rank"], rows["lo"], rows["hi"]))
    hi, lo, ids = rows["hi"][order], rows["lo"][order], ids[order]
    new_group = np.ones(len(ids), dtype=bool)
    new_group[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    group = np.cumsum(new_group) - 1
    rep = ids[new_group][group]  # first (best-ranked) member of each group
    dup = ~new_group
    edges = np.stack((ids[dup], rep[dup]), axis=1).astype(np.int64)
    save_npz(layout.exact(p), edges=edges)
    nonrep = np.sort(ids[dup]).astype(np.int64)
    save_routed(layout.nonrep(p), nonrep, file_of(offsets, nonrep), len(offsets) - 1)
    return {"edges": int(len(edges))}
