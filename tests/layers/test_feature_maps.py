"""Feature maps against their definitions written out entry by entry."""
import pytest
import torch

from metarl.layers.feature_maps import dpfp, elu_p1, sum_norm


def dpfp_by_entries(x: torch.Tensor, nu: int) -> torch.Tensor:
    """DPFP of one vector, entry by entry: x' = [relu(x), relu(-x)]; out[(j-1)·2d + i] = x'[i]·x'[(i - j) mod 2d]."""
    d2 = 2 * x.numel()
    xp = [max(float(v), 0.0) for v in x] + [max(-float(v), 0.0) for v in x]
    out = []
    for j in range(1, nu + 1):
        for i in range(d2):
            out.append(xp[i] * xp[(i - j) % d2])
    return torch.tensor(out, dtype=x.dtype)


@pytest.mark.parametrize("nu", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 3, 5])
def test_dpfp_matches_the_formula(nu, d):
    torch.manual_seed(nu * 10 + d)
    x = torch.randn(4, 2, d, dtype=torch.float64)
    y = dpfp(x, nu)
    assert y.shape == (4, 2, 2 * d * nu)
    for v, out in zip(x.reshape(-1, d), y.reshape(-1, 2 * d * nu)):
        torch.testing.assert_close(out, dpfp_by_entries(v, nu), rtol=0, atol=1e-12)


def test_dpfp_nu2_by_hand():
    """x = [1, -2]: x' = [1, 0, 0, 2]; roll 1 = [2, 1, 0, 0], roll 2 = [0, 2, 1, 0]."""
    y = dpfp(torch.tensor([1.0, -2.0]), nu=2)
    assert y.tolist() == [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    y = dpfp(torch.tensor([1.0, -2.0, 3.0]), nu=2)
    # x' = [1, 0, 3, 0, 2, 0]; roll 1 = [0, 1, 0, 3, 0, 2]; roll 2 = [2, 0, 1, 0, 3, 0]
    assert y.tolist() == [0, 0, 0, 0, 0, 0] + [2, 0, 3, 0, 6, 0]


def test_dpfp_rejects_nu_0():
    with pytest.raises(ValueError, match="nu"):
        dpfp(torch.ones(3), 0)


def test_elu_p1_and_sum_norm():
    x = torch.tensor([-1.0, 0.0, 2.0])
    torch.testing.assert_close(elu_p1(x), torch.tensor([torch.exp(torch.tensor(-1.0)).item(), 1.0, 3.0]))
    s = sum_norm(elu_p1(x))
    torch.testing.assert_close(s.sum(), torch.tensor(1.0), atol=1e-4, rtol=0)
