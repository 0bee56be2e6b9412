"""The hand-written backward passes of the chunk modes: missing output gradients, and finite differences."""
import pytest
import torch

from metarl.ops import delta_rule, linear_attention
from metarl.testing import assert_close

from . import test_delta_rule, test_linear_attention

OPS = {  # name -> (op, input maker, number of sequence inputs before the initial state)
    "linear_attention": (linear_attention, test_linear_attention.make_inputs, 3),
    "delta_rule": (delta_rule, test_delta_rule.make_inputs, 4),
}


@pytest.mark.parametrize("used", ["output", "state"])
@pytest.mark.parametrize("name", OPS)
def test_gradients_when_one_result_is_unused(name, used):
    # the backward gets None for the unused result
    op, make_inputs, n = OPS[name]
    inputs = make_inputs(19, 5, 8, torch.float64)
    grads = {}
    for mode in ("recurrent", "chunk"):
        o, S = op(*inputs[:n], initial_state=inputs[n], mode=mode, chunk_size=4)
        loss = (o.sin() if used == "output" else S.sin()).sum()
        grads[mode] = torch.autograd.grad(loss, inputs, allow_unused=True)  # S does not depend on q
    for index, (ref, out) in enumerate(zip(grads["recurrent"], grads["chunk"])):
        assert_close(f"d input {index}", torch.zeros_like(out) if ref is None else ref, out, rtol=1e-10)


@pytest.mark.parametrize("name", OPS)
def test_gradcheck(name):
    # finite differences, independent of the recurrent oracle; several chunks and a padded last one
    op, make_inputs, _ = OPS[name]
    inputs = make_inputs(6, 3, 2, torch.float64)
    assert torch.autograd.gradcheck(lambda *x: op(*x, mode="chunk", chunk_size=4), tuple(inputs), eps=1e-6, atol=1e-7)
