"""Feed-forward sublayers: dense, σ-MoE and product-key memory.

Each maps ``x [..., D] -> y [..., D]`` (no residual, no norm: the Block adds those) and sets
``self.aux_loss`` (a scalar tensor or None) at every forward call.

- ``"dense"``: ``DenseFF``, the two-layer ReLU MLP.
- ``"moe"``: ``SigmaMoE``, the σ-MoE of Csordás, Irie & Schmidhuber (EMNLP 2023 Findings, "Approximating
  Two-Layer Feedforward Networks for Efficient Transformers"): sigmoid expert scores, top-K experts per
  token, expert dropout, entropy regulariser on the batch-averaged selection distribution.
- ``"pkm"``: ``ProductKeyMemory`` of Lample et al. (2019, "Large Memory Layers with Product Keys"), with
  the ReLU-scored variant of Csordás et al. (2023) as options.

References read: RobertCsordas/moe_layer ``triton_src/moe_layer/moe_layer_simple.py`` (σ-MoE),
RobertCsordas/moe ``layers/moe_layer.py``, ``layers/transformer/relative_moe_transformer.py``,
``layers/lowrank_approximate_2layer.py`` and ``sweeps/`` (the paper's experiments), facebookresearch/XLM
``PKM-layer.ipynb`` and ``xlm/model/memory/memory.py`` (Lample's PKM).

``weight_std_scale="preln"`` (σ-MoE and PKM) is the reference's rule for pre-LayerNorm stacks,
``sqrt(2 / num_layers)``; ``cores.make`` passes ``num_layers`` to ``make_feedforward`` for it.

``ff_parameter_count`` gives the parameter count of any kind without building it, and
``match_moe_to_dense`` picks the σ-MoE size that matches a dense feed-forward (parameter-equal
comparison, as in the σ-MoE paper).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def resolve_weight_std_scale(value, num_layers: Optional[int], who: str) -> float:
    """The initialisation scale as a number: a positive number as given, or ``"preln"``, the rule of
    Csordás et al. for pre-LN stacks, ``sqrt(2 / num_layers)`` (RobertCsordas/moe
    ``relative_moe_transformer.py``: ``std_scale = math.sqrt(2.0 / n_layers) if preln else 1.0``; the
    moe_layer README: "Use 1.0 for post-layernorm and sqrt(2/n_layers) for pre-layernorm").
    """
    if isinstance(value, str):
        if value != "preln":
            raise ConfigError(f"{who}: weight_std_scale must be a positive number or 'preln', got {value!r}")
        if num_layers is None or num_layers < 1:
            raise ConfigError(f"{who}: weight_std_scale='preln' (sqrt(2 / num_layers)) needs num_layers >= 1, "
                              f"got {num_layers!r}; cores.make passes it, else pass num_layers=...")
        return math.sqrt(2.0 / num_layers)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{who}: weight_std_scale must be a positive number or 'preln', got {value!r}")
    return float(value)


class DenseFF(nn.Module):
    """Linear(D, d_ff) -> ReLU -> dropout -> Linear(d_ff, D).  x: [..., D] -> [..., D].

    hidden_dropout=False drops the dropout on the hidden units (the Ruoss et al. / Delétang et al.
    reference has dropout only on the sublayer outputs, which the Block applies)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, hidden_dropout: bool = True):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout if hidden_dropout else 0.0)
        self.aux_loss: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.drop(torch.relu(self.up(x))))


# ----------------------------------------------------------------------------------------------------
# σ-MoE
# ----------------------------------------------------------------------------------------------------

