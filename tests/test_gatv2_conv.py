"""graphmem.nn.GATv2Conv against torch_geometric.nn.GATv2Conv (same parameters, same inputs),
and the core's gatv2_score."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import torch_geometric.nn as pygnn
from torch_geometric.explain import Explainer
from torch_geometric.explain.algorithm import GNNExplainer
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.utils import softmax as pyg_softmax

from graphmem import checks
from graphmem.attention import gatv2_score
from graphmem.nn import GATv2Conv

ATOL = 1e-5
RTOL = 1e-5


@pytest.fixture(autouse=True)
def _seed_and_checks():
    torch.manual_seed(0)
    previous = checks._enabled  # run with checks on even under GRAPHMEM_CHECKS=0
    checks.set_enabled(True)
    yield
    checks.set_enabled(previous)


def _graph(edge_dim: int | None = None):
    """Six nodes with a self-loop, a duplicate edge and a node without in-edges (node 5)."""
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0, 2, 2, 3, 1, 5, 4],
                               [1, 0, 1, 2, 3, 3, 4, 4, 3, 2, 0, 0]])
    edge_attr = torch.randn(edge_index.size(1), edge_dim) if edge_dim is not None else None
    return torch.randn(6, 5), edge_index, edge_attr


def _randomize(module: torch.nn.Module) -> None:
    """Non-default values everywhere (PyG initialises the biases to zero)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)


def _pair(*args, **kwargs):
    ref = pygnn.GATv2Conv(*args, **kwargs)
    _randomize(ref)
    ours = GATv2Conv(*args, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _leaf(t):
    return None if t is None else t.detach().clone().requires_grad_(True)


def _run(module, x, edge_index, edge_attr, c):
    """Forward + backward of sum(out * c); returns output, attention and every gradient."""
    xs = tuple(_leaf(t) for t in x) if isinstance(x, tuple) else _leaf(x)
    ea = _leaf(edge_attr)
    module.zero_grad()
    out, (ei, alpha) = module(xs, edge_index, ea, return_attention_weights=True)
    (out * c).sum().backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    if isinstance(xs, tuple):
        grads.update({f"x{i}": t.grad for i, t in enumerate(xs)})
    else:
        grads["x"] = xs.grad
    if ea is not None:
        grads["edge_attr"] = ea.grad
    return out.detach(), (ei, alpha.detach()), grads


def _compare(ours, ref, x, edge_index, edge_attr=None):
    with torch.no_grad():
        shape = ref(x, edge_index, edge_attr).shape
    c = torch.randn(shape)
    out_o, (ei_o, a_o), g_o = _run(ours, x, edge_index, edge_attr, c)
    out_r, (ei_r, a_r), g_r = _run(ref, x, edge_index, edge_attr, c)
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=RTOL)
    assert torch.equal(ei_o, ei_r)
    torch.testing.assert_close(a_o, a_r, atol=ATOL, rtol=RTOL)
    assert set(g_o) == set(g_r)
    for name in g_r:
        assert g_r[name] is not None and g_o[name] is not None, name
        torch.testing.assert_close(g_o[name], g_r[name], atol=ATOL, rtol=RTOL,
                                   msg=lambda m: f"{name}: {m}")
    return out_o


# --------------------------------------------------------------------------------------------
# The score function
# --------------------------------------------------------------------------------------------


def test_gatv2_score_is_the_formula_per_edge_and_dense():
    _, edge_index, _ = _graph()
    q, k, att = torch.randn(6, 3, 4), torch.randn(6, 3, 4), torch.randn(1, 3, 4)
    bias = torch.randn(edge_index.size(1), 3)  # a per-edge logit term, added after a^T LeakyReLU
    got = gatv2_score(q, k, att, edge_index=edge_index, bias=bias, negative_slope=0.1)
    hidden = q[edge_index[1]] + k[edge_index[0]]
    torch.testing.assert_close(got, (F.leaky_relu(hidden, 0.1) * att).sum(-1) + bias)
    # edge features enter as per-edge keys over the (edge, target) pattern, as GATv2Conv does
    edge = torch.randn(edge_index.size(1), 3, 4)
    pairs = torch.stack([torch.arange(edge_index.size(1)), edge_index[1]])
    got = gatv2_score(q, k[edge_index[0]] + edge, att, edge_index=pairs)
    hidden = q[edge_index[1]] + k[edge_index[0]] + edge
    torch.testing.assert_close(got, (F.leaky_relu(hidden, 0.2) * att).sum(-1))
    # dense: every query against every key, (L_q, L_k) per batch entry
    qd, kd, a = torch.randn(2, 5, 4), torch.randn(2, 7, 4), torch.randn(4)
    dense = gatv2_score(qd, kd, a)
    assert dense.shape == (2, 5, 7)
    torch.testing.assert_close(dense[1, 2, 3], (F.leaky_relu(qd[1, 2] + kd[1, 3], 0.2) * a).sum())


