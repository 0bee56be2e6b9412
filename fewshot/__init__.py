"""Episodic few-shot learning (``metarl.fewshot``): datasets, episode sampler, protocols, models, the engine task.

    python -m metarl.train env=glyphs agent=srwm                      # generated glyphs, no download
    python -m metarl.train env=omniglot agent=delta env.root=/data    # or miniimagenet, fc100
    python scripts/evaluate_fewshot.py runs/<run>/best-val-accuracy.pt             # 5-way 1- and 5-shot, 95% intervals
"""
from .data import ImageSplit, sample_episodes, to_float
from .glyphs import glyph_split
from .models import BACKBONES, Conv4, ProtoNet, Res12, SequenceLearner, make_backbone
from .protocols import DelayedEpisodes, SyncEpisodes, delayed_episodes, sync_episodes
from .readers import DATASETS, DatasetLayoutError, load_split
from .task import FewShotEnvConfig, FewShotTask, build_model, evaluate

__all__ = [
    "ImageSplit", "sample_episodes", "to_float", "glyph_split", "load_split", "DATASETS", "DatasetLayoutError",
    "SyncEpisodes", "DelayedEpisodes", "sync_episodes", "delayed_episodes",
    "Conv4", "Res12", "BACKBONES", "make_backbone", "SequenceLearner", "ProtoNet",
    "build_model", "evaluate", "FewShotTask", "FewShotEnvConfig",
]
