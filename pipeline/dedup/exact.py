"""Step 2, one task per hash partition: documents with identical normalized text.

Each group of equal 128-bit text hashes gets one representative, its best document
under the keep rule (ties: the smallest id); every other member gets an edge to it and
is listed as a non-representative, which keeps it out of the LSH bands."""

from __future__ import annotations

import numpy as np

from pipeline.dedup.config import DedupStageConfig
from pipeline.dedup.layout import Layout, load_npz, part_key, save_npz
from pipeline.dedup.prepare import HASH_DTYPE


def exact_partition(cfg: DedupStageConfig, layout: Layout, p: int, offsets: np.ndarray) -> dict:
    rows, dense = [], []
    for file_no in range(len(offsets) - 1):
        part = load_npz(layout.hash_rows(file_no), part_key(p))
        rows.append(part)
        dense.append(part["local"] + offsets[file_no])
    rows_all = np.concatenate(rows) if rows else np.empty(0, dtype=HASH_DTYPE)
    ids = np.concatenate(dense) if dense else np.empty(0, dtype=np.int64)
    order = np.lexsort((ids, rows_all["rank"], rows_all["lo"], rows_all["hi"]))
    hi, lo, ids = rows_all["hi"][order], rows_all["lo"][order], ids[order]
    new_group = np.ones(len(ids), dtype=bool)
    new_group[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    group = np.cumsum(new_group) - 1
    rep = ids[new_group][group]  # first (best-ranked) member of each group
    dup = ~new_group
    edges = np.stack((ids[dup], rep[dup]), axis=1).astype(np.int64)
    save_npz(layout.exact(p), edges=edges, nonrep=np.sort(ids[dup]).astype(np.int64))
    return {"edges": int(len(edges))}
