"""V-trace against a slow version written like the IMPALA paper's definition, and the IMPALA losses."""
import math

import pytest
import torch

from metarl.rl import (
    baseline_loss,
    clip_rewards,
    entropy_loss,
    from_importance_weights,
    from_logits,
    policy_gradient_loss,
)
from metarl.testing import assert_close

B = 3
CLIPS = [(1.0, 1.0), (None, None), (0.7, 2.0)]  # (clip_rho_threshold, clip_pg_rho_threshold)


def make_inputs(T, dtype=torch.float64, seed=0):
    """Random [B, T] inputs; about one discount in four is zero (an episode ended at that step)."""
    g = torch.Generator().manual_seed(seed)
    log_rhos = 0.8 * torch.randn(B, T, generator=g, dtype=dtype)
    discounts = 0.9 * (torch.rand(B, T, generator=g, dtype=dtype) > 0.25).to(dtype)
    rewards = torch.randn(B, T, generator=g, dtype=dtype)
    values = torch.randn(B, T, generator=g, dtype=dtype)
    bootstrap_value = torch.randn(B, generator=g, dtype=dtype)
    return dict(
        log_rhos=log_rhos,
        discounts=discounts,
        rewards=rewards,
        values=values,
        bootstrap_value=bootstrap_value,
    )


def slow_vtrace(
    log_rhos, discounts, rewards, values, bootstrap_value, clip_rho_threshold, clip_pg_rho_threshold
):
    """IMPALA eq. (1) as an explicit sum, per sequence, in Python floats.

    v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i c_i) delta_t,
    delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)), V(x_T) = bootstrap value.
    """
    nb, T = log_rhos.shape
    vs = torch.zeros(nb, T, dtype=torch.float64)
    adv = torch.zeros(nb, T, dtype=torch.float64)
    for b in range(nb):
        lr, g, r = log_rhos[b].tolist(), discounts[b].tolist(), rewards[b].tolist()
        V = values[b].tolist() + [bootstrap_value[b].item()]
        def clipped(x, threshold):
            return math.exp(x) if threshold is None else min(threshold, math.exp(x))

        rho = [clipped(x, clip_rho_threshold) for x in lr]
        rho_pg = [clipped(x, clip_pg_rho_threshold) for x in lr]
        c = [clipped(x, 1.0) for x in lr]
        delta = [rho[t] * (r[t] + g[t] * V[t + 1] - V[t]) for t in range(T)]
        v = []
        for s in range(T):
            total = V[s]
            for t in range(s, T):
                weight = 1.0
                for i in range(s, t):
                    weight *= g[i] * c[i]
                total += weight * delta[t]
            v.append(total)
        v.append(V[T])  # v_T = V(x_T)
        for s in range(T):
            vs[b, s] = v[s]
            adv[b, s] = rho_pg[s] * (r[s] + g[s] * v[s + 1] - V[s])
    return vs, adv


def n_step_returns(discounts, rewards, bootstrap_value):
    """sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i) r_t + (prod_{i=s}^{T-1} gamma_i) bootstrap, per (b, s)."""
    nb, T = rewards.shape
    out = torch.zeros(nb, T, dtype=torch.float64)
    for b in range(nb):
        for s in range(T):
            total, weight = 0.0, 1.0
            for t in range(s, T):
                total += weight * rewards[b, t].item()
                weight *= discounts[b, t].item()
            out[b, s] = total + weight * bootstrap_value[b].item()
    return out


# --------------------------------------------------------------------------------------------------
# V-trace
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: f"rho{c[0]}-pg{c[1]}")
@pytest.mark.parametrize("T", [1, 5, 17])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_from_importance_weights_matches_paper_definition(T, clip, dtype):
    inputs = make_inputs(T, dtype=dtype, seed=T)
    assert (inputs["discounts"] == 0).any() or T == 1  # some episode ends inside the unroll
    assert (inputs["log_rhos"] > 0).any()  # some weights are above 1 so clipping matters
    ref_vs, ref_adv = slow_vtrace(**inputs, clip_rho_threshold=clip[0], clip_pg_rho_threshold=clip[1])
    out = from_importance_weights(**inputs, clip_rho_threshold=clip[0], clip_pg_rho_threshold=clip[1])
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    assert out.vs.dtype == dtype and out.pg_advantages.dtype == dtype
    assert_close("vs", ref_vs, out.vs, rtol=rtol)
    assert_close("pg_advantages", ref_adv, out.pg_advantages, rtol=rtol)


