"""Language modelling on the engine loop: embedding -> any core -> output layer, trained on B contiguous streams
with the core state carried from segment to segment (truncated BPTT), evaluated over whole splits.

``python -m metarl.train env=lm agent=<core>`` (the default corpus) or ``env=lm/<corpus> env.root=<folder>``.

- Training: update s reads segment ``(s - 1) mod E`` of the training streams (``E`` = full segments of
  ``env.unroll`` tokens per epoch, ``streams.Streams``); the loop carries the core state of one update to the
  next, detached; the first segment of every epoch starts from the initial state. The loss is the mean
  cross-entropy of the next token plus the core's auxiliary loss (σ-MoE regulariser).
- The carried state is the core's: fast weights (``lt``, ``delta``, ``recdelta``, ``srwm``), the LSTM's (h, c),
  and for ``transformer`` the keys and values of the last ``env.memory`` steps (Transformer-XL's memory):
  every query attends to itself and the ``env.memory`` steps before it, across segment boundaries, with the
  relative encoding of Transformer-XL (``agent.options_by_core.transformer.positional: relative`` in the
  presets; ``agent=transformer`` itself sets ``rope``, which carries the memory as well). This is the mixer's
  ``context`` window (``context = memory + 1``; an explicit ``agent.options.context`` wins, as in
  ``agent=moe``). Where it differs from Transformer-XL: the memory holds the keys and values computed when
  its steps were read (a cache), not the layer inputs re-projected by the current weights, and each query
  sees a sliding window of ``memory`` steps rather than the memory plus the segment's earlier steps.
- Evaluation (every ``env.eval_every`` updates): the whole split as ``env.eval_batch_size`` streams (padded
  so that every token but the first is predicted once), segments of ``env.eval_unroll`` tokens (default:
  ``env.unroll``) with the state carried; ``env.eval_memory`` evaluates the Transformer with a longer memory
  than it trained with. Metrics: ``nll`` (nats per token) and ``bpc`` (bits per byte or character: bytes and
  characters tokenisers) or ``perplexity`` (words, subwords). ``eval/valid/<metric>`` selects
  ``best-valid-<metric>.pt``, which the loop tests at the end on ``test/valid/*`` and ``test/test/*``.
- The run folder gets ``data.json`` (the corpus, its files or entries with their sizes and splits, the token
  counts) and ``tokenizer.json`` (what ``scripts/sample_lm.py`` decodes with).
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from ... import cores
from ...engine import StepOutput, Task, TaskConfig, register_task
from ...errors import ConfigError, check_choice
from .data import CORPORA, DEFAULT_TOKENIZER, read_corpus
from .streams import LMBatch, Streams
from .tokenizers import TOKENIZERS, fit_tokenizer


@dataclass
class LMConfig(TaskConfig):
    """``env=lm``: next-token prediction on a corpus read as contiguous streams."""

    name: str = "lm"  # run name
    kind: str = "supervised"  # trainer: the engine loop (runner=local or ray); Task.prepare writes the LM files
    family: str = "lm"  # registered task (metarl.engine.registry.TASKS)
    corpus: str = "default"  # default (Python's own sources and docs) | enwik8 | text8 | wikitext103 | wikitext2
    root: Optional[str] = None  # folder with the corpus files (not needed for the default corpus)
    tokenizer: str = "auto"  # auto (the corpus's own: bytes, characters for text8, words for WikiText) | bytes | characters | words | sentencepiece
    vocab_size: int = 8000  # sentencepiece: subword vocabulary size
    cache_dir: str = "~/.cache/metarl/sentencepiece"  # sentencepiece: where trained models are cached
    split: List[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])  # enwik8/text8: train/valid/test fractions, in file order
    valid_fraction: float = 0.05  # default corpus: share of entries (by name hash) in valid
    test_fraction: float = 0.05  # default corpus: share of entries (by name hash) in test
    batch_size: int = 16  # contiguous streams per update
    unroll: int = 128  # tokens per segment (truncated-BPTT length)
    memory: int = 128  # transformer: past steps each query attends to, carried across segments (context = memory + 1)
    tie_embeddings: bool = False  # the output layer's weight is the embedding matrix
    eval_every: int = 250  # updates between evaluations of the validation split
    eval_batch_size: int = 16  # streams of an evaluation
    eval_unroll: Optional[int] = None  # segment length of an evaluation (default: unroll)
    eval_memory: Optional[int] = None  # transformer: memory during evaluation (default: as trained)
    train_tokens: Optional[int] = None  # use only the first this many training tokens (default: all)
    eval_tokens: Optional[int] = None  # use only the first this many valid and test tokens (default: all)
    # the carried state starts over every this many segments, in training and evaluation (0: only at epoch start).
    # The references carry it through whole epochs; an SRWM's fast weights grow without bound over such streams
    reset_every: int = 0


class LanguageModel(nn.Module):
    """tokens [B, T] -> (logits [B, T, vocab], state): embedding -> core -> output layer.

    tie: the output layer's weight is the embedding matrix (initialised N(0, 1/d), inputs scaled by sqrt(d)
    so that the core sees unit-variance inputs, Press & Wolf 2017); untied embeddings are N(0, 1)."""

    def __init__(self, vocab_size: int, core: nn.Module, tie: bool = False):
        super().__init__()
        d = core.d_model
        self.vocab_size, self.tied = vocab_size, bool(tie)
        self.embed = nn.Embedding(vocab_size, d)
        self.core = core
        self.head = nn.Linear(d, vocab_size)
        self.input_scale = 1.0
        if tie:
            nn.init.normal_(self.embed.weight, std=d ** -0.5)
            self.head.weight = self.embed.weight
            self.input_scale = math.sqrt(d)

    def forward(self, tokens: torch.Tensor, state=None, reset: Optional[torch.Tensor] = None):
        h = self.embed(tokens)
        if self.input_scale != 1.0:
            h = h * self.input_scale
        h, state = self.core(h, state, reset=reset)
        return self.head(h), state


def transformer_mixers(model: nn.Module) -> list:
    from ...cores.transformer import TransformerMixer

    return [m for m in model.modules() if isinstance(m, TransformerMixer)]


@contextlib.contextmanager
def memory_of(model: nn.Module, memory: Optional[int]):
    """Within the block, every Transformer mixer of ``model`` attends to ``memory`` past steps (None: unchanged)."""
    mixers = transformer_mixers(model) if memory is not None else []
    saved = [m.context for m in mixers]
    try:
        for m in mixers:
            m.context = memory + 1
        yield
    finally:
        for m, context in zip(mixers, saved):
            m.context = context


def build_language_model(agent_cfg: Any, vocab_size: int, memory: int, tie: bool = False) -> LanguageModel:
    """The model of ``agent_cfg`` (``cfg.agent``) over ``vocab_size`` tokens. A Transformer without an explicit
    ``context`` gets ``memory + 1`` (its cache then holds the last ``memory`` steps)."""
    agent = OmegaConf.to_container(agent_cfg, resolve=True) if OmegaConf.is_config(agent_cfg) else dict(agent_cfg)
    if agent.get("name") == "transformer":
        options = {**(agent.get("options_by_core") or {}).get("transformer", {}), **(agent.get("options") or {})}
        if options.get("causal", True) is False:
            raise ConfigError("env=lm predicts the next token: remove agent.options.causal=false")
        if options.get("context") is None:
            agent["options"] = {**(agent.get("options") or {}), "context": memory + 1}
    return LanguageModel(vocab_size, cores.from_config(agent), tie=tie)


def segment_nll(model: nn.Module, batch: LMBatch, state):
    """(summed nll over the real targets, their number, new state) of one segment."""
    logits, state = model(batch.inputs, state)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    nll = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
    if batch.mask is not None:
        mask = batch.mask.flatten()
        return (nll * mask).sum(), int(mask.sum()), state
    return nll.sum(), nll.numel(), state


def metrics_of(nll: float, unit: str) -> Dict[str, float]:
    """nll: mean nats per token -> {"nll", "bpc"} (unit "char") or {"nll", "perplexity"} (unit "token")."""
    if unit == "char":
        return {"nll": nll, "bpc": nll / math.log(2)}
    return {"nll": nll, "perplexity": math.exp(min(nll, 700.0))}


def lm_loss(model: nn.Module, batch: LMBatch, state, unit: str) -> StepOutput:
    """The LM objective of one segment: mean nll over its real targets plus the core's aux losses (σ-MoE), the
    state carried unless ``batch.first`` (a new epoch, or every ``env.reset_every`` segments). ``unit`` "char"
    logs ``train/bpc``, else ``train/nll``."""
    if batch.first:
        state = None  # every stream starts over
    total, count, state = segment_nll(model, batch, state)
    nll = total / count
    aux = model.core.aux_loss()
    metrics = {"losses/lm": nll.item(), "losses/aux": float(aux.detach())}
    if unit == "char":
        metrics["bpc"] = nll.item() / math.log(2)  # train/bpc
    else:
        metrics["nll"] = nll.item()  # train/nll (a perplexity averaged over updates would mean little)
    return StepOutput(nll + aux, count=batch.inputs.numel(), metrics=metrics, state=state)


@torch.no_grad()
def evaluate_tokens(model: nn.Module, tokens: torch.Tensor, batch_size: int, unroll: int, unit: str,
                    device="cpu", memory: Optional[int] = None, progress: bool = False, desc: str = "",
                    reset_every: int = 0) -> Dict:
    """Metrics of ``model`` on every token of ``tokens`` but the first (``batch_size`` padded streams, segments
    of ``unroll`` tokens, the state carried across segments, restarted every ``reset_every`` segments when
    > 0; ``memory``: see ``memory_of``)."""
    streams = Streams(tokens, batch_size, pad=True)
    total, count, state = torch.zeros((), dtype=torch.float64), 0, None
    with memory_of(model, memory):
        for i in tqdm(range(streams.num_segments(unroll)), disable=not progress, desc=desc, leave=False):
            if reset_every and i % reset_every == 0:
                state = None
            nll, n, state = segment_nll(model, streams.segment(i, unroll).to(device), state)
            total, count = total + nll.double().cpu(), count + n
    return metrics_of(float(total) / max(count, 1), unit)


class LanguageModelling(Task):
    """The LM task (see the module docstring); reads and tokenises the corpus when built."""

    throughput_unit = "tokens"
    carry_state = True
    eval_sets = ["valid"]
    test_sets = ["valid", "test"]

    def __init__(self, cfg: DictConfig):
        env = cfg.env
        check_choice("env.corpus", env.corpus, CORPORA)
        check_choice("env.tokenizer", env.tokenizer, ("auto",) + TOKENIZERS)
        for key in ("batch_size", "unroll", "memory", "eval_batch_size", "eval_every"):
            if env[key] < 1:
                raise ConfigError(f"env.{key}={env[key]} must be positive")
        if env.reset_every < 0:
            raise ConfigError(f"env.reset_every={env.reset_every} must be >= 0 (0: carry the state through the epoch)")
        for key in ("eval_unroll", "eval_memory", "train_tokens", "eval_tokens"):
            if env[key] is not None and env[key] < 1:
                raise ConfigError(f"env.{key}={env[key]} must be positive (or null: the default)")
        self.cfg = cfg
        self.corpus = read_corpus(env.corpus, env.root, list(env.split), env.valid_fraction, env.test_fraction)
        name = DEFAULT_TOKENIZER[env.corpus] if env.tokenizer == "auto" else env.tokenizer
        self.tokenizer = fit_tokenizer(name, self.corpus.splits["train"], env.vocab_size, Path(env.cache_dir))
        self.unit = self.tokenizer.unit
        self.metric = "bpc" if self.unit == "char" else "perplexity"
        self.selection = {f"valid/{self.metric}": "min"}
        caps = {"train": env.train_tokens, "valid": env.eval_tokens, "test": env.eval_tokens}
        self.tokens = {s: self.tokenizer.encode(data)[: caps[s]] for s, data in self.corpus.splits.items()}
        self.streams = Streams(self.tokens["train"], env.batch_size)
        self.segments_per_epoch = self.streams.full_segments(env.unroll)
        if self.segments_per_epoch < 1:
            raise ConfigError(f"the training split ({self.tokens['train'].numel()} tokens) cannot fill "
                              f"env.batch_size={env.batch_size} streams of env.unroll={env.unroll} tokens; lower them")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def build_model(self) -> nn.Module:
        return build_language_model(self.cfg.agent, self.vocab_size, self.cfg.env.memory, self.cfg.env.tie_embeddings)

    def train_batch(self, step: int, generator: torch.Generator) -> LMBatch:
        """Segment ``(step - 1) mod E`` of the training streams (the data order is fixed; ``generator`` unused)."""
        index = (step - 1) % self.segments_per_epoch
        batch = self.streams.segment(index, self.cfg.env.unroll)
        every = self.cfg.env.reset_every
        return replace(batch, first=True) if every and index % every == 0 else batch

    def loss(self, model: nn.Module, batch: LMBatch, state) -> StepOutput:
        return lm_loss(model, batch, state, self.unit)

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> Dict:
        env = self.cfg.env
        return evaluate_tokens(model, self.tokens[name], env.eval_batch_size, env.eval_unroll or env.unroll,
                               self.unit, self.cfg.device, env.eval_memory, progress, desc=f"eval {name}",
                               reset_every=env.reset_every)

    def manifest(self) -> dict:
        return {**self.corpus.manifest(), "tokenizer": self.tokenizer.name, "vocab_size": self.vocab_size,
                "tokens": {s: int(t.numel()) for s, t in self.tokens.items()},
                "segments_per_epoch": self.segments_per_epoch}

    def prepare(self, run_dir: Path) -> None:
        """``data.json`` (the corpus manifest) and ``tokenizer.json`` in the run folder (the engine calls it)."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "data.json").write_text(json.dumps(self.manifest(), indent=1))
        (run_dir / "tokenizer.json").write_text(json.dumps(self.tokenizer.to_dict()))


register_task("lm", LMConfig)(LanguageModelling)

