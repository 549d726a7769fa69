"""graphmem.nn.GATConv against torch_geometric.nn.GATConv (same parameters, same inputs)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch_geometric.nn as pygnn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from graphmem import checks
from graphmem.nn import GATConv
from graphmem.nn.gat_conv import head_dropout_linear

ATOL = 1e-5
RTOL = 1e-5


@pytest.fixture(autouse=True)
def _seed_and_checks():
    torch.manual_seed(0)
    previous = checks._enabled  # run with checks on even under GRAPHMEM_CHECKS=0
    checks.set_enabled(True)
    yield
    checks.set_enabled(previous)


def _graph(num_nodes: int = 6, edge_dim: int | None = None):
    """A small graph with a self-loop, a duplicate edge and a node without in-edges (node 5)."""
    edge_index = torch.tensor(
        [[0, 1, 2, 3, 4, 0, 2, 2, 3, 1, 5, 4],
         [1, 0, 1, 2, 3, 3, 4, 4, 3, 2, 0, 0]]
    )
    x = torch.randn(num_nodes, 5)
    edge_attr = torch.randn(edge_index.size(1), edge_dim) if edge_dim is not None else None
    return x, edge_index, edge_attr


def _randomize(module: torch.nn.Module) -> None:
    """Non-default values everywhere (PyG initialises the bias to zero)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)


def _pair(*args, **kwargs):
    ref = pygnn.GATConv(*args, **kwargs)
    _randomize(ref)
    ours = GATConv(*args, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _leaf(t):
    return None if t is None else t.detach().clone().requires_grad_(True)


def _run(module, x, edge_index, edge_attr, c, **kwargs):
    """Forward + backward of sum(out * c); returns output and every gradient."""
    xs = tuple(_leaf(t) for t in x) if isinstance(x, tuple) else _leaf(x)
    ea = _leaf(edge_attr)
    module.zero_grad()
    out = module(xs, edge_index, ea, **kwargs)
    (out * c).sum().backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    if isinstance(xs, tuple):
        grads.update({f"x{i}": t.grad for i, t in enumerate(xs) if t is not None})
    else:
        grads["x"] = xs.grad
    if ea is not None:
        grads["edge_attr"] = ea.grad
    return out.detach(), grads


def _compare(ours, ref, x, edge_index, edge_attr=None, **kwargs):
    with torch.no_grad():
        shape = ref(x, edge_index, edge_attr, **kwargs).shape
    c = torch.randn(shape)
    out_o, g_o = _run(ours, x, edge_index, edge_attr, c, **kwargs)
    out_r, g_r = _run(ref, x, edge_index, edge_attr, c, **kwargs)
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=RTOL)
    assert set(g_o) == set(g_r)
    for name in g_r:
        assert g_r[name] is not None, name
        assert g_o[name] is not None, name
        torch.testing.assert_close(g_o[name], g_r[name], atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")
    return out_o


# --------------------------------------------------------------------------------------------
# Equivalence with PyG
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("add_self_loops", [True, False])
@pytest.mark.parametrize("edge_dim", [None, 4])
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("concat", [True, False])
def test_matches_pyg(concat, heads, edge_dim, add_self_loops, residual):
    x, edge_index, edge_attr = _graph(edge_dim=edge_dim)
    ours, ref = _pair(5, 4, heads=heads, concat=concat, edge_dim=edge_dim,
                      add_self_loops=add_self_loops, residual=residual)
    out = _compare(ours, ref, x, edge_index, edge_attr)
    assert out.shape == (6, heads * 4 if concat else 4)


@pytest.mark.parametrize("fill_value", ["mean", "add", 0.5, "max"])
@pytest.mark.parametrize("heads", [1, 2])
def test_matches_pyg_fill_value(fill_value, heads):
    x, edge_index, edge_attr = _graph(edge_dim=3)
    ours, ref = _pair(5, 4, heads=heads, edge_dim=3, fill_value=fill_value)
    _compare(ours, ref, x, edge_index, edge_attr)


def test_matches_pyg_tensor_fill_value():
    x, edge_index, edge_attr = _graph(edge_dim=3)
    ours, ref = _pair(5, 4, heads=2, edge_dim=3, fill_value=torch.tensor([0.1, -0.2, 0.3]))
    _compare(ours, ref, x, edge_index, edge_attr)


def test_matches_pyg_one_dimensional_edge_attr():
    x, edge_index, _ = _graph()
    edge_attr = torch.randn(edge_index.size(1))
    ours, ref = _pair(5, 3, heads=2, edge_dim=1)
    _compare(ours, ref, x, edge_index, edge_attr)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("add_self_loops", [True, False])
@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("edge_dim", [None, 2])
def test_matches_pyg_bipartite(concat, add_self_loops, residual, edge_dim):
    x_src, x_dst = torch.randn(7, 5), torch.randn(4, 3)
    edge_index = torch.tensor([[0, 1, 2, 6, 5, 3, 3, 1], [0, 0, 1, 1, 2, 3, 0, 1]])
    edge_attr = torch.randn(edge_index.size(1), edge_dim) if edge_dim else None
    ours, ref = _pair((5, 3), 4, heads=2, concat=concat, add_self_loops=add_self_loops,
                      residual=residual, edge_dim=edge_dim)
    out = _compare(ours, ref, (x_src, x_dst), edge_index, edge_attr)
    assert out.shape[0] == 4


@pytest.mark.parametrize("add_self_loops", [True, False])
def test_matches_pyg_bipartite_without_target_features(add_self_loops):
    x_src = torch.randn(7, 5)
    edge_index = torch.tensor([[0, 1, 2, 6, 5, 3, 3, 1], [0, 0, 1, 1, 2, 3, 0, 1]])
    ours, ref = _pair((5, 3), 4, heads=2, add_self_loops=add_self_loops)
    c = torch.randn(4, 8)
    out_o, g_o = _run(ours, (x_src, None), edge_index, None, c, size=(7, 4))
    out_r, g_r = _run(ref, (x_src, None), edge_index, None, c, size=(7, 4))
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=RTOL)
    for name in ("x0", "lin_src.weight", "att_src", "bias"):
        torch.testing.assert_close(g_o[name], g_r[name], atol=ATOL, rtol=RTOL)


