"""The D-NTM's parts of NTMCell (Gulcehre et al. 2018): learned address vectors and
least-recently-used writing, against their equations written out by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from graphmem.errors import GraphmemError
from graphmem.memory import NTM, NTMCell

DT = torch.float64
N, M, A, C = 5, 3, 2, 6  # rows, content width, address width, controller width


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _cell(memory_init: str = "random", **options) -> NTMCell:
    torch.set_default_dtype(DT)
    try:
        return NTMCell(3, 2, memory_size=N, memory_width=M, controller="feedforward", controller_size=C,
                       read_heads=2, write_heads=1, shift_range=1, memory_init=memory_init, clip=None, **options)
    finally:
        torch.set_default_dtype(torch.float32)


def _address_by_hand(rows, previous, key, beta, gate, shift, gamma, penalty=None):
    """Graves et al. eq. 5-9 per batch element and head, with a logit penalty on the content step."""
    out = torch.empty_like(previous)
    for b in range(rows.size(0)):
        for h in range(previous.size(1)):
            cos = torch.stack([F.cosine_similarity(key[b, h], rows[b, i], dim=0) for i in range(N)])
            logits = beta[b, h] * cos - (0 if penalty is None else penalty[b, h])
            wg = gate[b, h] * logits.softmax(0) + (1 - gate[b, h]) * previous[b, h]
            shifted = torch.zeros_like(wg)
            for j in range(N):
                for offset in (-1, 0, 1):  # weight on row j moves to row j + offset
                    shifted[(j + offset) % N] += wg[j] * shift[b, h][offset + 1]
            p = shifted ** gamma[b, h]
            out[b, h] = p / p.sum()
    return out


def _head_parameters(head, hidden, key_width, lru):
    raw = head.linear(hidden).view(hidden.size(0), head.num_heads, -1)
    key, rest = raw[..., :key_width], raw[..., key_width:]
    out = dict(key=key, beta=F.softplus(rest[..., 0]), gate=rest[..., 1].sigmoid(),
               shift=rest[..., 2:5].softmax(-1), gamma=1 + F.softplus(rest[..., 5]))
    rest = rest[..., 6:]
    if lru:
        out.update(strength=F.softplus(rest[..., 0]), discount=rest[..., 1].sigmoid())
        rest = rest[..., 2:]
    if head.is_write:
        out.update(erase=rest[..., :M].sigmoid(), add=rest[..., M:].tanh())
    return out


@pytest.mark.parametrize("address_size,lru", [(A, False), (0, True), (A, True)])
def test_two_steps_by_hand(address_size, lru):
    """Two steps (the second sees a non-zero usage): rows [a_i, M(i)] are addressed and read,
    only M is written, and the write logits lose pi * u_{t-1}."""
    cell = _cell(address_size=address_size, lru_writes=lru)
    state = cell.initial_state(2)
    width = address_size + M
    assert state.reads.shape == (2, 2, width)
    for _ in range(2):
        x = torch.randn(2, 3, dtype=DT)
        y, new = cell(x, state)
        hidden = cell.controller(torch.cat([x, state.reads.flatten(1)], -1), ())[0]
        addresses = (cell.addresses.expand(2, -1, -1) if address_size else state.memory[..., :0])
        rows = torch.cat([addresses, state.memory], -1)
        w = _head_parameters(cell.write_heads, hidden, width, lru)
        penalty = w["strength"].unsqueeze(-1) * state.usage if lru else None
        w_write = _address_by_hand(rows, state.write_weights, w["key"], w["beta"], w["gate"], w["shift"],
                                   w["gamma"], penalty)
        keep = 1 - w_write[:, 0, :, None] * w["erase"][:, 0, None, :]
        memory = state.memory * keep + w_write[:, 0, :, None] * w["add"][:, 0, None, :]
        rows = torch.cat([addresses, memory], -1)
        r = _head_parameters(cell.read_heads, hidden, width, False)
        w_read = _address_by_hand(rows, state.read_weights, r["key"], r["beta"], r["gate"], r["shift"], r["gamma"])
        reads = torch.einsum("bkn,bnw->bkw", w_read, rows)
        torch.testing.assert_close(new.write_weights, w_write)
        torch.testing.assert_close(new.memory, memory)
        torch.testing.assert_close(new.read_weights, w_read)
        torch.testing.assert_close(new.reads, reads)
        torch.testing.assert_close(y, cell.output(torch.cat([hidden, reads.flatten(1)], -1)))
        if lru:
            torch.testing.assert_close(new.usage, w["discount"].unsqueeze(-1) * state.usage + w_write)
        else:
            assert new.usage is None
        state = new


def test_lru_writes_move_to_fresh_rows():
    """With a strong usage penalty and no location steps, a head whose key never changes still
    writes each step to a row it has not used: N steps cover all N rows."""
    cell = _cell(lru_writes=True)
    head = cell.write_heads
    with torch.no_grad():
        head.linear.weight.zero_()
        bias = head.linear.bias.view(1, -1)
        bias.zero_()
        bias[0, :M] = torch.tensor([1.0, 0.5, -0.3])  # one key at every step
        bias[0, M] = 10.0  # key strength
        bias[0, M + 1] = 20.0  # gate ~ 1: content only
        bias[0, M + 2 + 1] = 20.0  # shift ~ stay
        bias[0, M + 5] = 5.0  # sharpening gamma ~ 6
        bias[0, M + 6] = 50.0  # usage strength
        bias[0, M + 7] = 20.0  # discount ~ 1: never forget a write
    model = NTM(3, 2, fused=False)
    model.cell = cell
    _, _, history = model(torch.randn(N, 1, 3, dtype=DT), return_history=True)
    visited = history.write_weights[:, 0, 0].argmax(-1)
    assert sorted(visited.tolist()) == list(range(N))
    assert history.write_weights[:, 0, 0].max(-1).values.min() > 0.9


def test_gradcheck_address_and_lru():
    cell = _cell(address_size=A, lru_writes=True, memory_init="learned")  # "random" redraws per call
    x = torch.randn(3, 2, 3, dtype=DT, requires_grad=True)

    def run(x):
        state, outs = cell.initial_state(2), []
        for t in range(x.size(0)):
            y, state = cell(x[t], state)
            outs.append(y)
        return torch.stack(outs)

    assert torch.autograd.gradcheck(run, (x,))
    run(x).sum().backward()
    assert cell.addresses.grad is not None and cell.addresses.grad.abs().sum() > 0


def test_options_are_checked_and_the_fused_kernel_refuses_them():
    with pytest.raises(ValueError, match="address_size"):
        NTMCell(3, 2, address_size=-1)
    with pytest.raises(ValueError, match="lru_writes needs"):
        NTMCell(3, 2, write_heads=0, lru_writes=True)
    for options in (dict(address_size=4), dict(lru_writes=True)):
        with pytest.raises(GraphmemError, match="D-NTM"):
            NTM(3, 2, fused=True, **options)
    assert "address_size=4" in repr(NTMCell(3, 2, address_size=4))
    assert "lru=True" in repr(NTMCell(3, 2, lru_writes=True).write_heads)
