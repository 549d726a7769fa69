"""The fused sparse read against the plain one, and GATConv on the fused path against PyG."""

from __future__ import annotations

import pytest
import torch

import graphmem.attention.fused as fused_module
import graphmem.attention.read as read_module
from graphmem.attention import sparse_read, sparse_read_auto, sparse_read_fused
from graphmem.nn import GATConv
from tests.test_gat_conv import ATOL, RTOL, _compare, _graph, _pair, _run



@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------------
# sparse_read_fused against sparse_read
# ----------------------------------------------------------------------------------------


def _random_read(num_keys: int, num_queries: int, num_edges: int, shared: tuple[int, ...], channels: int,
                 dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.stack([torch.randint(0, num_keys, (num_edges,), generator=g),
                              torch.randint(0, num_queries, (num_edges,), generator=g)])
    weights = torch.rand((num_edges,) + shared, generator=g, dtype=dtype)
    value = torch.randn((num_keys,) + shared + (channels,), generator=g, dtype=dtype)
    return weights, value, edge_index


def _read_and_grads(read, weights, value, edge_index, num_queries, seed: int = 1):
    w, v = weights.clone().requires_grad_(True), value.clone().requires_grad_(True)
    out = read(w, v, edge_index, num_queries)
    c = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (out * c).sum().backward()
    return out.detach(), w.grad, v.grad


@pytest.fixture(params=["int32", "int64"])
def index_dtype(request, monkeypatch):
    """Runs a test with 32-bit CSR indices (the default) and with 64-bit ones (huge graphs)."""
    if request.param == "int64":
        monkeypatch.setattr(fused_module, "_INT32_MAX", 0)
    return request.param


@pytest.mark.parametrize(("shared", "channels"), [((), 5), ((1,), 3), ((4,), 6), ((2, 3), 4)])
@pytest.mark.parametrize(("num_keys", "num_queries"), [(30, 30), (40, 17)])
def test_fused_matches_plain_read(shared, channels, num_keys, num_queries, index_dtype):
    weights, value, edge_index = _random_read(num_keys, num_queries, 200, shared, channels)
    edge_index[:, :5] = edge_index[:, 5:10]  # duplicate edges count twice
    edge_index[1][edge_index[1] == 3] = 4  # query 3 has no edges and reads zeros
    out_f, gw_f, gv_f = _read_and_grads(sparse_read_fused, weights, value, edge_index, num_queries)
    out_p, gw_p, gv_p = _read_and_grads(sparse_read, weights, value, edge_index, num_queries)
    assert out_f.shape == (num_queries,) + shared + (channels,)
    torch.testing.assert_close(out_f, out_p, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(gw_f, gw_p, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(gv_f, gv_p, atol=ATOL, rtol=RTOL)
    assert torch.equal(out_f[3], torch.zeros_like(out_f[3]))


def test_fused_gradcheck_float64(index_dtype):
    weights, value, edge_index = _random_read(6, 4, 14, (2,), 3, dtype=torch.float64)
    edge_index[:, 0] = edge_index[:, 1]  # a duplicate edge
    edge_index[1][edge_index[1] == 2] = 1  # an isolated query
    weights.requires_grad_(True)
    value.requires_grad_(True)
    # the full Jacobian once; the 64-bit index variant only needs the cheaper random projection
    assert torch.autograd.gradcheck(lambda w, v: sparse_read_fused(w, v, edge_index, 5), (weights, value),
                                    fast_mode=index_dtype == "int64")


@pytest.mark.parametrize("needs_grad", ["weights", "value"])
def test_fused_gradient_of_one_input_only(needs_grad):
    weights, value, edge_index = _random_read(9, 9, 40, (2,), 3)
    c = torch.randn(9, 2, 3)
    grads = []
    for read in (sparse_read_fused, sparse_read):
        leaf = (weights if needs_grad == "weights" else value).clone().requires_grad_(True)
        args = (leaf, value) if needs_grad == "weights" else (weights, leaf)
        (read(*args, edge_index, 9) * c).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=ATOL, rtol=RTOL)


def test_fused_empty_edge_list():
    value = torch.randn(4, 2, 3, requires_grad=True)
    weights = torch.zeros(0, 2, requires_grad=True)
    out = sparse_read_fused(weights, value, torch.zeros(2, 0, dtype=torch.long), 5)
    assert out.shape == (5, 2, 3) and torch.equal(out, torch.zeros(5, 2, 3))
    out.sum().backward()
    assert torch.equal(value.grad, torch.zeros_like(value))
    assert weights.grad.shape == (0, 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_low_precision_computes_in_float32(dtype):
    weights, value, edge_index = _random_read(20, 20, 80, (2,), 4)
    out = sparse_read_fused(weights.to(dtype), value.to(dtype), edge_index, 20)
    assert out.dtype == dtype
    reference = sparse_read(weights.to(dtype).float(), value.to(dtype).float(), edge_index, 20)
    torch.testing.assert_close(out.float(), reference, atol=1e-2, rtol=1e-2)


def test_fused_rejects_mismatched_heads():
    weights, value, edge_index = _random_read(5, 5, 10, (2,), 3)
    with pytest.raises(ValueError, match="must share"):
        sparse_read_fused(weights, value[:, :1], edge_index, 5)


def test_fused_is_bitwise_reproducible():
    # large enough that the sort, the sparse products and the SDDMM run multi-threaded
    weights, value, edge_index = _random_read(3000, 3000, 60_000, (4,), 8)
    first = _read_and_grads(sparse_read_fused, weights, value, edge_index, 3000)
    for _ in range(2):
        again = _read_and_grads(sparse_read_fused, weights, value, edge_index, 3000)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts calls of the fused kernel made through sparse_read_auto."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return sparse_read_fused(*args, **kwargs)

    monkeypatch.setattr(read_module, "sparse_read_fused", spy)
    return calls


def test_auto_uses_plain_read_for_small_and_fused_for_large(fused_calls):
    small = _random_read(10, 10, 30, (2,), 4)
    sparse_read_auto(*small, 10)
    assert not fused_calls
    num_edges = read_module.FUSED_MIN_MESSAGE_SIZE // (2 * 4)
    large = _random_read(50, 50, num_edges, (2,), 4)
    torch.testing.assert_close(sparse_read_auto(*large, 50), sparse_read(*large, 50), atol=ATOL, rtol=RTOL)
    assert len(fused_calls) == 1


def test_auto_deterministic_forces_fused(fused_calls):
    small = _random_read(10, 10, 30, (2,), 4)
    sparse_read_auto(*small, 10, deterministic=True)
    assert len(fused_calls) == 1
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        sparse_read_auto(*small, 10)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert len(fused_calls) == 2
    sparse_read_auto(*small, 10, deterministic=False)
    assert len(fused_calls) == 2


# ----------------------------------------------------------------------------------------
# GATConv on the fused path
# ----------------------------------------------------------------------------------------


@pytest.fixture
def always_fused(monkeypatch):
    """GATConv (through sparse_read_auto) takes the fused path whatever the graph size."""
    monkeypatch.setattr(read_module, "FUSED_MIN_MESSAGE_SIZE", 0)


@pytest.mark.usefixtures("always_fused")
@pytest.mark.parametrize(("heads", "concat", "edge_dim", "add_self_loops", "residual"), [
    (1, True, None, True, False),
    (3, True, 4, True, True),
    (3, False, None, False, False),
    (2, False, 4, False, True),
])
def test_gat_fused_matches_pyg(heads, concat, edge_dim, add_self_loops, residual, fused_calls):
    x, edge_index, edge_attr = _graph(edge_dim=edge_dim)
    ours, ref = _pair(5, 4, heads=heads, concat=concat, edge_dim=edge_dim, add_self_loops=add_self_loops,
                      residual=residual)
    _compare(ours, ref, x, edge_index, edge_attr)
    assert fused_calls


@pytest.mark.usefixtures("always_fused")
@pytest.mark.parametrize("concat", [True, False])
def test_gat_fused_matches_pyg_bipartite(concat, fused_calls):
    x_src, x_dst = torch.randn(7, 5), torch.randn(4, 3)
    edge_index = torch.tensor([[0, 1, 2, 6, 5, 3, 3, 1], [0, 0, 1, 1, 2, 3, 0, 1]])
    ours, ref = _pair((5, 3), 4, heads=2, concat=concat, edge_dim=None)
    _compare(ours, ref, (x_src, x_dst), edge_index)
    assert fused_calls


@pytest.mark.usefixtures("always_fused")
def test_gat_fused_empty_edge_list_without_self_loops():
    x = torch.randn(5, 3)
    ours, ref = _pair(3, 4, heads=2, add_self_loops=False)
    empty = torch.zeros(2, 0, dtype=torch.long)
    c = torch.randn(5, 8)
    out_o, g_o = _run(ours, x, empty, None, c)
    out_r, g_r = _run(ref, x, empty, None, c)
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(g_o["lin.weight"], g_r["lin.weight"], atol=ATOL, rtol=RTOL)


def _fused_and_plain(monkeypatch, conv, *inputs):
    """Output and gradients of ``conv`` with the fused read and with the plain one."""
    c = torch.randn(conv(*inputs).shape)
    results = []
    for threshold in (0, 2**62):
        monkeypatch.setattr(read_module, "FUSED_MIN_MESSAGE_SIZE", threshold)
        torch.manual_seed(1)  # the same Gumbel noise for both reads
        results.append(_run(conv, inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, c))
    return results


@pytest.mark.parametrize(("score", "normalizer"), [
    ("dot", "softmax"), ("cosine", "softmax"), ("bilinear", "softmax"), ("scaled_dot", "hard"),
    ("gat", "hard"), ("gat", "gumbel"), ("gat", "none"), ("gatv2", "none"),
])
def test_gat_fused_matches_plain_for_other_scores_and_normalizers(monkeypatch, score, normalizer):
    x, edge_index, edge_attr = _graph(edge_dim=3)
    conv = GATConv(5, 4, heads=2, score=score, normalizer=normalizer, edge_dim=3)
    (out_f, g_f), (out_p, g_p) = _fused_and_plain(monkeypatch, conv, x, edge_index, edge_attr)
    torch.testing.assert_close(out_f, out_p, atol=ATOL, rtol=RTOL)
    for name in g_p:
        torch.testing.assert_close(g_f[name], g_p[name], atol=ATOL, rtol=RTOL, msg=name)


def test_gat_default_dispatch_on_a_larger_graph_matches_pyg(fused_calls):
    # 1200 nodes, 12000 edges, 4 heads x 8: messages above FUSED_MIN_MESSAGE_SIZE, so the
    # layer takes the fused path on its own. In float64, since float32 gradients summed over
    # this many edges differ from PyG's by ~1e-4 on either read path, through summation order.
    x = torch.randn(1200, 16, dtype=torch.float64)
    edge_index = torch.randint(0, 1200, (2, 12_000))
    ours, ref = _pair(16, 8, heads=4)
    _compare(ours.double(), ref.double(), x, edge_index)
    assert fused_calls


def test_gat_fused_is_bitwise_reproducible(always_fused):
    x = torch.randn(500, 16)
    edge_index = torch.randint(0, 500, (2, 8000))
    conv = GATConv(16, 8, heads=4)
    c = torch.randn(500, 32)
    first = _run(conv, x, edge_index, None, c)
    again = _run(conv, x, edge_index, None, c)
    assert torch.equal(first[0], again[0])
    for name in first[1]:
        assert torch.equal(first[1][name], again[1][name]), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_cuda_matches_cpu_and_is_reproducible():
    weights, value, edge_index = _random_read(400, 300, 5000, (4,), 8)
    cpu = _read_and_grads(sparse_read_fused, weights, value, edge_index, 300)
    cuda = _read_and_grads(sparse_read_fused, weights.cuda(), value.cuda(), edge_index.cuda(), 300)
    again = _read_and_grads(sparse_read_fused, weights.cuda(), value.cuda(), edge_index.cuda(), 300)
    for a, b, c in zip(cpu, cuda, again):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)
        assert torch.equal(b, c)
