"""The batched NTM step against a per-head, per-sequence reference written from the paper's
formulas (Graves et al. 2014, eq. 2-9), forward and gradients, in float64.

The reference is differentiable torch code with one Python loop per sequence and per head and
no batched tricks (no rolls, no fused products), so autograd of the reference gives the
gradients that the optimised step must reproduce.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from graphmem.memory import NTM, NTMCell, NTMState
from graphmem.memory.heads import Head

DT = torch.float64
SIZES = dict(memory_size=7, memory_width=4, controller_size=6, shift_range=1)
#: the key of every parameter of an NTM checkpoint (LSTM controller, learned memory, heads)
CHECKPOINT_KEYS = [
    "cell.initial_reads", "cell.initial_read_logits", "cell.initial_write_logits", "cell.initial_memory",
    "cell.controller.cells.0.weight_ih", "cell.controller.cells.0.weight_hh",
    "cell.controller.cells.0.bias_ih", "cell.controller.cells.0.bias_hh",
    "cell.read_heads.linear.weight", "cell.read_heads.linear.bias",
    "cell.write_heads.linear.weight", "cell.write_heads.linear.bias",
    "cell.output.weight", "cell.output.bias",
]


def ref_head_parameters(heads: Head, hidden_b: torch.Tensor, h: int) -> dict[str, torch.Tensor]:
    """Head ``h``'s parameters for one sequence: its slice of the linear layer, then the
    activations of section 3.3.1 (key, beta > 0, g in (0, 1), softmax shift, gamma >= 1,
    erase in (0, 1), add)."""
    m, s = heads.memory_width, 2 * heads.shift_range + 1
    per_head = heads.linear.out_features // heads.num_heads
    raw = heads.linear(hidden_b)[h * per_head:(h + 1) * per_head]
    out = dict(key=raw[:m], beta=F.softplus(raw[m]), gate=torch.sigmoid(raw[m + 1]),
               shift=torch.softmax(raw[m + 2:m + 2 + s], 0), gamma=1 + F.softplus(raw[m + 2 + s]))
    if heads.is_write:
        out.update(erase=torch.sigmoid(raw[m + 3 + s:2 * m + 3 + s]), add=torch.tanh(raw[2 * m + 3 + s:]))
    return out


def ref_address(memory: torch.Tensor, previous: torch.Tensor, key: torch.Tensor, beta: torch.Tensor,
                gate: torch.Tensor, shift: torch.Tensor, gamma: torch.Tensor, **_) -> torch.Tensor:
    """One head, one sequence: memory ``(N, M)``, previous ``(N,)`` -> weighting ``(N,)``."""
    n, r = memory.size(0), (shift.size(0) - 1) // 2
    cosine = torch.stack([key @ row / (key.norm() * row.norm()) for row in memory])  # eq. 6
    content = torch.softmax(beta * cosine, 0)  # eq. 5
    gated = gate * content + (1 - gate) * previous  # eq. 7
    # eq. 8: w~(i) = sum_j w(j) s(i - j), with s over the offsets -R..R taken modulo N
    shifted = torch.stack([sum(gated[j] * shift[o + r] for j in range(n) for o in range(-r, r + 1)
                               if (i - j - o) % n == 0) for i in range(n)])
    sharpened = shifted ** gamma  # eq. 9
    return sharpened / sharpened.sum()


def ref_step(cell: NTMCell, x: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
    """One NTM step, sequence by sequence and head by head: write (eq. 3-4), then read (eq. 2)."""
    hidden, controller_state = cell.controller(torch.cat([x, state.reads.flatten(1)], -1), state.controller)
    memories, reads, read_weights, write_weights, ys = [], [], [], [], []
    for b in range(x.size(0)):
        memory, writes = state.memory[b], []
        if cell.write_heads is not None:
            keep, added = torch.ones_like(memory), torch.zeros_like(memory)
            for h in range(cell.write_heads.num_heads):
                p = ref_head_parameters(cell.write_heads, hidden[b], h)
                w = ref_address(state.memory[b], state.write_weights[b, h], **p)
                keep = keep * (1 - torch.outer(w, p["erase"]))
                added = added + torch.outer(w, p["add"])
                writes.append(w)
            memory = memory * keep + added
        rs, ws = [], []
        for h in range(cell.read_heads.num_heads):
            w = ref_address(memory, state.read_weights[b, h], **ref_head_parameters(cell.read_heads, hidden[b], h))
            ws.append(w)
            rs.append(w @ memory)
        ys.append(cell.output(torch.cat([hidden[b], *rs])))
        memories.append(memory)
        reads.append(torch.stack(rs))
        read_weights.append(torch.stack(ws))
        write_weights.append(torch.stack(writes) if writes else state.write_weights[b])
    new = NTMState(controller_state, torch.stack(memories), torch.stack(reads), torch.stack(read_weights),
                   torch.stack(write_weights))
    return torch.stack(ys), new


def _random_state(cell: NTMCell, batch: int, generator: torch.Generator) -> NTMState:
    """A state from the middle of a sequence: random memory, weightings and controller state."""
    fresh = cell.initial_state(batch)
    return NTMState(
        controller=tuple(torch.randn(t.shape, generator=generator, dtype=DT) for t in fresh.controller),
        memory=torch.randn(fresh.memory.shape, generator=generator, dtype=DT),
        reads=torch.randn(fresh.reads.shape, generator=generator, dtype=DT),
        read_weights=torch.softmax(torch.randn(fresh.read_weights.shape, generator=generator, dtype=DT), -1),
        write_weights=torch.softmax(torch.randn(fresh.write_weights.shape, generator=generator, dtype=DT), -1),
    )


def _cell(controller: str, read_heads: int, write_heads: int, **sizes) -> NTMCell:
    torch.manual_seed(0)
    cell = NTMCell(3, 2, controller=controller, read_heads=read_heads, write_heads=write_heads, clip=None,
                   **(sizes or SIZES)).to(DT)
    with torch.no_grad():  # larger than the default init, so that heads differ and weightings are peaked
        for p in cell.parameters():
            p.mul_(3)
    return cell


def _leaves(state: NTMState) -> list[torch.Tensor]:
    return [*state.controller, state.memory, state.reads, state.read_weights, state.write_weights]


@pytest.mark.parametrize("controller, read_heads, write_heads",
                         [("lstm", 1, 1), ("feedforward", 3, 2), ("lstm", 2, 0), ("feedforward", 1, 3)])
def test_step_matches_per_head_reference_with_gradients(controller, read_heads, write_heads):
    cell = _cell(controller, read_heads, write_heads)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, generator=generator, dtype=DT, requires_grad=True)
    state = _random_state(cell, 3, generator)
    for leaf in _leaves(state):
        leaf.requires_grad_(True)
    inputs = [x, *_leaves(state), *cell.parameters()]

    results = []
    for step in (cell, lambda x, s: ref_step(cell, x, s)):
        y, new = step(x, state)
        outputs = [y, *_leaves(new)]
        # a random linear functional of every output, the same for both
        coefficients = torch.Generator().manual_seed(2)
        loss = sum((out * torch.randn(out.shape, generator=coefficients, dtype=DT)).sum() for out in outputs)
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        results.append(([o.detach() for o in outputs], grads))
    (outs, grads), (ref_outs, ref_grads) = results
    for out, ref in zip(outs, ref_outs):
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    for grad, ref in zip(grads, ref_grads):
        if ref is None:  # the write weightings without write heads: carried, not used
            continue
        torch.testing.assert_close(grad, ref, rtol=1e-8, atol=1e-10)


def test_ntm_sequence_matches_reference_steps_with_gradients():
    """NTM (output layer applied once to all steps) against reference steps, three steps long."""
    torch.manual_seed(0)
    model = NTM(3, 2, read_heads=2, write_heads=2, **SIZES).to(DT)
    x = torch.randn(3, 2, 3, dtype=DT)
    y = model(x)[0]
    state, ys = model.cell.initial_state(2), []
    for x_t in x:
        y_t, state = ref_step(model.cell, x_t, state)
        ys.append(y_t)
    ref = torch.stack(ys)
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-10)
    weight = torch.randn_like(y)
    grads = torch.autograd.grad((y * weight).sum(), list(model.parameters()))
    ref_grads = torch.autograd.grad((ref * weight).sum(), list(model.parameters()))
    for name, grad, ref_grad in zip(dict(model.named_parameters()), grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("controller", ["lstm", "feedforward"])
def test_step_gradcheck(controller):
    """Finite differences of a tiny cell's step, with respect to its input and every state tensor."""
    cell = _cell(controller, 2, 2, memory_size=4, memory_width=3, controller_size=4, shift_range=1)
    generator = torch.Generator().manual_seed(3)
    state = _random_state(cell, 2, generator)
    x = torch.randn(2, 3, generator=generator, dtype=DT)
    leaves = [x, *_leaves(state)]
    n_controller = len(state.controller)

    def step(x, *leaves):
        controller, rest = tuple(leaves[:n_controller]), leaves[n_controller:]
        y, new = cell(x, NTMState(controller, *rest))
        return (y, *_leaves(new))

    assert torch.autograd.gradcheck(step, [t.requires_grad_(True) for t in leaves])


def test_compiled_ntm_pickles_and_keeps_its_keys():
    """Compiling the step changes neither the parameter names nor whether the model pickles."""
    compiled = NTM(3, 2, memory_init="learned", compile_step=True, **SIZES)
    assert sorted(compiled.state_dict()) == sorted(CHECKPOINT_KEYS)
    restored = pickle.loads(pickle.dumps(compiled))
    assert restored.compile_step
    for p, q in zip(compiled.parameters(), restored.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_keys_unchanged():
    """The optimised step keeps the parameters of the separate layers: old checkpoints load."""
    model = NTM(3, 2, memory_init="learned", **SIZES)
    assert sorted(model.state_dict()) == sorted(CHECKPOINT_KEYS)
    fresh = NTM(3, 2, memory_init="learned", **SIZES)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(fresh(x)[0], model(x)[0])