def moe_sizes(d_ff: int, num_experts: Optional[int] = None, expert_size: Optional[int] = None) -> tuple[int, int]:
    """Resolve ``(num_experts, expert_size)`` of a σ-MoE standing in for a dense layer of width d_ff.

    Given neither, the expert size is the largest divisor of d_ff that is at most
    ``min(128, d_ff // 16)`` (the paper's 16 experts of 128 units at d_ff = 2048), so that
    ``num_experts * expert_size == d_ff`` and small models still get >= 16 experts.
    Given one, the other is ``d_ff // given``.
    """
    if num_experts is None and expert_size is None:
        cap = max(1, min(128, d_ff // 16))
        expert_size = max(g for g in range(1, cap + 1) if d_ff % g == 0)
    if num_experts is None:
        num_experts = d_ff // expert_size
    if expert_size is None:
        expert_size = d_ff // num_experts
    if num_experts < 1 or expert_size < 1:
        raise ConfigError(
            f"σ-MoE needs num_experts >= 1 and expert_size >= 1, got num_experts={num_experts}, "
            f"expert_size={expert_size} (d_ff={d_ff}); pass both explicitly"
        )
    return num_experts, expert_size


def selection_entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Negative entropy of the batch-averaged selection distribution (σ-MoE regulariser).

    logits: [N, E] selection logits of all N tokens of the batch. With p_n = softmax(logits_n) and
    p̄ = mean_n p_n, returns  Σ_e p̄_e log p̄_e  (= -H(p̄), minimised by a uniform expert usage).
    Computed in log space: log p̄ = logsumexp_n(log_softmax(logits)) - log N.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0  # no tokens: no regularisation
    log_p = F.log_softmax(logits, dim=-1)
    log_mean = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])
    return (log_mean.exp() * log_mean).sum()


