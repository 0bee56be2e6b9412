"""Samplers of the CLRS algorithms: random instances, run step by step, with every step's state as hints.

``sample(algorithm, n, rng) -> Trajectory`` draws one instance with ``n`` nodes from a ``numpy`` Generator
and returns its inputs, hints (one frame per step; the first frame is the state before the first step, every
trajectory has at least two) and outputs, named as in ``specs.SPECS``. Conventions:

- graphs are Erdős–Rényi as in CLRS: each ordered (directed) or unordered pair is an edge with probability
  ``p`` (``edge_probability``, CLRS's default 0.5), no self-loops; weighted algorithms draw weights from
  U[0, 1); ``A`` holds the weights (1 for unweighted edges), ``adj`` is ``A != 0`` plus self-loops;
  topological sort draws a DAG (upper-triangular, then a random relabelling of the nodes);
- ``pos`` is i / n, the node's index, as CLRS (position in its string for the string algorithms);
- a pointer of a node that has none (a root, an unreached node) points to the node itself; ties go to the
  lowest index; mask_one features are stored one-hot; "no target" is -1 for categoricals and pointers,
  NaN for scalars (the LCS table outside the x-by-y block, cells not filled yet).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List

import numpy as np

from .specs import SPECS, stage

ALPHABET = 4  # string algorithms: characters 0..3


@dataclass
class Trajectory:
    """One instance: inputs {name: array}, hints {name: [T, ...] array}, outputs {name: array}."""

    inputs: Dict[str, np.ndarray]
    hints: Dict[str, np.ndarray]
    outputs: Dict[str, np.ndarray]

    @property
    def length(self) -> int:
        """T, the number of hint frames."""
        return len(next(iter(self.hints.values())))


class _Frames:
    """Collects hint frames (copies) and stacks them."""

    def __init__(self):
        self.frames: List[Dict[str, np.ndarray]] = []

    def add(self, **values):
        self.frames.append({k: np.array(v, copy=True) for k, v in values.items()})

    def stacked(self) -> Dict[str, np.ndarray]:
        frames = self.frames if len(self.frames) > 1 else self.frames * 2  # at least one processor step
        return {k: np.stack([f[k] for f in frames]) for k in frames[0]}


def one_hot(index: int, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    out[index] = 1.0
    return out


def chain(order, n: int = 0) -> np.ndarray:
    """Predecessor pointers of a sequence of nodes: order[k] -> order[k-1], the first to itself (and nodes
    not in ``order``, of the ``n`` nodes, to themselves)."""
    order = list(order)
    pred = np.arange(max(n, len(order)), dtype=np.int64)
    for k, node in enumerate(order):
        pred[node] = order[k - 1] if k else node
    return pred


def positions(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) / n


# ---------------------------------------------------------------- graphs
def er_graph(n: int, rng: np.random.Generator, p: float = 0.5, directed: bool = False, acyclic: bool = False,
             weighted: bool = False) -> np.ndarray:
    """[n, n] weights (0: no edge) of an Erdős–Rényi graph, as CLRS's ``_random_er_graph``."""
    edges = rng.random((n, n)) < p
    if acyclic:
        edges = np.triu(edges, k=1)
        perm = rng.permutation(n)
        edges = edges[np.ix_(perm, perm)]
    elif not directed:
        edges = np.triu(edges, k=1)
        edges = edges | edges.T
    np.fill_diagonal(edges, False)
    weights = rng.uniform(0.0, 1.0, (n, n)).astype(np.float32) if weighted else np.ones((n, n), np.float32)
    if weighted and not directed:
        weights = np.triu(weights, 1) + np.triu(weights, 1).T
    weights = np.maximum(weights, 1e-3)  # a drawn weight of exactly 0 would remove the edge
    return np.where(edges, weights, 0.0).astype(np.float32)


def _graph_inputs(A: np.ndarray) -> Dict[str, np.ndarray]:
    n = len(A)
    return {"pos": positions(n), "A": A, "adj": ((A != 0) | np.eye(n, dtype=bool)).astype(np.float32)}


# ---------------------------------------------------------------- sorting
def insertion_sort(n: int, rng: np.random.Generator, **_) -> Trajectory:
    key = rng.uniform(0, 1, n).astype(np.float32)
    frames, order = _Frames(), [0]
    frames.add(pred_h=chain(range(n)), i=one_hot(0, n), j=one_hot(0, n))
    for j in range(1, n):
        k = len(order)
        while k > 0 and key[order[k - 1]] > key[j]:
            k -= 1
        order.insert(k, j)
        frames.add(pred_h=chain(order + list(range(j + 1, n))), i=one_hot(order[k - 1] if k else j, n),
                   j=one_hot(j, n))
    return Trajectory({"pos": positions(n), "key": key}, frames.stacked(), {"pred": chain(order)})


