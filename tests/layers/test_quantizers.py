"""Vector quantisers: the EMA update against the formula, KSOM with an empty neighbourhood against EMA-VQ,
the dead codes of EMA with N = 0 that KSOM keeps, and codebooks that move."""
import pytest
import torch
import torch.nn.functional as F

from metarl.layers.quantizers import (EMAQuantizer, KohonenQuantizer, VectorQuantizer, codebook_stats,
                                      grid_coordinates, grid_shape, make_quantizer, neighbourhood_matrix,
                                      topography_score)

torch.set_num_threads(1)


def mixture(n: int, generator: torch.Generator, clusters: int = 8, dim: int = 4) -> torch.Tensor:
    """n points of a fixed mixture of ``clusters`` Gaussians (std 0.5, centres ~ N(0, 9 I))."""
    centres = torch.randn(clusters, dim, generator=torch.Generator().manual_seed(0)) * 3
    return centres[torch.randint(0, clusters, (n,), generator=generator)] + 0.5 * torch.randn(n, dim, generator=generator)


def test_one_ema_update_equals_the_formula():
    torch.manual_seed(0)
    q = EMAQuantizer(6, 3, decay=0.9, epsilon=1e-3, initial_count=2.0)
    e0, m0, N0 = q.weight.clone(), q.ema_sum.clone(), q.ema_count.clone()
    x = torch.randn(5, 7, 3)
    out = q(x)
    flat = x.reshape(-1, 3)
    # by hand: nearest code, counts, running count, smoothing, running sum, new codebook
    codes = torch.tensor([min(range(6), key=lambda k: (v - e0[k]).pow(2).sum().item()) for v in flat])
    assert torch.equal(out.codes.reshape(-1), codes)
    n = torch.tensor([float((codes == k).sum()) for k in range(6)])
    s = torch.stack([flat[codes == k].sum(0) for k in range(6)])
    N = 0.9 * N0 + 0.1 * n
    N = (N + 1e-3) / (N.sum() + 6 * 1e-3) * N.sum()
    m = 0.9 * m0 + 0.1 * s
    torch.testing.assert_close(q.ema_count, N)
    torch.testing.assert_close(q.ema_sum, m)
    torch.testing.assert_close(q.weight, m / N[:, None])
    # the output is the code before the update, with the identity's gradient and the commitment loss only
    torch.testing.assert_close(out.quantized, e0[codes].view(5, 7, 3))
    torch.testing.assert_close(out.loss, 0.25 * (flat - e0[codes]).pow(2).mean())
    assert set(out.losses) == {"commitment"} and int(q.step) == 1


def test_ksom_with_empty_neighbourhood_equals_ema_step_for_step():
    torch.manual_seed(1)
    ema = EMAQuantizer(16, 4, decay=0.95, initial_count=0.0)
    som = KohonenQuantizer(16, 4, neighbourhood="none", decay=0.95, initial_count=0.0)
    som.load_state_dict(ema.state_dict())
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        x = mixture(64, g).view(8, 8, 4)
        a, b = ema(x), som(x)
        assert torch.equal(a.codes, b.codes)
        torch.testing.assert_close(a.quantized, b.quantized, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(som.weight, ema.weight, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(som.ema_count, ema.ema_count, rtol=1e-5, atol=1e-7)


def test_neighbourhoods_include_the_winner_and_shrink():
    coordinates = grid_coordinates(grid_shape(12, 2))
    assert grid_shape(12, 2) == (4, 3) and grid_shape(512, 2) == (32, 16)
    d = torch.cdist(coordinates, coordinates)
    hard0, hard9 = neighbourhood_matrix("hard", d, 0, 0.1), neighbourhood_matrix("hard", d, 90, 0.1)
    assert torch.equal(torch.diagonal(hard0), torch.ones(12)) and torch.equal(torch.diagonal(hard9), torch.ones(12))
    assert torch.equal(hard0 > 0, d < 1.5)  # the winner and its 8 surrounding codes (diagonals too, as the reference)
    torch.testing.assert_close(hard9[d == 1], torch.full_like(hard9[d == 1], 0.1))  # 1 / (1 + 90 · 0.1)
    gauss0, gauss9 = neighbourhood_matrix("gaussian", d, 0, 0.1), neighbourhood_matrix("gaussian", d, 90, 0.1)
    off = d > 0
    assert (gauss9[off] < gauss0[off]).all() and (gauss0[off] > 0).all()
    assert torch.equal(neighbourhood_matrix("none", d, 0, 0.1), torch.eye(12))


def test_ema_with_zero_initial_count_loses_codes_that_ksom_keeps():
    """The KSOM paper's robustness claim on a small problem: 32 codes, 8 Gaussian clusters, N = 0."""
    def used_after_training(make, seed: int) -> float:
        torch.manual_seed(seed)
        q, g = make(), torch.Generator().manual_seed(seed)
        for _ in range(200):
            q(mixture(256, g))
        q.eval()
        return q(mixture(4096, g)).stats["used_codes"]

    for seed in (0, 1):
        ema0 = used_after_training(lambda: EMAQuantizer(32, 4, initial_count=0.0), seed)
        ema1 = used_after_training(lambda: EMAQuantizer(32, 4, initial_count=1.0), seed)
        hard = used_after_training(lambda: KohonenQuantizer(32, 4, "hard", initial_count=0.0), seed)
        gauss = used_after_training(lambda: KohonenQuantizer(32, 4, "gaussian", initial_count=0.0), seed)
        assert ema0 <= 8, ema0  # at most about one code per cluster survives
        assert hard >= 24 and gauss >= 20, (hard, gauss)
        assert hard > ema1 and gauss > ema1, (hard, gauss, ema1)


@pytest.mark.parametrize("kind,options", [("vq", {}), ("ema", {"initial_count": 1.0}),
                                          ("ksom", {"neighbourhood": "hard"}), ("ksom", {"neighbourhood": "gaussian"})])
def test_codes_move_during_training(kind, options):
    """Training moves the codebook toward the data: the quantisation error falls several-fold (a refactor
    of the reference once froze the codebook)."""
    torch.manual_seed(0)
    q = make_quantizer(kind, 16, 4, **options)
    start = q.codebook.detach().clone()
    g = torch.Generator().manual_seed(3)
    test = mixture(2048, g)
    q.eval()
    before = F.mse_loss(q(test).quantized, test).item()
    q.train()
    optimizer = torch.optim.Adam(q.parameters(), lr=0.05) if kind == "vq" else None
    for _ in range(150):
        out = q(mixture(256, g))
        if optimizer is not None:
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    q.eval()
    after = F.mse_loss(q(test).quantized, test).item()
    moved = (q.codebook.detach() - start).norm(dim=1)
    assert after < before / 3, (before, after)
    assert (moved > 1e-3).sum() >= 8, moved  # at least half of the codes moved


def test_straight_through_gradient_and_vq_losses():
    torch.manual_seed(0)
    q = VectorQuantizer(8, 3, commitment_cost=0.5)
    x = torch.randn(10, 3, requires_grad=True)
    out = q(x)
    (out.quantized * torch.arange(3.0)).sum().backward(retain_graph=True)
    torch.testing.assert_close(x.grad, torch.arange(3.0).expand(10, 3))  # identity gradient
    e = q.weight[out.codes].detach()
    torch.testing.assert_close(out.losses["codebook"], (x.detach() - e).pow(2).mean())
    torch.testing.assert_close(out.losses["commitment"], 0.5 * (x.detach() - e).pow(2).mean())
    x.grad = None
    out.loss.backward()
    assert q.weight.grad is not None and q.weight.grad.abs().sum() > 0


def test_statistics():
    assert codebook_stats(torch.tensor([5, 5, 5, 5]))["perplexity"] == pytest.approx(4.0, rel=1e-5)
    stats = codebook_stats(torch.tensor([3, 0, 1, 0]))
    assert stats["dead_codes"] == 2 and stats["used_codes"] == 2
    coordinates = grid_coordinates((20,))
    line = torch.stack([torch.linspace(0, 10, 20), torch.zeros(20)], 1)  # codes in grid order: topographic
    assert topography_score(line, coordinates) < 0.2
    shuffled = line[torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    assert 0.6 < topography_score(shuffled, coordinates) < 1.4


def test_one_ksom_update_spreads_writes_over_grid_neighbours():
    """The KSOM update written per input: code k receives h_t(k, c_i) x_i from every input i."""
    torch.manual_seed(2)
    q = KohonenQuantizer(9, 2, neighbourhood="gaussian", grid_dim=2, decay=0.8, initial_count=0.5, shrink=0.5, base=2.0)
    for _ in range(3):  # a few updates first, so that the neighbourhood has shrunk (t = 3)
        q(torch.randn(16, 2))
    e0, m0, N0 = q.weight.clone(), q.ema_sum.clone(), q.ema_count.clone()
    coordinates = grid_coordinates((3, 3))
    x = torch.randn(40, 2)
    codes = q(x).codes
    n, s = torch.zeros(9), torch.zeros(9, 2)
    for i in range(40):
        for k in range(9):
            d = (coordinates[k] - coordinates[codes[i]]).norm()
            h = 1.0 if k == codes[i] else torch.exp(-d * (1 + 3 * 0.5) / 2.0)
            n[k] += h
            s[k] += h * x[i]
    N = 0.8 * N0 + 0.2 * n
    N = (N + 1e-5) / (N.sum() + 9e-5) * N.sum()
    torch.testing.assert_close(q.ema_count, N)
    torch.testing.assert_close(q.weight, (0.8 * m0 + 0.2 * s) / N[:, None])
    assert torch.equal(codes, torch.cdist(x, e0).argmin(1))
