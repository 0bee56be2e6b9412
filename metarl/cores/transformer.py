"""Softmax-attention Transformer mixer: causal multi-head attention with a key/value cache as state.

``make("transformer", d_model=..., num_heads=..., positional=..., randomized=..., max_len=..., context=...)``

Positional encodings (``positional``):

- ``"sinusoidal"``: the sin/cos table of Vaswani et al. (2017), added to the input of the q/k/v projection.
- ``"learned"``: an ``nn.Embedding(max_len, d_model)`` added to the same input (positions must be < max_len).
- ``"rope"``: rotary embedding of Su et al. (2021) applied to q and k of each head (head_dim must be even).
- ``"relative"``: a learned scalar bias per head and relative distance ``j - i`` (key minus query
  position), table ``rel_bias [H, 2 * max_len]`` covering distances ``[-max_len, max_len)``; longer
  distances use the last entry.
- ``"alibi"``: the linear bias ``slope_h * (j - i)`` of Press et al. (2022), geometric slopes.
- ``"none"``: no positional information (causal masking only).

The parameter-free encodings (sinusoidal, rotary, ALiBi slopes) live in :mod:`metarl.layers.positional`.

``causal=False`` makes the mixer an encoder (Ruoss et al. 2023; Delétang et al. 2023): every step attends to
every step of its episode, later ones included (and to the valid cached steps). Resets still separate
episodes, which is how a caller hides right padding (a reset at the first padding step). It is meant for
whole-sequence use: the split-equals-whole contract holds only for ``causal=True``, and ``context`` needs it.

``randomized=True`` is the randomized positional encoding of Ruoss et al. (2023): the position indices of
an episode are a sorted uniform random subset of ``[0, max_len)`` instead of ``0, 1, ..., T-1``. They are
sampled at every call, in training and in evaluation alike, once per sequence: within one call of the core,
every layer uses the same indices (``SequenceCore`` hands all mixers one ``position_seed`` per call).

State (a tuple of batch-first tensors, ``S`` cached steps, ``H`` heads, ``dh`` head width)::

    (keys [B, S, H, dh], values [B, S, H, dh], positions [B, S] long, valid [B, S] bool, next_position [B] long)

``keys`` are cached after the positional encoding (sinusoidal/learned inputs, rotary), ``positions`` are the
position indices of the cached steps (used by the relative and ALiBi biases), ``valid`` marks the cached
steps that belong to the current episode of the row, ``next_position`` is the first position index
available to the row's next step (0 at the start of an episode). The cache always holds the last ``S``
consecutive time steps. The initial state holds one invalid step (``S = 1``): this keeps ``where_reset`` of
base.py working, since a ``[B, 1, ...]`` initial state broadcasts against a ``[B, S, ...]`` one (the rows that
reset get an all-invalid cache and ``next_position = 0``). With ``context=None`` the cache grows with every
call (``S = 1 + steps so far``); with ``context=c`` each query sees at most the last ``c`` steps including
itself, and the cache keeps the last ``max(c - 1, 1)`` steps.

Resets are handled natively (``forward`` is overridden, there is no cutting of the time axis): step ``t`` of
row ``b`` belongs to episode ``reset[b, :t+1].sum()`` (0 = the episode carried in the state); a query sees
only keys of its own episode, cached ones only if it is in episode 0 and they are valid, and its position
indices restart at 0 at every reset. After the call, cached steps not in the row's last episode are marked
invalid.

Randomized positions with a carried state: the steps of an episode segment in one call get a sorted
uniform random subset of ``[lo, max_len)``, where ``lo = next_position`` for a segment that continues the
state's episode and 0 for a segment that starts with a reset. For a whole episode in one call this is
exactly Ruoss et al.; across several calls positions stay strictly increasing, but the first calls spread
over the whole range and leave little room for later ones (a ``ValueError`` is raised when a segment needs
more positions than remain). ``randomized`` is meant for whole-sequence use (supervised training,
length generalisation), not for step-by-step rollouts; the split-equals-whole contract holds for
``randomized=False``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..layers.positional import POSITIONAL, alibi_slopes, rotary, sinusoidal_encoding
from . import register
from .base import Mixer


@register("transformer")
class TransformerMixer(Mixer):
    """Causal softmax multi-head attention. x: [B, T, d_model] -> y: [B, T, d_model] (after the output
    projection; the Block adds pre-norm and residual). See the module docstring for state and resets.

    d_model, num_heads: width and heads (d_model divisible by num_heads); dropout: on attention weights;
    positional: one of ``POSITIONAL``; randomized: Ruoss et al. random position indices; max_len: size of
    the position range (learned table, relative table, randomized range); context: None (attend to the
    whole episode) or the number of most recent steps a query sees, itself included; causal: False for a
    bidirectional encoder (see the module docstring).
    """

    norm_position = "pre"

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        positional: str = "sinusoidal",
        randomized: bool = False,
        max_len: int = 2048,
        context: Optional[int] = None,
        *,
        causal: bool = True,
    ):
        super().__init__()
        if positional not in POSITIONAL:
            raise ConfigError(f"unknown positional encoding {positional!r}; valid values: {', '.join(POSITIONAL)}")
        if d_model % num_heads != 0:
            raise ConfigError(f"transformer: d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        head_dim = d_model // num_heads
        if positional == "rope" and head_dim % 2 != 0:
            raise ConfigError(f"transformer: positional='rope' needs an even head dimension, got {head_dim}")
        if max_len < 1:
            raise ConfigError(f"transformer: max_len must be positive, got {max_len}")
        if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 1):
            raise ConfigError(f"transformer: context must be None or a positive int, got {context!r}")
        if not causal and context is not None:
            raise ConfigError("transformer: context (a causal window) needs causal=True")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        self.positional = positional
        self.randomized = bool(randomized)
        self.max_len = max_len
        self.context = context
        self.causal = bool(causal)
        # set by SequenceCore for the length of one call, so that every layer draws the same random positions
        self.position_seed: Optional[int] = None

        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        if positional == "learned":
            self.pos_embedding = nn.Embedding(max_len, d_model)
            nn.init.normal_(self.pos_embedding.weight, std=0.02)
        if positional == "relative":
            # rel_bias[h, d + max_len] is the bias of head h at relative distance d = j - i in [-max_len, max_len)
            self.rel_bias = nn.Parameter(torch.zeros(num_heads, 2 * max_len))
        if positional == "alibi":
            self.register_buffer("slopes", torch.tensor(alibi_slopes(num_heads)), persistent=False)

    # ------------------------------------------------------------------------------------------------
    def initial_state(self, batch_size: int, device=None, dtype=None):
        """No past: one invalid cached step (see the module docstring), next_position 0."""
        weight = self.qkv.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        shape = (batch_size, 1, self.num_heads, self.head_dim)
        return (
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(batch_size, 1, device=device, dtype=torch.long),
            torch.zeros(batch_size, 1, device=device, dtype=torch.bool),
            torch.zeros(batch_size, device=device, dtype=torch.long),
        )

    def positions(self, next_position: torch.Tensor, reset: Optional[torch.Tensor], steps: int) -> torch.Tensor:
        """Position indices [B, steps] (long) of the steps of one call.

        next_position: [B], the first free index of the state's episode; reset: [B, steps] bool or None.
        Each episode segment starts at ``next_position`` (continuing segment) or 0 (after a reset);
        deterministic: consecutive indices; randomized: a sorted uniform random subset of
        ``[start, max_len)`` (the same law as ``torch.randperm(max_len - start)[:n].sort() + start``),
        sampled for all segments at once, from ``position_seed`` when it is set (else the global RNG).
        """
        batch = next_position.shape[0]
        device = next_position.device
        if reset is None:
            reset = torch.zeros(batch, steps, dtype=torch.bool, device=device)
        time = torch.arange(steps, device=device)
        starts = reset.clone()
        starts[:, 0] = True
        segment_start = torch.where(starts, time, torch.zeros_like(time)).cummax(dim=1).values
        offset = time - segment_start  # index of the step within its segment
        continuing = reset.cumsum(dim=1) == 0  # steps still in the state's episode
        low = torch.where(continuing, next_position[:, None], torch.zeros_like(next_position)[:, None])
        if not self.randomized:
            return low + offset

        flat_starts = starts.flatten()
        segment = flat_starts.long().cumsum(0) - 1  # global id of each step's segment, [B * steps]
        seg_low = low.flatten()[flat_starts]  # [S]
        seg_len = torch.bincount(segment, minlength=seg_low.shape[0])
        room = self.max_len - seg_low
        if bool((seg_len > room).any()):
            bad = int(torch.nonzero(seg_len > room)[0, 0])
            raise ConfigError(
                f"transformer randomized positions: a segment of {int(seg_len[bad])} steps starting at position "
                f"{int(seg_low[bad])} does not fit in max_len={self.max_len}; use a larger max_len, or run whole "
                f"episodes in one call (randomized positions are sampled from the range left after the state)"
            )
        candidates = torch.arange(self.max_len, device=device)
        generator = None
        if self.position_seed is not None:
            generator = torch.Generator(device=device).manual_seed(self.position_seed)
        keys = torch.rand(seg_low.shape[0], self.max_len, device=device, generator=generator)
        keys = keys.masked_fill(candidates[None, :] < seg_low[:, None], float("inf"))
        longest = int(seg_len.max())
        # the first n of a uniformly random order of the free indices are a uniform random n-subset
        chosen = keys.topk(longest, dim=1, largest=False, sorted=True).indices  # [S, longest]
        chosen = chosen.masked_fill(torch.arange(longest, device=device)[None, :] >= seg_len[:, None], self.max_len)
        chosen = chosen.sort(dim=1).values
        return chosen[segment.view(batch, steps), offset]

    def forward_segment(self, x: torch.Tensor, state):
        return self.forward(x, state, None)

    def forward(self, x: torch.Tensor, state=None, reset: Optional[torch.Tensor] = None):
        """x: [B, T, d_model], state (see module docstring) or None, reset: [B, T] bool or None."""
        batch, steps, width = x.shape
        if state is None:
            state = self.initial_state(batch, x.device, x.dtype)
        if steps == 0:
            return x.new_zeros(batch, 0, width), state
        key_cache, value_cache, pos_cache, valid_cache, next_position = state
        if reset is None:
            reset = torch.zeros(batch, steps, dtype=torch.bool, device=x.device)
        elif reset.shape != (batch, steps):
            raise ValueError(f"reset must have shape [B, T] = {(batch, steps)}, got {tuple(reset.shape)}")
        reset = reset.to(device=x.device, dtype=torch.bool)
        episode = reset.long().cumsum(dim=1)  # [B, T]; 0 = the episode carried in the state
        pos = self.positions(next_position, reset, steps)  # [B, T]

        h = x
        if self.positional == "sinusoidal":
            h = x + sinusoidal_encoding(pos, width, x.dtype)
        elif self.positional == "learned":
            if int(pos.max()) >= self.max_len:
                raise ConfigError(
                    f"transformer positional='learned': position {int(pos.max())} >= max_len={self.max_len}; "
                    f"increase max_len or set context / reset episodes earlier"
                )
            h = x + self.pos_embedding(pos)
        heads, head_dim = self.num_heads, self.head_dim
        q, k, v = self.qkv(h).view(batch, steps, 3, heads, head_dim).unbind(dim=2)
        if self.positional == "rope":
            q, k = rotary(q, pos), rotary(k, pos)

        past = key_cache.shape[1]
        keys = torch.cat((key_cache.to(k.dtype), k), dim=1)  # [B, S, H, dh], S = past + T
        values = torch.cat((value_cache.to(v.dtype), v), dim=1)
        key_pos = torch.cat((pos_cache, pos), dim=1)  # [B, S]
        key_episode = torch.cat((torch.zeros_like(pos_cache), episode), dim=1)
        key_valid = torch.cat((valid_cache, torch.ones_like(reset)), dim=1)

        # allowed[b, i, j]: causal (and within the context window) by time index, same episode, valid
        query_index = torch.arange(steps, device=x.device)[:, None] + past
        key_index = torch.arange(past + steps, device=x.device)[None, :]
        allowed = key_index <= query_index if self.causal else torch.ones_like(key_index <= query_index)
        if self.context is not None:
            allowed = allowed & (key_index > query_index - self.context)
        allowed = allowed[None] & key_valid[:, None, :] & (key_episode[:, None, :] == episode[:, :, None])

        distance = key_pos[:, None, :] - pos[:, :, None]  # [B, T, S], j - i in position indices
        if self.positional == "relative":
            index = distance.clamp(-self.max_len, self.max_len - 1) + self.max_len
            bias = self.rel_bias[:, index].permute(1, 0, 2, 3).to(x.dtype)  # [B, H, T, S]
        elif self.positional == "alibi":
            bias = self.slopes.to(x.dtype).view(1, heads, 1, 1) * distance[:, None].to(x.dtype)
        else:
            bias = torch.zeros(batch, 1, steps, past + steps, device=x.device, dtype=x.dtype)
        # the diagonal is always allowed, so no row is all -inf
        mask = bias.masked_fill(~allowed[:, None], float("-inf"))

        o = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
            attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
        )  # [B, H, T, dh]
        y = self.out(o.transpose(1, 2).reshape(batch, steps, width))

        # new state: the cached steps of the row's last episode stay valid
        new_valid = key_valid & (key_episode == episode[:, -1:])
        if self.context is not None:
            keep = max(self.context - 1, 1)
            keys, values = keys[:, -keep:], values[:, -keep:]
            key_pos, new_valid = key_pos[:, -keep:], new_valid[:, -keep:]
        return y, (keys, values, key_pos, new_valid, pos[:, -1] + 1)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_heads={self.num_heads}, positional={self.positional!r}, "
            f"randomized={self.randomized}, max_len={self.max_len}, context={self.context}, causal={self.causal}"
        )