def test_clipping_changes_the_result():
    inputs = make_inputs(17, seed=1)
    clipped = from_importance_weights(**inputs)
    unclipped = from_importance_weights(**inputs, clip_rho_threshold=None, clip_pg_rho_threshold=None)
    assert not torch.allclose(clipped.vs, unclipped.vs)
    assert not torch.allclose(clipped.pg_advantages, unclipped.pg_advantages)


@pytest.mark.parametrize("T", [1, 5, 17])
def test_on_policy_vs_are_n_step_returns(T):
    inputs = make_inputs(T, seed=10 + T)
    inputs["log_rhos"] = torch.zeros(B, T, dtype=torch.float64)  # pi = mu: rho = c = 1
    ref = n_step_returns(inputs["discounts"], inputs["rewards"], inputs["bootstrap_value"])
    out = from_importance_weights(**inputs)
    assert_close("vs", ref, out.vs, rtol=1e-12)
    # on-policy advantages are the one-step TD errors towards the next V-trace target
    v_next = torch.cat([ref[:, 1:], inputs["bootstrap_value"][:, None]], dim=1)
    ref_adv = inputs["rewards"] + inputs["discounts"] * v_next - inputs["values"]
    assert_close("pg_advantages", ref_adv, out.pg_advantages, rtol=1e-12)


def test_episode_end_cuts_the_trace():
    # one sequence, T=3, episode ends at step 1: v_0 and v_1 must not depend on steps 2.. or the bootstrap
    inputs = make_inputs(3, seed=3)
    inputs["discounts"][:] = 0.9
    inputs["discounts"][:, 1] = 0.0
    a = from_importance_weights(**inputs)
    inputs["rewards"][:, 2] += 5.0
    inputs["values"][:, 2] -= 3.0
    inputs["bootstrap_value"] += 7.0
    b = from_importance_weights(**inputs)
    assert torch.equal(a.vs[:, :2], b.vs[:, :2])
    assert torch.equal(a.pg_advantages[:, :2], b.pg_advantages[:, :2])
    assert not torch.allclose(a.vs[:, 2], b.vs[:, 2])


def test_no_gradient_flows():
    inputs = {k: v.clone().requires_grad_() for k, v in make_inputs(5).items()}
    out = from_importance_weights(**inputs)
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad
    assert out.vs.grad_fn is None and out.pg_advantages.grad_fn is None


