"""Connected components by large-star / small-star rounds, partitioned or not, and the keep rule."""

from __future__ import annotations

import numpy as np

from pipeline.components import (
    best_members,
    both_directions,
    connected_components,
    large_star,
    node_partition,
    small_star,
    unique_edges,
)


def _reference_components(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """Smallest member of each node's component, by plain graph search."""
    adj = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    label = [-1] * n
    for start in range(n):
        if label[start] >= 0:
            continue
        stack, comp = [start], []
        label[start] = start
        while stack:
            x = stack.pop()
            comp.append(x)
            for y in adj[x]:
                if label[y] < 0:
                    label[y] = start
                    stack.append(y)
        for x in comp:
            label[x] = min(comp)
    return label


def _labels_of(n: int, labels: np.ndarray) -> list[int]:
    out = list(range(n))
    for node, root in labels.tolist():
        out[node] = root
    return out


def _partitioned_components(edges: np.ndarray, partitions: int) -> np.ndarray:
    """The distributed job's rounds, each step run per node partition and the results
    gathered: what the Ray tasks of the dedup stage compute."""
    current = unique_edges(edges)
    for _ in range(64):
        directed = both_directions(current)
        where = node_partition(directed[:, 0], partitions)
        outs = [large_star(directed[where == p]) for p in range(partitions)]
        if all(star for _, _, star in outs):
            labels = np.concatenate([lab for _, lab, _ in outs])
            return labels[np.argsort(labels[:, 0])]
        bigger = unique_edges(np.concatenate([e for e, _, _ in outs]))
        where = node_partition(bigger[:, 0], partitions)  # small-star keys an edge by its larger end
        current = unique_edges(np.concatenate([small_star(bigger[where == p]) for p in range(partitions)]))
    raise AssertionError("no convergence")


def test_components_match_graph_search_whatever_the_partitioning():
    rng = np.random.default_rng(0)
    for n, m in ((50, 30), (500, 400), (2000, 2500), (3000, 600)):
        edges = rng.integers(0, n, size=(m, 2))
        expected = _reference_components(n, [tuple(e) for e in edges.tolist()])
        single = connected_components(edges)
        assert _labels_of(n, single) == expected
        for partitions in (1, 3, 16):
            assert _partitioned_components(edges, partitions).tolist() == single.tolist()


def test_long_chain_and_star_collapse_to_smallest_id():
    n = 10_000
    chain = np.stack((np.arange(1, n), np.arange(n - 1)), axis=1)[::-1].copy()
    assert (connected_components(chain)[:, 1] == 0).all()
    star = np.stack((np.full(99, 500), np.arange(1000, 1099)), axis=1)  # centre is not the smallest
    labels = connected_components(star)
    assert (labels[:, 1] == 500).all() and len(labels) == 100


def test_star_forest_is_recognised_as_done():
    _, labels, star = large_star(both_directions(unique_edges(np.array([[0, 5], [0, 7], [2, 9]]))))
    assert star and labels.tolist() == [[0, 0], [2, 2], [5, 0], [7, 0], [9, 2]]
    _, _, star = large_star(both_directions(unique_edges(np.array([[0, 5], [5, 7]]))))
    assert not star  # 7 hangs off 5, not off the smallest node


def test_keep_rule_prefers_rank_then_smallest_id_and_fixed_nodes_stay():
    labels = connected_components(np.array([[0, 1], [1, 2], [3, 4]]))
    smallest = best_members(labels, np.zeros(5, dtype=np.int64))
    assert smallest.tolist() == [0, 0, 0, 3, 3]
    longest = best_members(labels, -np.array([10, 30, 30, 5, 9]))
    assert longest.tolist() == [1, 1, 1, 4, 4]
    # 0 and 2 are fixed (never removed): they keep themselves, 1 points to the best of all
    fixed = best_members(labels, np.array([-1, 0, -1, 0, 0]), fixed=np.array([True, False, True, False, False]))
    assert fixed.tolist() == [0, 0, 2, 3, 3]
