"""Step 5: connected components of the duplicate graph over all sources, distributed,
and the document each component keeps.

Every task holds the edges of one node partition only (pipeline.components explains
the rounds), never an array over all documents; each step's rows reach the next
step's tasks through an exchange (exchange.py):

- route          per edge partition: exact + verified near edges, both directions,
                 routed to the partition of their first node;
- rNN-large /    per node partition: alternating large-star and small-star rounds
  rNN-small      until a large-star step finds a star forest; its labels (each node's
                 component = its smallest member) are routed to the node's file;
- ranks          per file: each labelled node's keep rank, routed by component;
- keep           per component partition: the best member under the keep rule (rank,
                 then smallest id), reference documents keeping themselves, routed
                 to the node's file;
- clusters       per input file: the kept document and duplicate kind of each of its
                 documents (candidates not in any edge keep themselves), and the
                 kept documents whose names and index rows it needs, asked of their
                 files (names.py).
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
from pipeline.dedup.exchange import Exchange, Piece, read_piece, run_exchange
from pipeline.dedup.layout import Layout, file_of, load_npz, save_npy, save_npz
from pipeline.dedup.prepare import STATUS_CODES
from pipeline.dedup.reference import bridged_documents, bridged_path, reference_edges
from pipeline.dedup.routed import save_routed
from pipeline.dedup.steps import FILES, INPUTS, PARTITIONS, Step, Steps

EDGE = np.dtype(("<i8", (2,)))  # an edge, a label (node, component) or (node, kept document)
RANKED = np.dtype(("<i8", (3,)))  # (node, component, keep rank)


def route_edges(cfg: DedupStageConfig, layout: Layout, p: int) -> dict:
    edges = []
    if cfg.duplicates.exact:
        edges.append(load_npz(layout.exact(p), "edges"))
    if cfg.duplicates.near:
        edges.append(near_edges(cfg, layout, p))
    if layout.reference_files:  # each removed reference document to its cluster's kept one
        edges.append(reference_edges(layout, p, cfg.run.partitions))
    directed = both_directions(unique_edges(np.concatenate(edges) if edges else np.empty((0, 2), np.int64)))
    P = cfg.run.partitions
    save_routed(layout.graph("route", p), directed, node_partition(directed[:, 0], P), P)
    return {"edges": int(len(directed) // 2)}


def large_round(cfg: DedupStageConfig, layout: Layout, p: int, offsets: np.ndarray, step: str, edges: Piece) -> dict:
    """Partition p's large-star step: new edges routed by their larger end (to
    partitions 0 .. P - 1), node labels by the node's file (to P + file number)."""
    P = cfg.run.partitions
    bigger, labels, star = large_star(read_piece(edges, p, EDGE))
    bigger = unique_edges(bigger)  # (larger, smaller): small-star keys an edge by its larger end
    save_routed(layout.graph(step, p), np.concatenate((bigger, labels)),
                np.concatenate((node_partition(bigger[:, 0], P), P + file_of(offsets, labels[:, 0]))),
                P + len(offsets) - 1)
    return {"star": star, "edges": int(len(bigger))}


