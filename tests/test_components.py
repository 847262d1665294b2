"""Connected components by vectorised union-find, and the keep rule."""

from __future__ import annotations

import numpy as np

from pipeline.components import find_roots, keep_per_component, new_forest, union_edges


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


def test_union_find_matches_graph_search_over_edge_batches():
    rng = np.random.default_rng(0)
    for n, m in ((50, 30), (500, 400), (2000, 2500)):
        edges = rng.integers(0, n, size=(m, 2))
        parent = new_forest(n)
        for batch in np.array_split(edges, 7):  # edges arrive one partition at a time
            union_edges(parent, batch)
        roots = find_roots(parent)
        assert roots.tolist() == _reference_components(n, [tuple(e) for e in edges.tolist()])


def test_long_chain_collapses_to_smallest_id():
    n = 10_000
    chain = np.stack((np.arange(1, n), np.arange(n - 1)), axis=1)[::-1].copy()
    parent = new_forest(n)
    union_edges(parent, chain)
    assert (find_roots(parent) == 0).all()


def test_keep_rule_prefers_rank_then_smallest_id_and_skips_non_members():
    parent = new_forest(6)
    union_edges(parent, np.array([[0, 1], [1, 2], [3, 4]]))
    roots = find_roots(parent)
    members = np.array([True, True, True, True, True, False])
    smallest = keep_per_component(roots, members, np.zeros(6, dtype=np.int64))
    assert smallest.tolist() == [0, 0, 0, 3, 3, -1]
    longest = keep_per_component(roots, members, -np.array([10, 30, 30, 5, 9, 99]))
    assert longest.tolist() == [1, 1, 1, 4, 4, -1]