class SigmaMoE(nn.Module):
    """σ-MoE feed-forward (Csordás et al., 2023).  x: [..., D] -> y: [..., D].

    s = sigmoid(x W_sel)                                   selection scores, W_sel: [E, D] (no softmax)
    y = Σ_{e ∈ topK(s)} s_e · ReLU(x W1_e) W2_e            W1: [E, D, G], W2: [E, G, D]

    Experts are two-layer MLPs of width G = expert_size without biases (the paper's choice;
    ``bias=True`` adds a per-expert hidden bias and an output bias). In training, expert dropout removes
    each (token, expert) pair from the selection with probability ``expert_dropout`` before the top-K.
    ``self.aux_loss = entropy_reg · Σ_e p̄_e log p̄_e`` with p̄ the softmax of the selection logits
    averaged over all tokens of the call (maximises the entropy of the expert usage); it is computed on
    the logits before expert dropout (the reference's ``perplexity_reg_mode: global``, ``reg_type:
    entropy``). It is a per-call (mean-like) quantity: a trainer whose main loss is a sum over tokens
    scales it by the number of summed terms (the IMPALA learner does, ``metarl.rl.impala``).

    Defaults and the paper's sweeps (RobertCsordas/moe ``sweeps/``): the parameter-matched models
    (E·G = d_ff, e.g. 16 experts of 128, K = 4: ``small/*_lowreg_drop_expert.yaml``, ``enwik8/*_exp_drop.yaml``)
    use ``moe.perplexity_reg: 0.0001`` and ``moe.drop_expert: 0.05``. ``entropy_reg`` defaults to that
    1e-4 (it was 1e-3 before, the value of the paper's larger-than-dense MoEs, ``smallbig/``, ``big/``, and
    the moe_layer README's "typically around 0.001": pass ``entropy_reg=0.001`` for it).
    ``expert_dropout`` stays 0 by default, like ``dropout``, so a default core is deterministic in training
    mode; the preset named after the paper (``configs/agent/moe.yaml``) sets 0.05.

    Initialisation (moe_layer ``moe_layer_simple.py``, as in the paper): experts as the dense layer they
    replace, W1 ~ N(0, s²/D) and W2 ~ N(0, s²/(E·G)) (the total width, not the expert width);
    W_sel ~ N(0, s²/D), then its rows (one per expert) renormalised to equal norm and rescaled to keep
    the std (``renorm_keep_std``; the sweeps' ``moe.norm_expert_sel_init: 1``). s = ``weight_std_scale``
    multiplies all three stds: 1.0 (default; the reference's post-LN value, right for blocks with a
    ``"post"`` mixer norm position) or ``"preln"`` = sqrt(2 / num_layers), the reference's rule for pre-LN
    stacks, which metarl's Blocks are by default (a layer norm before the feed-forward, ``agent=moe``);
    ``num_layers`` is then needed (``cores.make`` passes it). Where metarl differs: the
    reference also scales the attention initialisation of pre-LN layers by the same rule
    (``reset_prenorm_params``); metarl's mixers keep their own initialisation.

    impl: ``"loop"`` sorts the (token, slot) pairs by expert and runs one matmul pair per expert
    (:class:`SortedExperts`, with its own backward; tested against autograd through the formula above);
    ``"dense"`` computes all experts and masks the unselected ones (same values; it materialises
    [N, E·G] like a dense layer and does E/K times the work, so it only pays off for K > E/2);
    ``"auto"`` uses dense when 2·top_k > num_experts, else loop (measured on CPU at E = 16).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        num_experts: Optional[int] = None,
        expert_size: Optional[int] = None,
        top_k: int = 4,
        expert_dropout: float = 0.0,
        entropy_reg: float = 1e-4,
        bias: bool = False,
        weight_std_scale: Union[float, str] = 1.0,
        impl: str = "auto",
        num_layers: Optional[int] = None,
    ):
        super().__init__()
        num_experts, expert_size = moe_sizes(d_ff, num_experts, expert_size)
        if top_k < 1:
            raise ConfigError(f"σ-MoE top_k must be >= 1, got {top_k}")
        if not 0.0 <= expert_dropout < 1.0:
            raise ConfigError(f"σ-MoE expert_dropout must be in [0, 1), got {expert_dropout}")
        if impl not in ("auto", "loop", "dense"):
            raise ConfigError(f"σ-MoE impl must be 'auto', 'loop' or 'dense', got {impl!r}")
        self.d_model = d_model
        self.num_experts = num_experts
        self.expert_size = expert_size
        self.top_k = min(top_k, num_experts)  # K >= E means every expert is active
        self.expert_dropout = expert_dropout
        self.entropy_reg = entropy_reg
        self.impl = impl
        self.weight_std_scale = resolve_weight_std_scale(weight_std_scale, num_layers, "σ-MoE")

        self.w_sel = nn.Parameter(torch.empty(num_experts, d_model))
        self.w1 = nn.Parameter(torch.empty(num_experts, d_model, expert_size))
        self.w2 = nn.Parameter(torch.empty(num_experts, expert_size, d_model))
        if bias:
            self.b1 = nn.Parameter(torch.zeros(num_experts, expert_size))
            self.b2 = nn.Parameter(torch.zeros(d_model))
        else:
            self.register_parameter("b1", None)
            self.register_parameter("b2", None)
        self.drop = nn.Dropout(dropout)
        self.aux_loss: Optional[torch.Tensor] = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, weight_std_scale: Optional[float] = None) -> None:
        """The paper's initialisation (see the class docstring); the scale defaults to the module's."""
        scale = self.weight_std_scale if weight_std_scale is None else weight_std_scale
        d, size = self.d_model, self.num_experts * self.expert_size
        nn.init.normal_(self.w1, std=scale * d ** -0.5)
        nn.init.normal_(self.w2, std=scale * size ** -0.5)
        nn.init.normal_(self.w_sel, std=scale * d ** -0.5)
        if self.w_sel.numel() > 1:  # equal row norms, same overall std
            std = self.w_sel.std()
            self.w_sel.div_(self.w_sel.norm(dim=1, keepdim=True))
            self.w_sel.mul_(std / self.w_sel.std())
        if self.b1 is not None:
            self.b1.zero_()
            self.b2.zero_()

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [N, D] -> (logits [N, E], gates [N, K], experts [N, K] long).

        gates are the sigmoid scores of the chosen experts; experts removed by expert dropout get
        gate 0 if fewer than K survive.
        """
        logits = x @ self.w_sel.t()
        scores = torch.sigmoid(logits)
        if self.training and self.expert_dropout > 0:
            dropped = torch.rand_like(scores) < self.expert_dropout
            scores = scores.masked_fill(dropped, float("-inf"))
        gates, experts = scores.topk(self.top_k, dim=-1, sorted=False)
        gates = gates.clamp_min(0.0)  # -inf (dropped) -> 0
        return logits, gates, experts

    def _experts_loop(self, x: torch.Tensor, gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Sort the N·K (token, slot) pairs by expert; one [n_e, D] x [D, G] x [G, D] per expert
        (:class:`SortedExperts`, which writes its own backward)."""
        p = self.drop.p if self.training else 0.0
        hidden_keep = None
        if p > 0:  # the dropout mask of the hidden units, drawn here so the autograd Function stays pure
            hidden_keep = (torch.rand(x.shape[0] * self.top_k, self.expert_size, device=x.device) >= p)
            hidden_keep = hidden_keep.to(x.dtype) / (1.0 - p)
        return SortedExperts.apply(x, gates, experts, self.w1, self.w2, self.b1, hidden_keep)

    def _experts_dense(self, x: torch.Tensor, gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """All experts as one dense layer, hidden units scaled by their expert's gate (0 if unselected)."""
        e_count, g = self.num_experts, self.expert_size
        gate_full = torch.zeros(x.shape[0], e_count, dtype=gates.dtype, device=gates.device)
        gate_full = gate_full.scatter(1, experts, gates)
        h = x @ self.w1.permute(1, 0, 2).reshape(self.d_model, e_count * g)
        if self.b1 is not None:
            h = h + self.b1.reshape(-1)
        h = self.drop(torch.relu(h)) * gate_full.repeat_interleave(g, dim=1)
        return h @ self.w2.reshape(e_count * g, self.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits, gates, experts = self.route(x)
        self.aux_loss = self.entropy_reg * selection_entropy_loss(logits)
        dense = self.impl == "dense" or (self.impl == "auto" and 2 * self.top_k > self.num_experts)
        if x.shape[0] == 0:
            y = x.new_zeros(0, self.d_model)
        elif dense:
            y = self._experts_dense(x, gates, experts)
        else:
            y = self._experts_loop(x, gates, experts)
        if self.b2 is not None:
            y = y + self.b2
        return y.reshape(shape)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_experts={self.num_experts}, expert_size={self.expert_size}, "
                f"top_k={self.top_k}, expert_dropout={self.expert_dropout}, entropy_reg={self.entropy_reg}, "
                f"weight_std_scale={self.weight_std_scale:.4g}")


class SortedExperts(torch.autograd.Function):
    """The σ-MoE experts on tokens grouped by expert, with a hand-written backward.

    x: [N, D], gates: [N, K], experts: [N, K] long, w1: [E, D, G], w2: [E, G, D], b1: [E, G] or None,
    hidden_keep: [N·K, G] (inverted-dropout factors in sorted order) or None  ->  y: [N, D] with
    ``y_n = Σ_k gates[n, k] · relu(x_n W1_e + b1_e) W2_e``, e = experts[n, k].

    The N·K (token, slot) pairs are sorted by expert once. Each expert gathers its tokens, runs one
    matmul pair and adds its gated rows back into the tokens (``index_add_``); the gathered tokens and the
    hidden units [N·K, G] are kept for the backward (N·K·(D + 2G) floats). The gate scales the
    hidden units (G wide), not the outputs (D wide). Per-expert temporaries ([n_e, D]) are what the
    allocator reuses, where [N·K, D] buffers are fresh memory at every call. Autograd through the same
    steps (index_select, cat, index_copy, per-expert views, the gate on [N·K, D]) spent more time moving
    memory than multiplying (``scripts/bench_cores.py --sections moe``).
    """

    @staticmethod
    def forward(ctx, x, gates, experts, w1, w2, b1, hidden_keep):
        n, k = experts.shape
        e_count, _, g = w1.shape
        flat = experts.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=e_count).tolist()
        token = order // k
        gate_sorted = gates.reshape(-1).index_select(0, order).unsqueeze(1)  # [N·K, 1]
        pieces = [(e, slice(start, start + count)) for e, (start, count) in
                  enumerate(zip(_starts(counts), counts)) if count]
        hidden, gated = x.new_empty(n * k, g), x.new_empty(n * k, g)
        y = x.new_zeros(n, x.shape[1])
        x_pieces = []  # each expert's tokens [n_e, D], kept for the weight gradient
        for e, rows in pieces:  # one expert at a time: its [n_e, G] pieces stay in cache
            x_e, h_e = x.index_select(0, token[rows]), hidden[rows]
            x_pieces.append(x_e)
            if b1 is None:
                torch.mm(x_e, w1[e], out=h_e)
            else:
                torch.addmm(b1[e], x_e, w1[e], out=h_e)
            h_e.clamp_(min=0.0)
            if hidden_keep is not None:
                h_e.mul_(hidden_keep[rows])
            torch.mul(h_e, gate_sorted[rows], out=gated[rows])
            y.index_add_(0, token[rows], gated[rows] @ w2[e])
        ctx.pieces, ctx.x_pieces = pieces, x_pieces
        ctx.has_bias = b1 is not None
        ctx.gates_shape = gates.shape
        ctx.save_for_backward(x, hidden, gated, gate_sorted, order, token, w1, w2, hidden_keep)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, hidden, gated, gate_sorted, order, token, w1, w2, hidden_keep = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_x = torch.zeros_like(x)
        grad_w1, grad_w2 = torch.empty_like(w1), torch.empty_like(w2)
        grad_b1 = torch.empty_like(w1[:, 0]) if ctx.has_bias else None
        unused = sorted(set(range(w1.shape[0])) - {e for e, _ in ctx.pieces})
        for grad in (grad_w1, grad_w2, grad_b1):
            if grad is not None and unused:
                grad[unused] = 0.0  # experts no token chose
        grad_gate_sorted = hidden.new_empty(hidden.shape[0])
        for (e, rows), x_e in zip(ctx.pieces, ctx.x_pieces):
            tokens_e = token[rows]
            grad_y_e = grad_y.index_select(0, tokens_e)
            torch.mm(gated[rows].t(), grad_y_e, out=grad_w2[e])
            grad_h = grad_y_e @ w2[e].t()  # the gradient of the gated hidden units [n_e, G]
            torch.sum(grad_h * hidden[rows], dim=1, out=grad_gate_sorted[rows])
            # through the gate, the dropout and the ReLU (hidden > 0 exactly where a unit was active and kept)
            grad_h = torch.ops.aten.threshold_backward(grad_h.mul_(gate_sorted[rows]), hidden[rows], 0.0)
            if hidden_keep is not None:
                grad_h.mul_(hidden_keep[rows])
            torch.mm(x_e.t(), grad_h, out=grad_w1[e])
            grad_x.index_add_(0, tokens_e, grad_h @ w1[e].t())
            if grad_b1 is not None:
                torch.sum(grad_h, dim=0, out=grad_b1[e])
        grad_gates = torch.empty_like(grad_gate_sorted).index_copy_(0, order, grad_gate_sorted)
        ctx.x_pieces = None
        return grad_x, grad_gates.view(ctx.gates_shape), None, grad_w1, grad_w2, grad_b1, None