def bubble_sort(n: int, rng: np.random.Generator, **_) -> Trajectory:
    key = rng.uniform(0, 1, n).astype(np.float32)
    frames, order = _Frames(), list(range(n))
    frames.add(pred_h=chain(order), i=one_hot(0, n), j=one_hot(n - 1, n))
    for done in range(n - 1):
        for k in range(n - 1 - done):
            if key[order[k]] > key[order[k + 1]]:
                order[k], order[k + 1] = order[k + 1], order[k]
            frames.add(pred_h=chain(order), i=one_hot(order[k + 1], n), j=one_hot(order[n - 1 - done], n))
    return Trajectory({"pos": positions(n), "key": key}, frames.stacked(), {"pred": chain(order)})


# ---------------------------------------------------------------- searching
def minimum(n: int, rng: np.random.Generator, **_) -> Trajectory:
    key = rng.uniform(0, 1, n).astype(np.float32)
    frames, best = _Frames(), 0
    frames.add(min_h=one_hot(0, n), i=one_hot(0, n))
    for i in range(1, n):
        if key[i] < key[best]:
            best = i
        frames.add(min_h=one_hot(best, n), i=one_hot(i, n))
    return Trajectory({"pos": positions(n), "key": key}, frames.stacked(), {"min": one_hot(best, n)})


