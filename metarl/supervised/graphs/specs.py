"""The CLRS type system as data (Veličković et al. 2022, "The CLRS Algorithmic Reasoning Benchmark").

Every quantity an algorithm reads, keeps or returns is a :class:`Feature`: its ``stage`` (an ``input``, a
``hint``: the algorithm's state after each step, or an ``output``), its ``location`` (``node``, ``edge`` or
``graph``) and its ``type``:

==============  ====================================================================================
scalar          a real number (loss: squared error)
mask            0 / 1 (loss: binary cross-entropy; score: F1)
mask_one        exactly one node is 1 (stored one-hot over the nodes; softmax over the nodes; accuracy)
categorical     one of ``num_classes`` classes (stored as class ids; softmax over the classes; accuracy)
pointer         at each node, the index of a node (stored as ids; softmax over the nodes; accuracy)
==============  ====================================================================================

``SPECS[algorithm]`` maps each feature name to its Feature; the samplers (``samplers.py``) produce exactly
these names. Arrays: node ``[N]``, edge ``[N, N]``, graph ``[]``; hints carry a leading step axis ``[T, ...]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

STAGES = ("input", "hint", "output")
LOCATIONS = ("node", "edge", "graph")
TYPES = ("scalar", "mask", "mask_one", "categorical", "pointer")


@dataclass(frozen=True)
class Feature:
    """One named quantity of an algorithm: stage, location, type (and the classes of a categorical)."""

    stage: str
    location: str
    type: str
    num_classes: int = 0

    def __post_init__(self):
        assert self.stage in STAGES and self.location in LOCATIONS and self.type in TYPES, self
        assert (self.type == "categorical") == (self.num_classes > 0), self


def _f(stage: str, location: str, type: str, num_classes: int = 0) -> Feature:
    return Feature(stage, location, type, num_classes)


I, H, O = "input", "hint", "output"
_ARRAY = {"pos": _f(I, "node", "scalar"), "key": _f(I, "node", "scalar")}
_GRAPH = {"pos": _f(I, "node", "scalar"), "A": _f(I, "edge", "scalar"), "adj": _f(I, "edge", "mask")}
_SOURCE = {**_GRAPH, "s": _f(I, "node", "mask_one")}
_SORT = {**_ARRAY, "pred": _f(O, "node", "pointer"), "pred_h": _f(H, "node", "pointer"),
         "i": _f(H, "node", "mask_one"), "j": _f(H, "node", "mask_one")}
_STRING = {"string": _f(I, "node", "mask"), "pos": _f(I, "node", "scalar"), "key": _f(I, "node", "categorical", 4)}

SPECS: Dict[str, Dict[str, Feature]] = {
    # sorting: the output is the sorted order as a chain of predecessors (the first element points to itself)
    "insertion_sort": dict(_SORT),
    "bubble_sort": dict(_SORT),
    # searching
    "minimum": {**_ARRAY, "min": _f(O, "node", "mask_one"), "min_h": _f(H, "node", "mask_one"),
                "i": _f(H, "node", "mask_one")},
    "binary_search": {**_ARRAY, "target": _f(I, "graph", "scalar"), "return": _f(O, "node", "mask_one"),
                      "low": _f(H, "node", "mask_one"), "high": _f(H, "node", "mask_one"),
                      "mid": _f(H, "node", "mask_one")},
    # graphs
    "bfs": {**_SOURCE, "pi": _f(O, "node", "pointer"), "reach_h": _f(H, "node", "mask"),
            "pi_h": _f(H, "node", "pointer")},
    "dfs": {**_GRAPH, "pi": _f(O, "node", "pointer"), "pi_h": _f(H, "node", "pointer"),
            "color": _f(H, "node", "categorical", 3), "u": _f(H, "node", "mask_one")},
    "topological_sort": {**_GRAPH, "topo": _f(O, "node", "pointer"), "topo_head": _f(O, "node", "mask_one"),
                         "topo_h": _f(H, "node", "pointer"), "topo_head_h": _f(H, "node", "mask_one"),
                         "color": _f(H, "node", "categorical", 3), "u": _f(H, "node", "mask_one")},
    "bellman_ford": {**_SOURCE, "pi": _f(O, "node", "pointer"), "pi_h": _f(H, "node", "pointer"),
                     "d": _f(H, "node", "scalar"), "msk": _f(H, "node", "mask")},
    "dijkstra": {**_SOURCE, "pi": _f(O, "node", "pointer"), "pi_h": _f(H, "node", "pointer"),
                 "d": _f(H, "node", "scalar"), "mark": _f(H, "node", "mask"), "in_queue": _f(H, "node", "mask"),
                 "u": _f(H, "node", "mask_one")},
    "mst_prim": {**_SOURCE, "pi": _f(O, "node", "pointer"), "pi_h": _f(H, "node", "pointer"),
                 "key": _f(H, "node", "scalar"), "mark": _f(H, "node", "mask"), "in_queue": _f(H, "node", "mask"),
                 "u": _f(H, "node", "mask_one")},
    # greedy
    "activity_selector": {"pos": _f(I, "node", "scalar"), "s": _f(I, "node", "scalar"), "f": _f(I, "node", "scalar"),
                          "selected": _f(O, "node", "mask"), "selected_h": _f(H, "node", "mask"),
                          "m": _f(H, "node", "mask_one"), "k": _f(H, "node", "mask_one")},
    # dynamic programming: nodes are x_1..x_n then y_1..y_m; b[i, j] for x_i, y_j (0 up-left, 1 up, 2 left)
    "lcs_length": {**_STRING, "b": _f(O, "edge", "categorical", 3), "b_h": _f(H, "edge", "categorical", 3),
                   "c_h": _f(H, "edge", "scalar")},
    # strings: nodes are the text then the pattern; the output marks the first shift where the pattern matches
    "naive_string_matcher": {**_STRING, "match": _f(O, "node", "mask_one"), "s": _f(H, "node", "mask_one"),
                             "i": _f(H, "node", "mask_one")},
}

CATEGORIES = {"sorting": ["insertion_sort", "bubble_sort"], "searching": ["minimum", "binary_search"],
              "graphs": ["bfs", "dfs", "topological_sort", "bellman_ford", "dijkstra", "mst_prim"],
              "greedy": ["activity_selector"], "dynamic_programming": ["lcs_length"],
              "strings": ["naive_string_matcher"]}


def stage(spec: Dict[str, Feature], name: str) -> Dict[str, Feature]:
    """The features of ``spec`` at stage ``name`` (input, hint or output)."""
    return {k: f for k, f in spec.items() if f.stage == name}