# --------------------------------------------------------------------------------------------
# Equivalence with PyG
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("edge_dim", [None, 3])
@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("concat", [True, False])
def test_matches_pyg(concat, heads, edge_dim, residual):
    x, edge_index, edge_attr = _graph(edge_dim)
    ours, ref = _pair(5, 4, heads=heads, concat=concat, edge_dim=edge_dim, residual=residual)
    out = _compare(ours, ref, x, edge_index, edge_attr)
    assert out.shape == (6, heads * 4 if concat else 4)


@pytest.mark.parametrize("share_weights", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_pyg_share_weights_and_bias(share_weights, bias):
    x, edge_index, _ = _graph()
    ours, ref = _pair(5, 4, heads=2, share_weights=share_weights, bias=bias)
    assert (ours.lin_r is ours.lin_l) == share_weights
    assert set(ours.state_dict()) == set(ref.state_dict())
    _compare(ours, ref, x, edge_index)


@pytest.mark.parametrize("add_self_loops", [True, False])
def test_matches_pyg_without_self_loops_and_fill_value(add_self_loops):
    x, edge_index, edge_attr = _graph(edge_dim=2)
    ours, ref = _pair(5, 3, heads=2, edge_dim=2, add_self_loops=add_self_loops, fill_value=0.5)
    _compare(ours, ref, x, edge_index, edge_attr)


@pytest.mark.parametrize("share_weights", [False, True])
def test_matches_pyg_bipartite(share_weights):
    x_src, x_dst = torch.randn(6, 5), torch.randn(4, 5 if share_weights else 3)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 2], [0, 1, 2, 3, 0, 1, 3, 3]])
    ours, ref = _pair((5, x_dst.size(1)), 4, heads=2, share_weights=share_weights, residual=True,
                      add_self_loops=False)
    out = _compare(ours, ref, (x_src, x_dst), edge_index)
    assert out.shape == (4, 8)


def test_state_dict_loads_back_into_pyg():
    x, edge_index, edge_attr = _graph(edge_dim=3)
    ours = GATv2Conv(5, 4, heads=2, edge_dim=3, residual=True)
    _randomize(ours)
    ref = pygnn.GATv2Conv(5, 4, heads=2, edge_dim=3, residual=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    torch.testing.assert_close(ours(x, edge_index, edge_attr), ref(x, edge_index, edge_attr),
                               atol=ATOL, rtol=RTOL)


def test_dropout_trains_and_eval_is_deterministic():
    x, edge_index, _ = _graph()
    ours, ref = _pair(5, 4, heads=2, dropout=0.5)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x, edge_index), ref(x, edge_index), atol=ATOL, rtol=RTOL)
    ours.train()
    _, (_, alpha) = ours(x, edge_index, return_attention_weights=True)
    assert (alpha == 0).any()


# --------------------------------------------------------------------------------------------
# The fused read and PyG's machinery
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edge_dim", [None, 3])
def test_plain_calls_take_the_fused_read_and_masked_calls_the_messages(edge_dim, monkeypatch):
    import graphmem.nn.attention_message_passing as base

    calls = []
    original_read, original_message = base.sparse_read_auto, base.AttentionMessagePassing.message
    monkeypatch.setattr(base, "sparse_read_auto",
                        lambda *a, **k: calls.append("fused") or original_read(*a, **k))

    @functools.wraps(original_message)  # PyG reads message's signature (through __wrapped__)
    def message(self, *args, **kwargs):
        calls.append("message")
        return original_message(self, *args, **kwargs)

    monkeypatch.setattr(base.AttentionMessagePassing, "message", message)
    conv = GATv2Conv(5, 4, heads=2, edge_dim=edge_dim)
    x, edge_index, edge_attr = _graph(edge_dim)
    fused = conv(x, edge_index, edge_attr)
    assert calls == ["fused"]
    calls.clear()
    set_masks(conv, torch.full((edge_index.size(1),), 50.0), edge_index)  # sigmoid(50) = 1: no-op
    torch.testing.assert_close(conv(x, edge_index, edge_attr), fused, atol=ATOL, rtol=RTOL)
    assert calls == ["message"]