def binary_search(n: int, rng: np.random.Generator, **_) -> Trajectory:
    """The smallest index whose key is >= target, in sorted keys; the target is at most the largest key."""
    key = np.sort(rng.uniform(0, 1, n)).astype(np.float32)
    target = np.float32(rng.uniform(0, key[-1]))
    frames, low, high = _Frames(), 0, n - 1
    frames.add(low=one_hot(low, n), high=one_hot(high, n), mid=one_hot((low + high) // 2, n))
    while low < high:
        mid = (low + high) // 2
        if key[mid] < target:
            low = mid + 1
        else:
            high = mid
        frames.add(low=one_hot(low, n), high=one_hot(high, n), mid=one_hot((low + high) // 2, n))
    return Trajectory({"pos": positions(n), "key": key, "target": np.array(target, np.float32)}, frames.stacked(),
                      {"return": one_hot(low, n)})


# ---------------------------------------------------------------- graph algorithms
def bfs(n: int, rng: np.random.Generator, p: float = 0.5) -> Trajectory:
    """Parallel BFS from s: each step reaches every unreached neighbour of a reached node (parent: the
    lowest-index reached neighbour)."""
    A, s = er_graph(n, rng, p), int(rng.integers(n))
    reach, pi = one_hot(s, n), np.arange(n)
    frames = _Frames()
    frames.add(reach_h=reach, pi_h=pi)
    while True:
        nxt = reach.copy()
        for j in range(n):
            if not reach[j]:
                parents = [i for i in range(n) if reach[i] and A[i, j] > 0]
                if parents:
                    nxt[j], pi[j] = 1.0, parents[0]
        if (nxt == reach).all():
            break
        reach = nxt
        frames.add(reach_h=reach, pi_h=pi)
    return Trajectory({**_graph_inputs(A), "s": one_hot(s, n)}, frames.stacked(), {"pi": pi.copy()})


def _dfs_visit(A: np.ndarray, roots, on_event: Callable, color: np.ndarray, pi: np.ndarray, on_finish=None):
    """Iterative DFS (neighbours in increasing order) from each white root in turn; ``on_event(u)`` after
    each discovery and finish, ``on_finish(u)`` when u turns black."""
    n = len(A)
    for root in roots:
        if color[root]:
            continue
        color[root] = 1
        on_event(root)
        stack = [(root, 0)]
        while stack:
            u, start = stack.pop()
            for v in range(start, n):
                if A[u, v] > 0 and color[v] == 0:
                    stack.append((u, v + 1))
                    pi[v], color[v] = u, 1
                    on_event(v)
                    stack.append((v, 0))
                    break
            else:
                color[u] = 2
                if on_finish:
                    on_finish(u)
                on_event(u)


def dfs(n: int, rng: np.random.Generator, p: float = 0.5) -> Trajectory:
    """DFS over a directed graph from every white node in index order; pi: the DFS forest."""
    A = er_graph(n, rng, p, directed=True)
    color, pi, frames = np.zeros(n, np.int64), np.arange(n), _Frames()
    frames.add(pi_h=pi, color=color, u=one_hot(0, n))
    _dfs_visit(A, range(n), lambda u: frames.add(pi_h=pi, color=color, u=one_hot(u, n)), color, pi)
    return Trajectory(_graph_inputs(A), frames.stacked(), {"pi": pi.copy()})


def topological_sort(n: int, rng: np.random.Generator, p: float = 0.5) -> Trajectory:
    """DFS-based topological sort of a DAG: each finished node goes to the front of the order. topo: the
    order as predecessor pointers (the head points to itself); topo_head: the first node."""
    A = er_graph(n, rng, p, acyclic=True)
    color, pi, frames, order = np.zeros(n, np.int64), np.arange(n), _Frames(), []

    def event(u):
        frames.add(topo_h=chain(order, n), topo_head_h=one_hot(order[0] if order else 0, n),
                   color=color, u=one_hot(u, n))

    event(0)
    _dfs_visit(A, range(n), event, color, pi, on_finish=lambda u: order.insert(0, u))
    return Trajectory(_graph_inputs(A), frames.stacked(), {"topo": chain(order), "topo_head": one_hot(order[0], n)})


def bellman_ford(n: int, rng: np.random.Generator, p: float = 0.5) -> Trajectory:
    """Synchronous Bellman-Ford from s on an undirected weighted graph, until no distance changes."""
    A, s = er_graph(n, rng, p, weighted=True), int(rng.integers(n))
    d, msk, pi = np.zeros(n, np.float32), one_hot(s, n), np.arange(n)
    frames = _Frames()
    frames.add(pi_h=pi, d=d, msk=msk)
    while True:
        d_new, msk_new, pi_new = d.copy(), msk.copy(), pi.copy()
        for u in range(n):
            for v in range(n):
                if msk[u] and A[u, v] > 0 and (not msk_new[v] or d[u] + A[u, v] < d_new[v]):
                    d_new[v], msk_new[v], pi_new[v] = d[u] + A[u, v], 1.0, u
        if (msk_new == msk).all() and (d_new == d).all():
            break
        d, msk, pi = d_new, msk_new, pi_new
        frames.add(pi_h=pi, d=d, msk=msk)
    return Trajectory({**_graph_inputs(A), "s": one_hot(s, n)}, frames.stacked(), {"pi": pi.copy()})


def _greedy_tree(n: int, rng: np.random.Generator, p: float, prim: bool) -> Trajectory:
    """Dijkstra (prim=False: key = distance) or Prim (key = lightest edge to the tree) from s."""
    A, s = er_graph(n, rng, p, weighted=True), int(rng.integers(n))
    key, pi = np.zeros(n, np.float32), np.arange(n)
    mark, in_queue = np.zeros(n, np.float32), one_hot(s, n)
    value = "key" if prim else "d"
    frames = _Frames()
    frames.add(pi_h=pi, **{value: key}, mark=mark, in_queue=in_queue, u=one_hot(s, n))
    while in_queue.any():
        u = min(np.flatnonzero(in_queue), key=lambda v: (key[v], v))
        mark[u], in_queue[u] = 1.0, 0.0
        for v in range(n):
            if A[u, v] > 0 and not mark[v]:
                candidate = A[u, v] if prim else key[u] + A[u, v]
                if not in_queue[v] or candidate < key[v]:
                    key[v], pi[v], in_queue[v] = candidate, u, 1.0
        frames.add(pi_h=pi, **{value: key}, mark=mark, in_queue=in_queue, u=one_hot(u, n))
    return Trajectory({**_graph_inputs(A), "s": one_hot(s, n)}, frames.stacked(), {"pi": pi.copy()})


def dijkstra(n: int, rng: np.random.Generator, p: float = 0.5) -> Trajectory:
    return _greedy_tree(n, rng, p, prim=False)


def mst_prim(n: int, rng: np.random.Generator, p: float = 0.5) -> Trajectory:
    return _greedy_tree(n, rng, p, prim=True)


# ---------------------------------------------------------------- greedy
def activity_selector(n: int, rng: np.random.Generator, **_) -> Trajectory:
    """Greedy activity selection: by finish time, take each activity that starts after the last one taken."""
    start = rng.uniform(0, 1, n).astype(np.float32)
    finish = (start + rng.uniform(0, 1, n)).astype(np.float32)
    order = sorted(range(n), key=lambda i: (finish[i], i))
    selected, frames = np.zeros(n, np.float32), _Frames()
    k = order[0]
    selected[k] = 1.0
    frames.add(selected_h=selected, m=one_hot(k, n), k=one_hot(k, n))
    for m in order[1:]:
        if start[m] >= finish[k]:
            selected[m], k = 1.0, m
        frames.add(selected_h=selected, m=one_hot(m, n), k=one_hot(k, n))
    return Trajectory({"pos": positions(n), "s": start, "f": finish}, frames.stacked(), {"selected": selected.copy()})


# ---------------------------------------------------------------- strings
def _string_inputs(first: np.ndarray, second: np.ndarray) -> Dict[str, np.ndarray]:
    """Nodes: the characters of ``first`` then of ``second``; ``string`` marks the second."""
    return {"string": np.r_[np.zeros(len(first)), np.ones(len(second))].astype(np.float32),
            "pos": np.r_[np.arange(len(first)) / len(first), np.arange(len(second)) / len(second)].astype(np.float32),
            "key": np.r_[first, second].astype(np.int64)}


UP_LEFT, UP, LEFT = 0, 1, 2


def lcs_length(n: int, rng: np.random.Generator, **_) -> Trajectory:
    """LCS-LENGTH of CLRS: x (the first ceil(n/2) nodes) against y (the rest), one hint frame per row of
    the table; b[i, j] (edge x_i -> y_j): up-left (a match), up (c[i-1, j] >= c[i, j-1]) or left."""
    nx_, ny = (n + 1) // 2, n // 2
    x, y = rng.integers(0, ALPHABET, nx_), rng.integers(0, ALPHABET, ny)
    c = np.zeros((nx_ + 1, ny + 1), np.float32)
    b = np.full((n, n), -1, np.int64)
    c_h = np.full((n, n), np.nan, np.float32)
    frames = _Frames()
    frames.add(b_h=b, c_h=c_h)
    for i in range(nx_):
        for j in range(ny):
            if x[i] == y[j]:
                c[i + 1, j + 1], b[i, nx_ + j] = c[i, j] + 1, UP_LEFT
            elif c[i, j + 1] >= c[i + 1, j]:
                c[i + 1, j + 1], b[i, nx_ + j] = c[i, j + 1], UP
            else:
                c[i + 1, j + 1], b[i, nx_ + j] = c[i + 1, j], LEFT
            c_h[i, nx_ + j] = c[i + 1, j + 1] / max(nx_, ny)
        frames.add(b_h=b, c_h=c_h)
    return Trajectory(_string_inputs(x, y), frames.stacked(), {"b": b.copy()})


def lcs_from_table(b: np.ndarray, key: np.ndarray, nx_: int) -> List[int]:
    """The LCS (characters) that the direction table b spells, walking back from its last cell."""
    i, j, out = nx_ - 1, len(key) - nx_ - 1, []
    while i >= 0 and j >= 0:
        step = b[i, nx_ + j]
        if step == UP_LEFT:
            out.append(int(key[i]))
            i, j = i - 1, j - 1
        elif step == UP:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def naive_string_matcher(n: int, rng: np.random.Generator, **_) -> Trajectory:
    """The first shift at which the pattern (the last max(1, n // 4) nodes) occurs in the text (the rest);
    the pattern is planted at a random shift, so one exists. One hint frame per character comparison."""
    m = max(1, n // 4)
    text, pattern = rng.integers(0, ALPHABET, n - m), rng.integers(0, ALPHABET, m)
    shift = int(rng.integers(0, n - 2 * m + 1))
    text[shift:shift + m] = pattern
    frames, found = _Frames(), None
    frames.add(s=one_hot(0, n), i=one_hot(n - m, n))
    for s in range(n - 2 * m + 1):
        for i in range(m):
            frames.add(s=one_hot(s, n), i=one_hot(n - m + i, n))
            if text[s + i] != pattern[i]:
                break
        else:
            found = s
            break
    return Trajectory(_string_inputs(text, pattern), frames.stacked(), {"match": one_hot(found, n)})


SAMPLERS: Dict[str, Callable[..., Trajectory]] = {
    "insertion_sort": insertion_sort, "bubble_sort": bubble_sort, "minimum": minimum, "binary_search": binary_search,
    "bfs": bfs, "dfs": dfs, "topological_sort": topological_sort, "bellman_ford": bellman_ford,
    "dijkstra": dijkstra, "mst_prim": mst_prim, "activity_selector": activity_selector, "lcs_length": lcs_length,
    "naive_string_matcher": naive_string_matcher,
}
GRAPH_ALGORITHMS = ("bfs", "dfs", "topological_sort", "bellman_ford", "dijkstra", "mst_prim")
assert set(SAMPLERS) == set(SPECS)


def sample(algorithm: str, n: int, rng: np.random.Generator, edge_probability: float = 0.5) -> Trajectory:
    """One trajectory of ``algorithm`` with ``n`` nodes; its names match ``SPECS[algorithm]``."""
    if algorithm in GRAPH_ALGORITHMS:
        trajectory = SAMPLERS[algorithm](n, rng, p=edge_probability)
    else:
        trajectory = SAMPLERS[algorithm](n, rng)
    spec = SPECS[algorithm]
    assert set(trajectory.inputs) == set(stage(spec, "input")) and set(trajectory.hints) == set(stage(spec, "hint")) \
        and set(trajectory.outputs) == set(stage(spec, "output")), algorithm
    return trajectory
