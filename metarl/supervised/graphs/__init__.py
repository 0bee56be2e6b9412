"""Graph algorithmic reasoning: the CLRS benchmark's algorithms as samplers with hints, and
encode-process-decode models with MPNN / Triplet-GMPNN processors and any metarl core as node memory
(``env=graphs/<algorithm>``). Importing this package registers the task."""
from .model import EncodeProcessDecode, GraphBatch, collate
from .samplers import SAMPLERS, Trajectory, sample
from .specs import CATEGORIES, SPECS, Feature
from .task import GraphAlgorithmTask, GraphsConfig, evaluate

__all__ = ["SPECS", "CATEGORIES", "Feature", "SAMPLERS", "Trajectory", "sample", "GraphBatch", "collate",
           "EncodeProcessDecode", "GraphAlgorithmTask", "GraphsConfig", "evaluate"]
