"""Connected components of the duplicate graph and the document kept per component.

State is one ``int64`` parent array over dense document ids; edges arrive in
batches (one partition file at a time), so memory is bounded by the number of
documents, never by the number of edges. Union-find is vectorised: each round
points every edge's larger root at its smaller root (``np.minimum.at``) and
compresses paths, until no edge joins two different roots. The root of every
component is its smallest id.
"""

from __future__ import annotations

import numpy as np


def new_forest(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def find_roots(parent: np.ndarray, nodes: np.ndarray | None = None) -> np.ndarray:
    """Roots of ``nodes`` (all nodes if None), compressing ``parent`` fully on the way."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        parent[:] = grand
    return parent if nodes is None else parent[nodes]


def union_edges(parent: np.ndarray, edges: np.ndarray) -> None:
    """Merge the components joined by ``edges`` (``int64 [m, 2]``) into ``parent``."""
    u = edges[:, 0].astype(np.int64)
    v = edges[:, 1].astype(np.int64)
    while len(u):
        ru = _roots_of(parent, u)
        rv = _roots_of(parent, v)
        differ = ru != rv
        if not differ.any():
            return
        ru, rv = ru[differ], rv[differ]
        u, v = u[differ], v[differ]
        lo = np.minimum(ru, rv)
        hi = np.maximum(ru, rv)
        np.minimum.at(parent, hi, lo)


def _roots_of(parent: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Roots of a subset of nodes, compressing only the paths walked."""
    r = parent[nodes]
    while True:
        rr = parent[r]
        if np.array_equal(rr, r):
            break
        parent[nodes] = rr  # path halving along the walked nodes
        r = rr
    return r


def keep_per_component(roots: np.ndarray, members: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each node, the node its component keeps: the member with the smallest
    ``(rank, id)``. Only nodes with ``members`` True take part; others map to -1."""
    n = len(roots)
    ids = np.arange(n, dtype=np.int64)
    kept = np.full(n, -1, dtype=np.int64)
    idx = ids[members]
    if len(idx) == 0:
        return kept
    order = np.lexsort((idx, rank[idx], roots[idx]))  # by component, then rank, then id
    sorted_roots = roots[idx][order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_roots[1:] != sorted_roots[:-1]
    winner_of_root = np.full(n, -1, dtype=np.int64)
    winner_of_root[sorted_roots[first]] = idx[order][first]
    kept[idx] = winner_of_root[roots[idx]]
    return kept
