"""Step 5: connected components of the duplicate graph over all sources, distributed,
and the document each component keeps.

Every task holds the edges of one node partition only (pipeline.components explains
the rounds), never an array over all documents:

- route          per edge partition: exact + verified near edges, both directions,
                 routed to the partition of their first node;
- rNN-large /    per node partition: alternating large-star and small-star rounds
  rNN-small      until a large-star step finds a star forest; its labels (each node's
                 component = its smallest member) are then routed by component;
- keep           per component partition: the best member under the keep rule (rank,
                 then smallest id), reference documents keeping themselves;
- clusters       per input file: the kept document and duplicate kind of each of its
                 documents (candidates not in any edge keep themselves).
"""

from __future__ import annotations

import numpy as np

from pipeline.components import (
    MAX_ROUNDS,
    best_members,
    both_directions,
    large_star,
    node_partition,
    small_star,
    unique_edges,
)
from pipeline.dedup.candidates import near_edges
from pipeline.dedup.config import DedupStageConfig
from pipeline.dedup.layout import Layout, file_of, load_npy, load_npz, part_key, save_npy, save_npz
from pipeline.dedup.prepare import STATUS_CODES
from pipeline.dedup.reference import bridged_documents, bridged_path, reference_edges
from pipeline.dedup.steps import INPUTS, PARTITIONS, Step, Steps

LABELS = "labels-"  # prefix of the label arrays in a large-star file


def _routed(rows: np.ndarray, by: np.ndarray, partitions: int, prefix: str = "") -> dict[str, np.ndarray]:
    where = node_partition(by, partitions)
    return {prefix + part_key(p): rows[where == p] for p in range(partitions)}


def _gather(layout: Layout, step: str, partitions: int, key: str) -> np.ndarray:
    """The rows every task of ``step`` routed to one partition (``key``)."""
    parts = [load_npz(layout.graph(step, q), key) for q in range(partitions)]
    return np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.int64)


def route_edges(cfg: DedupStageConfig, layout: Layout, p: int) -> dict:
    edges = []
    if cfg.duplicates.exact:
        edges.append(load_npz(layout.exact(p), "edges"))
    if cfg.duplicates.near:
        edges.append(near_edges(cfg, layout, p))
    if layout.reference_files:  # each removed reference document to its cluster's kept one
        edges.append(reference_edges(layout, p))
    directed = both_directions(unique_edges(np.concatenate(edges) if edges else np.empty((0, 2), np.int64)))
    save_npz(layout.graph("route", p), **_routed(directed, directed[:, 0], cfg.run.partitions))
    return {"edges": int(len(directed) // 2)}


def large_round(cfg: DedupStageConfig, layout: Layout, p: int, source: str, step: str) -> dict:
    P = cfg.run.partitions
    bigger, labels, star = large_star(_gather(layout, source, P, part_key(p)))
    bigger = unique_edges(bigger)  # (larger, smaller): small-star keys an edge by its larger end
    save_npz(layout.graph(step, p), **_routed(bigger, bigger[:, 0], P), **_routed(labels, labels[:, 1], P, LABELS))
    return {"star": star, "edges": int(len(bigger))}


def small_round(cfg: DedupStageConfig, layout: Layout, p: int, source: str, step: str) -> dict:
    P = cfg.run.partitions
    directed = both_directions(unique_edges(small_star(_gather(layout, source, P, part_key(p)))))
    save_npz(layout.graph(step, p), **_routed(directed, directed[:, 0], P))
    return {"edges": int(len(directed) // 2)}


def keep_partition(cfg: DedupStageConfig, layout: Layout, p: int, source: str, offsets: np.ndarray,
                   reference_files: int) -> dict:
    """The kept document of every node whose component label falls in partition p."""
    labels = _gather(layout, source, cfg.run.partitions, LABELS + part_key(p))
    nodes = labels[:, 0]
    rank = np.empty(len(nodes), dtype=np.int64)
    files = file_of(offsets, nodes)
    for f in np.unique(files):  # one file's ranks in memory at a time
        sel = files == f
        rank[sel] = load_npz(layout.meta(int(f)), "rank")[nodes[sel] - offsets[f]]
    fixed = nodes < offsets[reference_files]
    kept = best_members(labels, rank, fixed=fixed)
    if reference_files:
        save_npy(bridged_path(layout, p), bridged_documents(labels, rank, fixed))
    order = np.argsort(nodes)
    save_npy(layout.kept_of_nodes(p), kept[order])
    save_npy(layout.kept_nodes(p), nodes[order])
    return {"nodes": int(len(nodes)), "removed": int((kept != nodes).sum())}


def cluster_file(cfg: DedupStageConfig, layout: Layout, f: int, offsets: np.ndarray) -> dict:
    """Kept dense id (-1: not a candidate) and kind (0 kept, 1 exact, 2 near) of file f's documents."""
    lo, hi = int(offsets[f]), int(offsets[f + 1])
    status = load_npz(layout.meta(f), "status")
    kept = np.where(status == STATUS_CODES["candidate"], np.arange(lo, hi), -1).astype(np.int64)
    for p in range(cfg.run.partitions):
        nodes = load_npy(layout.kept_nodes(p), mmap=True)
        a, b = np.searchsorted(nodes, [lo, hi])
        if b > a:
            kept[np.asarray(nodes[a:b]) - lo] = load_npy(layout.kept_of_nodes(p), mmap=True)[a:b]
    exact_dup = np.zeros(hi - lo, dtype=bool)
    if cfg.duplicates.exact:
        for p in range(cfg.run.partitions):
            ids = load_npz(layout.exact(p), "nonrep")
            exact_dup[ids[(ids >= lo) & (ids < hi)] - lo] = True
    removed = (kept >= 0) & (kept != np.arange(lo, hi))
    kind = np.where(removed, np.where(exact_dup, 1, 2), 0).astype(np.int8)
    save_npz(layout.clusters(f), kept=kept, kind=kind)
    return {"removed": int(removed.sum())}


def run_components(steps: Steps, offsets: np.ndarray) -> None:
    """All steps of the components stage. Only input files (not a reference's parts)
    get cluster arrays: only they are written."""
    steps(Step("route", route_edges, PARTITIONS))
    source = "route"
    for r in range(MAX_ROUNDS):
        large = f"r{r:02d}-large"
        results = steps(Step(large, large_round, PARTITIONS, (source, large)))
        if all(res["star"] for res in results):
            break
        source = f"r{r:02d}-small"
        steps(Step(source, small_round, PARTITIONS, (large, source)))
    else:
        raise RuntimeError(f"dedup: connected components did not converge in {MAX_ROUNDS} rounds")
    steps(Step("keep", keep_partition, PARTITIONS, (large, offsets, len(steps.reference_parts))))
    steps(Step("clusters", cluster_file, INPUTS, (offsets,)))