class _Net(torch.nn.Module):
    def __init__(self, layer: type) -> None:
        super().__init__()
        self.conv1 = layer(5, 4, heads=2)
        self.conv2 = layer(8, 3, heads=1)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


def _nets():
    ref = _Net(pygnn.GATv2Conv)
    _randomize(ref)
    ours = _Net(GATv2Conv)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours.eval(), ref.eval()


def test_edge_masks_match_pyg():
    ours, ref = _nets()
    x, edge_index, _ = _graph()
    mask = torch.randn(edge_index.size(1))
    for model in (ours, ref):
        set_masks(model, mask, edge_index, apply_sigmoid=True)
    masked = ours(x, edge_index)
    torch.testing.assert_close(masked, ref(x, edge_index), atol=ATOL, rtol=RTOL)
    for model in (ours, ref):
        clear_masks(model)
    assert not torch.allclose(masked, ours(x, edge_index))  # the mask was not ignored


def test_gnn_explainer_matches_pyg():
    ours, ref = _nets()
    x, edge_index, _ = _graph()
    masks = []
    for model in (ours, ref):
        explainer = Explainer(model, algorithm=GNNExplainer(epochs=5), explanation_type="model",
                              node_mask_type="attributes", edge_mask_type="object",
                              model_config=dict(mode="multiclass_classification",
                                                task_level="node", return_type="raw"))
        torch.manual_seed(1)
        masks.append(explainer(x, edge_index, index=2).edge_mask)
    torch.testing.assert_close(masks[0], masks[1], atol=1e-4, rtol=1e-4)
    assert masks[0].abs().sum() > 0


def test_missing_target_features_and_wrong_width_are_refused():
    conv = GATv2Conv((5, 3), 4)
    with pytest.raises(ValueError, match="x\\[1\\]"):
        conv((torch.randn(6, 5), None), torch.tensor([[0], [0]]))
    with pytest.raises(ValueError, match="GATv2Conv"):
        GATv2Conv(5, 4)(torch.randn(6, 7), torch.tensor([[0], [1]]))


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_adj_t_matches_pyg(layout):
    from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

    x, edge_index, _ = _graph()
    edge_index = torch.unique(edge_index, dim=1)  # a sparse tensor holds each edge once
    build = to_torch_coo_tensor if layout == "coo" else to_torch_csr_tensor
    adj_t = build(edge_index.flip(0), size=(6, 6))
    ours, ref = _pair(5, 4, heads=2)
    out_o, (adj_o, _) = ours(x, adj_t, return_attention_weights=True)
    out_r, (adj_r, _) = ref(x, adj_t, return_attention_weights=True)
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=RTOL)
    assert adj_o.layout == adj_r.layout
    torch.testing.assert_close(adj_o.to_dense(), adj_r.to_dense(), atol=ATOL, rtol=RTOL)


# --------------------------------------------------------------------------------------------
# other scores and normalizers of the core
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalizer", ["softmax", "none"])
def test_dot_score_with_edge_features_by_hand(normalizer):
    """score='dot': s_ji = (W_t x_i)^T (W_s x_j + W_e e_ji), each edge its own key."""
    x, edge_index, edge_attr = _graph(edge_dim=3)
    conv = GATv2Conv(5, 4, heads=2, edge_dim=3, add_self_loops=False, score="dot", normalizer=normalizer)
    assert conv.att is None and "score='dot'" in repr(conv)
    out, (_, alpha) = conv(x, edge_index, edge_attr, return_attention_weights=True)
    src, dst = edge_index
    h_src, h_dst = conv.lin_l(x).view(-1, 2, 4), conv.lin_r(x).view(-1, 2, 4)
    key = h_src[src] + conv.lin_edge(edge_attr).view(-1, 2, 4)
    logits = (h_dst[dst] * key).sum(-1)
    expected = pyg_softmax(logits, dst, num_nodes=x.size(0)) if normalizer == "softmax" else logits
    torch.testing.assert_close(alpha, expected)
    read = torch.zeros(x.size(0), 2, 4).index_add(0, dst, expected.unsqueeze(-1) * h_src[src])
    torch.testing.assert_close(out, read.flatten(1) + conv.bias)


def test_unknown_score_or_normalizer():
    with pytest.raises(ValueError, match="unknown score 'euclid'; choose one of gat, gatv2"):
        GATv2Conv(5, 4, score="euclid")
    with pytest.raises(ValueError, match="unknown normalizer 'sparsemax'"):
        GATv2Conv(5, 4, normalizer="sparsemax")
