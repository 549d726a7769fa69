"""graphmem.memory against the NTM paper's equations (Graves et al. 2014), written as plain loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from graphmem.memory import (
    NTM,
    FeedForwardController,
    LSTMController,
    NTMCell,
    NTMState,
    ReadHeads,
    WriteHeads,
    address,
    circular_shift,
    content_weights,
    interpolate,
    read,
    sharpen,
    write,
)

DT = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------------
# Reference equations as plain Python loops over lists of floats
# --------------------------------------------------------------------------------------------


def _l(t: torch.Tensor):
    return t.detach().tolist()


def ref_content(memory, key, beta):
    """w_i = exp(beta K[k, M_i]) / sum_j exp(beta K[k, M_j]), K = cosine similarity (eq. 5-6)."""
    out = []
    for b in range(len(memory)):
        heads = []
        for h in range(len(key[b])):
            k = key[b][h]
            nk = math.sqrt(sum(v * v for v in k))
            sims = []
            for row in memory[b]:
                nr = math.sqrt(sum(v * v for v in row))
                dot = sum(a * c for a, c in zip(k, row))
                sims.append(beta[b][h] * dot / (nk * nr))
            m = max(sims)
            z = sum(math.exp(s - m) for s in sims)
            heads.append([math.exp(s - m) / z for s in sims])
        out.append(heads)
    return out


def ref_interpolate(content, previous, gate):
    """w^g = g w^c + (1 - g) w_{t-1} (eq. 7)."""
    return [[[gate[b][h] * c + (1 - gate[b][h]) * p for c, p in zip(content[b][h], previous[b][h])]
             for h in range(len(content[b]))] for b in range(len(content))]


def ref_shift(weights, shift):
    """w~_i = sum_j w_j s((i - j) mod N) (eq. 8), s given over offsets -R..R."""
    out = []
    for b in range(len(weights)):
        heads = []
        for h in range(len(weights[b])):
            w, s = weights[b][h], shift[b][h]
            n, r = len(w), (len(s) - 1) // 2
            new = []
            for i in range(n):
                total = 0.0
                for j in range(n):
                    for o in range(-r, r + 1):  # all offsets congruent to i - j (mod N)
                        if o % n == (i - j) % n:
                            total += w[j] * s[o + r]
                new.append(total)
            heads.append(new)
        out.append(heads)
    return out


def ref_sharpen(weights, gamma):
    """w_i = w~_i^gamma / sum_j w~_j^gamma (eq. 9)."""
    out = []
    for b in range(len(weights)):
        heads = []
        for h in range(len(weights[b])):
            p = [v ** gamma[b][h] for v in weights[b][h]]
            z = sum(p)
            heads.append([v / z for v in p])
        out.append(heads)
    return out


def ref_write(memory, weights, erase, add):
    """M~_t(i) = M(i) prod_h (1 - w_h(i) e_h), M_t(i) = M~_t(i) + sum_h w_h(i) a_h (eq. 3-4)."""
    out = []
    for b in range(len(memory)):
        rows = []
        for i, row in enumerate(memory[b]):
            new = []
            for c, value in enumerate(row):
                keep = 1.0
                for h in range(len(weights[b])):
                    keep *= 1 - weights[b][h][i] * erase[b][h][c]
                added = sum(weights[b][h][i] * add[b][h][c] for h in range(len(weights[b])))
                new.append(value * keep + added)
            rows.append(new)
        out.append(rows)
    return out


def ref_read(memory, weights):
    """r = sum_i w(i) M(i) (eq. 2)."""
    return [[[sum(weights[b][h][i] * memory[b][i][c] for i in range(len(memory[b])))
              for c in range(len(memory[b][0]))] for h in range(len(weights[b]))] for b in range(len(memory))]


def _close(actual: torch.Tensor, expected, **kw):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), **kw)


def _dist(*shape):
    return torch.softmax(torch.randn(*shape, dtype=DT), -1)


# --------------------------------------------------------------------------------------------
# Addressing steps
# --------------------------------------------------------------------------------------------

B, K, N, M = 2, 3, 7, 4


def test_content_weights_vs_loops():
    memory = torch.randn(B, N, M, dtype=DT)
    key = torch.randn(B, K, M, dtype=DT)
    beta = torch.rand(B, K, dtype=DT) * 10
    out = content_weights(memory, key, beta)
    assert out.shape == (B, K, N)
    _close(out, ref_content(_l(memory), _l(key), _l(beta)))


def test_interpolate_vs_loops():
    content, previous, gate = _dist(B, K, N), _dist(B, K, N), torch.rand(B, K, dtype=DT)
    _close(interpolate(content, previous, gate), ref_interpolate(_l(content), _l(previous), _l(gate)))


@pytest.mark.parametrize("num_rows, shift_range", [(7, 1), (7, 2), (5, 1), (3, 2), (2, 1)])
def test_circular_shift_vs_loops(num_rows, shift_range):
    w = _dist(B, K, num_rows)
    s = _dist(B, K, 2 * shift_range + 1)
    out = circular_shift(w, s)
    _close(out, ref_shift(_l(w), _l(s)))
    torch.testing.assert_close(out.sum(-1), torch.ones(B, K, dtype=DT))  # still a distribution


@pytest.mark.parametrize("shift_range", [1, 2])
def test_circular_shift_direction(shift_range):
    r = shift_range
    w = torch.zeros(1, 1, N, dtype=DT)
    w[0, 0, 2] = 1.0
    for offset in range(-r, r + 1):
        s = torch.zeros(1, 1, 2 * r + 1, dtype=DT)
        s[0, 0, r + offset] = 1.0
        expected = torch.zeros(1, 1, N, dtype=DT)
        expected[0, 0, (2 + offset) % N] = 1.0
        torch.testing.assert_close(circular_shift(w, s), expected)
    # shift[..., R] keeps the focus, shift[..., R + 1] moves it forward: row 2 -> row 3
    s = torch.zeros(1, 1, 2 * r + 1, dtype=DT)
    s[0, 0, r + 1] = 1.0
    assert int(circular_shift(w, s).argmax()) == 3
    # and wraps around the end of the memory
    w_end = torch.zeros(1, 1, N, dtype=DT)
    w_end[0, 0, N - 1] = 1.0
    assert int(circular_shift(w_end, s).argmax()) == 0


def test_sharpen_vs_loops():
    w = _dist(B, K, N)
    gamma = 1 + torch.rand(B, K, dtype=DT) * 4
    _close(sharpen(w, gamma), ref_sharpen(_l(w), _l(gamma)))
    torch.testing.assert_close(sharpen(w, torch.ones(B, K, dtype=DT)), w)  # gamma = 1: no change


def test_sharpen_large_gamma_flat_weights_no_nan():
    # a flat weighting (the initial one) and a large gamma must not underflow to 0 / 0
    w = torch.full((1, 2, 128), 1 / 128, requires_grad=True)
    gamma = torch.tensor([[50.0, 300.0]], requires_grad=True)
    out = sharpen(w, gamma)
    torch.testing.assert_close(out.detach(), torch.full((1, 2, 128), 1 / 128))
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(w.grad).all() and torch.isfinite(gamma.grad).all()
    peaked = torch.softmax(torch.randn(1, 1, 128), -1)
    out = sharpen(peaked, torch.tensor([[200.0]]))
    assert torch.isfinite(out).all()
    assert int(out.argmax()) == int(peaked.argmax()) and float(out.max()) > 0.99


def test_address_vs_loops():
    memory = torch.randn(B, N, M, dtype=DT)
    previous = _dist(B, K, N)
    key = torch.randn(B, K, M, dtype=DT)
    beta = torch.rand(B, K, dtype=DT) * 5
    gate = torch.rand(B, K, dtype=DT)
    shift = _dist(B, K, 3)
    gamma = 1 + torch.rand(B, K, dtype=DT) * 3
    expected = ref_sharpen(
        ref_shift(ref_interpolate(ref_content(_l(memory), _l(key), _l(beta)), _l(previous), _l(gate)), _l(shift)),
        _l(gamma),
    )
    out = address(memory, previous, key, beta, gate, shift, gamma)
    _close(out, expected)
    torch.testing.assert_close(out.sum(-1), torch.ones(B, K, dtype=DT))


# --------------------------------------------------------------------------------------------
# Read and write
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("heads", [1, 2, 3])
def test_write_vs_loops(heads):
    memory = torch.randn(B, N, M, dtype=DT)
    weights = _dist(B, heads, N)
    erase = torch.rand(B, heads, M, dtype=DT)
    add = torch.randn(B, heads, M, dtype=DT)
    _close(write(memory, weights, erase, add), ref_write(_l(memory), _l(weights), _l(erase), _l(add)))


def test_write_one_hot_full_erase_replaces_row():
    memory = torch.randn(1, N, M, dtype=DT)
    w = torch.zeros(1, 1, N, dtype=DT)
    w[0, 0, 4] = 1
    add = torch.randn(1, 1, M, dtype=DT)
    out = write(memory, w, torch.ones(1, 1, M, dtype=DT), add)
    torch.testing.assert_close(out[0, 4], add[0, 0])
    torch.testing.assert_close(out[0, :4], memory[0, :4])
    torch.testing.assert_close(out[0, 5:], memory[0, 5:])


def test_write_head_order_does_not_matter():
    memory = torch.randn(B, N, M, dtype=DT)
    weights, erase, add = _dist(B, 2, N), torch.rand(B, 2, M, dtype=DT), torch.randn(B, 2, M, dtype=DT)
    flip = [1, 0]
    torch.testing.assert_close(write(memory, weights, erase, add),
                               write(memory, weights[:, flip], erase[:, flip], add[:, flip]))


@pytest.mark.parametrize("heads", [1, 2])
def test_read_vs_loops(heads):
    memory = torch.randn(B, N, M, dtype=DT)
    weights = _dist(B, heads, N)
    out = read(memory, weights)
    assert out.shape == (B, heads, M)
    _close(out, ref_read(_l(memory), _l(weights)))


# --------------------------------------------------------------------------------------------
# Numerical robustness
# --------------------------------------------------------------------------------------------


def _memories():
    return {
        "zero": torch.zeros(B, N, M),
        "constant": torch.full((B, N, M), 1e-6),
        "constant_large": torch.full((B, N, M), 3.0),
        "random": torch.randn(B, N, M),
    }


@pytest.mark.parametrize("beta_value", [1e4, 1e-6, 1.0])
@pytest.mark.parametrize("memory_kind", ["zero", "constant", "constant_large", "random"])
def test_address_write_read_finite(memory_kind, beta_value):
    memory = _memories()[memory_kind].requires_grad_(True)
    previous = torch.softmax(torch.randn(B, K, N), -1).requires_grad_(True)
    key = torch.randn(B, K, M, requires_grad=True)
    beta = torch.full((B, K), beta_value, requires_grad=True)
    gate = torch.rand(B, K, requires_grad=True)
    shift = torch.softmax(torch.randn(B, K, 3), -1).requires_grad_(True)
    gamma = (1 + torch.rand(B, K) * 5).requires_grad_(True)
    w = address(memory, previous, key, beta, gate, shift, gamma)
    erase, add = torch.rand(B, K, M, requires_grad=True), torch.randn(B, K, M, requires_grad=True)
    new_memory = write(memory, w, erase, add)
    r = read(new_memory, w)
    for t in (w, new_memory, r):
        assert torch.isfinite(t).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(B, K))
    (r.sum() + new_memory.square().sum() + (w * torch.randn_like(w)).sum()).backward()
    for name, t in dict(memory=memory, previous=previous, key=key, beta=beta, gate=gate, shift=shift,
                        gamma=gamma, erase=erase, add=add).items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), name


@pytest.mark.parametrize("memory_kind", ["zero", "constant"])
def test_content_weights_uniform_for_featureless_memory(memory_kind):
    memory = _memories()[memory_kind]
    w = content_weights(memory, torch.randn(B, K, M), torch.full((B, K), 1e4))
    torch.testing.assert_close(w, torch.full((B, K, N), 1 / N))


def test_content_weights_extreme_beta_is_argmax():
    memory = torch.randn(B, N, M)
    key = memory[:, [1, 5, 0]] + 0.01 * torch.randn(B, K, M)
    w = content_weights(memory, key, torch.full((B, K), 1e4))
    assert torch.isfinite(w).all()
    assert w.argmax(-1).tolist() == [[1, 5, 0]] * B
    flat = content_weights(memory, key, torch.full((B, K), 1e-6))
    torch.testing.assert_close(flat, torch.full((B, K, N), 1 / N), atol=1e-5, rtol=0)


@pytest.mark.parametrize("controller", ["lstm", "feedforward"])
def test_ntm_zero_memory_finite_gradients(controller):
    model = NTM(3, 2, memory_size=6, memory_width=4, controller=controller, controller_size=8,
                memory_init="constant", init_value=0.0)
    x = torch.randn(4, 2, 3, requires_grad=True)
    y, state = model(x)
    assert torch.isfinite(y).all() and torch.isfinite(state.memory).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


# --------------------------------------------------------------------------------------------
# NTM / NTMCell
# --------------------------------------------------------------------------------------------

SMALL = dict(memory_size=6, memory_width=4, controller_size=8)


def test_ntm_shapes_time_first():
    model = NTM(3, 2, **SMALL)
    x = torch.randn(5, 2, 3)
    y, state = model(x)
    assert y.shape == (5, 2, 2)
    assert isinstance(state, NTMState)
    assert state.memory.shape == (2, 6, 4)
    assert state.reads.shape == (2, 1, 4)
    assert state.read_weights.shape == (2, 1, 6)
    assert state.write_weights.shape == (2, 1, 6)
    h, c = state.controller
    assert h.shape == c.shape == (1, 2, 8)


def test_ntm_shapes_batch_first_and_history():
    model = NTM(3, 2, batch_first=True, read_heads=2, write_heads=3, controller_layers=2, **SMALL)
    x = torch.randn(4, 5, 3)  # (B, T, F)
    y, state, history = model(x, return_history=True)
    assert y.shape == (4, 5, 2)
    assert history.read_weights.shape == (4, 5, 2, 6)
    assert history.write_weights.shape == (4, 5, 3, 6)
    torch.testing.assert_close(history.read_weights.sum(-1), torch.ones(4, 5, 2))
    torch.testing.assert_close(history.write_weights.sum(-1), torch.ones(4, 5, 3))
    torch.testing.assert_close(history.read_weights[:, -1], state.read_weights)
    assert state.reads.shape == (4, 2, 4)
    assert state.controller[0].shape == (2, 4, 8)
    # time-first history
    model.batch_first = False
    y_t, _, history_t = model(x.transpose(0, 1), return_history=True)
    assert history_t.read_weights.shape == (5, 4, 2, 6)
    torch.testing.assert_close(y_t.transpose(0, 1), y)
    torch.testing.assert_close(history_t.write_weights.transpose(0, 1), history.write_weights)


def test_batch_first_equals_time_first():
    a = NTM(3, 2, batch_first=True, **SMALL)
    b = NTM(3, 2, batch_first=False, **SMALL)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(a(x)[0], b(x.transpose(0, 1))[0].transpose(0, 1))


@pytest.mark.parametrize("memory_init", ["constant", "learned", "random"])
def test_memory_init(memory_init):
    cell = NTMCell(3, 2, memory_init=memory_init, init_value=0.25, **SMALL)
    s1 = cell.initial_state(3)
    s2 = cell.initial_state(3)
    assert s1.memory.shape == (3, 6, 4)
    if memory_init == "constant":
        assert torch.equal(s1.memory, torch.full((3, 6, 4), 0.25))
        assert cell.initial_memory is None
    elif memory_init == "learned":
        assert isinstance(cell.initial_memory, torch.nn.Parameter)
        for b in range(3):
            assert torch.equal(s1.memory[b], cell.initial_memory.detach())
        # the initial memory is trained through the writes and reads
        model = NTM(3, 2, memory_init="learned", **SMALL)
        model(torch.randn(4, 2, 3))[0].sum().backward()
        assert model.cell.initial_memory.grad is not None
        assert model.cell.initial_memory.grad.abs().sum() > 0
    else:
        assert cell.initial_memory is None
        assert not torch.equal(s1.memory, s2.memory)  # a fresh draw at every reset
        assert not torch.equal(s1.memory[0], s1.memory[1])
        big = NTMCell(3, 2, memory_size=64, memory_width=16, controller_size=4, memory_init="random")
        std = float(big.initial_state(8).memory.std())
        assert std == pytest.approx(1 / math.sqrt(16), rel=0.1)
    # initial weightings are distributions, initial reads are learned and shared over the batch
    torch.testing.assert_close(s1.read_weights.sum(-1), torch.ones(3, 1))
    torch.testing.assert_close(s1.write_weights.sum(-1), torch.ones(3, 1))
    assert torch.equal(s1.reads[0], s1.reads[2])


def test_initial_state_dtype():
    cell = NTMCell(3, 2, **SMALL).double()
    state = cell.initial_state(2)
    assert state.memory.dtype == DT
    y, state = cell(torch.randn(2, 3, dtype=DT))
    assert y.dtype == DT and state.memory.dtype == DT


def test_feedforward_controller():
    model = NTM(3, 2, controller="feedforward", controller_layers=2, **SMALL)
    assert isinstance(model.cell.controller, FeedForwardController)
    y, state = model(torch.randn(5, 2, 3))
    assert y.shape == (5, 2, 2)
    assert state.controller == ()
    assert isinstance(NTM(3, 2, **SMALL).cell.controller, LSTMController)


@pytest.mark.parametrize("read_heads, write_heads", [(2, 1), (1, 2), (3, 2)])
def test_multiple_heads(read_heads, write_heads):
    model = NTM(3, 2, read_heads=read_heads, write_heads=write_heads, **SMALL)
    assert isinstance(model.cell.read_heads, ReadHeads) and model.cell.read_heads.num_heads == read_heads
    assert isinstance(model.cell.write_heads, WriteHeads) and model.cell.write_heads.num_heads == write_heads
    y, state, history = model(torch.randn(4, 2, 3), return_history=True)
    assert y.shape == (4, 2, 2)
    assert state.reads.shape == (2, read_heads, 4)
    assert history.read_weights.shape == (4, 2, read_heads, 6)
    assert history.write_weights.shape == (4, 2, write_heads, 6)


def test_no_write_heads_keeps_memory():
    model = NTM(3, 2, write_heads=0, memory_init="random", **SMALL)
    assert model.cell.write_heads is None
    state = model.cell.initial_state(2)
    _, final = model(torch.randn(4, 2, 3), state)
    assert torch.equal(final.memory, state.memory)


def test_state_reset_per_call():
    model = NTM(3, 2, **SMALL).eval()
    x = torch.randn(6, 2, 3)
    y1, s1 = model(x)
    y2, s2 = model(x)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(s1.memory, s2.memory)
    # passing the state in continues the sequence instead
    y3, _ = model(x, s1)
    assert not torch.allclose(y3, y1)


def test_passing_state_continues_sequence():
    model = NTM(3, 2, read_heads=2, write_heads=2, **SMALL)
    x = torch.randn(7, 2, 3)
    y_all, s_all = model(x)
    y_a, s_a = model(x[:3])
    y_b, s_b = model(x[3:], s_a)
    torch.testing.assert_close(torch.cat([y_a, y_b]), y_all)
    torch.testing.assert_close(s_b.memory, s_all.memory)


@pytest.mark.parametrize("controller", ["lstm", "feedforward"])
def test_batch_independence(controller):
    model = NTM(3, 2, controller=controller, read_heads=2, write_heads=2, **SMALL).eval()
    x = torch.randn(6, 4, 3)
    y, state = model(x)
    for b in range(4):
        y_b, state_b = model(x[:, b:b + 1])
        torch.testing.assert_close(y[:, b:b + 1], y_b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state.memory[b:b + 1], state_b.memory, atol=1e-5, rtol=1e-5)


def test_cell_step_by_hand():
    """One step of a feed-forward NTM, rebuilt from the paper's equations (write, then read)."""
    torch.set_default_dtype(DT)
    try:
        cell = NTMCell(3, 2, memory_size=5, memory_width=3, controller="feedforward", controller_size=6,
                       read_heads=2, write_heads=1, shift_range=1, memory_init="random", clip=None)
    finally:
        torch.set_default_dtype(torch.float32)
    state = cell.initial_state(2)
    x = torch.randn(2, 3, dtype=DT)
    y, new = cell(x, state)

    hidden = cell.controller(torch.cat([x, state.reads.flatten(1)], -1), ())[0]

    def params(head, write_head):
        raw = head.linear(hidden).view(2, head.num_heads, -1)
        m, s = 3, 3
        key, rest = raw[..., :m], raw[..., m:]
        beta, gate = F.softplus(rest[..., 0]), torch.sigmoid(rest[..., 1])
        shift = torch.softmax(rest[..., 2:2 + s], -1)
        gamma = 1 + F.softplus(rest[..., 2 + s])
        out = [_l(key), _l(beta), _l(gate), _l(shift), _l(gamma)]
        if write_head:
            out += [_l(torch.sigmoid(rest[..., 3 + s:3 + s + m])), _l(torch.tanh(rest[..., 3 + s + m:]))]
        return out

    def addr(memory, previous, key, beta, gate, shift, gamma):
        return ref_sharpen(ref_shift(ref_interpolate(ref_content(memory, key, beta), previous, gate), shift), gamma)

    key, beta, gate, shift, gamma, erase, add = params(cell.write_heads, True)
    w_write = addr(_l(state.memory), _l(state.write_weights), key, beta, gate, shift, gamma)
    memory = ref_write(_l(state.memory), w_write, erase, add)
    w_read = addr(memory, _l(state.read_weights), *params(cell.read_heads, False))
    reads = ref_read(memory, w_read)
    _close(new.write_weights, w_write)
    _close(new.memory, memory)
    _close(new.read_weights, w_read)
    _close(new.reads, reads)
    expected_y = cell.output(torch.cat([hidden, torch.tensor(reads, dtype=DT).flatten(1)], -1))
    torch.testing.assert_close(y, expected_y)


