"""Every sampler's outputs (and some hints) against an independent implementation on random instances."""
import bisect
import functools

import networkx as nx
import numpy as np
import pytest

from metarl.supervised.graphs.samplers import SAMPLERS, lcs_from_table, sample
from metarl.supervised.graphs.specs import SPECS, stage

SIZES = (4, 7, 11, 16)
SEEDS = range(6)


def instances(algorithm):
    for n in SIZES:
        for seed in SEEDS:
            yield n, sample(algorithm, n, np.random.default_rng(1000 * n + seed))


def order_from_chain(pred):
    """The sequence a predecessor chain encodes (head: the node pointing to itself)."""
    head = [v for v in range(len(pred)) if pred[v] == v]
    assert len(head) == 1
    succ = {int(pred[v]): v for v in range(len(pred)) if pred[v] != v}
    order = head
    while order[-1] in succ:
        order.append(succ[order[-1]])
    assert len(order) == len(pred)
    return order


def graph(A, directed):
    G = nx.DiGraph() if directed else nx.Graph()
    G.add_nodes_from(range(len(A)))
    G.add_weighted_edges_from((int(u), int(v), float(A[u, v])) for u, v in zip(*np.nonzero(A)))
    return G


@pytest.mark.parametrize("algorithm", sorted(SAMPLERS))
def test_shapes_and_types_follow_the_spec(algorithm):
    for n, t in instances(algorithm):
        assert t.length >= 2
        for stage_name, values in (("input", t.inputs), ("hint", t.hints), ("output", t.outputs)):
            for name, feature in stage(SPECS[algorithm], stage_name).items():
                value = values[name][0] if stage_name == "hint" else values[name]
                assert value.shape == {"node": (n,), "edge": (n, n), "graph": ()}[feature.location], name
                if feature.type == "mask_one":
                    assert (np.sort(value, axis=-1)[..., -1] == 1).all() and value.sum() == 1
                if feature.type in ("pointer", "categorical"):
                    hi = n if feature.type == "pointer" else feature.num_classes
                    assert ((values[name] >= -1) & (values[name] < hi)).all()


@pytest.mark.parametrize("algorithm", ["insertion_sort", "bubble_sort"])
def test_sorts(algorithm):
    for n, t in instances(algorithm):
        assert order_from_chain(t.outputs["pred"]) == sorted(range(n), key=lambda i: t.inputs["key"][i])
        assert (t.hints["pred_h"][-1] == t.outputs["pred"]).all()


def test_minimum():
    for n, t in instances("minimum"):
        assert t.outputs["min"].argmax() == int(np.argmin(t.inputs["key"]))
        assert t.hints["min_h"][-1].argmax() == t.outputs["min"].argmax()


def test_binary_search():
    for n, t in instances("binary_search"):
        key = t.inputs["key"].tolist()
        assert t.outputs["return"].argmax() == bisect.bisect_left(key, float(t.inputs["target"]))
        assert t.length <= int(np.ceil(np.log2(n))) + 2


def check_tree_distances(t, dist, weighted):
    """pi: a shortest-path tree from s (distances ``dist`` of networkx), unreached nodes point to themselves."""
    pi, A, s = t.outputs["pi"], t.inputs["A"], int(t.inputs["s"].argmax())
    for v in range(len(pi)):
        if v == s or v not in dist:
            assert pi[v] == v
        else:
            assert A[pi[v], v] > 0
            step = A[pi[v], v] if weighted else 1
            assert dist[int(pi[v])] + step == pytest.approx(dist[v], abs=1e-4)


def test_bfs():
    for n, t in instances("bfs"):
        G = graph(t.inputs["A"], directed=False)
        check_tree_distances(t, nx.single_source_shortest_path_length(G, int(t.inputs["s"].argmax())), False)
        reach = nx.node_connected_component(G, int(t.inputs["s"].argmax()))
        assert set(np.flatnonzero(t.hints["reach_h"][-1])) == reach


