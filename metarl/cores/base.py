"""The layer stack shared by every core, and the reset/segment machinery.

A core is ``num_layers`` blocks, each ``[mixer sublayer + feed-forward sublayer]`` with residuals and
layer norm, followed by a final layer norm:

    pre-norm mixer ("pre"):   h = x + drop(mixer(LN(x)))
    skip-norm mixer ("skip"): h = LN(x) + drop(mixer(x))      (modern-srwm few-shot and formal-language SRWM)
    no norm ("none"):         h = x + drop(mixer(x))          (modern-srwm RL ``SRlayer``: no mixer LayerNorm)
    feed-forward:             y = h + ff(LN(h))
    post-norm ("post"):       h = LN(x + drop(mixer(x))),  y = LN(h + drop(ff(h)))
                              (Vaswani et al. 2017; the encoder of Ruoss et al. 2023 / Delétang et al. 2023,
                              google-deepmind/randomized_positional_encodings ``models/transformer.py``
                              ``TransformerEncoder``); a stack of post-norm blocks has no final layer norm
                              (its last block ends with one, as in the reference).

A mixer may also transform the block's input before anything else (``encode_input(x, state, reset)``, the
residual stream included): the Transformer uses it in its first layer to scale the core input and add an
absolute positional encoding once (``positional_once``); mixers that define ``set_layer_index(index)`` are
told their layer index when the core is built. Mixers without these hooks are unaffected.

A *mixer* is the sequence-mixing part (LSTM, linear attention, delta rule, SRWM, softmax attention).
It maps ``x [B, T, D] -> y [B, T, D]`` and carries a state (a tensor or a nested tuple of tensors, each
batch-first). Mixers implement ``initial_state`` and ``forward_segment``; the base class turns that into the
contract ``forward(x, state, reset)``, where ``reset[b, t] = True`` means that sequence ``b`` starts over
from the initial state before step ``t``. A mixer whose op takes the reset mask itself (``resets_in_op =
True``: LT, DeltaNet, RecDelta, SRWM) gets ``forward_segment(x, state, reset)`` for the whole call, and a
batch with resets costs about what it costs without; for the others (the LSTM: ``nn.LSTM`` has no reset
input) :func:`run_with_resets` cuts the time axis at every step where some row resets.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

State = Any  # a tensor, None, or a (nested) tuple of batch-first tensors

#: where a Block puts the layer norm of its mixer sublayer (``Mixer.norm_position``), see the module docstring
NORM_POSITIONS = ("pre", "skip", "none", "post")


def map_state(fn: Callable[..., torch.Tensor], *states: State) -> State:
    """Apply ``fn`` leaf-wise to one or more states of the same structure."""
    first = states[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return fn(*states)
    if isinstance(first, (tuple, list)):
        return tuple(map_state(fn, *parts) for parts in zip(*states))
    if isinstance(first, dict):
        return {key: map_state(fn, *(s[key] for s in states)) for key in first}
    raise TypeError(f"unsupported state leaf of type {type(first).__name__}")


def detach_state(state: State) -> State:
    """The same state, cut from the autograd graph (truncated backprop between calls)."""
    return map_state(lambda s: s.detach(), state)


def where_reset(mask: torch.Tensor, initial: State, state: State) -> State:
    """Per batch row: ``initial`` where ``mask[b]`` is True, else ``state``. mask: [B] bool."""

    def pick(init: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        m = mask.view(-1, *([1] * (cur.dim() - 1)))
        return torch.where(m, init.to(cur.dtype), cur)

    return map_state(pick, initial, state)


def run_with_resets(
    segment_fn: Callable[[torch.Tensor, State], tuple[torch.Tensor, State]],
    x: torch.Tensor,
    state: State,
    reset: Optional[torch.Tensor],
    initial_state: Callable[[], State],
) -> tuple[torch.Tensor, State]:
    """Run ``segment_fn`` over ``x [B, T, ...]`` honouring ``reset [B, T]``.

    The time axis is cut at every step where some row resets; at each cut the rows that reset get the
    initial state. Exact for any mixer, and as fast as one call when there are no resets.
    """
    if reset is None:
        return segment_fn(x, state)
    if reset.shape != x.shape[:2]:
        raise ValueError(f"reset must have shape [B, T] = {tuple(x.shape[:2])}, got {tuple(reset.shape)}")
    reset = reset.to(torch.bool)
    cut_times = torch.nonzero(reset.any(dim=0)).flatten().tolist()
    if not cut_times:
        return segment_fn(x, state)
    init = initial_state()
    bounds = sorted(set([0] + cut_times + [x.shape[1]]))
    outputs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if start in cut_times:
            state = where_reset(reset[:, start], init, state)
        y, state = segment_fn(x[:, start:end], state)
        outputs.append(y)
    return torch.cat(outputs, dim=1), state


class Mixer(nn.Module):
    """Base class of sequence-mixing sublayers. Subclasses set ``norm_position`` (one of ``NORM_POSITIONS``)."""

    norm_position = "pre"
    #: True when ``forward_segment(x, state, reset)`` honours ``reset [B, T]`` itself (inside its op)
    resets_in_op = False

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        """The state at the start of a sequence (batch-first tensors)."""
        raise NotImplementedError

    def forward_segment(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """x: [B, T, D] without resets inside -> (y [B, T, D], state). With ``resets_in_op``, the signature is
        ``forward_segment(x, state, reset)`` with ``reset [B, T]`` bool or None (the state of a row returns to
        ``initial_state`` before each of its resets)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, state: State = None, reset: Optional[torch.Tensor] = None):
        """x: [B, T, D], reset: [B, T] bool or None -> (y [B, T, D], state)."""
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        if self.resets_in_op:
            if reset is not None and reset.shape != x.shape[:2]:
                raise ValueError(f"reset must have shape [B, T] = {tuple(x.shape[:2])}, got {tuple(reset.shape)}")
            return self.forward_segment(x, state, reset)
        return run_with_resets(
            self.forward_segment, x, state, reset,
            lambda: self.initial_state(x.shape[0], x.device, x.dtype),
        )