def _starts(counts: list) -> list:
    """Offsets of consecutive pieces of the given sizes: [0, c0, c0 + c1, ...] (one per piece)."""
    starts, total = [], 0
    for count in counts:
        starts.append(total)
        total += count
    return starts


# ----------------------------------------------------------------------------------------------------
# Product-key memory
# ----------------------------------------------------------------------------------------------------

def pkm_sizes(d_model: int, d_ff: int, num_keys: Optional[int] = None, d_key: Optional[int] = None) -> tuple[int, int]:
    """Resolve ``(num_keys, d_key)``: num_keys = round(sqrt(d_ff)) (num_keys² slots ≈ d_ff hidden units),
    d_key = d_model rounded up to even (it is split into two halves)."""
    num_keys = num_keys if num_keys is not None else max(1, round(math.sqrt(d_ff)))
    d_key = d_key if d_key is not None else d_model + d_model % 2
    if num_keys < 1 or d_key < 2 or d_key % 2:
        raise ConfigError(f"product-key memory needs num_keys >= 1 and an even d_key >= 2, got {num_keys}, {d_key}")
    return num_keys, d_key


PKM_SCORE_ACTIVATIONS = ("softmax", "relu")
PKM_INITS = ("lample", "csordas")


class ProductKeyMemory(nn.Module):
    """Product-key memory (Lample et al., 2019) as a feed-forward.  x: [..., D] -> y: [..., D].

    q = x W_q + b_q  split into heads [H, d_key] and halves (q¹, q²) of d_key/2 each;
    sub-keys K¹_h, K²_h: [n, d_key/2]; slot (i, j) ↔ index i·n + j scores q¹·K¹_i + q²·K²_j.
    Per head: top-k of each half, then top-k of the k×k sums (exact: equals the top-k over all n²
    slots), w = act(top-k scores), y = Σ_heads Σ_slots w · V[slot], V: [n², D] shared by the heads.
    ``dropout`` drops selected slots (the memory's "hidden units"; the reference's ``dropout_mode:
    score``). aux_loss is None.

    Lample's setting (facebookresearch/XLM ``PKM-layer.ipynb``, "a configuration that worked well in our
    experiments"): ``heads=4``, ``top_k=32`` (knn), ``query_norm=True`` (BatchNorm1d on the projected
    queries: batch statistics in training, running statistics in eval; the notebook warns that padding
    tokens distort them), ``score_activation="softmax"`` (per head, over its k scores),
    ``init="lample"``: sub-keys ~ U(±1/sqrt(d_key/2)) (nn.Linear-like), values ~ N(0, 1/D), the query
    projection with nn.Linear's default init and a bias. ``configs/agent/pkm.yaml`` uses it. The class
    defaults (``heads=1``, ``top_k=8``, no query norm) are kept from before for existing configs.
    Where metarl differs: Lample adds one large memory (512² slots, d_key 256) at one layer; metarl's
    cores put the same kind of feed-forward in every block, so the default memory has about d_ff slots.

    Csordás et al.'s variant (RobertCsordas/moe ``layers/lowrank_approximate_2layer.py``, used by
    ``variant: preln_kvmem`` with ``sweeps/small/wikitext103_pkm*.yaml``: 4 heads, knn 128):
    ``score_activation="relu"`` (w = ReLU(score), unnormalised, instead of the softmax; the reference's
    ``transformer.activation: relu``), ``query_projection=False`` (the reference's default
    ``kvmem.linproj: False``: the layer-normed input itself is the query of every head, the heads differ
    only by their sub-keys; needs d_key = d_model), no query BatchNorm, ``init="csordas"``: sub-keys and
    values ~ N(0, s²/D) (its ``custom_init: 0``), a query projection (if any) ~ N(0, s²/D) without bias;
    and ``weight_std_scale="preln"`` (s = sqrt(2 / num_layers), its pre-LN rule). ``weight_std_scale``
    multiplies the initial stds (and the uniform bound) of either init; 1.0 leaves Lample's exactly.
    Where metarl differs: the reference's ``softmax`` option normalises over all heads·knn scores of a
    token jointly; metarl's ``"softmax"`` is Lample's, per head.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        num_keys: Optional[int] = None,
        top_k: int = 8,
        heads: int = 1,
        d_key: Optional[int] = None,
        query_norm: bool = False,
        score_activation: str = "softmax",
        query_projection: bool = True,
        init: str = "lample",
        weight_std_scale: Union[float, str] = 1.0,
        num_layers: Optional[int] = None,
    ):
        super().__init__()
        if not query_projection:
            if d_key not in (None, d_model) or d_model % 2:
                raise ConfigError(
                    f"product-key memory with query_projection=False uses the input as the query: d_key must "
                    f"be d_model and even, got d_model={d_model}, d_key={d_key}")
            d_key = d_model
        num_keys, d_key = pkm_sizes(d_model, d_ff, num_keys, d_key)
        if heads < 1 or not 1 <= top_k <= num_keys * num_keys:
            raise ConfigError(
                f"product-key memory needs heads >= 1 and 1 <= top_k <= num_keys² = {num_keys * num_keys}, "
                f"got heads={heads}, top_k={top_k}"
            )
        if score_activation not in PKM_SCORE_ACTIVATIONS:
            raise ConfigError(f"product-key memory score_activation must be one of {PKM_SCORE_ACTIVATIONS}, "
                              f"got {score_activation!r}")
        if init not in PKM_INITS:
            raise ConfigError(f"product-key memory init must be one of {PKM_INITS}, got {init!r}")
        self.d_model, self.num_keys, self.top_k, self.heads, self.d_key = d_model, num_keys, top_k, heads, d_key
        self.score_activation, self.init = score_activation, init
        self.weight_std_scale = resolve_weight_std_scale(weight_std_scale, num_layers, "product-key memory")
        if query_projection:
            self.query = nn.Linear(d_model, heads * d_key, bias=init == "lample")
        else:
            self.register_module("query", None)
        q_width = heads * d_key if query_projection else d_key
        self.query_norm = nn.BatchNorm1d(q_width) if query_norm else None
        self.keys = nn.Parameter(torch.empty(heads, 2, num_keys, d_key // 2))
        self.values = nn.EmbeddingBag(num_keys * num_keys, d_model, mode="sum")
        self.dropout = dropout
        self.aux_loss: Optional[torch.Tensor] = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """``init="lample"``: sub-keys ~ U(±s/sqrt(d_key/2)), values ~ N(0, s²/D), nn.Linear's query init;
        ``init="csordas"``: sub-keys, values and query weight ~ N(0, s²/D); s = weight_std_scale."""
        s, d = self.weight_std_scale, self.d_model
        if self.init == "lample":
            bound = s * (self.d_key // 2) ** -0.5
            nn.init.uniform_(self.keys, -bound, bound)
            if self.query is not None:
                self.query.reset_parameters()
                self.query.weight.mul_(s)
        else:
            nn.init.normal_(self.keys, std=s * d ** -0.5)
            if self.query is not None:
                nn.init.normal_(self.query.weight, std=s * d ** -0.5)
        nn.init.normal_(self.values.weight, std=s * d ** -0.5)
        if self.query_norm is not None:
            self.query_norm.reset_parameters()

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, D] -> q: [N, H, d_key] (BatchNorm'd with ``query_norm``; x itself without a projection)."""
        q = self.query(x) if self.query is not None else x
        if self.query_norm is not None:
            q = self.query_norm(q)
        if self.query is None:
            return q.unsqueeze(1).expand(x.shape[0], self.heads, self.d_key)
        return q.view(x.shape[0], self.heads, self.d_key)

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [N, D] -> (scores [N, H, k], slots [N, H, k] long): the exact top-k slots of each head."""
        q = self.queries(x)
        half = self.d_key // 2
        n, k = self.num_keys, self.top_k
        s1 = torch.einsum("bhd,hkd->bhk", q[..., :half], self.keys[:, 0])  # [N, H, n]
        s2 = torch.einsum("bhd,hkd->bhk", q[..., half:], self.keys[:, 1])
        k_half = min(k, n)
        v1, i1 = s1.topk(k_half, dim=-1)  # [N, H, k']
        v2, i2 = s2.topk(k_half, dim=-1)
        pair_scores = (v1.unsqueeze(-1) + v2.unsqueeze(-2)).flatten(-2)  # [N, H, k'·k']
        pair_slots = (i1.unsqueeze(-1) * n + i2.unsqueeze(-2)).flatten(-2)
        scores, best = pair_scores.topk(k, dim=-1)
        return scores, pair_slots.gather(-1, best)

    def address(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [N, D] -> (weights [N, H, k], slots [N, H, k]): the read weights before dropout —
        softmax over each head's k scores (Lample: each head's weights sum to 1) or ReLU (Csordás: >= 0)."""
        scores, slots = self.lookup(x)
        weights = torch.softmax(scores, dim=-1) if self.score_activation == "softmax" else torch.relu(scores)
        return weights, slots

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        weights, slots = self.address(x)
        weights = F.dropout(weights, self.dropout, self.training)
        y = self.values(slots.flatten(1), per_sample_weights=weights.flatten(1).to(self.values.weight.dtype))
        return y.reshape(shape)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_keys={self.num_keys} ({self.num_keys ** 2} slots), "
                f"top_k={self.top_k}, heads={self.heads}, d_key={self.d_key}, "
                f"score_activation={self.score_activation}, init={self.init}")