def test_clip_bounds_controller_output():
    cell = NTMCell(3, 2, controller="feedforward", clip=0.05, **SMALL)
    with torch.no_grad():
        for p in cell.controller.parameters():
            p.fill_(1.0)
    y, _ = cell(torch.ones(2, 3) * 10)
    no_clip = NTMCell(3, 2, controller="feedforward", clip=None, **SMALL)
    no_clip.load_state_dict(cell.state_dict())
    y2, _ = no_clip(torch.ones(2, 3) * 10)
    assert not torch.allclose(y, y2)


def test_gradients_reach_every_parameter():
    model = NTM(3, 2, read_heads=2, write_heads=2, memory_init="learned", **SMALL)
    model(torch.randn(5, 2, 3))[0].square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_reset_parameters_and_repr():
    model = NTM(3, 2, memory_init="learned", **SMALL)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
    model.reset_parameters()
    initial = model.cell.initial_state(1)
    for weights in (initial.read_weights, initial.write_weights):
        assert torch.equal(weights.argmax(-1), torch.zeros_like(weights.argmax(-1)))
        assert (weights[..., 0] > 0.99).all()
    assert float(model.cell.initial_memory.detach().abs().max()) <= 1 / math.sqrt(6 + 4)
    assert not (model.cell.output.weight == 7).any()
    text = repr(model)
    assert "NTMCell" in text and "memory=6x4" in text


