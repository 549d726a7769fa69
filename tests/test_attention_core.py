"""graphmem.attention against independent references: hand-written loops, PyG, torch SDPA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import softmax as pyg_softmax

from graphmem.attention import (
    SCORES,
    AdditiveScore,
    BilinearScore,
    CosineScore,
    DotScore,
    GATScore,
    GATv2Score,
    ScaledDotScore,
    additive_score,
    attention,
    bilinear_score,
    check_attention_options,
    combine_heads,
    cosine_score,
    decomposed_additive_score,
    dense_read,
    dot_score,
    gumbel_softmax,
    hard_softmax,
    make_score,
    masked_softmax,
    normalize,
    scaled_dot_score,
    segment_softmax,
    sparse_read,
)

from tests.hand_attention import hand_score, randomize

DT = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _random_edges(num_src: int, num_dst: int, num_edges: int) -> torch.Tensor:
    return torch.stack([torch.randint(0, num_src, (num_edges,)), torch.randint(0, num_dst, (num_edges,))])


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(a[d]) * float(b[d]) for d in range(a.numel()))


def _norm(a: torch.Tensor) -> float:
    return math.sqrt(_dot(a, a))


def _leaky(v: float, slope: float) -> float:
    return v if v >= 0 else slope * v


# --------------------------------------------------------------------------------------------
# Score functions, dense layout vs per-pair loops
# --------------------------------------------------------------------------------------------

B, LQ, LK, D = 2, 3, 5, 4


def _qk():
    return torch.randn(B, LQ, D, dtype=DT), torch.randn(B, LK, D, dtype=DT)


def _loop(fn):
    out = torch.empty(B, LQ, LK, dtype=DT)
    for b in range(B):
        for i in range(LQ):
            for j in range(LK):
                out[b, i, j] = fn(b, i, j)
    return out


def test_dot_score_dense_loop():
    q, k = _qk()
    ref = _loop(lambda b, i, j: _dot(k[b, j], q[b, i]))
    torch.testing.assert_close(dot_score(q, k), ref)


def test_scaled_dot_score_dense_loop():
    q, k = _qk()
    ref = _loop(lambda b, i, j: _dot(k[b, j], q[b, i]) / math.sqrt(D))
    torch.testing.assert_close(scaled_dot_score(q, k), ref)


def test_bilinear_score_dense_loop():
    q, k = _qk()
    w = torch.randn(D, D, dtype=DT)

    def ref(b, i, j):  # k^T W q
        return sum(float(k[b, j, r]) * float(w[r, c]) * float(q[b, i, c]) for r in range(D) for c in range(D))

    torch.testing.assert_close(bilinear_score(q, k, w), _loop(ref))


def test_bilinear_not_symmetric_in_roles():
    # k^T W q != q^T W k for non-symmetric W: make sure the roles are the documented ones
    q, k = torch.randn(1, 1, D, dtype=DT), torch.randn(1, 1, D, dtype=DT)
    w = torch.randn(D, D, dtype=DT)
    expected = float(k[0, 0] @ w @ q[0, 0])
    assert float(bilinear_score(q, k, w)) == pytest.approx(expected)


@pytest.mark.parametrize("beta", [1.0, 3.5])
def test_cosine_score_dense_loop_scalar_beta(beta):
    q, k = _qk()
    ref = _loop(lambda b, i, j: beta * _dot(k[b, j], q[b, i]) / (_norm(k[b, j]) * _norm(q[b, i])))
    torch.testing.assert_close(cosine_score(q, k, beta), ref)


def test_cosine_score_dense_loop_tensor_beta():
    q, k = _qk()
    beta = torch.rand(B, LQ, dtype=DT) * 5
    ref = _loop(lambda b, i, j: float(beta[b, i]) * _dot(k[b, j], q[b, i]) / (_norm(k[b, j]) * _norm(q[b, i])))
    torch.testing.assert_close(cosine_score(q, k, beta), ref)


def test_additive_score_dense_loop():
    q, k = _qk()
    v = torch.randn(D, dtype=DT)

    def ref(b, i, j):  # v^T tanh(k + q)
        return sum(float(v[d]) * math.tanh(float(k[b, j, d]) + float(q[b, i, d])) for d in range(D))

    torch.testing.assert_close(additive_score(q, k, v), _loop(ref))


def test_decomposed_additive_score_dense_loop():
    q, k = _qk()
    a_q, a_k = torch.randn(D, dtype=DT), torch.randn(D, dtype=DT)
    slope = 0.2

    def ref(b, i, j):  # LeakyReLU(a^T [q_i || k_j])
        a = torch.cat([a_q, a_k])
        return _leaky(_dot(a, torch.cat([q[b, i], k[b, j]])), slope)

    torch.testing.assert_close(decomposed_additive_score(q, k, a_q, a_k, negative_slope=slope), _loop(ref))


def test_decomposed_additive_score_dense_with_bias_and_slope():
    q, k = _qk()
    a_q, a_k = torch.randn(D, dtype=DT), torch.randn(D, dtype=DT)
    bias = torch.randn(B, LQ, LK, dtype=DT)
    ref = _loop(lambda b, i, j: _leaky(_dot(a_q, q[b, i]) + _dot(a_k, k[b, j]) + float(bias[b, i, j]), 0.1))
    out = decomposed_additive_score(q, k, a_q, a_k, bias=bias, negative_slope=0.1)
    torch.testing.assert_close(out, ref)


# --------------------------------------------------------------------------------------------
# Score functions, sparse layout == dense gathered at the pairs
# --------------------------------------------------------------------------------------------

H, NQ, NK, E = 3, 4, 6, 15


def _sparse_inputs():
    q = torch.randn(NQ, H, D, dtype=DT)  # sparse layout: (N, H, D)
    k = torch.randn(NK, H, D, dtype=DT)
    ei = _random_edges(NK, NQ, E)  # row 0 = key/source, row 1 = query/target
    return q, k, ei


def _gather(dense_logits: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
    """(H, NQ, NK) dense logits -> (E, H) at pairs (query=ei[1], key=ei[0])."""
    return dense_logits[:, ei[1], ei[0]].transpose(0, 1)


def _dense(x):  # (N, H, D) -> (H, N, D)
    return x.transpose(0, 1)


@pytest.mark.parametrize("fn", [dot_score, scaled_dot_score])
def test_dot_scores_sparse_equals_dense(fn):
    q, k, ei = _sparse_inputs()
    torch.testing.assert_close(fn(q, k, edge_index=ei), _gather(fn(_dense(q), _dense(k)), ei))


def test_bilinear_sparse_equals_dense():
    q, k, ei = _sparse_inputs()
    w = torch.randn(H, D, D, dtype=DT)
    dense = bilinear_score(_dense(q), _dense(k), w.unsqueeze(1))
    torch.testing.assert_close(bilinear_score(q, k, w, edge_index=ei), _gather(dense, ei))
    # and per pair by hand
    for e in range(E):
        j, i = int(ei[0, e]), int(ei[1, e])
        for h in range(H):
            assert float(bilinear_score(q, k, w, edge_index=ei)[e, h]) == pytest.approx(float(k[j, h] @ w[h] @ q[i, h]))


def test_cosine_sparse_equals_dense():
    q, k, ei = _sparse_inputs()
    beta = torch.rand(NQ, H, dtype=DT) * 4  # one strength per query and head
    dense = cosine_score(_dense(q), _dense(k), beta.t())
    torch.testing.assert_close(cosine_score(q, k, beta, edge_index=ei), _gather(dense, ei))
    torch.testing.assert_close(cosine_score(q, k, 2.0, edge_index=ei), _gather(cosine_score(_dense(q), _dense(k), 2.0), ei))


def test_additive_sparse_equals_dense():
    q, k, ei = _sparse_inputs()
    v = torch.randn(H, D, dtype=DT)
    dense = additive_score(_dense(q), _dense(k), v.unsqueeze(1))
    torch.testing.assert_close(additive_score(q, k, v, edge_index=ei), _gather(dense, ei))


def test_decomposed_additive_sparse_equals_dense_and_loop():
    q, k, ei = _sparse_inputs()
    a_q, a_k = torch.randn(1, H, D, dtype=DT), torch.randn(1, H, D, dtype=DT)
    bias = torch.randn(E, H, dtype=DT)
    sparse = decomposed_additive_score(q, k, a_q, a_k, edge_index=ei)
    dense = decomposed_additive_score(_dense(q), _dense(k), a_q.transpose(0, 1), a_k.transpose(0, 1))
    torch.testing.assert_close(sparse, _gather(dense, ei))
    with_bias = decomposed_additive_score(q, k, a_q, a_k, edge_index=ei, bias=bias, negative_slope=0.3)
    for e in range(E):
        j, i = int(ei[0, e]), int(ei[1, e])
        for h in range(H):
            pre = _dot(a_q[0, h], q[i, h]) + _dot(a_k[0, h], k[j, h]) + float(bias[e, h])
            assert float(with_bias[e, h]) == pytest.approx(_leaky(pre, 0.3))


def test_decomposed_additive_without_query():
    q, k, ei = _sparse_inputs()
    a_q, a_k = torch.randn(1, H, D, dtype=DT), torch.randn(1, H, D, dtype=DT)
    out = decomposed_additive_score(None, k, a_q, a_k, edge_index=ei)
    ref = F.leaky_relu((k[ei[0]] * a_k).sum(-1), 0.2)
    torch.testing.assert_close(out, ref)


# --------------------------------------------------------------------------------------------
# cosine with zero vectors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["key", "query", "both"])
def test_cosine_zero_vectors_finite(which):
    q = torch.randn(2, 3, D)
    k = torch.randn(2, 5, D)
    if which in ("key", "both"):
        k = torch.zeros_like(k)
    if which in ("query", "both"):
        q = torch.zeros_like(q)
    q.requires_grad_(True)
    k.requires_grad_(True)
    beta = torch.full((2, 3), 2.0, requires_grad=True)
    s = cosine_score(q, k, beta)
    assert torch.equal(s.detach(), torch.zeros_like(s))
    (s * torch.randn_like(s)).sum().backward()
    for t in (q, k, beta):
        assert t.grad is not None and torch.isfinite(t.grad).all()


def test_cosine_partly_zero_rows():
    k = torch.randn(1, 4, D)
    k[0, 1] = 0
    q = torch.randn(1, 2, D, requires_grad=True)
    s = cosine_score(q, k)
    assert torch.equal(s[0, :, 1], torch.zeros(2))
    s.sum().backward()
    assert torch.isfinite(q.grad).all()


# --------------------------------------------------------------------------------------------
# segment_softmax vs torch_geometric.utils.softmax
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
def test_segment_softmax_vs_pyg(shape):
    num_edges, num_nodes = 40, 7
    logits = torch.randn((num_edges,) + shape)
    index = torch.randint(0, num_nodes, (num_edges,))
    ours = segment_softmax(logits, index, num_nodes)
    torch.testing.assert_close(ours, pyg_softmax(logits, index, num_nodes=num_nodes, dim=0))
    # inferred number of segments gives the same
    torch.testing.assert_close(segment_softmax(logits, index), ours)


def test_segment_softmax_sums_to_one_per_segment():
    logits = torch.randn(30, 2, dtype=DT)
    index = torch.randint(0, 5, (30,))
    w = segment_softmax(logits, index, 5)
    for t in range(5):
        sel = index == t
        if sel.any():
            torch.testing.assert_close(w[sel].sum(0), torch.ones(2, dtype=DT))


def test_segment_softmax_large_logits_stable():
    index = torch.tensor([0, 0, 0, 1, 1, 2])
    logits = torch.tensor([[1e4, 1e4 - 1.0], [1e4 - 1.0, -1e4], [-1e4, 1e4], [3e4, 5.0], [3e4, 5.0], [-1e4, 1e4]])
    w = segment_softmax(logits, index, 3)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w, pyg_softmax(logits, index, num_nodes=3, dim=0))
    torch.testing.assert_close(w[3:5, 0], torch.tensor([0.5, 0.5]))
    assert float(w[5, 0]) == 1.0


def test_segment_softmax_empty_edge_list():
    logits = torch.empty(0, 3)
    index = torch.empty(0, dtype=torch.long)
    out = segment_softmax(logits, index, 4)
    assert out.shape == (0, 3)
    out = segment_softmax(logits, index)
    assert out.shape == (0, 3)


def test_segment_softmax_empty_segments():
    logits = torch.randn(6, 2)
    index = torch.tensor([0, 0, 3, 3, 3, 5])
    ours = segment_softmax(logits, index, num_segments=9)  # 1, 2, 4, 6, 7, 8 have no edges
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, pyg_softmax(logits, index, num_nodes=9, dim=0))


def test_segment_softmax_minus_inf_segment_is_zero_not_nan():
    logits = torch.tensor([0.5, float("-inf"), float("-inf")], requires_grad=True)
    index = torch.tensor([0, 1, 1])
    w = segment_softmax(logits, index, 2)
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, 0.0, 0.0]))
    (w * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_segment_softmax_gradcheck():
    logits = torch.randn(12, 2, dtype=DT, requires_grad=True)
    index = torch.tensor([0, 0, 1, 1, 1, 2, 4, 4, 4, 4, 0, 2])
    assert torch.autograd.gradcheck(lambda s: segment_softmax(s, index, 6), (logits,))


def test_segment_softmax_grad_matches_pyg():
    logits = torch.randn(20, 3, requires_grad=True)
    ref_logits = logits.detach().clone().requires_grad_(True)
    index = torch.randint(0, 5, (20,))
    c = torch.randn(20, 3)
    (segment_softmax(logits, index, 5) * c).sum().backward()
    (pyg_softmax(ref_logits, index, num_nodes=5, dim=0) * c).sum().backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)


# --------------------------------------------------------------------------------------------
# masked_softmax
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_masked_softmax_no_mask_equals_torch(dim):
    x = torch.randn(3, 4, 5) * 10
    torch.testing.assert_close(masked_softmax(x, dim=dim), torch.softmax(x, dim=dim))


def test_masked_softmax_mask():
    x = torch.randn(4, 6, requires_grad=True)
    mask = torch.rand(4, 6) > 0.4
    mask[0] = False  # fully masked row
    mask[1] = True
    w = masked_softmax(x, mask)
    assert torch.isfinite(w).all()
    assert torch.equal(w[0].detach(), torch.zeros(6))
    assert torch.equal(w.detach()[~mask], torch.zeros(int((~mask).sum())))
    for r in range(1, 4):
        if mask[r].any():
            ref = torch.softmax(x.detach()[r][mask[r]], -1)
            torch.testing.assert_close(w.detach()[r][mask[r]], ref)
    (w * torch.randn(4, 6)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[0], torch.zeros(6))


def test_masked_softmax_broadcast_mask():
    x = torch.randn(2, 3, 4)
    mask = torch.tensor([True, False, True, True])
    w = masked_softmax(x, mask)
    ref = torch.softmax(x.masked_fill(~mask, float("-inf")), -1)
    torch.testing.assert_close(w, ref)


def test_masked_softmax_large_values():
    x = torch.tensor([[1e4, 1e4 + 1, -1e4]])
    torch.testing.assert_close(masked_softmax(x), torch.softmax(x.double(), -1).float())


# --------------------------------------------------------------------------------------------
# hard (straight-through) softmax
# --------------------------------------------------------------------------------------------


def test_hard_softmax_dense_forward_one_hot():
    x = torch.randn(5, 7)
    w = normalize(x, "hard")
    torch.testing.assert_close(w, F.one_hot(x.argmax(-1), 7).float())


def test_hard_softmax_dense_ties_first_and_mask():
    x = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [5.0, 1.0, 4.0, 0.0]])
    w = hard_softmax(x)
    expected = torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]])
    torch.testing.assert_close(w, expected)
    mask = torch.tensor([True, True, True, True]).expand(3, 4).clone()
    mask[2, 0] = False
    w = hard_softmax(x, mask=mask)
    torch.testing.assert_close(w[2], torch.tensor([0.0, 0, 1, 0]))


def test_hard_softmax_dense_other_dim():
    x = torch.randn(4, 3)
    w = hard_softmax(x, dim=0)
    torch.testing.assert_close(w, F.one_hot(x.argmax(0), 4).float().t())


def _sparse_one_hot_reference(x: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    flat = x.reshape(x.size(0), -1)
    out_flat = out.view(x.size(0), -1)
    for t in range(num_segments):
        for c in range(flat.size(1)):
            best, best_e = None, None
            for e in range(x.size(0)):
                if int(index[e]) == t and (best is None or float(flat[e, c]) > best):
                    best, best_e = float(flat[e, c]), e
            if best_e is not None:
                out_flat[best_e, c] = 1.0
    return out


@pytest.mark.parametrize("heads", [None, 3])
def test_hard_softmax_sparse_forward(heads):
    shape = (25,) if heads is None else (25, heads)
    x = torch.randn(shape)
    index = torch.randint(0, 6, (25,))
    w = normalize(x, "hard", index=index, num_segments=8)
    torch.testing.assert_close(w, _sparse_one_hot_reference(x, index, 8))


def test_hard_softmax_sparse_ties_first():
    x = torch.tensor([[1.0, 2.0], [3.0, 2.0], [3.0, 2.0], [0.0, 5.0], [0.0, 5.0]])
    index = torch.tensor([0, 0, 0, 1, 1])
    w = hard_softmax(x, index, 2)
    expected = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(w, _sparse_one_hot_reference(x, index, 2))


def test_hard_softmax_dense_backward_equals_soft():
    x = torch.randn(4, 6, requires_grad=True)
    x_soft = x.detach().clone().requires_grad_(True)
    c = torch.randn(4, 6)
    (hard_softmax(x) * c).sum().backward()
    (torch.softmax(x_soft, -1) * c).sum().backward()
    torch.testing.assert_close(x.grad, x_soft.grad)


def test_hard_softmax_sparse_backward_equals_soft():
    x = torch.randn(20, 2, requires_grad=True)
    x_soft = x.detach().clone().requires_grad_(True)
    index = torch.randint(0, 5, (20,))
    c = torch.randn(20, 2)
    (normalize(x, "hard", index=index, num_segments=5) * c).sum().backward()
    (pyg_softmax(x_soft, index, num_nodes=5, dim=0) * c).sum().backward()
    torch.testing.assert_close(x.grad, x_soft.grad)


# --------------------------------------------------------------------------------------------
# Gumbel softmax
# --------------------------------------------------------------------------------------------


def test_gumbel_softmax_dense_rows_sum_to_one_and_hard_one_hot():
    x = torch.randn(6, 5)
    w = gumbel_softmax(x, tau=0.7)
    torch.testing.assert_close(w.sum(-1), torch.ones(6))
    assert (w >= 0).all()
    h = gumbel_softmax(x, hard=True)
    assert ((h == 0) | (h == 1)).all()
    torch.testing.assert_close(h.sum(-1), torch.ones(6))


def test_gumbel_softmax_sparse_segments():
    x = torch.randn(20, 2)
    index = torch.randint(0, 4, (20,))
    w = gumbel_softmax(x, index=index, num_segments=6)
    sums = torch.zeros(6, 2).index_add(0, index, w)
    for t in range(6):
        expected = 1.0 if (index == t).any() else 0.0
        torch.testing.assert_close(sums[t], torch.full((2,), expected))
    h = gumbel_softmax(x, hard=True, index=index, num_segments=6)
    assert ((h == 0) | (h == 1)).all()
    torch.testing.assert_close(torch.zeros(6, 2).index_add(0, index, h), sums)


def test_gumbel_softmax_generator_reproducible_and_formula():
    x = torch.randn(4, 5, dtype=DT)
    a = gumbel_softmax(x, tau=0.5, generator=torch.Generator().manual_seed(3))
    b = gumbel_softmax(x, tau=0.5, generator=torch.Generator().manual_seed(3))
    c = gumbel_softmax(x, tau=0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # independent reference: softmax((x + g) / tau), g = -log(-log U), U from the same stream
    u = torch.rand(x.shape, dtype=DT, generator=torch.Generator().manual_seed(3))
    g = -torch.log(-torch.log(u))
    torch.testing.assert_close(a, torch.softmax((x + g) / 0.5, -1))


def test_gumbel_hard_sample_frequencies_follow_softmax():
    # Gumbel-max trick: argmax(x + g) is distributed as softmax(x)
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0])
    n = 20000
    h = gumbel_softmax(logits.expand(n, 4), hard=True, generator=torch.Generator().manual_seed(0))
    freq = h.mean(0)
    torch.testing.assert_close(freq, torch.softmax(logits, -1), atol=0.02, rtol=0)


def test_gumbel_hard_backward_equals_soft_sample_grad():
    x = torch.randn(3, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    c = torch.randn(3, 5)
    (gumbel_softmax(x, 0.8, hard=True, generator=torch.Generator().manual_seed(1)) * c).sum().backward()
    (gumbel_softmax(x2, 0.8, hard=False, generator=torch.Generator().manual_seed(1)) * c).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_normalize_unknown_method():
    with pytest.raises(ValueError, match="unknown normalizer"):
        normalize(torch.randn(2, 3), "sparsemax")


@pytest.mark.parametrize("method", ["gumbel", "gumbel_hard"])
def test_normalize_gumbel_methods(method):
    w = normalize(torch.randn(3, 4), method, tau=0.5)
    torch.testing.assert_close(w.sum(-1), torch.ones(3))


# --------------------------------------------------------------------------------------------
# reads
# --------------------------------------------------------------------------------------------


def test_dense_read_loop():
    w = torch.rand(2, 3, 5, dtype=DT)
    v = torch.randn(2, 5, 4, dtype=DT)
    ref = torch.zeros(2, 3, 4, dtype=DT)
    for b in range(2):
        for i in range(3):
            for n in range(5):
                ref[b, i] += w[b, i, n] * v[b, n]
    torch.testing.assert_close(dense_read(w, v), ref)


@pytest.mark.parametrize("heads", [None, 2])
def test_sparse_read_loop(heads):
    num_src, num_dst, num_edges, dv = 5, 6, 12, 3
    ei = _random_edges(num_src, num_dst, num_edges)
    ei[1] = ei[1] % 4  # targets 4 and 5 get no edges
    w_shape = (num_edges,) if heads is None else (num_edges, heads)
    v_shape = (num_src, dv) if heads is None else (num_src, heads, dv)
    w = torch.rand(w_shape, dtype=DT)
    v = torch.randn(v_shape, dtype=DT)
    ref = torch.zeros((num_dst,) + v_shape[1:], dtype=DT)
    for e in range(num_edges):
        j, i = int(ei[0, e]), int(ei[1, e])
        ref[i] += (w[e].unsqueeze(-1) if heads else w[e]) * v[j]
    out = sparse_read(w, v, ei, num_dst)
    torch.testing.assert_close(out, ref)
    assert torch.equal(out[4:], torch.zeros_like(out[4:]))


def test_combine_heads():
    x = torch.randn(5, 3, 4)
    cat = combine_heads(x, concat=True)
    assert cat.shape == (5, 12)
    for n in range(5):
        torch.testing.assert_close(cat[n], torch.cat([x[n, h] for h in range(3)]))
    mean = combine_heads(x, concat=False)
    assert mean.shape == (5, 4)
    torch.testing.assert_close(mean, (x[:, 0] + x[:, 1] + x[:, 2]) / 3)


def test_combine_heads_other_dim():
    x = torch.randn(2, 3, 5, 4)  # (B, H, L, D), heads at dim 1
    cat = combine_heads(x, concat=True, dim=1)
    assert cat.shape == (2, 5, 12)
    torch.testing.assert_close(cat[1, 2], torch.cat([x[1, h, 2] for h in range(3)]))
    torch.testing.assert_close(combine_heads(x, concat=False, dim=1), x.mean(1))


# --------------------------------------------------------------------------------------------
# attention()
# --------------------------------------------------------------------------------------------


def test_attention_dense_equals_sdpa():
    q = torch.randn(2, 3, 5, 8)
    k = torch.randn(2, 3, 7, 8)
    v = torch.randn(2, 3, 7, 6)
    out, w, *_ = attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert w.shape == (2, 3, 5, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))


def test_attention_dense_mask_equals_sdpa():
    q = torch.randn(2, 5, 8)
    k = torch.randn(2, 7, 8)
    v = torch.randn(2, 7, 6)
    mask = torch.rand(2, 5, 7) > 0.5
    mask[..., 0] = True  # no fully masked rows (SDPA would give NaN there)
    out, w, *_ = attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(w[~mask], torch.zeros(int((~mask).sum())))


def test_attention_dense_bias_equals_sdpa_float_mask():
    q, k, v = torch.randn(4, 8), torch.randn(6, 8), torch.randn(6, 3)
    bias = torch.randn(4, 6)
    out, _, *_ = attention(q, k, v, bias=bias)
    ref = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=bias[None])[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_attention_dense_fully_masked_row_reads_zero():
    q, k, v = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 2)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    out, w, *_ = attention(q, k, v, mask=mask)
    assert torch.equal(out[1], torch.zeros(2))
    assert torch.isfinite(out).all()


def test_attention_sparse_complete_graph_equals_dense():
    nq, nk, heads, d, dv = 4, 5, 2, 6, 3
    q = torch.randn(nq, heads, d, dtype=DT)
    k = torch.randn(nk, heads, d, dtype=DT)
    v = torch.randn(nk, heads, dv, dtype=DT)
    src, dst = torch.meshgrid(torch.arange(nk), torch.arange(nq), indexing="ij")
    ei = torch.stack([src.flatten(), dst.flatten()])
    perm = torch.randperm(ei.size(1))
    ei = ei[:, perm]
    out_s, w_s, *_ = attention(q, k, v, edge_index=ei, num_queries=nq)
    out_d, w_d, *_ = attention(_dense(q), _dense(k), _dense(v))
    torch.testing.assert_close(out_s, out_d.transpose(0, 1))
    torch.testing.assert_close(w_s, _gather(w_d, ei))


@pytest.mark.parametrize("score", [dot_score, lambda q, k, **layout: cosine_score(q, k, 3.0, **layout)])
def test_attention_sparse_vs_loop(score):
    nq, nk, d = 4, 6, 3
    q, k, v = torch.randn(nq, d, dtype=DT), torch.randn(nk, d, dtype=DT), torch.randn(nk, 2, dtype=DT)
    ei = _random_edges(nk, nq - 1, 10)  # query nq-1 is isolated
    out, w, *_ = attention(q, k, v, score=score, edge_index=ei, num_queries=nq)
    logits = score(q, k, edge_index=ei)
    ref = torch.zeros(nq, 2, dtype=DT)
    for i in range(nq):
        edges = [e for e in range(ei.size(1)) if int(ei[1, e]) == i]
        if not edges:
            continue
        m = max(float(logits[e]) for e in edges)
        z = sum(math.exp(float(logits[e]) - m) for e in edges)
        for e in edges:
            ref[i] += math.exp(float(logits[e]) - m) / z * v[int(ei[0, e])]
    torch.testing.assert_close(out, ref)
    assert torch.equal(out[nq - 1], torch.zeros(2, dtype=DT))


def test_attention_dropout_only_in_training():
    q, k, v = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 2)
    a, _, *_ = attention(q, k, v, dropout=0.5, training=False)
    b, _, *_ = attention(q, k, v)
    torch.testing.assert_close(a, b)
    _, w, *_ = attention(q, k, v, dropout=0.5, training=True)
    assert (w == 0).any()


def test_attention_hard_normalizer_selects_one_value():
    q, k, v = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 2)
    out, w, *_ = attention(q, k, v, normalizer="hard")
    best = scaled_dot_score(q, k).argmax(-1)
    torch.testing.assert_close(out, v[best])


# --------------------------------------------------------------------------------------------
# score modules
# --------------------------------------------------------------------------------------------


def test_gat_score_module_hand_and_layouts():
    heads, d = 2, 4
    mod = GATScore(d, heads, negative_slope=0.1).double()
    q, k = torch.randn(3, heads, d, dtype=DT), torch.randn(5, heads, d, dtype=DT)
    ei = _random_edges(5, 3, 9)
    sparse = mod(q, k, edge_index=ei).detach()
    assert sparse.shape == (9, heads)
    for e in range(9):
        j, i = int(ei[0, e]), int(ei[1, e])
        for h in range(heads):
            pre = _dot(mod.att_dst.detach()[0, h], q[i, h]) + _dot(mod.att_src.detach()[0, h], k[j, h])
            assert float(sparse[e, h]) == pytest.approx(_leaky(pre, 0.1))
    dense = mod(q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0)).detach()  # (1, H, L, D)
    assert dense.shape == (1, heads, 3, 5)
    torch.testing.assert_close(sparse, _gather(dense[0], ei))


def test_bilinear_identity_init_equals_dot():
    heads, d = 3, 4
    mod = BilinearScore(d, heads)
    q, k = torch.randn(4, heads, d), torch.randn(6, heads, d)
    ei = _random_edges(6, 4, 10)
    torch.testing.assert_close(mod(q, k, edge_index=ei), dot_score(q, k, edge_index=ei))
    qd, kd = torch.randn(2, heads, 4, d), torch.randn(2, heads, 6, d)
    torch.testing.assert_close(mod(qd, kd), dot_score(qd, kd))
    with torch.no_grad():
        mod.weight.normal_()
    assert not torch.allclose(mod(q, k, edge_index=ei), dot_score(q, k, edge_index=ei))
    mod.reset_parameters()
    torch.testing.assert_close(mod(q, k, edge_index=ei), dot_score(q, k, edge_index=ei))


def test_cosine_score_module():
    heads, d = 2, 5
    mod = CosineScore(d, heads, beta=2.5)
    torch.testing.assert_close(mod.beta, torch.full((heads,), 2.5))
    q, k = torch.randn(3, heads, d), torch.randn(4, heads, d)
    ei = _random_edges(4, 3, 7)
    out = mod(q, k, edge_index=ei)
    ref = 2.5 * F.cosine_similarity(q[ei[1]], k[ei[0]], dim=-1)
    torch.testing.assert_close(out, ref)
    qd, kd = q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0)
    dense = mod(qd, kd)
    ref_dense = 2.5 * F.cosine_similarity(qd.unsqueeze(-2), kd.unsqueeze(-3), dim=-1)
    torch.testing.assert_close(dense, ref_dense)
    # the strength is learnable and positive
    out.sum().backward()
    assert mod.raw_beta.grad is not None


def test_dot_and_scaled_dot_modules():
    q, k = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    torch.testing.assert_close(DotScore(4)(q, k), q @ k.transpose(-1, -2))
    torch.testing.assert_close(ScaledDotScore(4)(q, k), q @ k.transpose(-1, -2) / 2.0)


@pytest.mark.parametrize(
    "name, cls",
    [("gat", GATScore), ("gatv2", GATv2Score), ("additive", AdditiveScore), ("dot", DotScore),
     ("scaled_dot", ScaledDotScore), ("bilinear", BilinearScore), ("cosine", CosineScore)],
)
def test_make_score(name, cls):
    mod = make_score(name, 4, heads=2)
    assert isinstance(mod, cls)
    q, k = torch.randn(3, 2, 4), torch.randn(5, 2, 4)
    ei = _random_edges(5, 3, 6)
    assert mod(q, k, edge_index=ei).shape == (6, 2)
    mod.reset_parameters()


def test_make_score_unknown():
    with pytest.raises(ValueError, match="unknown score"):
        make_score("euclidean", 4)


@pytest.mark.parametrize("method", ["hard", "gumbel_hard"])
def test_hard_fully_masked_row_reads_nothing(method):
    logits = torch.randn(3, 4)
    mask = torch.tensor([[True, False, True, True], [False] * 4, [True] * 4])
    weights = normalize(logits, method, mask=mask)
    assert weights[1].eq(0).all()
    assert weights[0].sum() == 1 and weights[2].sum() == 1 and weights[0, 1] == 0


# --------------------------------------------------------------------------------------------
# the one contract: every score module, the registry, the "none" normalizer, scale, NTM
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCORES))
def test_every_score_module_is_its_formula_in_both_layouts(name):
    heads, d = 2, 4
    mod = make_score(name, d, heads).double()
    randomize(mod)
    q, k = torch.randn(3, heads, d, dtype=DT), torch.randn(5, heads, d, dtype=DT)  # sparse (N, H, D)
    qd, kd = _dense(q).unsqueeze(0), _dense(k).unsqueeze(0)  # dense (1, H, L, D)
    dense = mod(qd, kd)
    torch.testing.assert_close(dense, hand_score(name, mod, qd, kd))
    ei = _random_edges(5, 3, 9)
    bias = torch.randn(9, heads, dtype=DT)
    sparse = mod(q, k, edge_index=ei, bias=bias)
    if name == "gat":  # the bias goes inside GAT's LeakyReLU
        pre = torch.einsum("ehd,hd->eh", q[ei[1]], mod.att_dst[0]) + torch.einsum("ehd,hd->eh", k[ei[0]], mod.att_src[0])
        torch.testing.assert_close(sparse, F.leaky_relu(pre + bias, 0.2))
    else:  # and is added to every other logit
        torch.testing.assert_close(sparse, _gather(dense[0], ei) + bias)
    # the key side computed once gives the same logits
    torch.testing.assert_close(mod.logits(qd, mod.project_key(kd)), dense)


@pytest.mark.parametrize("name", list(SCORES))
def test_scores_with_one_head_take_inputs_without_a_head_dimension(name):
    mod = make_score(name, 4).double()
    randomize(mod)
    q, k = torch.randn(2, 3, 4, dtype=DT), torch.randn(2, 5, 4, dtype=DT)  # (B, L, D)
    expected = hand_score(name, mod, q.unsqueeze(1), k.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(mod(q, k), expected)
    ei = _random_edges(5, 3, 7)
    torch.testing.assert_close(mod(q[0], k[0], edge_index=ei), expected[0][ei[1], ei[0]])


def test_additive_is_bahdanau_and_gat_is_gats_score():
    mod = make_score("additive", 3, key_channels=5, hidden_channels=4).double()
    q, k = torch.randn(1, 2, 3, dtype=DT), torch.randn(1, 6, 5, dtype=DT)
    w, u, v = mod.key_weight[0], mod.query_weight[0], mod.att[0]
    expected = torch.tanh((k @ w.t()).unsqueeze(-3) + (q @ u.t()).unsqueeze(-2)) @ v  # v^T tanh(W k + U q)
    torch.testing.assert_close(mod(q, k), expected)
    gat = make_score("gat", 3, key_channels=5, negative_slope=0.1).double()
    expected = F.leaky_relu((q @ gat.att_dst[0, 0]).unsqueeze(-1) + (k @ gat.att_src[0, 0]).unsqueeze(-2), 0.1)
    torch.testing.assert_close(gat(q, k), expected)


def test_one_check_with_a_one_line_error_listing_the_choices():
    with pytest.raises(ValueError) as error:
        check_attention_options(score="euclid")
    assert str(error.value) == ("unknown score 'euclid'; choose one of gat, gatv2, additive, dot, scaled_dot, "
                                "bilinear, cosine")
    with pytest.raises(ValueError) as error:
        check_attention_options(normalizer="sparsemax")
    assert str(error.value) == "unknown normalizer 'sparsemax'; choose one of softmax, hard, gumbel, gumbel_hard, none"
    with pytest.raises(ValueError, match="unknown normalizer 'sparsemax'"):
        normalize(torch.randn(3), "sparsemax")
    check_attention_options("gat", "none")


def test_make_score_sizes_and_options():
    assert make_score("dot", 4, negative_slope=0.1, beta=3.0).extra_repr() == "4, heads=1"  # not its options
    assert make_score("cosine", 4, beta=3.0).beta.item() == pytest.approx(3.0)
    assert make_score("gat", 4, negative_slope=0.3).negative_slope == 0.3
    assert make_score("bilinear", 3, 2, key_channels=5).weight.shape == (2, 5, 3)
    for name in ("dot", "scaled_dot", "cosine", "gatv2"):
        with pytest.raises(ValueError, match=r"query size \(3\) must equal the key size \(5\)"):
            make_score(name, 3, key_channels=5)


def test_none_normalizer_keeps_the_logits_dense_and_sparse():
    logits = torch.randn(2, 3, 4)
    keep = torch.rand(2, 3, 4) > 0.3
    torch.testing.assert_close(normalize(logits, "none", mask=keep), logits * keep)
    edge_logits = torch.randn(7, 2)
    assert torch.equal(normalize(edge_logits, "none", index=torch.tensor([0, 0, 1, 2, 2, 2, 3])), edge_logits)
    q, k, v = torch.randn(3, 4, dtype=DT), torch.randn(5, 4, dtype=DT), torch.randn(5, 2, dtype=DT)
    out, w, *_ = attention(q, k, v, dot_score, "none")
    torch.testing.assert_close(out, (q @ k.t()) @ v)  # linear attention: r = (q^T k) v


def test_scale_bias_and_transform_order():
    q, k, v = torch.randn(3, 4, dtype=DT), torch.randn(5, 4, dtype=DT), torch.randn(5, 2, dtype=DT)
    bias = torch.randn(3, 5, dtype=DT)
    result = attention(q, k, v, dot_score, scale=2.5, bias=bias, logits_transform=lambda s: s - 1.0)
    logits = 2.5 * (q @ k.t() + bias) - 1.0
    torch.testing.assert_close(result.logits, logits)
    torch.testing.assert_close(result.out, torch.softmax(logits, -1) @ v)


def test_weights_before_and_after_dropout():
    q, k, v = torch.randn(3, 4), torch.randn(6, 4), torch.randn(6, 2)
    result = attention(q, k, v, dropout=0.5, training=True)
    torch.testing.assert_close(result.normalized.sum(-1), torch.ones(3))
    assert (result.weights == 0).any()
    torch.testing.assert_close(result.weights[result.weights != 0], 2 * result.normalized[result.weights != 0])
    torch.testing.assert_close(result.out, result.weights @ v)


def test_sparse_attention_takes_the_fused_read_when_large(monkeypatch):
    import graphmem.attention.read as read_module

    calls = []
    fused = read_module.sparse_read_fused
    monkeypatch.setattr(read_module, "sparse_read_fused", lambda *a: calls.append(1) or fused(*a))
    q, k, v = torch.randn(4, 2, 3, dtype=DT), torch.randn(5, 2, 3, dtype=DT), torch.randn(5, 2, 6, dtype=DT)
    ei = _random_edges(5, 4, 12)
    small, *_ = attention(q, k, v, edge_index=ei)
    assert not calls
    monkeypatch.setattr(read_module, "FUSED_MIN_MESSAGE_SIZE", 0)
    large, *_ = attention(q, k, v, edge_index=ei)
    assert calls == [1]
    torch.testing.assert_close(large, small)
    custom, *_ = attention(q, k, v, edge_index=ei, read=lambda w, val, e, n: torch.zeros(n, 2, 6, dtype=DT))
    assert custom.eq(0).all() and calls == [1]


def test_ntm_content_addressing_is_the_dense_core():
    """w_i = softmax_i(beta cos(k, M_i)) over memory rows and r = sum_i w_i M_i (Graves et al. 2014),
    one query row per head, each with its own key strength beta."""
    batch, heads, rows, width = 2, 3, 7, 5
    memory = torch.randn(batch, rows, width, dtype=DT)
    memory[0, 2] = 0.0  # an unwritten row: cosine 0, not NaN
    key = torch.randn(batch, heads, width, dtype=DT)
    beta = torch.rand(batch, heads, dtype=DT) * 5
    read, weights, *_ = attention(key, memory, memory, score=cosine_score, scale=beta.unsqueeze(-1))
    cos = (key @ memory.transpose(1, 2)) / (key.norm(dim=-1, keepdim=True) * memory.norm(dim=-1).clamp_min(1e-8)[:, None])
    expected = torch.softmax(beta[..., None] * cos, -1)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(read, expected @ memory)
    assert torch.isfinite(weights).all()