FEEDFORWARDS = {"dense": DenseFF, "moe": SigmaMoE, "pkm": ProductKeyMemory}


#: the kinds whose initialisation can depend on the depth of the stack (``weight_std_scale="preln"``)
DEPTH_AWARE = ("moe", "pkm")


def make_feedforward(
    kind: str, d_model: int, d_ff: int, dropout: float = 0.0, num_layers: Optional[int] = None, **options
) -> Optional[nn.Module]:
    """Build a feed-forward sublayer by name; ``"none"`` gives no feed-forward sublayer.

    num_layers: the number of blocks of the stack the sublayer sits in (``cores.make`` passes it); handed
    to the kinds in ``DEPTH_AWARE``, where ``weight_std_scale="preln"`` turns it into sqrt(2 / num_layers),
    and ignored by the others.
    """
    if kind == "none":
        return None
    if kind not in FEEDFORWARDS:
        raise ConfigError(f"unknown feed-forward {kind!r}; known: {sorted(FEEDFORWARDS) + ['none']}")
    if kind in DEPTH_AWARE:
        options["num_layers"] = num_layers
    return FEEDFORWARDS[kind](d_model, d_ff, dropout, **options)


# ----------------------------------------------------------------------------------------------------
# Parameter counting and matching
# ----------------------------------------------------------------------------------------------------