def test_matches_pyg_shared_lin_with_pair_input():
    """Non-bipartite layer called with a (x_src, x_dst) pair: one shared projection."""
    x_src, x_dst = torch.randn(6, 5), torch.randn(3, 5)
    edge_index = torch.tensor([[0, 1, 5, 4, 2], [0, 1, 1, 2, 2]])
    ours, ref = _pair(5, 4, heads=2, residual=True)
    _compare(ours, ref, (x_src, x_dst), edge_index)


def test_matches_pyg_no_bias_other_slope():
    x, edge_index, _ = _graph()
    ours, ref = _pair(5, 4, heads=2, bias=False, negative_slope=0.05)
    _compare(ours, ref, x, edge_index)


def test_matches_pyg_float64():
    x, edge_index, edge_attr = _graph(edge_dim=2)
    ours, ref = _pair(5, 4, heads=2, edge_dim=2)
    ours, ref = ours.double(), ref.double()
    out = ours(x.double(), edge_index, edge_attr.double())
    torch.testing.assert_close(out, ref(x.double(), edge_index, edge_attr.double()), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("add_self_loops", [True, False])
@pytest.mark.parametrize("edge_dim", [None, 3])
def test_return_attention_weights_matches_pyg(add_self_loops, edge_dim):
    x, edge_index, edge_attr = _graph(edge_dim=edge_dim)
    ours, ref = _pair(5, 4, heads=3, edge_dim=edge_dim, add_self_loops=add_self_loops)
    out_o, (ei_o, a_o) = ours(x, edge_index, edge_attr, return_attention_weights=True)
    out_r, (ei_r, a_r) = ref(x, edge_index, edge_attr, return_attention_weights=True)
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=RTOL)
    assert torch.equal(ei_o, ei_r)
    torch.testing.assert_close(a_o, a_r, atol=ATOL, rtol=RTOL)
    assert a_o.shape == (ei_o.size(1), 3)
    if add_self_loops:
        # the input's self-loop (3, 3) is replaced by exactly one loop per node
        loops = ei_o[0] == ei_o[1]
        assert int(loops.sum()) == 6
        assert sorted(ei_o[0, loops].tolist()) == list(range(6))
    # weights sum to one over each target's in-edges
    sums = torch.zeros(6, 3).index_add(0, ei_o[1], a_o.detach())
    has_edges = torch.zeros(6, dtype=torch.bool)
    has_edges[ei_o[1]] = True
    torch.testing.assert_close(sums[has_edges], torch.ones(int(has_edges.sum()), 3))


