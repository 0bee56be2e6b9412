"""A member that answers with a language model trained by ``env=lm`` (``metarl.supervised.lm``).

The conversation is rendered as text (``render``: one ``name: content`` line per message, then
``<agent name>: ``), read in one call of the model; the reply is sampled one token at a time, each fed back
with the carried core state (fast weights, LSTM state or the Transformer's key/value memory), until ``stop``
or ``max_tokens``. Tokenisers: bytes, characters, words (the run folder's ``tokenizer.json``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..engine import read_checkpoint
from ..errors import CheckpointError, MissingPathError
from ..supervised.lm.task import build_language_model
from ..supervised.lm.tokenizers import tokenizer_from_dict
from .messages import Message


def render_lines(conversation: Sequence[Message], speaker: str) -> str:
    """``name: content`` per message (the role where there is no name), then ``speaker: ``."""
    lines = [f"{m.name or m.role}: {' '.join(m.content.split())}" for m in conversation]
    return "\n".join(lines + [f"{speaker}: "])


def load_language_model(path, device: str = "cpu"):
    """(model in eval mode, tokeniser) of a checkpoint written by an ``env=lm`` run (or by ``save_checkpoint``
    with such a config), with ``tokenizer.json`` beside it."""
    path = Path(path)
    payload = read_checkpoint(path)
    cfg = payload.get("config") or {}
    env = cfg.get("env") or {}
    if env.get("family") != "lm":
        raise CheckpointError(f"{path} is not a checkpoint of an env=lm run; pass one from "
                              "`python -m metarl.train env=lm ...` (runs/<run>/checkpoint.pt)")
    saved = path.parent / "tokenizer.json"
    if not saved.is_file():
        raise MissingPathError(f"{saved} does not exist; the LM agent decodes with the tokenizer.json that env=lm "
                               "writes beside its checkpoints: keep the run folder together")
    tokenizer = tokenizer_from_dict(json.loads(saved.read_text()))
    model = build_language_model(cfg["agent"], tokenizer.vocab_size, env.get("memory", 128),
                                 env.get("tie_embeddings", False))
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), tokenizer


class LMAgent:
    """An agent that samples its reply from a metarl language model with the carried state.

    temperature 0 is greedy; top_k > 0 samples among the k most likely tokens; seed fixes the sampling of
    every reply (each reply starts a generator from it)."""

    def __init__(self, name: str, model: torch.nn.Module, tokenizer, *, description: str = "a small language model",
                 max_tokens: int = 64, temperature: float = 0.0, top_k: int = 0, stop: str = "\n", seed: int = 0,
                 render: Callable[[Sequence[Message], str], str] = render_lines):
        self.name, self.description = name, description
        self.model, self.tokenizer = model, tokenizer
        self.max_tokens, self.temperature, self.top_k = int(max_tokens), float(temperature), int(top_k)
        self.stop, self.seed, self.render = stop, seed, render

    @classmethod
    def from_checkpoint(cls, path, name: str = "lm", device: str = "cpu", **kwargs) -> "LMAgent":
        model, tokenizer = load_language_model(path, device)
        return cls(name, model, tokenizer, **kwargs)

    def _piece(self, token: int) -> bytes:
        if self.tokenizer.name == "bytes":
            return bytes([token])
        text = self.tokenizer.decode([token])
        if self.tokenizer.name == "words" and text != "\n":
            text += " "
        return text.encode("utf-8")

    @torch.no_grad()
    def generate(self, prompt: str) -> str:
        """The text sampled after ``prompt``, up to (not including) ``stop``."""
        device = next(self.model.parameters()).device
        ids = self.tokenizer.encode(prompt.encode("utf-8"))
        if self.tokenizer.name == "words" and not prompt.endswith("\n"):
            ids = ids[:-1]  # the word tokeniser ends every line with <eos>; an open prompt continues its line
        if ids.numel() == 0:
            ids = self.tokenizer.encode(b"\n")[:1]
        generator = torch.Generator().manual_seed(self.seed)
        logits, state = self.model(ids.to(device)[None])  # the prompt in one call
        out = b""
        stop = self.stop.encode("utf-8") if self.stop else b""
        for _ in range(self.max_tokens):
            last = logits[0, -1].float()
            if self.top_k > 0:
                kth = last.topk(min(self.top_k, last.numel())).values[-1]
                last = last.masked_fill(last < kth, float("-inf"))
            if self.temperature <= 0:
                token = int(last.argmax())
            else:
                token = int(torch.multinomial(torch.softmax(last / self.temperature, -1).cpu(), 1,
                                              generator=generator))
            out += self._piece(token)
            if stop and stop in out:
                out = out[:out.index(stop)]
                break
            logits, state = self.model(torch.tensor([[token]], device=device), state)  # one step, carried state
        return out.decode("utf-8", errors="replace")

    def respond(self, conversation: Sequence[Message]) -> Message:
        return Message("assistant", self.generate(self.render(conversation, self.name)).strip(), name=self.name)

    def __repr__(self) -> str:
        return f"LMAgent({self.name!r}, tokenizer={self.tokenizer.name!r})"
