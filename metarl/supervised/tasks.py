"""Generated sequence tasks (no download). Each ``sample(batch_size, generator)`` returns
``tokens [B, T] long`` and ``targets [B, T] long`` with -100 where there is nothing to predict."""
from __future__ import annotations

import torch


class RecallTask:
    """The cue at step 0 must be output at every later step, while the inputs there are distractors.

    Tokens 0..num_cues-1 are cues, the next num_distractors are distractors. Needs memory: without it
    the best accuracy is 1/num_cues.
    """

    def __init__(self, num_cues: int = 8, num_distractors: int = 8, length: int = 32):
        if num_cues < 2 or num_distractors < 1 or length < 2:
            raise ValueError(f"recall task needs num_cues >= 2, num_distractors >= 1, length >= 2; "
                             f"got {num_cues}, {num_distractors}, {length}")
        self.num_cues, self.num_distractors, self.length = num_cues, num_distractors, length
        self.vocab_size = num_cues + num_distractors
        self.num_classes = num_cues

    def sample(self, batch_size: int, generator: torch.Generator):
        cues = torch.randint(0, self.num_cues, (batch_size,), generator=generator)
        tokens = self.num_cues + torch.randint(0, self.num_distractors, (batch_size, self.length), generator=generator)
        tokens[:, 0] = cues
        targets = cues.unsqueeze(1).repeat(1, self.length)
        targets[:, 0] = -100
        return tokens, targets
