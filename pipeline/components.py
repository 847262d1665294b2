"""Connected components of the duplicate graph by alternating large-star / small-star
rounds (Kiveris et al., "Connected Components in MapReduce and Beyond", 2014), and the
document each component keeps.

Every operation looks only at one node and its neighbours, so edges can be
hash-partitioned by node (``node_partition``) and each partition processed by its own
task, holding state for that partition only; the driver just alternates the steps.
The result does not depend on the partitioning: each round is a function of the edge
set, and the final labels are the smallest id of every component.

- ``large_star``: each node u connects its neighbours larger than u to the smallest
  node of its neighbourhood (u included).
- ``small_star``: each node u connects itself and its neighbours smaller than u to the
  smallest of them.
- The graph is done when it is a forest of stars centred on their smallest member:
  every node either has no smaller neighbour or exactly one neighbour. ``large_star``
  checks that on its input; then each node's label is the smallest node of its
  neighbourhood.

Edges are ``int64 [m, 2]`` arrays of document ids. ``connected_components`` runs the
same steps in one process (one partition).
"""

from __future__ import annotations

import numpy as np

MAX_ROUNDS = 64  # each round at least halves long chains; real graphs converge in a few


def node_partition(nodes: np.ndarray, partitions: int) -> np.ndarray:
    """The partition of each node (dense ids are consecutive, so a modulus balances them)."""
    return (nodes % partitions).astype(np.int64)


def unique_edges(edges: np.ndarray) -> np.ndarray:
    """Undirected edges as distinct (larger, smaller) rows, sorted; self-loops dropped."""
    if len(edges) == 0:
        return np.empty((0, 2), dtype=np.int64)
    e = np.sort(edges.astype(np.int64), axis=1)[:, ::-1]
    e = e[e[:, 0] != e[:, 1]]
    return np.unique(e, axis=0) if len(e) else np.empty((0, 2), dtype=np.int64)


def both_directions(edges: np.ndarray) -> np.ndarray:
    """Directed rows <u, v> and <v, u> of each undirected edge (large-star's input)."""
    return np.concatenate((edges, edges[:, ::-1])) if len(edges) else np.empty((0, 2), dtype=np.int64)


def _groups(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct directed rows sorted by (u, v); the first row of each u and group sizes."""
    pairs = np.unique(pairs, axis=0)  # sorted by u, then v
    u, v = pairs[:, 0], pairs[:, 1]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    sizes = np.diff(np.r_[starts, len(u)])
    return u, v, starts, sizes


def large_star(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """One large-star step over directed rows <u, v> (all neighbours of the nodes u present).

    Returns the new undirected edges (v, m(u)) for neighbours v > u, the label
    ``(u, m(u))`` of every node u, and whether the input already is a star forest
    (then the labels are final).
    """
    if len(pairs) == 0:
        empty = np.empty((0, 2), dtype=np.int64)
        return empty, empty, True
    u, v, starts, sizes = _groups(pairs)
    smallest_neighbour = np.minimum.reduceat(v, starts)
    nodes = u[starts]
    m = np.minimum(smallest_neighbour, nodes)
    star = bool(np.all((smallest_neighbour > nodes) | (sizes == 1)))
    larger = v > u
    edges = np.stack((v[larger], np.repeat(m, sizes)[larger]), axis=1)
    return edges, np.stack((nodes, m), axis=1), star


def small_star(pairs: np.ndarray) -> np.ndarray:
    """One small-star step over rows <u, v> with v < u (each edge keyed by its larger end).

    Returns the new undirected edges: u and each of its smaller neighbours, connected
    to the smallest of them.
    """
    if len(pairs) == 0:
        return np.empty((0, 2), dtype=np.int64)
    u, v, starts, sizes = _groups(pairs)
    m = np.repeat(np.minimum.reduceat(v, starts), sizes)
    to_min = np.stack((v, m), axis=1)[v != m]
    return np.concatenate((np.stack((u[starts], m[starts]), axis=1), to_min))


def connected_components(edges: np.ndarray) -> np.ndarray:
    """``(node, smallest node of its component)`` for every node of ``edges``, sorted by
    node, by the same rounds the distributed job runs, in one partition."""
    current = unique_edges(edges)
    for _ in range(MAX_ROUNDS):
        bigger, labels, star = large_star(both_directions(current))
        if star:
            return labels
        current = unique_edges(small_star(unique_edges(bigger)))
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def best_members(labels: np.ndarray, rank: np.ndarray, fixed: np.ndarray | None = None) -> np.ndarray:
    """The document each node's component keeps: the member with the smallest (rank, id).

    ``labels`` is ``(node, component label)`` rows (all members of the components
    present), ``rank`` the keep rank of each row's node. Nodes marked ``fixed`` keep
    themselves whatever their component (reference documents are never removed); the
    component's other members still point to its best member. Returns the kept node
    of each row, in row order.
    """
    nodes, comp = labels[:, 0], labels[:, 1]
    if len(nodes) == 0:
        return np.empty(0, dtype=np.int64)
    order = np.lexsort((nodes, rank, comp))  # by component, then rank, then id
    first = np.r_[True, comp[order][1:] != comp[order][:-1]]
    winner_of_group = nodes[order][first]
    group = np.cumsum(first) - 1
    kept = np.empty(len(nodes), dtype=np.int64)
    kept[order] = winner_of_group[group]
    if fixed is not None:
        kept[fixed] = nodes[fixed]
    return kept