def test_in_pyg_sequential():
    x, edge_index, _ = _graph()

    def build(conv_cls):
        return pygnn.Sequential("x, edge_index", [
            (conv_cls(5, 4, heads=2), "x, edge_index -> x"),
            torch.nn.ELU(),
            (conv_cls(8, 3, heads=2, concat=False), "x, edge_index -> x"),
        ])

    ref = build(pygnn.GATConv)
    _randomize(ref)
    ours = build(GATConv)
    ours.load_state_dict(ref.state_dict(), strict=True)
    out = ours(x, edge_index)
    assert out.shape == (6, 3)
    torch.testing.assert_close(out, ref(x, edge_index), atol=ATOL, rtol=RTOL)


def test_with_dataloader_batch():
    graphs = []
    for n in (4, 7, 5):
        ei = torch.randint(0, n, (2, 2 * n))
        graphs.append(Data(x=torch.randn(n, 5), edge_index=ei, edge_attr=torch.randn(2 * n, 2)))
    loader = DataLoader(graphs, batch_size=3, shuffle=False)
    batch = next(iter(loader))
    assert isinstance(batch, Batch) and batch.num_graphs == 3
    ours, ref = _pair(5, 4, heads=2, edge_dim=2)
    out = _compare(ours, ref, batch.x, batch.edge_index, batch.edge_attr)
    # graphs in a batch do not see each other: same result as one at a time
    ours.eval()
    for i, g in enumerate(graphs):
        single = ours(g.x, g.edge_index, g.edge_attr)
        torch.testing.assert_close(out[batch.batch == i], single.detach(), atol=ATOL, rtol=RTOL)


def test_lazy_in_channels():
    x, edge_index, _ = _graph()
    ours = GATConv(-1, 4, heads=2, residual=True)
    out = ours(x, edge_index)
    assert out.shape == (6, 8)
    assert ours.lin.weight.shape == (8, 5)
    ref = pygnn.GATConv(5, 4, heads=2, residual=True)
    _randomize(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    torch.testing.assert_close(ours(x, edge_index), ref(x, edge_index), atol=ATOL, rtol=RTOL)


def test_lazy_in_channels_bipartite():
    x_src, x_dst = torch.randn(5, 6), torch.randn(3, 2)
    edge_index = torch.tensor([[0, 4, 2], [0, 1, 2]])
    ours = GATConv((-1, -1), 4, heads=2)
    assert ours((x_src, x_dst), edge_index).shape == (3, 8)


def test_dropout_eval_is_identity_train_is_not():
    x, edge_index, _ = _graph()
    ours, ref = _pair(5, 4, heads=2, dropout=0.5)
    ours.eval()
    ref.eval()
    plain = GATConv(5, 4, heads=2, dropout=0.0)
    plain.load_state_dict(ours.state_dict())
    out_eval = ours(x, edge_index)
    torch.testing.assert_close(out_eval, plain(x, edge_index))
    torch.testing.assert_close(out_eval, ref(x, edge_index), atol=ATOL, rtol=RTOL)
    ours.train()
    _, (_, alpha) = ours(x, edge_index, return_attention_weights=True)
    assert (alpha == 0).any()
    assert not torch.allclose(ours(x, edge_index), out_eval)


# --------------------------------------------------------------------------------------------
# Other scores and normalizers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", ["dot", "scaled_dot", "cosine", "bilinear", "gatv2", "gat"])
@pytest.mark.parametrize("edge_dim", [None, 3])
def test_other_scores_run(score, edge_dim):
    x, edge_index, edge_attr = _graph(edge_dim=edge_dim)
    x.requires_grad_(True)
    conv = GATConv(5, 4, heads=2, score=score, edge_dim=edge_dim)
    out, (ei, alpha) = conv(x, edge_index, edge_attr, return_attention_weights=True)
    assert out.shape == (6, 8)
    assert torch.isfinite(out).all()
    sums = torch.zeros(6, 2).index_add(0, ei[1], alpha.detach())
    torch.testing.assert_close(sums, torch.ones(6, 2))  # self-loops: every node has an in-edge
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in conv.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if score != "gat":
        assert "score" in repr(conv)


@pytest.mark.parametrize("scaled", [False, True])
def test_dot_score_attention_by_hand(scaled):
    # no duplicate edges, so each (source, target) pair names one edge
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0, 2, 1, 5], [1, 0, 1, 2, 3, 3, 4, 2, 0]])
    x = torch.randn(6, 5)
    heads, ch = 2, 3
    conv = GATConv(5, ch, heads=heads, score="scaled_dot" if scaled else "dot")
    _, (ei, alpha) = conv(x, edge_index, return_attention_weights=True)
    w = conv.lin.weight.detach()
    h = [[[sum(float(w[hd * ch + c, f]) * float(x[n, f]) for f in range(5)) for c in range(ch)]
          for hd in range(heads)] for n in range(6)]
    found = {(int(ei[0, e]), int(ei[1, e])): alpha[e].detach() for e in range(ei.size(1))}
    for i in range(6):
        neighbours = sorted({int(edge_index[0, e]) for e in range(edge_index.size(1)) if int(edge_index[1, e]) == i}
                            | {i})
        for hd in range(heads):
            scores = [sum(h[i][hd][c] * h[j][hd][c] for c in range(ch)) for j in neighbours]
            if scaled:
                scores = [s / math.sqrt(ch) for s in scores]
            m = max(scores)
            z = sum(math.exp(s - m) for s in scores)
            for j, s in zip(neighbours, scores):
                assert float(found[(j, i)][hd]) == pytest.approx(math.exp(s - m) / z, rel=1e-4, abs=1e-6)
    assert len(found) == ei.size(1) == edge_index.size(1) + 6