def small_round(cfg: DedupStageConfig, layout: Layout, p: int, step: str, edges: Piece) -> dict:
    P = cfg.run.partitions
    directed = both_directions(unique_edges(small_star(read_piece(edges, p, EDGE))))
    save_routed(layout.graph(step, p), directed, node_partition(directed[:, 0], P), P)
    return {"edges": int(len(directed) // 2)}


def ranks_file(cfg: DedupStageConfig, layout: Layout, f: int, offsets: np.ndarray, labels: Piece | None) -> dict:
    """The keep rank of file f's labelled nodes, routed with their labels by component."""
    labels = read_piece(labels, cfg.run.partitions + f, EDGE)
    rank = load_npz(layout.meta(f), "rank")[labels[:, 0] - offsets[f]] if len(labels) else np.empty(0, np.int64)
    save_routed(layout.ranked(f), np.concatenate((labels, rank[:, None]), axis=1),
                node_partition(labels[:, 1], cfg.run.partitions), cfg.run.partitions)
    return {"nodes": int(len(labels))}


def keep_partition(cfg: DedupStageConfig, layout: Layout, p: int, offsets: np.ndarray, reference_files: int,
                   ranked: Piece | None) -> dict:
    """The kept document of every node whose component label falls in partition p,
    routed to the node's file."""
    rows = read_piece(ranked, p, RANKED)
    labels, rank = rows[:, :2], rows[:, 2]
    nodes = labels[:, 0]
    fixed = nodes < offsets[reference_files]
    kept = best_members(labels, rank, fixed=fixed)
    if reference_files:
        save_npy(bridged_path(layout, p), bridged_documents(labels, rank, fixed))
    order = np.argsort(nodes)
    save_routed(layout.kept(p), np.stack((nodes[order], kept[order]), axis=1), file_of(offsets, nodes[order]),
                len(offsets) - 1)
    return {"nodes": int(len(nodes)), "removed": int((kept != nodes).sum())}


def cluster_file(cfg: DedupStageConfig, layout: Layout, f: int, offsets: np.ndarray, kept_rows: Piece,
                 nonrep: Piece | None) -> dict:
    """Kept dense id (-1: not a candidate) and kind (0 kept, 1 exact, 2 near) of file f's documents."""
    lo, hi = int(offsets[f]), int(offsets[f + 1])
    status = load_npz(layout.meta(f), "status")
    kept = np.where(status == STATUS_CODES["candidate"], np.arange(lo, hi), -1).astype(np.int64)
    rows = read_piece(kept_rows, f, EDGE)
    kept[rows[:, 0] - lo] = rows[:, 1]
    exact_dup = np.zeros(hi - lo, dtype=bool)
    if nonrep is not None:
        exact_dup[read_piece(nonrep, f, np.dtype("<i8")) - lo] = True
    removed = (kept >= 0) & (kept != np.arange(lo, hi))
    kind = np.where(removed, np.where(exact_dup, 1, 2), 0).astype(np.int8)
    save_npz(layout.clusters(f), kept=kept, kind=kind)
    asked = np.unique(kept[removed])  # what f's duplicates need to know of them (names.py)
    save_routed(layout.name_requests(f), np.stack((asked, np.full(len(asked), f, dtype=np.int64)), axis=1),
                file_of(offsets, asked), len(offsets) - 1)
    return {"removed": int(removed.sum())}


def run_components(steps: Steps, offsets: np.ndarray, nonrep: Exchange | None) -> list[dict]:
    """All steps of the components stage, each followed by its exchange. Only input
    files (not a reference's parts) get cluster arrays: only they are written.
    ``nonrep``: the exact step's non-representatives by file (None without it).
    Returns the clusters step's results (the duplicates of each input file)."""
    P, layout = steps.cfg.run.partitions, steps.layout

    def exchange(step: str, destinations: int) -> Exchange:
        return run_exchange(steps, step, [layout.graph(step, p) for p in range(P)], destinations, EDGE)

    F = len(offsets) - 1  # every file: reference parts, then inputs
    steps(Step("route", route_edges, PARTITIONS))
    edges = exchange("route", P)
    for r in range(MAX_ROUNDS):
        large = f"r{r:02d}-large"
        results = steps(Step(large, large_round, PARTITIONS, lambda p: (offsets, large, edges.piece(p))))
        labelled = exchange(large, P + F)
        if all(res["star"] for res in results):
            break
        small = f"r{r:02d}-small"
        steps(Step(small, small_round, PARTITIONS, lambda p: (small, labelled.piece(p))))
        edges = exchange(small, P)
    else:
        raise RuntimeError(f"dedup: connected components did not converge in {MAX_ROUNDS} rounds")
    steps(Step("ranks", ranks_file, FILES, lambda f: (offsets, labelled.piece(P + f))))
    ranked = run_exchange(steps, "ranks", [layout.ranked(f) for f in range(F)], P, RANKED)
    R = len(steps.reference_parts)
    steps(Step("keep", keep_partition, PARTITIONS, lambda p: (offsets, R, ranked.piece(p))))
    kept = run_exchange(steps, "keep", [layout.kept(p) for p in range(P)], F, EDGE)
    return steps(Step("clusters", cluster_file, INPUTS,
                      lambda f: (offsets, kept.piece(f), nonrep.piece(f) if nonrep is not None else None)))
