"""Supervised adapters that reuse the sequence cores: generated tasks (recall, formal languages, the
Chomsky-hierarchy length-generalisation tasks, CTL++) on the engine loop (``sequence.SequenceClassification``).
Importing this package registers their env schemas and tasks."""
from .chomsky import TASKS, ChomskyTask
from .ctlpp import CTLPPTask
from .formal import LANGUAGES, FormalLanguageTask
from .sequence import SequenceClassification, SequenceClassifier, register_sequence_task
from .tasks import Batch, RecallEnvConfig, RecallTask, SequenceTask, recall_from_config

register_sequence_task("recall", RecallEnvConfig, recall_from_config)

__all__ = ["Batch", "SequenceTask", "RecallTask", "FormalLanguageTask", "LANGUAGES", "ChomskyTask", "TASKS",
           "CTLPPTask", "SequenceClassification", "SequenceClassifier", "register_sequence_task"]