def test_hard_normalizer_one_hot_per_target():
    x, edge_index, _ = _graph()
    x.requires_grad_(True)
    conv = GATConv(5, 4, heads=3, normalizer="hard", add_self_loops=False)
    out, (ei, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert ((alpha == 0) | (alpha == 1)).all()
    counts = torch.zeros(6, 3).index_add(0, ei[1], alpha.detach())
    has_edges = torch.zeros(6, dtype=torch.bool)
    has_edges[ei[1]] = True
    torch.testing.assert_close(counts[has_edges], torch.ones(int(has_edges.sum()), 3))
    assert torch.equal(counts[~has_edges], torch.zeros(int((~has_edges).sum()), 3))
    # output for target i is W x_j of its chosen neighbour (plus bias)
    h = conv.lin(x).view(6, 3, 4)
    for e in torch.nonzero(alpha[:, 0]).flatten().tolist():
        j, i = int(ei[0, e]), int(ei[1, e])
        torch.testing.assert_close(out[i, :4], h[j, 0] + conv.bias[:4])
    out.sum().backward()  # straight-through: gradients flow to the attention vectors
    assert conv.att_src.grad is not None and conv.att_src.grad.abs().sum() > 0


@pytest.mark.parametrize("normalizer", ["gumbel", "gumbel_hard"])
def test_gumbel_normalizers_run(normalizer):
    x, edge_index, _ = _graph()
    conv = GATConv(5, 4, heads=2, normalizer=normalizer)
    out, (ei, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(alpha).all()
    sums = torch.zeros(6, 2).index_add(0, ei[1], alpha.detach())
    torch.testing.assert_close(sums, torch.ones(6, 2))


def test_unknown_score_or_normalizer():
    with pytest.raises(ValueError, match="unknown score"):
        GATConv(5, 4, score="euclid")
    with pytest.raises(ValueError, match="unknown normalizer"):
        GATConv(5, 4, normalizer="sparsemax")


# --------------------------------------------------------------------------------------------
# torch.compile, CUDA
# --------------------------------------------------------------------------------------------


def _compile_check(backend: str | None):
    torch._dynamo.reset()
    x, edge_index, edge_attr = _graph(edge_dim=3)
    conv = GATConv(5, 4, heads=2, edge_dim=3).eval()
    eager = conv(x, edge_index, edge_attr)
    compiled = torch.compile(conv, backend=backend) if backend else torch.compile(conv)
    try:
        torch.testing.assert_close(compiled(x, edge_index, edge_attr), eager, atol=ATOL, rtol=RTOL)
        # a second call with another graph (new shapes) still agrees
        x2, edge_index2 = torch.randn(9, 5), torch.randint(0, 9, (2, 20))
        edge_attr2 = torch.randn(20, 3)
        torch.testing.assert_close(compiled(x2, edge_index2, edge_attr2), conv(x2, edge_index2, edge_attr2),
                                   atol=ATOL, rtol=RTOL)
    finally:
        torch._dynamo.reset()
    # checks are skipped while tracing but the eager module still checks afterwards
    with pytest.raises(ValueError):
        conv(x, edge_index + 100, edge_attr)


def test_torch_compile_aot_eager():
    _compile_check("aot_eager")


@pytest.mark.slow
def test_torch_compile_inductor():
    _compile_check(None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_pyg():
    x, edge_index, edge_attr = _graph(edge_dim=3)
    ours, ref = _pair(5, 4, heads=2, edge_dim=3, residual=True)
    ours, ref = ours.cuda(), ref.cuda()
    out_o = ours(x.cuda(), edge_index.cuda(), edge_attr.cuda())
    out_r = ref(x.cuda(), edge_index.cuda(), edge_attr.cuda())
    assert out_o.is_cuda
    torch.testing.assert_close(out_o, out_r, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        ours(x.cuda(), (edge_index + 10).cuda(), edge_attr.cuda())


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _bad_inputs():
    x, edge_index, edge_attr = _graph(edge_dim=3)
    nan_x = x.clone()
    nan_x[2, 1] = float("nan")
    neg = edge_index.clone()
    neg[0, 3] = -1
    out_src = edge_index.clone()
    out_src[0, 0] = 6
    out_dst = edge_index.clone()
    out_dst[1, 4] = 9
    return {
        "out of range source": (x, out_src, edge_attr, r"source index 6 is out of range for 6 nodes"),
        "out of range target": (x, out_dst, edge_attr, r"target index 9 is out of range for 6 nodes"),
        "negative": (x, neg, edge_attr, r"negative node index \(-1\)"),
        "float edge_index": (x, edge_index.float(), edge_attr, r"edge_index must hold integers"),
        "edge_index shape": (x, edge_index[:1], edge_attr[:0], r"shape \(2, num_edges\)"),
        "nan x": (nan_x, edge_index, edge_attr, r"x contains 1 NaN or Inf values \(first in row 2\)"),
        "edge_attr rows": (x, edge_index, edge_attr[:-2], r"edge_attr has 10 rows but edge_index has 12 edges"),
        "x 1-d": (x[:, 0], edge_index, edge_attr, r"x must have 2 dimensions"),
        "x 3-d": (x[None], edge_index, edge_attr, r"x must have 2 dimensions"),
        "integer x": (x.long(), edge_index, edge_attr, r"floating-point"),
        "inf edge_attr": (x, edge_index, edge_attr.masked_fill(edge_attr > 1, float("inf")), r"edge_attr contains"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_raises_clear_value_error(case):
    x, edge_index, edge_attr, message = _bad_inputs()[case]
    conv = GATConv(5, 4, heads=2, edge_dim=3)
    with pytest.raises(ValueError, match=message):
        conv(x, edge_index, edge_attr)


def test_bad_bipartite_inputs():
    conv = GATConv((5, 3), 4)
    x_src, x_dst = torch.randn(7, 5), torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"target index 4 is out of range for 4 nodes"):
        conv((x_src, x_dst), torch.tensor([[0, 6], [0, 4]]))
    with pytest.raises(ValueError, match=r"source index 7 is out of range for 7 nodes"):
        conv((x_src, x_dst), torch.tensor([[7, 6], [0, 3]]))
    bad = x_dst.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"x\[1\] \(target features\)"):
        conv((x_src, bad), torch.tensor([[0, 6], [0, 3]]))


def test_checks_disabled_context():
    x, edge_index, _ = _graph()
    x[2, 1] = float("nan")
    conv = GATConv(5, 4)
    assert checks.enabled()
    with checks.disabled():
        assert not checks.enabled()
        out = conv(x, edge_index)  # no ValueError; NaN flows through
        assert torch.isnan(out).any()
    assert checks.enabled()
    with pytest.raises(ValueError):
        conv(x, edge_index)
    # the previous setting comes back even when the block raises
    with pytest.raises(RuntimeError):
        with checks.disabled():
            raise RuntimeError("boom")
    assert checks.enabled()


def test_checks_set_enabled():
    x, edge_index, _ = _graph()
    x[0, 0] = float("nan")
    conv = GATConv(5, 4)
    checks.set_enabled(False)
    try:
        conv(x, edge_index)
    finally:
        checks.set_enabled(True)
    with pytest.raises(ValueError):
        conv(x, edge_index)


# --------------------------------------------------------------------------------------------
# Misc
# --------------------------------------------------------------------------------------------


def test_repr():
    r = repr(GATConv(5, 4, heads=2))
    assert "GATConv" in r and "heads=2" in r
    assert "GATConv" in repr(GATConv((5, 3), 4, concat=False, edge_dim=2, score="dot", normalizer="hard"))


def test_reset_parameters():
    conv = GATConv(5, 4, heads=2, edge_dim=3, residual=True, score="bilinear")
    shapes = {k: v.shape for k, v in conv.state_dict().items()}
    _randomize(conv)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    conv.reset_parameters()
    after = conv.state_dict()
    assert {k: v.shape for k, v in after.items()} == shapes
    assert torch.equal(after["bias"], torch.zeros(8))
    for k in ("lin.weight", "att_edge", "lin_edge.weight", "res.weight"):
        assert not torch.equal(after[k], before[k]), k
    # bilinear scorer goes back to the identity
    torch.testing.assert_close(conv.scorer.weight, torch.eye(4).expand(2, 4, 4))
    # glorot bound of the projection: sqrt(6 / (fan_in + fan_out))
    assert float(after["lin.weight"].abs().max()) <= math.sqrt(6 / (5 + 8)) + 1e-6


def test_state_dict_keys_match_pyg():
    for kwargs in ({}, {"edge_dim": 2, "residual": True}, {"bias": False}):
        ours = GATConv((5, 3), 4, heads=2, **kwargs)
        ref = pygnn.GATConv((5, 3), 4, heads=2, **kwargs)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in ref.state_dict().items()
        }


def test_gat_score_parameters_stay_at_the_top_and_shared_through_copies():
    # PyG's names and shapes (att_src, att_dst at the top, no scorer.*), one tensor each
    conv = GATConv(5, 4, heads=2)
    assert set(conv.state_dict()) == set(pygnn.GATConv(5, 4, heads=2).state_dict())
    assert conv.scorer.att_src is conv.att_src and conv.scorer.att_dst is conv.att_dst
    for copy_ in (copy.deepcopy(conv), conv.double()):
        assert copy_.scorer.att_src is copy_.att_src and copy_.scorer.att_dst is copy_.att_dst
    other = GATConv(5, 4, heads=2, score="bilinear")
    assert other.att_src is None and "scorer.weight" in other.state_dict()


def test_additive_is_the_old_name_of_the_gat_score():
    # runs saved before the core named GAT's score "gat" carry score: additive in their config
    torch.manual_seed(0)
    new = GATConv(6, 4, heads=2, score="gat")
    with pytest.warns(FutureWarning, match="old name of score='gat'"):
        old = GATConv(6, 4, heads=2, score="additive")
    assert old.score == "gat" and list(old.state_dict()) == list(new.state_dict())
    old.load_state_dict(new.state_dict())
    x, edge_index = torch.randn(5, 6), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    torch.testing.assert_close(old(x, edge_index), new(x, edge_index))


def test_value_dropout_drops_the_summed_features_not_the_scores():
    """The GAT paper's code: out_i = sum_j alpha_ij dropout(W h_j), alpha from the undropped W h."""
    torch.manual_seed(0)
    x, edge_index = torch.randn(6, 5), torch.tensor([[0, 1, 2, 3, 4, 5, 0], [1, 2, 3, 4, 5, 0, 3]])
    conv = GATConv(5, 4, heads=2, value_dropout=0.5)
    reference = GATConv(5, 4, heads=2)
    reference.load_state_dict(conv.state_dict())
    torch.testing.assert_close(conv.eval()(x, edge_index), reference.eval()(x, edge_index))

    conv.train()
    torch.manual_seed(1)
    out, (loops, alpha) = conv(x, edge_index, return_attention_weights=True)
    _, (_, alpha_reference) = reference.train()(x, edge_index, return_attention_weights=True)
    torch.testing.assert_close(alpha, alpha_reference)  # the scores see the undropped features
    torch.manual_seed(1)
    values = torch.nn.functional.dropout(conv.lin(x).view(-1, 2, 4), 0.5, True)  # the same draw
    expected = torch.zeros(6, 2, 4).index_add_(0, loops[1], alpha.unsqueeze(-1) * values[loops[0]])
    torch.testing.assert_close(out, expected.reshape(6, 8) + conv.bias)


def test_input_dropout_draws_one_mask_per_head():
    """The GAT paper's code drops each head's input on its own: head h of the layer is PyG's
    one-head GATConv (head h's weights) on x * m_h / (1 - p), the masks one (H, N, F) draw."""
    torch.manual_seed(0)
    H, x = 3, torch.randn(6, 5)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 0], [1, 2, 3, 4, 5, 0, 3]])
    conv = GATConv(5, 4, heads=H, input_dropout=0.5)
    plain = GATConv(5, 4, heads=H)
    plain.load_state_dict(conv.state_dict())
    torch.testing.assert_close(conv.eval()(x, edge_index), plain.eval()(x, edge_index))

    torch.manual_seed(1)
    out = conv.train()(x, edge_index)
    torch.manual_seed(1)
    masks = torch.nn.functional.dropout(torch.ones(H, 6, 5), 0.5, True)
    assert not torch.equal(masks[0], masks[1])
    for h in range(H):
        head = pygnn.GATConv(5, 4, heads=1)
        head.lin.weight.data = conv.lin.weight.data.view(H, 4, 5)[h]
        head.att_src.data, head.att_dst.data = conv.att_src.data[:, h:h + 1], conv.att_dst.data[:, h:h + 1]
        head.bias.data = conv.bias.data[4 * h:4 * h + 4]
        torch.testing.assert_close(out[:, 4 * h:4 * h + 4], head(x * masks[h], edge_index))