def test_from_logits():
    T, A = 5, 4
    g = torch.Generator().manual_seed(7)
    behaviour_logits = torch.randn(B, T, A, generator=g, dtype=torch.float64)
    target_logits = torch.randn(B, T, A, generator=g, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(A, (B, T), generator=g)
    inputs = make_inputs(T, seed=8)
    del inputs["log_rhos"]
    out = from_logits(behaviour_logits, target_logits, actions, **inputs)

    def log_prob(logits, b, t):
        row = logits[b, t].tolist()
        return row[actions[b, t]] - math.log(sum(math.exp(x) for x in row))

    def table(logits):
        rows = [[log_prob(logits, b, t) for t in range(T)] for b in range(B)]
        return torch.tensor(rows, dtype=torch.float64)

    ref_mu, ref_pi = table(behaviour_logits), table(target_logits)
    assert_close("behaviour_action_log_probs", ref_mu, out.behaviour_action_log_probs, rtol=1e-12)
    assert_close("target_action_log_probs", ref_pi, out.target_action_log_probs, rtol=1e-12)
    assert_close("log_rhos", ref_pi - ref_mu, out.log_rhos, rtol=1e-12)
    ref = from_importance_weights(ref_pi - ref_mu, **inputs)
    assert_close("vs", ref.vs, out.vs, rtol=1e-12)
    assert_close("pg_advantages", ref.pg_advantages, out.pg_advantages, rtol=1e-12)
    # the targets are constants; the log-probabilities keep the graph of the target logits
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad
    assert out.target_action_log_probs.requires_grad


def test_shape_errors_are_clear():
    inputs = make_inputs(5)
    with pytest.raises(ValueError, match="rewards must be"):
        from_importance_weights(**{**inputs, "rewards": inputs["rewards"][:, :4]})
    with pytest.raises(ValueError, match="bootstrap_value must be"):
        from_importance_weights(**{**inputs, "bootstrap_value": inputs["values"]})
    with pytest.raises(ValueError, match="log_rhos must be"):
        from_importance_weights(**{**inputs, "log_rhos": inputs["log_rhos"][..., None]})
    with pytest.raises(ValueError, match="clip_rho_threshold"):
        from_importance_weights(**inputs, clip_rho_threshold=0.0)
    del inputs["log_rhos"]
    logits = torch.zeros(B, 5, 2)
    with pytest.raises(ValueError, match="actions must be"):
        from_logits(logits, logits, torch.zeros(B, 4, dtype=torch.long), **inputs)
    with pytest.raises(ValueError, match="integer"):
        from_logits(logits, logits, torch.zeros(B, 5), **inputs)
    with pytest.raises(ValueError, match="same"):
        from_logits(logits, torch.zeros(B, 5, 3), torch.zeros(B, 5, dtype=torch.long), **inputs)


# --------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------
def test_policy_gradient_loss_small_example():
    # step 0: uniform over 2 actions, a=0 -> CE = log 2, advantage 3
    # step 1: p = (3/4, 1/4), a=1 -> CE = log 4, advantage 1      => sum = 3 log 2 + 2 log 2 = 5 log 2
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]], dtype=torch.float64)
    actions = torch.tensor([[0, 1]])
    advantages = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    assert policy_gradient_loss(logits, actions, advantages).item() == pytest.approx(5 * math.log(2))
    assert policy_gradient_loss(logits, actions, advantages, reduction="mean").item() == pytest.approx(
        2.5 * math.log(2)
    )
    with pytest.raises(ValueError, match="reduction"):
        policy_gradient_loss(logits, actions, advantages, reduction="max")
    with pytest.raises(ValueError, match="must be \\[B, T\\]"):
        policy_gradient_loss(logits, actions, advantages[:, :1])


def test_policy_gradient_loss_gradients_flow_only_into_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(4, (B, 5), generator=g)
    advantages = torch.randn(B, 5, generator=g, dtype=torch.float64, requires_grad=True)
    policy_gradient_loss(logits, actions, advantages).backward()
    assert advantages.grad is None
    # d CE / d logits = softmax - onehot, scaled by the advantage
    expected = (logits.softmax(-1) - torch.nn.functional.one_hot(actions, 4)) * advantages[..., None]
    assert_close("d loss / d logits", expected.detach(), logits.grad, rtol=1e-12)


def test_baseline_loss_small_example():
    advantages = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    assert baseline_loss(advantages).item() == pytest.approx(0.5 * (1 + 4 + 0.25))
    assert baseline_loss(advantages, reduction="mean").item() == pytest.approx(0.5 * 5.25 / 4)
    values = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    baseline_loss(advantages - values).backward()
    assert torch.equal(values.grad, -advantages)  # d/dV of 0.5 (vs - V)^2 = -(vs - V)


def test_entropy_loss():
    logits = torch.tensor([[[math.log(3.0), 0.0]]], dtype=torch.float64)  # p = (3/4, 1/4)
    expected = 0.75 * math.log(0.75) + 0.25 * math.log(0.25)
    assert entropy_loss(logits).item() == pytest.approx(expected)
    T, A = 5, 7
    uniform = torch.full((B, T, A), 2.5)
    assert entropy_loss(uniform).item() == pytest.approx(-T * B * math.log(A), rel=1e-6)
    assert entropy_loss(uniform, reduction="mean").item() == pytest.approx(-math.log(A), rel=1e-6)
    # minimising the negative entropy moves a peaked policy towards uniform
    peaked = torch.tensor([[[2.0, 0.0, -1.0]]], requires_grad=True)
    entropy_loss(peaked).backward()
    assert peaked.grad[0, 0, 0] > 0 and peaked.grad[0, 0, 2] < 0


def test_clip_rewards():
    r = torch.tensor([-3.0, -1.0, -0.2, 0.0, 0.7, 1.0, 12.0])
    assert torch.equal(clip_rewards(r), torch.tensor([-1.0, -1.0, -0.2, 0.0, 0.7, 1.0, 1.0]))
