"""Supervised adapters that reuse the sequence cores: generated tasks (recall, formal languages, the
Chomsky-hierarchy length-generalisation tasks, CTL++) and their trainer (``trainer.train_supervised``)."""
from .chomsky import TASKS, ChomskyTask
from .ctlpp import CTLPPTask
from .formal import LANGUAGES, FormalLanguageTask
from .tasks import Batch, RecallTask, Task

__all__ = ["Batch", "Task", "RecallTask", "FormalLanguageTask", "LANGUAGES", "ChomskyTask", "TASKS", "CTLPPTask"]