def test_stack_dropout_per_head_moves_the_input_dropout_into_the_layers():
    from graphmem.models import GATNodeClassifier

    torch.manual_seed(0)
    x, edge_index = torch.randn(6, 5), torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
    model = GATNodeClassifier(5, 3, hidden_channels=4, heads=2, dropout=0.5, dropout_per_head=True)
    assert [conv.input_dropout for conv in model.stack.convs] == [0.5, 0.5]
    shared = GATNodeClassifier(5, 3, hidden_channels=4, heads=2, dropout=0.5)
    assert [conv.input_dropout for conv in shared.stack.convs] == [0.0, 0.0]
    shared.load_state_dict(model.state_dict())
    torch.testing.assert_close(model.eval()(x, edge_index), shared.eval()(x, edge_index))
    model.train()
    x.requires_grad_(True)
    model(x, edge_index).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_input_dropout_of_sparse_features_drops_each_heads_nonzeros():
    """Bag-of-words input (one nonzero per row here): head h's row is either dropped whole or
    x W_h / (1 - p), independently per head and row, about a fraction p of them dropped."""
    torch.manual_seed(0)
    H, N, F_in, p = 4, 400, 50, 0.6
    x = torch.zeros(N, F_in)
    x[torch.arange(N), torch.randint(0, F_in, (N,))] = torch.rand(N) + 0.5
    lin = pygnn.dense.Linear(F_in, H * 3, bias=False)
    out = head_dropout_linear(x, lin, H, p, training=True)
    full = (x @ lin.weight.T).view(N, H, 3) / (1 - p)
    kept = out.abs().sum(-1) > 0
    torch.testing.assert_close(out[kept], full[kept])
    assert (out[~kept] == 0).all()
    assert abs(float((~kept).float().mean()) - p) < 0.05
    assert not torch.equal(kept[:, 0], kept[:, 1])
    torch.testing.assert_close(head_dropout_linear(x, lin, H, p, training=False), full * (1 - p))
    # gradients reach the weights of kept terms only: against the dense formula with the same masks
    lin.weight.grad = None
    out.sum().backward()
    masks = kept.T.unsqueeze(-1).float() / (1 - p) * torch.ones(H, N, F_in)  # (H, N, F) for each row's one nonzero
    expected = torch.einsum("hnf,nhc->hcf", masks * x, torch.ones(N, H, 3)).reshape(H * 3, F_in)
    torch.testing.assert_close(lin.weight.grad, expected)