@pytest.mark.parametrize(
    "kwargs",
    [dict(memory_init="zeros"), dict(controller="gru"), dict(read_heads=0), dict(write_heads=-1)],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        NTMCell(3, 2, **SMALL, **kwargs)
    with pytest.raises(ValueError):
        NTM(3, 2, **SMALL, **kwargs)


# --- bad input: the user's numbers, NaN/Inf, empty ---------------------------------------------


@pytest.fixture
def _checks_on():
    from graphmem import checks

    previous = checks._enabled
    checks.set_enabled(True)
    yield
    checks.set_enabled(previous)


@pytest.mark.parametrize("batch_first", [False, True])
def test_ntm_wrong_width_names_the_users_numbers(batch_first):
    from graphmem.errors import GraphmemError

    model = NTM(9, 2, batch_first=batch_first, **SMALL)
    with pytest.raises(GraphmemError, match=r"NTM input has 7 features per step but the NTM was built for input_size=9"):
        model(torch.randn(4, 3, 7))
    with pytest.raises(GraphmemError, match=r"NTMCell input has 7 features per step .*input_size=9"):
        model.cell(torch.randn(3, 7))


def test_ntm_wrong_rank():
    from graphmem.errors import GraphmemError

    model = NTM(3, 2, **SMALL)
    with pytest.raises(GraphmemError, match=r"NTM input must have 3 dimensions \(T, B, input_size\), got shape \(4, 3\)"):
        model(torch.randn(4, 3))
    with pytest.raises(GraphmemError, match=r"NTMCell input must have 2 dimensions"):
        model.cell(torch.randn(2, 4, 3))


@pytest.mark.parametrize("shape", [(0, 2, 3), (4, 0, 3)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_ntm_empty_batch_or_sequence(shape, batch_first):
    from graphmem.errors import GraphmemError

    model = NTM(3, 2, batch_first=batch_first, **SMALL)
    with pytest.raises(GraphmemError, match="NTM input is empty"):
        model(torch.randn(shape))
    with pytest.raises(GraphmemError, match="NTMCell input is empty"):
        model.cell(torch.randn(0, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_ntm_non_finite_input_is_refused(bad, _checks_on):
    from graphmem import checks

    model = NTM(3, 2, **SMALL)
    x = torch.randn(5, 2, 3)
    x[3, 1, 2] = bad
    with pytest.raises(ValueError, match="NTM input contains 1 NaN or Inf values"):
        model(x)
    with pytest.raises(ValueError, match="NTM input contains 1 NaN or Inf values"):
        model.cell(x[3])
    assert not model.cell._input_checked  # reset after the refused call
    with checks.disabled():
        model(x)  # switched off: runs (and yields what it yields)


def test_ntm_checks_the_whole_input_once(monkeypatch, _checks_on):
    from graphmem import checks

    calls = []
    original = checks.check_features
    monkeypatch.setattr(checks, "check_features", lambda *a, **k: (calls.append(a[0].shape), original(*a, **k)))
    NTM(3, 2, **SMALL)(torch.randn(6, 2, 3))
    assert calls == [torch.Size([6, 2, 3])]  # not once more per step inside the cell


@pytest.mark.slow
def test_input_checks_cause_no_graph_break_in_the_compiled_step(_checks_on):
    import torch._dynamo

    model = NTM(3, 2, **SMALL)
    explanation = torch._dynamo.explain(model.cell)(torch.randn(2, 3), model.cell.initial_state(2))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons
