"""The KSOM's neighbourhood update in its cheap form (a gather over grid neighbours for ``hard``, one exp and
one matmul for ``gaussian``, the step kept on the device) equals the definition h_t @ (counts, sums) with
h_t = ``neighbourhood_matrix``, on 1-D and 2-D grids, at several steps, and over a run of updates."""
import pytest
import torch

from metarl.layers.quantizers import EMAQuantizer, KohonenQuantizer

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["none", "hard", "gaussian"])
@pytest.mark.parametrize("num_codes,grid_dim", [(1, 1), (7, 1), (12, 2), (64, 2)])
def test_spread_equals_the_neighbourhood_matrix(kind, num_codes, grid_dim):
    q = KohonenQuantizer(num_codes, 5, kind, shrink=0.3, base=3.0, grid_dim=grid_dim)
    stats = torch.randn(num_codes, 6, generator=torch.Generator().manual_seed(num_codes))
    for step in (0, 1, 17, 400):
        q.step.fill_(step)
        torch.testing.assert_close(q.spread(stats), q.neighbourhood_weights() @ stats, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["hard", "gaussian"])
def test_updates_equal_the_dense_definition_step_for_step(kind):
    torch.manual_seed(0)
    fast = KohonenQuantizer(24, 3, kind, grid_dim=2, decay=0.9, initial_count=0.0)
    dense = KohonenQuantizer(24, 3, kind, grid_dim=2, decay=0.9, initial_count=0.0)
    dense.load_state_dict(fast.state_dict())

    def dense_writes(codes, flat):  # the update as written: h_t [K, K] times the winners' counts and sums
        h = dense.neighbourhood_weights()
        n, sums = EMAQuantizer.writes(dense, codes, flat)
        return h @ n, h @ sums

    dense.writes = dense_writes
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        x = torch.randn(50, 3, generator=g) * 2
        a, b = fast(x), dense(x)
        assert torch.equal(a.codes, b.codes)
        torch.testing.assert_close(fast.ema_count, dense.ema_count, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fast.weight, dense.weight, rtol=1e-4, atol=1e-5)