class Block(nn.Module):
    """One layer: mixer sublayer then feed-forward sublayer, each with residual and layer norm."""

    def __init__(self, d_model: int, mixer: Mixer, ff: Optional[nn.Module], dropout: float = 0.0):
        super().__init__()
        self.mixer = mixer
        self.mixer_norm = None if mixer.norm_position == "none" else nn.LayerNorm(d_model)
        self.ff = ff
        self.ff_norm = nn.LayerNorm(d_model) if ff is not None else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x, state, reset):
        encode = getattr(self.mixer, "encode_input", None)
        if encode is not None:  # the mixer's input encoding (see the module docstring)
            x = encode(x, state, reset)
        if self.mixer.norm_position == "post":
            y, state = self.mixer(x, state, reset)
            h = self.mixer_norm(x + self.drop(y))
            if self.ff is not None:
                h = self.ff_norm(h + self.drop(self.ff(h)))
            return h, state
        if self.mixer.norm_position == "skip":
            y, state = self.mixer(x, state, reset)
            h = self.mixer_norm(x) + self.drop(y)
        elif self.mixer.norm_position == "none":
            y, state = self.mixer(x, state, reset)
            h = x + self.drop(y)
        else:
            y, state = self.mixer(self.mixer_norm(x), state, reset)
            h = x + self.drop(y)
        if self.ff is not None:
            h = h + self.drop(self.ff(self.ff_norm(h)))
        return h, state


class SequenceCore(nn.Module):
    """A stack of blocks with the core contract of DESIGN.md.

    ``y, state = core(x, state=None, reset=None)`` with x, y: [B, T, d_model]; ``state`` is a tuple with
    one entry per layer (``None`` means the initial state). ``core.aux_loss()`` returns the sum of the
    auxiliary losses (σ-MoE regularisers) of the last forward call.
    """

    def __init__(self, name: str, d_model: int, blocks: list[Block]):
        super().__init__()
        self.name = name
        self.d_model = d_model
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = nn.LayerNorm(d_model)
        if blocks and all(b.mixer.norm_position == "post" for b in blocks):
            self.final_norm = nn.Identity()  # each post-norm block already ends with a layer norm
        for index, block in enumerate(self.blocks):
            tell = getattr(block.mixer, "set_layer_index", None)
            if tell is not None:
                tell(index)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> tuple:
        dtype = dtype or next(self.parameters()).dtype
        return tuple(b.mixer.initial_state(batch_size, device, dtype) for b in self.blocks)

    def forward(self, x: torch.Tensor, state: Optional[tuple] = None, reset: Optional[torch.Tensor] = None):
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"{self.name} core expects x of shape [B, T, {self.d_model}], got {tuple(x.shape)}")
        if state is None:
            state = (None,) * len(self.blocks)
        # Randomized positions (Ruoss et al. 2023) are drawn once per sequence and shared by all layers:
        # the mixers that draw them get one seed, taken from the global RNG, for the length of this call.
        randomized = [b.mixer for b in self.blocks if getattr(b.mixer, "randomized", False)]
        seed = int(torch.randint(2**62, ())) if randomized else None
        for mixer in randomized:
            mixer.position_seed = seed
        try:
            new_state = []
            h = x
            for block, layer_state in zip(self.blocks, state):
                h, layer_state = block(h, layer_state, reset)
                new_state.append(layer_state)
        finally:
            for mixer in randomized:
                mixer.position_seed = None
        return self.final_norm(h), tuple(new_state)

    def aux_loss(self) -> torch.Tensor:
        """Sum of the feed-forward auxiliary losses of the last forward call (0 if none)."""
        total = None
        for block in self.blocks:
            loss = getattr(block.ff, "aux_loss", None)
            if loss is not None:
                total = loss if total is None else total + loss
        if total is None and isinstance(self.final_norm, nn.Identity):  # post-norm stacks
            return torch.zeros((), device=next(self.parameters()).device)
        if total is None:
            return torch.zeros((), device=self.final_norm.weight.device)
        return total
