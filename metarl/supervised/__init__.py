"""Supervised adapters that reuse the sequence cores on the engine loop: generated sequence tasks (recall,
formal languages, the Chomsky-hierarchy length-generalisation tasks, CTL++: ``sequence.SequenceClassification``),
language modelling (``lm``), vision (``vision``: VQ-VAE, images through the cores) and the glyph domain-shift
dataset for model selection (``glyph_domains``). Importing this package registers their env schemas and tasks."""
from .chomsky import TASKS, ChomskyTask
from .ctlpp import CTLPPTask
from .formal import LANGUAGES, FormalLanguageTask
from .lm import LanguageModelling
from .sequence import SequenceClassification, SequenceClassifier, register_sequence_task
from .tasks import Batch, RecallEnvConfig, RecallTask, SequenceTask, recall_from_config
from . import glyph_domains  # noqa: F401 (registers env=glyph_domains)
from . import vision  # noqa: F401 (registers env=vqvae/*, env=image/* and the vision trainer)
from . import graphs  # noqa: F401 (registers env=graphs/*)

register_sequence_task("recall", RecallEnvConfig, recall_from_config)

__all__ = ["Batch", "SequenceTask", "RecallTask", "FormalLanguageTask", "LANGUAGES", "ChomskyTask", "TASKS",
           "CTLPPTask", "LanguageModelling", "SequenceClassification", "SequenceClassifier", "register_sequence_task"]
