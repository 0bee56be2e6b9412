"""Graph processors: permutation equivariance, padding nodes change nothing, triplets as the paper's sums."""
import pytest
import torch

from metarl.layers.graph_processors import PROCESSORS, make_processor

B, N, D = 3, 6, 16


def inputs(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    node, edge = torch.randn(B, n, D, generator=g), torch.randn(B, n, n, D, generator=g)
    graph, hidden = torch.randn(B, D, generator=g), torch.randn(B, n, D, generator=g)
    adj = torch.rand(B, n, n, generator=g) < 0.5
    return node, edge, graph, adj, hidden


@pytest.mark.parametrize("name", PROCESSORS)
def test_permutation_equivariant(name):
    torch.manual_seed(0)
    processor = make_processor(name, D)
    node, edge, graph, adj, hidden = inputs()
    perm = torch.randperm(N)
    out = processor(node, edge, graph, adj, hidden)
    permuted = processor(node[:, perm], edge[:, perm][:, :, perm], graph, adj[:, perm][:, :, perm], hidden[:, perm])
    torch.testing.assert_close(permuted, out[:, perm], rtol=1e-5, atol=1e-5)
    assert out.shape == (B, N, D)


@pytest.mark.parametrize("name", PROCESSORS)
def test_padding_nodes_change_nothing(name):
    torch.manual_seed(0)
    processor = make_processor(name, D)
    node, edge, graph, adj, hidden = inputs(N + 3, seed=1)
    mask = torch.arange(N + 3)[None, :].expand(B, -1) < N
    padded = processor(node, edge, graph, adj, hidden, mask)
    alone = processor(node[:, :N], edge[:, :N, :N], graph, adj[:, :N, :N], hidden[:, :N])
    torch.testing.assert_close(padded[:, :N], alone, rtol=1e-5, atol=1e-5)
    assert (padded[:, N:] == 0).all()
    garbage = node.clone()
    garbage[:, N:] = 1e3  # whatever the padding holds
    torch.testing.assert_close(processor(garbage, edge, graph, adj, hidden, mask), padded)


def test_triplet_messages_equal_the_papers_sum():
    torch.manual_seed(0)
    p = make_processor("triplet_gmpnn", D, d_triplet=5)
    node, edge, graph, _, hidden = inputs()
    z = torch.cat([node, hidden], -1)
    l = lambda layer, x: x @ layer.weight.T + layer.bias  # noqa: E731
    t = torch.empty(B, N, N, N, 5)
    for i in range(N):
        for j in range(N):
            for k in range(N):
                t[:, i, j, k] = (l(p.t1, z[:, i]) + l(p.t2, z[:, j]) + l(p.t3, z[:, k]) + l(p.te1, edge[:, i, j])
                                 + l(p.te2, edge[:, i, k]) + l(p.te3, edge[:, j, k]) + l(p.tg, graph))
    expected = torch.relu(torch.einsum("bijt,dt->bijd", t.max(dim=3).values, p.o3.weight) + p.o3.bias)
    got = p.triplet_messages(z, edge, graph, torch.ones(B, N, dtype=torch.bool))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_gate_starts_closed_and_messages_matter():
    p = make_processor("triplet_gmpnn", D)
    assert (p.g3.bias == -3).all()
    node, edge, graph, adj, hidden = inputs()
    out = p(node, edge, graph, adj, hidden)
    # gates near sigmoid(-3): the output stays close to the previous hidden state
    assert (out - hidden).abs().mean() < 0.3 * (hidden.abs().mean() + 1)
    q = make_processor("mpnn", D)
    full, empty = torch.ones(B, N, N, dtype=torch.bool), torch.eye(N, dtype=torch.bool).expand(B, N, N)
    assert not torch.allclose(q(node, edge, graph, full, hidden), q(node, edge, graph, empty, hidden))
    none = make_processor("none", D)
    torch.testing.assert_close(none(node, edge, graph, full, hidden), none(node, edge, graph, empty, hidden))
