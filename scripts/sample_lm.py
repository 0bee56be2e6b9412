"""Generate text with a trained language model, streaming through the carried core state.

    python scripts/sample_lm.py runs/<run>/best-valid-bpc.pt --prompt "def main(" --tokens 300 \
        [--temperature 0.8] [--top-k 40] [--seed 0] [--device cpu]

The prompt is read in one call; then each sampled token is fed back alone with the state of the previous
call (the fast weights, the LSTM state or the Transformer's key/value memory), so generating N tokens costs N
one-step calls, whatever the length so far. The tokeniser comes from ``tokenizer.json`` in the checkpoint's
run folder (written by ``env=lm``); without it the corpus is read again from the run's config.
"""
from __future__ import annotations

import argparse
import codecs
import json
import sys
from pathlib import Path

import torch

from metarl.engine import read_checkpoint
from metarl.errors import UserError
from metarl.supervised.lm.task import build_language_model
from metarl.supervised.lm.tokenizers import tokenizer_from_dict


def load(path: Path, device: str):
    """(model, tokenizer, config) of an ``env=lm`` checkpoint."""
    payload = read_checkpoint(path)
    cfg = payload["config"]
    if not cfg or cfg.get("env", {}).get("family") != "lm":
        raise UserError(f"{path} is not a checkpoint of an env=lm run")
    saved = path.parent / "tokenizer.json"
    if saved.is_file():
        tokenizer = tokenizer_from_dict(json.loads(saved.read_text()))
    else:  # rebuild it from the corpus the run read
        from omegaconf import OmegaConf

        from metarl.supervised.lm.task import LanguageModelling

        tokenizer = LanguageModelling(OmegaConf.create(cfg)).tokenizer
    env = cfg["env"]
    model = build_language_model(cfg["agent"], tokenizer.vocab_size, env["memory"], env["tie_embeddings"])
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), tokenizer, cfg


def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    ids = tokenizer.encode(prompt.encode("utf-8"))
    if tokenizer.name == "words" and not prompt.endswith("\n"):
        ids = ids[:-1]  # the word tokeniser ends every line with <eos>; an open prompt continues its line
    if ids.numel() == 0:  # start from a line break
        ids = tokenizer.encode(b"\n")[:1]
    return ids


class Printer:
    """Writes tokens as they come (bytes through an incremental UTF-8 decoder)."""

    def __init__(self, tokenizer, out=sys.stdout):
        self.tokenizer, self.out = tokenizer, out
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, token: int) -> None:
        if self.tokenizer.name == "bytes":
            text = self.utf8.decode(bytes([token]))
        elif self.tokenizer.name == "words":
            word = self.tokenizer.decode([token])
            text = word if word == "\n" else word + " "
        else:
            text = self.tokenizer.decode([token])
        self.out.write(text)
        self.out.flush()


@torch.no_grad()
def sample(model, ids: torch.Tensor, tokens: int, temperature: float = 1.0, top_k: int = 0,
           generator: torch.Generator = None, on_token=None) -> list:
    """``tokens`` ids sampled after the prompt ``ids`` [T]; ``temperature`` 0 means greedy."""
    device = next(model.parameters()).device
    logits, state = model(ids.to(device)[None])
    out = []
    for _ in range(tokens):
        last = logits[0, -1].float()
        if top_k > 0:
            kth = last.topk(min(top_k, last.numel())).values[-1]
            last = last.masked_fill(last < kth, float("-inf"))
        if temperature <= 0:
            token = int(last.argmax())
        else:
            probs = torch.softmax(last / temperature, -1).cpu()
            token = int(torch.multinomial(probs, 1, generator=generator))
        out.append(token)
        if on_token is not None:
            on_token(token)
        logits, state = model(torch.tensor([[token]], device=device), state)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="checkpoint.pt or best-valid-<metric>.pt of an env=lm run")
    parser.add_argument("--prompt", default="", help="text to continue (default: a line break)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0: greedy)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampling")
    parser.add_argument("--device", default="cpu", help="torch device")
    args = parser.parse_args(argv)
    try:
        model, tokenizer, _ = load(args.checkpoint, args.device)
    except UserError as err:
        print(f"[sample_lm] error: {err}", file=sys.stderr)
        return 2
    ids = prompt_ids(tokenizer, args.prompt)
    sys.stdout.write(args.prompt)
    sample(model, ids, args.tokens, args.temperature, args.top_k, torch.Generator().manual_seed(args.seed),
           on_token=Printer(tokenizer).write)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