def ff_parameter_count(kind: str, d_model: int, d_ff: int, **options) -> int:
    """Number of parameters of ``make_feedforward(kind, d_model, d_ff, **options)``, computed analytically.

    dense: 2·D·F + F + D;  moe: E·D (selection) + 2·E·D·G (+ E·G + D with bias);
    pkm: D·H·d_key + H·d_key (query; no bias with init="csordas", none at all with query_projection=False)
    + 2·H·d_key with query_norm (2·d_key without a projection) + H·n·d_key (sub-keys) + n²·D (values).
    """
    options.pop("dropout", None)
    options.pop("num_layers", None)
    if kind == "none":
        return 0
    if kind == "dense":
        options.pop("hidden_dropout", None)
        if options:
            raise ConfigError(f"dense feed-forward takes only hidden_dropout, got {sorted(options)}")
        return 2 * d_model * d_ff + d_ff + d_model
    if kind == "moe":
        e, g = moe_sizes(d_ff, options.get("num_experts"), options.get("expert_size"))
        count = e * d_model + 2 * e * d_model * g
        if options.get("bias", False):
            count += e * g + d_model
        return count
    if kind == "pkm":
        projection = options.get("query_projection", True)
        d_key = options.get("d_key") if projection else d_model
        n, d_key = pkm_sizes(d_model, d_ff, options.get("num_keys"), d_key)
        h = options.get("heads", 1)
        q_width = h * d_key if projection else d_key
        count = h * n * d_key + n * n * d_model
        if projection:
            count += d_model * q_width + (q_width if options.get("init", "lample") == "lample" else 0)
        if options.get("query_norm", False):
            count += 2 * q_width
        return count
    raise ConfigError(f"unknown feed-forward {kind!r}; known: {sorted(FEEDFORWARDS) + ['none']}")