@pytest.mark.parametrize("algorithm", ["bellman_ford", "dijkstra"])
def test_shortest_paths(algorithm):
    for n, t in instances(algorithm):
        G = graph(t.inputs["A"], directed=False)
        s = int(t.inputs["s"].argmax())
        dist = nx.single_source_dijkstra_path_length(G, s) if algorithm == "dijkstra" else \
            nx.single_source_bellman_ford_path_length(G, s)
        check_tree_distances(t, dist, True)
        d = t.hints["d"][-1]
        assert all(d[v] == pytest.approx(dist[v], abs=1e-4) for v in dist)


def test_mst_prim():
    for n, t in instances("mst_prim"):
        A, pi, s = t.inputs["A"], t.outputs["pi"], int(t.inputs["s"].argmax())
        G = graph(A, directed=False)
        component = nx.node_connected_component(G, s)
        tree = nx.minimum_spanning_tree(G.subgraph(component))
        weight = sum(A[pi[v], v] for v in component if v != s)
        assert all(A[pi[v], v] > 0 for v in component if v != s)
        assert all(pi[v] == v for v in range(n) if v not in component or v == s)
        assert weight == pytest.approx(tree.size(weight="weight"), abs=1e-4)


def test_dfs_matches_networkx():
    for n, t in instances("dfs"):
        predecessors = nx.dfs_predecessors(graph(t.inputs["A"], directed=True))
        assert {v: int(t.outputs["pi"][v]) for v in range(n) if t.outputs["pi"][v] != v} == predecessors
        assert (t.hints["color"][-1] == 2).all() and (t.hints["color"][0] == 0).all()


def test_topological_sort():
    for n, t in instances("topological_sort"):
        G = graph(t.inputs["A"], directed=True)
        assert nx.is_directed_acyclic_graph(G)
        order = order_from_chain(t.outputs["topo"])
        rank = {v: k for k, v in enumerate(order)}
        assert all(rank[u] < rank[v] for u, v in G.edges)
        assert t.outputs["topo_head"].argmax() == order[0]


def test_activity_selector():
    for n, t in instances("activity_selector"):
        s, f, chosen = t.inputs["s"], t.inputs["f"], np.flatnonzero(t.outputs["selected"])
        intervals = sorted((f[i], s[i]) for i in chosen)
        assert all(a_f <= b_s for (a_f, _), (_, b_s) in zip(intervals, intervals[1:]))  # compatible
        by_finish = sorted(range(n), key=lambda i: f[i])  # dynamic programme: the largest compatible set
        best = [0] * (n + 1)
        for k, i in enumerate(by_finish, 1):
            last = max([q for q in range(1, k) if f[by_finish[q - 1]] <= s[i]], default=0)
            best[k] = max(best[k - 1], best[last] + 1)
        assert len(chosen) == best[n]


def test_lcs_length():
    for n, t in instances("lcs_length"):
        nx_ = int((t.inputs["string"] == 0).sum())
        key = t.inputs["key"]
        x, y = key[:nx_].tolist(), key[nx_:].tolist()

        @functools.lru_cache(None)
        def lcs(i, j):
            return 0 if i == 0 or j == 0 else lcs(i - 1, j - 1) + 1 if x[i - 1] == y[j - 1] else \
                max(lcs(i - 1, j), lcs(i, j - 1))

        spelled = lcs_from_table(t.outputs["b"], key, nx_)
        assert len(spelled) == lcs(len(x), len(y))
        it = iter(x)
        assert all(c in it for c in spelled)  # a subsequence of x
        it = iter(y)
        assert all(c in it for c in spelled)  # and of y
        assert (t.hints["b_h"][-1] == t.outputs["b"]).all()


def test_naive_string_matcher():
    for n, t in instances("naive_string_matcher"):
        m = int(t.inputs["string"].sum())
        chars = "".join("abcd"[c] for c in t.inputs["key"])
        assert t.outputs["match"].argmax() == chars[:n - m].find(chars[n - m:])


@pytest.mark.parametrize("algorithm", sorted(SAMPLERS))
def test_seeded(algorithm):
    a, b = (sample(algorithm, 7, np.random.default_rng(3)) for _ in range(2))
    c = sample(algorithm, 7, np.random.default_rng(4))
    assert all(np.array_equal(a.inputs[k], b.inputs[k], equal_nan=True) for k in a.inputs)
    assert any(not np.array_equal(a.inputs[k], c.inputs[k]) for k in a.inputs)
