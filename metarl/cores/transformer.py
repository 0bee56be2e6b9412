"""Softmax-attention Transformer mixer: multi-head attention with a key/value cache as state.

``make("transformer", d_model=..., num_heads=..., positional=..., randomized=..., max_len=..., context=...)``

References read: google-deepmind/randomized_positional_encodings ``models/transformer.py`` (the encoder of
Ruoss et al. 2023) and ``models/positional_encodings.py``; google-deepmind/neural_networks_chomsky_hierarchy
``models/transformer.py`` (Delétang et al. 2023, the same encoder). Below, "the reference" is the first.

Positional encodings (``positional``):

- ``"sinusoidal"``: the sin/cos table of Vaswani et al. (2017), added to the input of the q/k/v projection of
  every layer, or once to the core input with ``positional_once=True`` (the reference's ``SIN_COS``:
  ``TransformerEmbedder.add_positional_encodings``).
- ``"learned"``: an ``nn.Embedding(max_len, d_model)`` added the same way (positions must be < max_len;
  the reference's ``LEARNT``).
- ``"rope"``: rotary embedding of Su et al. (2021) applied to q and k of each head (head_dim must be even;
  the reference's ``ROTARY``).
- ``"relative"``: the relative encoding of Transformer-XL (Dai et al. 2019), the reference's ``RELATIVE``
  (``compute_attention_with_relative_encodings``). With ``R_d`` the sin/cos vector of the distance ``d``,
  per head::

      score(i, j) = [ (q_i + u) · k_j  +  (q_i + v) · (W_r R_{i-j}) ] / sqrt(head_dim)

  ``W_r``: ``Linear(d_model, d_model, bias=False)`` (the reference's ``hk.Linear(hiddens, with_bias=False)``),
  ``u`` (content bias) and ``v`` (position bias): ``[H, head_dim]``, initialised N(0, 0.02²) as there.
  Distances go both ways for an encoder (``causal=False``; the reference's ``add_negative_side=not causal``)
  and are ``i - j >= 0`` for a causal mixer; the sinusoids need no ``max_len``. Where metarl differs: the
  reference computes the logits against every distance and aligns them with the "relative shift" reshape
  trick (Transformer-XL, Appendix B); here they are computed for each distinct distance of the call and
  gathered by ``i - j`` (the same values), because with a cache, resets and random distances the distances
  are not one contiguous band. The reference's non-causal encoding is indexed by ``j - i`` (its shifted
  table runs from ``-T`` to ``T - 1``) and its causal one by ``T - 1 - (i - j)`` (it shifts an ascending table
  with Transformer-XL's shift, which expects a descending one, so the encoding of a distance changes with
  ``T``); metarl uses Transformer-XL's ``R_{i-j}`` in both cases: ``R_{-d}`` is ``R_d`` with the sines negated, a
  fixed change that ``W_r`` absorbs, so the non-causal model is the same, and the causal one is consistent
  across lengths and calls (which the split-calls contract needs).
- ``"relative_bias"``: a learned scalar bias per head and relative distance ``j - i`` (key minus query
  position), table ``rel_bias [H, 2 * max_len]`` covering distances ``[-max_len, max_len)``; longer
  distances use the last entry (T5-like without buckets; not one of the paper's encodings; it was metarl's
  ``relative`` before the Transformer-XL encoding took that name).
- ``"alibi"``: the linear biases of Press et al. (2022), geometric slopes (the reference's ``ALIBI``); causal
  ``slope_h * (j - i)``, bidirectional ``slope_h * (-|j - i| + alibi_left_offset * [j < i])``, the reference's
  ``compute_alibi_encodings_biases`` (see :func:`metarl.layers.positional.alibi_bias`). Added after the
  ``1/sqrt(head_dim)`` scaling, as there.
- ``"none"``: no positional information (causal masking only, or none at all for an encoder).

The parameter-free parts (sinusoids, rotary, ALiBi slopes and biases, random distances) live in
:mod:`metarl.layers.positional`.

``causal=False`` makes the mixer an encoder (Ruoss et al. 2023; Delétang et al. 2023): every step attends to
every step of its episode, later ones included (and to the valid cached steps). Resets still separate
episodes, which is how a caller hides right padding (a reset at the first padding step). It is meant for
whole-sequence use: the split-equals-whole contract holds only for ``causal=True``, and ``context`` needs it.

``randomized=True`` is the randomized positional encoding of Ruoss et al. (2023), the reference's ``NOISY_*``
encodings, drawn at every call, in training and in evaluation alike, once per sequence and shared by every
layer (``SequenceCore`` hands all mixers one ``position_seed`` per call; the reference draws once per batch,
and for rope/relative/ALiBi once per layer):

- sinusoidal, learned, rope (and relative_bias): the position indices of an episode are a sorted uniform
  random subset of ``[0, max_len)`` instead of ``0, 1, ..., T-1`` (the reference's
  ``noisy_fixed_positional_encodings``: ``jrandom.choice(arange(L), (T,), replace=False)``, sorted).
- relative, alibi: the positions stay ``0, 1, ...`` and the *distances* are randomized, as the reference does
  (``compute_attention_with_noisy_relative_encodings``, ``compute_noisy_alibi_encodings_biases`` with
  ``randomize_both_sides=False``): a sorted uniform random subset ``r_1 < ... < r_n`` of ``[1, max_len)``
  replaces the distances ``1, ..., n``, mirrored for negative distances (``d -> sign(d) * r_|d|``, 0 stays 0),
  so distances keep their order and sign. Where metarl differs: for ``relative`` the reference then looks the
  sinusoid up at index ``max_len + sign(d) r_|d|`` of a table of positions ``[0, max_len)`` (its lines
  497-506; reported as google-deepmind/randomized_positional_encodings issue #2), which is out of range for
  ``d >= 0`` (JAX clamps it to the last row, so every key at or right of the query gets the same encoding);
  metarl uses ``R_{sign(d) r_|d|}``, what that code's comment describes and what the deterministic version does.

State (a tuple of batch-first tensors, ``S`` cached steps, ``H`` heads, ``dh`` head width)::

    (keys [B, S, H, dh], values [B, S, H, dh], positions [B, S] long, valid [B, S] bool, next_position [B] long)

``keys`` are cached after the positional encoding (sinusoidal/learned inputs, rotary), ``positions`` are the
position indices of the cached steps (used by the relative encodings and ALiBi), ``valid`` marks the cached
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
more positions than remain). Random distances are drawn anew at every call for the distances that call
needs (at most ``max_len - 1`` of them). ``randomized`` is meant for whole-sequence use (supervised training,
length generalisation), not for step-by-step rollouts; the split-equals-whole contract holds for
``randomized=False``.

The encoder of Ruoss et al. (``configs/agent/encoder.yaml``) is this mixer with ``norm="post"`` (the Block
computes ``LN(x + drop(attention(x)))``, then ``LN(h + drop(ff(h)))``, no final layer norm), ``bias=False``
(the reference's q/k/v/output projections are ``hk.Linear(..., with_bias=False)``), ``attention_dropout=0``
(the reference has no dropout on attention weights; ``dropout=0.1`` acts on the sublayer outputs and on the
encoded input), ``scale_input=True`` (the embeddings times ``sqrt(d_model)``, ``embed_sequences``) and
``positional_once=True`` (sinusoidal/learned encodings added to the scaled embeddings once, before the first
layer, followed by dropout: ``add_positional_encodings``, which applies dropout only in those two cases).
The first layer's mixer does the last two through the Block's ``encode_input`` hook (base.py); they act
only when the mixer runs inside a ``SequenceCore`` (which tells each mixer its layer index).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..layers.positional import (
    ABSOLUTE,
    ALIBI_LEFT_OFFSET,
    POSITIONAL,
    RANDOM_DISTANCES,
    alibi_bias,
    alibi_slopes,
    map_distances,
    random_distances,
    rotary,
    sinusoidal_encoding,
)
from . import register
from .base import Mixer

NORMS = ("pre", "post")


@register("transformer")
class TransformerMixer(Mixer):
    """Softmax multi-head attention. x: [B, T, d_model] -> y: [B, T, d_model] (after the output projection;
    the Block adds the norm and residual). See the module docstring for state, resets and the encodings.

    d_model, num_heads: width and heads (d_model divisible by num_heads); dropout: the model's dropout
    rate, on attention weights unless ``attention_dropout`` is given, and on the input encoded by
    ``positional_once``; positional: one of ``POSITIONAL``; randomized: Ruoss et al. random positions or
    distances; max_len: size of the position range (learned table, relative_bias table, randomized range);
    context: None (attend to the whole episode) or the number of most recent steps a query sees, itself
    included; causal: False for a bidirectional encoder. Keyword-only options (the encoder of Ruoss et al.
    sets them all, ``configs/agent/encoder.yaml``): norm: ``"pre"`` (metarl's pre-LN block) or ``"post"``
    (post-LN, no final norm); bias: biases in the q/k/v and output projections; attention_dropout: dropout
    on the attention weights (None: ``dropout``); scale_input: multiply the core input by ``sqrt(d_model)``;
    positional_once: add the sinusoidal/learned encoding once to the (scaled) core input, followed by
    dropout, instead of to every layer's q/k/v input (no effect for the other encodings);
    alibi_left_offset: the reference's 0.5 that tells left from right in the bidirectional ALiBi bias.
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
        norm: str = "pre",
        bias: bool = True,
        attention_dropout: Optional[float] = None,
        scale_input: bool = False,
        positional_once: bool = False,
        alibi_left_offset: float = ALIBI_LEFT_OFFSET,
    ):
        super().__init__()
        if positional not in POSITIONAL:
            raise ConfigError(f"unknown positional encoding {positional!r}; valid values: {', '.join(POSITIONAL)}")
        if norm not in NORMS:
            raise ConfigError(f"transformer: norm must be one of {', '.join(NORMS)}, got {norm!r}")
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
        if attention_dropout is not None and not 0.0 <= attention_dropout < 1.0:
            raise ConfigError(f"transformer: attention_dropout must be in [0, 1), got {attention_dropout!r}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        self.attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.positional = positional
        self.randomized = bool(randomized)
        self.max_len = max_len
        self.context = context
        self.causal = bool(causal)
        self.norm_position = norm
        self.scale_input = bool(scale_input)
        self.positional_once = bool(positional_once)
        self.alibi_left_offset = float(alibi_left_offset)
        self.layer_index = 0  # set by SequenceCore (set_layer_index); a mixer on its own is a first layer
        # set by SequenceCore for the length of one call, so that every layer draws the same random positions
        self.position_seed: Optional[int] = None

        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        if positional == "learned":
            self.pos_embedding = nn.Embedding(max_len, d_model)
            nn.init.normal_(self.pos_embedding.weight, std=0.02)
        if positional == "relative":
            # Transformer-XL: W_r projects R_{i-j} to a key per head; u, v: the content and position biases
            self.rel_proj = nn.Linear(d_model, d_model, bias=False)
            self.content_bias = nn.Parameter(torch.randn(num_heads, head_dim) * 0.02)
            self.position_bias = nn.Parameter(torch.randn(num_heads, head_dim) * 0.02)
        if positional == "relative_bias":
            # rel_bias[h, d + max_len] is the bias of head h at relative distance d = j - i in [-max_len, max_len)
            self.rel_bias = nn.Parameter(torch.zeros(num_heads, 2 * max_len))
        if positional == "alibi":
            self.register_buffer("slopes", torch.tensor(alibi_slopes(num_heads)), persistent=False)

    @property
    def randomizes_positions(self) -> bool:
        """Randomized by sampling position indices (sinusoidal, learned, rope, relative_bias)."""
        return self.randomized and self.positional not in RANDOM_DISTANCES

    @property
    def randomizes_distances(self) -> bool:
        """Randomized by sampling relative distances (relative, alibi), as the reference does."""
        return self.randomized and self.positional in RANDOM_DISTANCES

    def set_layer_index(self, index: int) -> None:
        """Called by SequenceCore: the layers after the first do not encode the input (``positional_once``),
        so they hold no learned position table."""
        self.layer_index = index
        if index > 0 and self.positional_once and hasattr(self, "pos_embedding"):
            del self.pos_embedding

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

    def _generator(self, device) -> Optional[torch.Generator]:
        if self.position_seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.position_seed)

    def positions(self, next_position: torch.Tensor, reset: Optional[torch.Tensor], steps: int) -> torch.Tensor:
        """Position indices [B, steps] (long) of the steps of one call.

        next_position: [B], the first free index of the state's episode; reset: [B, steps] bool or None.
        Each episode segment starts at ``next_position`` (continuing segment) or 0 (after a reset);
        deterministic (and for the random-distance encodings): consecutive indices; random positions: a
        sorted uniform random subset of ``[start, max_len)`` (the same law as
        ``torch.randperm(max_len - start)[:n].sort() + start``), sampled for all segments at once, from
        ``position_seed`` when it is set (else the global RNG).
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
        if not self.randomizes_positions:
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
        keys = torch.rand(seg_low.shape[0], self.max_len, device=device, generator=self._generator(device))
        keys = keys.masked_fill(candidates[None, :] < seg_low[:, None], float("inf"))
        longest = int(seg_len.max())
        # the first n of a uniformly random order of the free indices are a uniform random n-subset
        chosen = keys.topk(longest, dim=1, largest=False, sorted=True).indices  # [S, longest]
        chosen = chosen.masked_fill(torch.arange(longest, device=device)[None, :] >= seg_len[:, None], self.max_len)
        chosen = chosen.sort(dim=1).values
        return chosen[segment.view(batch, steps), offset]

    def distance_table(self, batch: int, largest: int, device) -> torch.Tensor:
        """The random distances of one call (random-distance encodings): [B, largest + 1] long, row b
        ``0 < r_1 < ... < r_largest < max_len`` (:func:`metarl.layers.positional.random_distances`), from
        ``position_seed`` when it is set, so that every layer of a call gets the same table."""
        if largest > self.max_len - 1:
            raise ConfigError(
                f"transformer randomized {self.positional}: distances up to {largest} need {largest} distinct "
                f"random distances in [1, max_len={self.max_len}); use a larger max_len"
            )
        return random_distances(batch, largest, self.max_len, self._generator(device), device)

    def absolute_encoding(self, pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The sinusoidal or learned vectors of positions pos [B, T] -> [B, T, d_model]."""
        if self.positional == "sinusoidal":
            return sinusoidal_encoding(pos, self.d_model, dtype)
        if int(pos.max()) >= self.max_len:
            raise ConfigError(
                f"transformer positional='learned': position {int(pos.max())} >= max_len={self.max_len}; "
                f"increase max_len or set context / reset episodes earlier"
            )
        return self.pos_embedding(pos).to(dtype)

    def encode_input(self, x: torch.Tensor, state=None, reset: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The Block's input hook (base.py). First layer only: ``x * sqrt(d_model)`` (``scale_input``), then
        ``+ PE(positions)`` and dropout (``positional_once``, sinusoidal/learned), as the reference's
        ``TransformerEmbedder`` (``embed_sequences``, ``add_positional_encodings``). Otherwise x unchanged."""
        if self.layer_index != 0 or not (self.scale_input or self.positional_once):
            return x
        h = x * math.sqrt(self.d_model) if self.scale_input else x
        if self.positional_once and self.positional in ABSOLUTE and x.shape[1] > 0:
            batch, steps = x.shape[:2]
            next_position = state[4] if state is not None else torch.zeros(batch, dtype=torch.long, device=x.device)
            if reset is not None:
                if reset.shape != (batch, steps):
                    raise ValueError(f"reset must have shape [B, T] = {(batch, steps)}, got {tuple(reset.shape)}")
                reset = reset.to(device=x.device, dtype=torch.bool)
            pos = self.positions(next_position, reset, steps)  # the same indices forward() computes
            h = F.dropout(h + self.absolute_encoding(pos, x.dtype), self.dropout, self.training)
        return h

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
        if self.positional in ABSOLUTE and not self.positional_once:
            h = x + self.absolute_encoding(pos, x.dtype)
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
        table = None
        if self.randomizes_distances:
            table = self.distance_table(batch, int(distance.abs().masked_fill(~allowed, 0).max()), x.device)
        query = q
        if self.positional == "relative":
            query = q + self.content_bias.to(q.dtype)
            bias = self.xl_logits(q, -distance, allowed, table) / math.sqrt(head_dim)
        elif self.positional == "relative_bias":
            index = distance.clamp(-self.max_len, self.max_len - 1) + self.max_len
            bias = self.rel_bias[:, index].permute(1, 0, 2, 3).to(x.dtype)  # [B, H, T, S]
        elif self.positional == "alibi":
            mapped = distance if table is None else map_distances(distance, table)
            bias = alibi_bias(mapped.to(x.dtype), self.slopes, self.causal, self.alibi_left_offset)
        else:
            bias = torch.zeros(batch, 1, steps, past + steps, device=x.device, dtype=x.dtype)
        # the diagonal is always allowed, so no row is all -inf
        mask = bias.masked_fill(~allowed[:, None], float("-inf"))

        o = F.scaled_dot_product_attention(
            query.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
            attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0,
        )  # [B, H, T, dh]
        y = self.out(o.transpose(1, 2).reshape(batch, steps, width))

        # new state: the cached steps of the row's last episode stay valid
        new_valid = key_valid & (key_episode == episode[:, -1:])
        if self.context is not None:
            keep = max(self.context - 1, 1)
            keys, values = keys[:, -keep:], values[:, -keep:]
            key_pos, new_valid = key_pos[:, -keep:], new_valid[:, -keep:]
        return y, (keys, values, key_pos, new_valid, pos[:, -1] + 1)

    def xl_logits(self, q: torch.Tensor, rel: torch.Tensor, allowed: torch.Tensor,
                  table: Optional[torch.Tensor]) -> torch.Tensor:
        """The position term of Transformer-XL, ``(q_i + v) · W_r R_{m(i-j)}`` per head, unscaled.

        q: [B, T, H, dh]; rel: [B, T, S] long, ``i - j`` in position indices; allowed: [B, T, S] (only the
        distances of allowed pairs are encoded); table: the random distances ``m`` ([B, n + 1]) or None
        (``m(d) = d``) -> [B, H, T, S]. The sin/cos vectors of the distinct distances ``lo..hi`` of the call
        are projected once and the logits gathered by distance (the reference's relative shift computes the
        same values for one contiguous band of distances).
        """
        batch, steps, heads, head_dim = q.shape
        lo = int(rel.masked_fill(~allowed, rel.max()).min())
        hi = int(rel.masked_fill(~allowed, rel.min()).max())
        distances = torch.arange(lo, hi + 1, device=q.device)  # [N]
        if table is not None:
            distances = map_distances(distances.expand(batch, -1), table)  # [B, N]
        keys = self.rel_proj(sinusoidal_encoding(distances, self.d_model, q.dtype))  # [(B,) N, d_model]
        keys = keys.view(*distances.shape, heads, head_dim)
        query = q + self.position_bias.to(q.dtype)
        if table is None:
            logits = torch.einsum("bthd,nhd->bhtn", query, keys)
        else:
            logits = torch.einsum("bthd,bnhd->bhtn", query, keys)  # [B, H, T, N]
        index = (rel - lo).clamp(0, hi - lo)[:, None].expand(batch, heads, steps, rel.shape[-1])
        return logits.gather(3, index)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_heads={self.num_heads}, positional={self.positional!r}, "
            f"randomized={self.randomized}, max_len={self.max_len}, context={self.context}, causal={self.causal}, "
            f"norm={self.norm_position!r}, positional_once={self.positional_once}, scale_input={self.scale_input}"
        )
