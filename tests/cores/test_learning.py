"""Every core learns a task that needs memory; a model without memory stays at chance.

Task: the first token (one of 4 cues) must be output at every later position, while the inputs there
are random distractors from another 4 tokens. Without memory the best accuracy is 1/4.
"""
import pytest
import torch
from torch import nn

from metarl import cores

NUM_CUES, NUM_DISTRACTORS, T = 4, 4, 12


def batch(generator, size=32):
    cues = torch.randint(0, NUM_CUES, (size,), generator=generator)
    tokens = NUM_CUES + torch.randint(0, NUM_DISTRACTORS, (size, T), generator=generator)
    tokens[:, 0] = cues
    return tokens, cues.unsqueeze(1).expand(size, T - 1)


class Model(nn.Module):
    def __init__(self, core_name, d_model=32, **options):
        super().__init__()
        self.embed = nn.Embedding(NUM_CUES + NUM_DISTRACTORS, d_model)
        self.core = cores.make(core_name, d_model=d_model, num_layers=1, num_heads=2, **options)
        self.head = nn.Linear(d_model, NUM_CUES)

    def forward(self, tokens):
        h, _ = self.core(self.embed(tokens))
        return self.head(h)[:, 1:]


def train(core_name, steps=150, **options):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = Model(core_name, **options)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        tokens, targets = batch(gen)
        loss = nn.functional.cross_entropy(model(tokens).reshape(-1, NUM_CUES), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokens, targets = batch(torch.Generator().manual_seed(123), size=256)
    with torch.no_grad():
        return (model(tokens).argmax(-1) == targets).float().mean().item()


@pytest.mark.parametrize("name, options", [
    ("lstm", {}), ("lt", {}), ("delta", {}), ("recdelta", {}), ("srwm", {"d_head": 16}),
    ("transformer", {"positional": "sinusoidal"}),
])
def test_core_learns_to_remember(name, options):
    accuracy = train(name, **options)
    assert accuracy > 0.9, f"{name}: accuracy {accuracy:.2f}"


def test_without_memory_stays_at_chance():
    accuracy = train("mlp")  # the memoryless core
    assert accuracy < 0.35, f"memoryless model reached {accuracy:.2f}: the task leaks the answer"
