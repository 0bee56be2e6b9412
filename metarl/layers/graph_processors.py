"""Graph processors of encode-process-decode models (CLRS; Ibarz et al. 2022, "A Generalist Neural
Algorithmic Learner"): one round of message passing per call.

Contract (DESIGN.md)::

    hidden = processor(node [B, N, D], edge [B, N, N, D], graph [B, D], adj [B, N, N] bool, hidden [B, N, D],
                       mask=None [B, N] bool)

``adj[b, i, j]``: node i receives from node j. ``mask``: the real nodes (default: every node); a padding
node sends nothing and its output is zero. Every processor is permutation-equivariant over the nodes.

With z_i = [node_i, hidden_i] (MPNN, max aggregation)::

    m_ij = MLP(relu(W_1 z_i + W_2 z_j + W_e e_ij + W_g g))          message from j to i (MLP: 2 layers)
    h_i  = relu(O_1 z_i + O_2 max_{j: adj_ij} m_ij)                  then a layer norm (``layer_norm``)

``gated``: h_i <- gate_i * h_i + (1 - gate_i) * hidden_i, gate_i = sigmoid(G_3 relu(G_1 z_i + G_2 m_i)),
the bias of G_3 initialised to -3 (updates start small). ``triplets`` (Dudzik & Veličković 2022)::

    t_ijk = T_1 z_i + T_2 z_j + T_3 z_k + T_e1 e_ij + T_e2 e_ik + T_e3 e_jk + T_g g      [B, N, N, N, Dt]
    e'_ij = relu(O_3 max_k t_ijk)       (k over the real nodes)

The reference returns e' as extra edge features for the decoders; here it is added to the pair messages
m_ij before their aggregation, so the contract stays ``hidden -> hidden`` (``last_edges`` keeps e' for a
caller that wants it too).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

NEG = -1e9


class MPNN(nn.Module):
    """Message passing with max aggregation; ``gated`` and ``triplets`` give GMPNN and Triplet-GMPNN."""

    def __init__(self, d: int, gated: bool = False, triplets: bool = False, d_triplet: int = 8,
                 layer_norm: bool = True, messages: bool = True):
        super().__init__()
        self.d, self.gated, self.triplets, self.messages = d, gated, triplets, messages
        self.m1, self.m2 = nn.Linear(2 * d, d), nn.Linear(2 * d, d)
        self.me, self.mg = nn.Linear(d, d), nn.Linear(d, d)
        self.msg_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))  # CLRS: an MLP [d, d]
        self.o1, self.o2 = nn.Linear(2 * d, d), nn.Linear(d, d)
        self.norm = nn.LayerNorm(d) if layer_norm else nn.Identity()
        if gated:
            self.g1, self.g2, self.g3 = nn.Linear(2 * d, d), nn.Linear(d, d), nn.Linear(d, d)
            nn.init.constant_(self.g3.bias, -3.0)
        if triplets:
            self.t1, self.t2, self.t3 = (nn.Linear(2 * d, d_triplet) for _ in range(3))
            self.te1, self.te2, self.te3 = (nn.Linear(d, d_triplet) for _ in range(3))
            self.tg = nn.Linear(d, d_triplet)
            self.o3 = nn.Linear(d_triplet, d)
        self.last_edges: Optional[torch.Tensor] = None

    def triplet_messages(self, z: torch.Tensor, edge: torch.Tensor, graph: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        """e'_ij = relu(O_3 max_k t_ijk) [B, N, N, D] (see the module docstring)."""
        t = (self.t1(z)[:, :, None, None] + self.t2(z)[:, None, :, None] + self.t3(z)[:, None, None, :]
             + self.te1(edge)[:, :, :, None] + self.te2(edge)[:, :, None, :] + self.te3(edge)[:, None, :, :]
             + self.tg(graph)[:, None, None, None])
        t = t.masked_fill(~mask[:, None, None, :, None], NEG)
        return torch.relu(self.o3(t.max(dim=3).values))

    def forward(self, node: torch.Tensor, edge: torch.Tensor, graph: torch.Tensor, adj: torch.Tensor,
                hidden: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, N, _ = node.shape
        mask = torch.ones(B, N, dtype=torch.bool, device=node.device) if mask is None else mask.bool()
        adj = adj.bool() & mask[:, :, None] & mask[:, None, :]
        z = torch.cat([node, hidden], dim=-1)
        if self.messages:
            pre = self.m1(z)[:, :, None] + self.m2(z)[:, None, :] + self.me(edge) + self.mg(graph)[:, None, None]
            messages = self.msg_mlp(torch.relu(pre))  # [B, N(receiver i), N(sender j), D]
            if self.triplets:
                self.last_edges = self.triplet_messages(z, edge, graph, mask)
                messages = messages + self.last_edges
            aggregated = messages.masked_fill(~adj[..., None], NEG).max(dim=2).values
            aggregated = torch.where(adj.any(-1, keepdim=True), aggregated, torch.zeros_like(aggregated))
        else:  # no message passing (the baseline): nothing to compute over the pairs
            aggregated = torch.zeros_like(node)
        out = self.norm(torch.relu(self.o1(z) + self.o2(aggregated)))
        if self.gated:
            gate = torch.sigmoid(self.g3(torch.relu(self.g1(z) + self.g2(aggregated))))
            out = gate * out + (1 - gate) * hidden
        return out * mask[..., None]


def make_processor(name: str, d: int, d_triplet: int = 8, layer_norm: bool = True) -> MPNN:
    """``mpnn`` | ``gmpnn`` (gated) | ``triplet_mpnn`` | ``triplet_gmpnn`` (gated, triplets: Ibarz et al.) |
    ``none`` (no message passing: each node updated from its own features alone; the baseline)."""
    options = {"mpnn": (False, False), "gmpnn": (True, False), "triplet_mpnn": (False, True),
               "triplet_gmpnn": (True, True), "none": (False, False)}
    if name not in options:
        from ..errors import ConfigError

        raise ConfigError(f"env.processor={name!r} is not known; choose one of: {', '.join(options)}")
    gated, triplets = options[name]
    return MPNN(d, gated=gated, triplets=triplets, d_triplet=d_triplet, layer_norm=layer_norm, messages=name != "none")


PROCESSORS = ("mpnn", "gmpnn", "triplet_mpnn", "triplet_gmpnn", "none")