def match_moe_to_dense(d_model: int, d_ff_dense: int, expert_size: int, bias: bool = False) -> dict:
    """σ-MoE options with the largest parameter count that does not exceed a dense FF of width d_ff_dense.

    Returns ``dict(num_experts=E, expert_size=G)``; the MoE is then smaller than the dense layer by
    less than one expert's parameters (2·D·G + D, + G with bias). Pass ``bias`` as you will to the MoE.
    """
    target = ff_parameter_count("dense", d_model, d_ff_dense)
    fixed = d_model if bias else 0
    per_expert = ff_parameter_count("moe", d_model, expert_size, num_experts=1, expert_size=expert_size, bias=bias) - fixed
    num_experts = (target - fixed) // per_expert
    if num_experts < 1:
        raise ConfigError(
            f"one expert of size {expert_size} ({per_expert + fixed} parameters) is larger than the dense "
            f"feed-forward ({target} parameters); use a smaller expert_size"
        )
    return dict(num_experts=int(num_experts), expert_size=expert_size)


__all__ = [
    "DenseFF", "SigmaMoE", "ProductKeyMemory", "FEEDFORWARDS", "make_feedforward",
    "ff_parameter_count", "match_moe_to_dense", "moe_sizes", "pkm_sizes", "selection_entropy_loss",
    "resolve_weight_std_scale", "DEPTH_AWARE", "PKM_SCORE_ACTIVATIONS", "PKM_INITS",
]
