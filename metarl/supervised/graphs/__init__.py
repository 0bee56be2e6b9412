"""Graph algorithmic reasoning: the CLRS benchmark's algorithms as samplers with hints, and
encode-process-decode models with MPNN / Triplet-GMPNN processors and any metarl core as node memory
(``env=clrs/<algorithm>``, alias ``env=graphs/<algorithm>``), and the generalist of Ibarz et al. 2022: one
processor for several algorithms (``env=clrs/multi``). Importing this package registers both tasks."""
from .model import AlgorithmHeads, EncodeProcessDecode, Generalist, GraphBatch, collate
from .samplers import SAMPLERS, Trajectory, sample
from .specs import CATEGORIES, SPECS, Feature
from .task import GeneralistConfig, GeneralistTask, GraphAlgorithmTask, GraphsConfig, evaluate, expand_algorithms

__all__ = ["SPECS", "CATEGORIES", "Feature", "SAMPLERS", "Trajectory", "sample", "GraphBatch", "collate",
           "AlgorithmHeads", "EncodeProcessDecode", "Generalist", "GraphAlgorithmTask", "GraphsConfig",
           "GeneralistTask", "GeneralistConfig", "evaluate", "expand_algorithms"]
