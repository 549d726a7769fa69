"""``NTM(fused=True)`` (the C++ sequence kernel with its hand-written backward through time)
against the Python step (itself checked against the paper's formulas in test_ntm_reference.py):
outputs, weightings, final state and the gradients of every parameter and of the input, in
float64, over controllers, depths, head counts, memory inits and clipping."""

from __future__ import annotations

import copy

import pytest
import torch

from graphmem.errors import GraphmemError
from graphmem.memory import NTM

DT = torch.float64

CASES = [
    dict(controller="lstm", controller_layers=1, read_heads=1, write_heads=1, memory_init="constant"),
    dict(controller="lstm", controller_layers=2, read_heads=2, write_heads=3, memory_init="learned", clip=0.3),
    dict(controller="feedforward", controller_layers=2, read_heads=3, write_heads=2, memory_init="learned"),
    dict(controller="feedforward", controller_layers=1, read_heads=4, write_heads=4, memory_init="constant",
         shift_range=2, clip=None),
]


def pair(**options) -> tuple[NTM, NTM]:
    torch.manual_seed(0)
    options = dict(dict(memory_size=7, memory_width=5, controller_size=6), **options)
    eager = NTM(4, 3, **options).to(DT)
    fused = copy.deepcopy(eager)
    fused.fused = True
    return eager, fused


def loss_of(output: torch.Tensor, state, history) -> torch.Tensor:
    """Touches every output, with weights that differ per entry, so a swapped or missing gradient shows."""
    rows = torch.arange(state.memory.size(1), dtype=DT)
    loss = (output ** 2).sum() + (state.memory * state.memory.sum(-1, keepdim=True)).sum() + state.reads.pow(2).sum()
    loss = loss + (state.read_weights * rows).sum() + (state.write_weights * rows).sum()
    return loss + sum((s ** 2).sum() for s in state.controller)


@pytest.mark.parametrize("options", CASES, ids=lambda o: f"{o['controller']}{o['controller_layers']}-"
                         f"r{o['read_heads']}w{o['write_heads']}")
def test_fused_matches_the_step_forward_and_backward(options):
    eager, fused = pair(**options)
    x = torch.randn(6, 3, 4, dtype=DT)
    x_eager, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_e, state_e, hist_e = eager(x_eager, return_history=True)
    out_f, state_f, hist_f = fused(x_fused, return_history=True)
    assert hist_e.read_weights.requires_grad and not hist_f.read_weights.requires_grad  # the kernel ran
    torch.testing.assert_close(out_f, out_e, rtol=0, atol=1e-12)
    for a, b in zip(hist_f, hist_e):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for a, b in zip(torch.utils._pytree.tree_leaves(state_f), torch.utils._pytree.tree_leaves(state_e)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    loss_of(out_e, state_e, hist_e).backward()
    loss_of(out_f, state_f, hist_f).backward()
    torch.testing.assert_close(x_fused.grad, x_eager.grad, rtol=1e-9, atol=1e-11)
    checked = 0
    for (name, p_e), p_f in zip(eager.named_parameters(), fused.parameters()):
        if p_e.grad is None:
            assert p_f.grad is None, name
            continue
        torch.testing.assert_close(p_f.grad, p_e.grad, rtol=1e-9, atol=1e-11, msg=name)
        assert p_e.grad.abs().sum() > 0, name
        checked += 1
    assert checked >= 9


def test_fused_continues_from_a_state_and_keeps_batch_first():
    """Two calls chained through the state equal one call over both halves, batch first."""
    eager, fused = pair(controller="lstm", read_heads=2, write_heads=1, memory_init="random")
    eager.batch_first = fused.batch_first = True
    x = torch.randn(3, 8, 4, dtype=DT)
    torch.manual_seed(1)
    whole, _ = eager(x)
    torch.manual_seed(1)
    first, state = fused(x[:, :5])
    second, _ = fused(x[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=1e-12)


def test_fused_float32_and_gradcheck():
    """float32 runs the kernel's own exp (a polynomial that vectorises): outputs and gradients stay
    within float32 rounding of the Python step over a longer sequence."""
    eager, fused = pair(controller="lstm", read_heads=1, write_heads=2, memory_size=32, memory_width=8)
    eager, fused = eager.float(), fused.float()
    x = torch.randn(30, 4, 4)
    out_e, out_f = eager(x)[0], fused(x)[0]
    torch.testing.assert_close(out_f, out_e, rtol=1e-4, atol=1e-5)
    (out_e ** 2).sum().backward()
    (out_f ** 2).sum().backward()
    for (name, p_e), p_f in zip(eager.named_parameters(), fused.parameters()):
        scale = p_e.grad.abs().max().item()
        torch.testing.assert_close(p_f.grad, p_e.grad, rtol=1e-3, atol=1e-4 * max(scale, 1e-3), msg=name)
    _, fused = pair(controller="lstm", read_heads=1, write_heads=2)
    x = torch.randn(3, 2, 4, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: fused(v)[0], (x,))


def test_fused_refuses_what_it_does_not_implement():
    with pytest.raises(GraphmemError, match="score 'dot'"):
        NTM(4, 3, memory_size=7, memory_width=5, controller_size=6, score="dot", fused=True)
    with pytest.raises(GraphmemError, match="clip 0"):
        NTM(4, 3, memory_size=7, memory_width=5, controller_size=6, clip=0, fused=True)
    with pytest.raises(GraphmemError, match="write head"):
        NTM(4, 3, memory_size=7, memory_width=5, controller_size=6, write_heads=0, fused=True)


def test_a_failed_build_says_what_it_needs(monkeypatch):
    from torch.utils import cpp_extension

    from graphmem.memory import fused

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension\n" + "compiler output\n" * 50 + "c++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    fused.extension.cache_clear()
    try:
        with pytest.raises(GraphmemError, match="needs a C\\+\\+ compiler") as caught:
            fused.extension()
        assert "command not found" in str(caught.value) and str(caught.value).count("compiler output") <= 12
    finally:
        fused.extension.cache_clear()
