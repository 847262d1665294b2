"""Step 5, one task: connected components of the duplicate graph over all sources, and
the document each component keeps (the best under the keep rule; ties: smallest id)."""

from __future__ import annotations

import numpy as np

from pipeline.components import find_roots, keep_per_component, new_forest, union_edges
from pipeline.dedup.candidates import near_edges
from pipeline.dedup.config import DedupStageConfig
from pipeline.dedup.layout import Layout, load_npz, save_npy
from pipeline.dedup.prepare import STATUS_CODES


def components(cfg: DedupStageConfig, layout: Layout, offsets: np.ndarray) -> dict:
    n = int(offsets[-1])
    status = np.empty(n, dtype=np.int8)
    rank = np.empty(n, dtype=np.int64)
    for file_no in range(len(offsets) - 1):
        lo, hi = offsets[file_no], offsets[file_no + 1]
        status[lo:hi] = load_npz(layout.meta(file_no), "status")
        rank[lo:hi] = load_npz(layout.meta(file_no), "rank")
    parent = new_forest(n)
    exact_dup = np.zeros(n, dtype=bool)
    for p in range(cfg.run.partitions):  # one partition of edges in memory at a time
        if cfg.duplicates.exact:
            union_edges(parent, load_npz(layout.exact(p), "edges"))
            exact_dup[load_npz(layout.exact(p), "nonrep")] = True
        if cfg.duplicates.near:
            union_edges(parent, near_edges(cfg, layout, p))
    roots = find_roots(parent)
    candidates = status == STATUS_CODES["candidate"]
    kept = keep_per_component(roots, candidates, rank)
    kind = np.zeros(n, dtype=np.int8)
    removed = candidates & (kept != np.arange(n))
    kind[removed & exact_dup] = 1
    kind[removed & ~exact_dup] = 2
    save_npy(layout.kind(), kind)
    save_npy(layout.kept(), kept)
    return {"removed": int(removed.sum())}
