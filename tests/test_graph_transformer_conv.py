"""graphmem.nn.GraphTransformerConv against PyG's TransformerConv (same parameters, same inputs)."""

from __future__ import annotations

import math

import pytest
import torch
import torch_geometric.nn as pygnn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from graphmem.nn import GraphTransformerConv

ATOL = RTOL = 1e-5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _graph(edge_dim: int | None = None):
    """Six nodes with a self-loop, a duplicate edge and a node without in-edges (node 5)."""
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0, 2, 2, 3, 1, 5, 4],
                               [1, 0, 1, 2, 3, 3, 4, 4, 3, 2, 0, 0]])
    edge_attr = torch.randn(edge_index.size(1), edge_dim) if edge_dim is not None else None
    return torch.randn(6, 5), edge_index, edge_attr


def _pair(*args, **kwargs):
    ref = pygnn.TransformerConv(*args, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.5)
    ours = GraphTransformerConv(*args, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _compare(ours, ref, x, edge_index, edge_attr=None):
    leaf = lambda t: None if t is None else t.detach().clone().requires_grad_(True)  # noqa: E731
    inputs_o = tuple(leaf(t) for t in x) if isinstance(x, tuple) else leaf(x)
    inputs_r = tuple(leaf(t) for t in x) if isinstance(x, tuple) else leaf(x)
    ea_o, ea_r = leaf(edge_attr), leaf(edge_attr)
    out_o, (ei_o, alpha_o) = ours(inputs_o, edge_index, ea_o, return_attention_weights=True)
    out_r, (ei_r, alpha_r) = ref(inputs_r, edge_index, ea_r, return_attention_weights=True)
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=RTOL)
    assert torch.equal(ei_o, ei_r)
    torch.testing.assert_close(alpha_o, alpha_r, atol=ATOL, rtol=RTOL)
    c = torch.randn_like(out_r)
    (out_o * c).sum().backward()
    (out_r * c).sum().backward()
    for (name, p_o), (_, p_r) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p_o.grad, p_r.grad, atol=1e-4, rtol=1e-4, msg=name)
    leaves = [(a, b) for a, b in zip(inputs_o if isinstance(x, tuple) else (inputs_o,),
                                     inputs_r if isinstance(x, tuple) else (inputs_r,))]
    if ea_o is not None:
        leaves.append((ea_o, ea_r))
    for a, b in leaves:
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("edge_dim", [None, 3])
@pytest.mark.parametrize("beta", [False, True])
@pytest.mark.parametrize("heads", [1, 3])
def test_matches_pyg(concat, edge_dim, beta, heads):
    ours, ref = _pair(5, 4, heads=heads, concat=concat, beta=beta, edge_dim=edge_dim)
    _compare(ours, ref, *_graph(edge_dim))


@pytest.mark.parametrize("root_weight,bias", [(False, True), (True, False)])
def test_matches_pyg_without_root_weight_or_bias(root_weight, bias):
    ours, ref = _pair(5, 4, heads=2, beta=True, root_weight=root_weight, bias=bias)
    assert ours.lin_skip is not None  # kept for state-dict parity, as PyG does
    _compare(ours, ref, *_graph())


@pytest.mark.parametrize("edge_dim", [None, 2])
def test_matches_pyg_bipartite(edge_dim):
    ours, ref = _pair((5, 3), 4, heads=2, edge_dim=edge_dim)
    edge_index = torch.stack([torch.randint(0, 7, (15,)), torch.randint(0, 4, (15,))])
    edge_attr = torch.randn(15, edge_dim) if edge_dim else None
    _compare(ours, ref, (torch.randn(7, 5), torch.randn(4, 3)), edge_index, edge_attr)


def test_attention_by_hand():
    conv = GraphTransformerConv(5, 3, heads=2, edge_dim=2)
    x, edge_index, edge_attr = _graph(2)
    _, (_, alpha) = conv(x, edge_index, edge_attr, return_attention_weights=True)
    with torch.no_grad():
        q = conv.lin_query(x).view(-1, 2, 3)
        k = conv.lin_key(x).view(-1, 2, 3)
        e = conv.lin_edge(edge_attr).view(-1, 2, 3)
    for i in range(6):
        incoming = (edge_index[1] == i).nonzero().flatten().tolist()
        for h in range(2):
            scores = [float((q[i, h] * (k[edge_index[0, n], h] + e[n, h])).sum()) / math.sqrt(3)
                      for n in incoming]
            z = sum(math.exp(s) for s in scores)
            for n, s in zip(incoming, scores):
                assert alpha[n, h].item() == pytest.approx(math.exp(s) / z, rel=1e-5)


def test_returns_attention_before_dropout_as_pyg():
    conv = GraphTransformerConv(5, 4, heads=2, dropout=0.5).train()
    x, edge_index, _ = _graph()
    _, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
    sums = torch.zeros(6, 2).index_add(0, edge_index[1], alpha)
    has_edges = torch.bincount(edge_index[1], minlength=6) > 0
    torch.testing.assert_close(sums[has_edges], torch.ones(int(has_edges.sum()), 2))


def test_logits_transform_and_returned_logits():
    conv = GraphTransformerConv(5, 4, heads=2)
    x, edge_index, _ = _graph()
    plain, logits = conv(x, edge_index, return_attention_logits=True)
    same, (_, _), logits2 = conv(x, edge_index, return_attention_weights=True,
                                 logits_transform=lambda s: s + 3.0, return_attention_logits=True)
    torch.testing.assert_close(same, plain)  # a constant shift does not change a softmax
    torch.testing.assert_close(logits2, logits + 3.0)
    assert logits.shape == (edge_index.size(1), 2)


@pytest.mark.parametrize("score", ["dot", "additive", "bilinear", "cosine"])
def test_other_scores_and_in_pyg_sequential(score):
    model = pygnn.Sequential("x, edge_index, edge_attr", [
        (GraphTransformerConv(5, 4, heads=2, edge_dim=3, score=score), "x, edge_index, edge_attr -> x"),
        torch.nn.ReLU(),
        (GraphTransformerConv(8, 2, heads=2, concat=False), "x, edge_index -> x"),
    ])
    graphs = []
    for _ in range(3):
        x, edge_index, edge_attr = _graph(3)
        graphs.append(Data(x=x, edge_index=edge_index, edge_attr=edge_attr))
    batch = next(iter(DataLoader(graphs, batch_size=3)))
    assert isinstance(batch, Batch)
    out = model(batch.x, batch.edge_index, batch.edge_attr)
    assert out.shape == (18, 2) and torch.isfinite(out).all()
    assert f"score={score!r}" in repr(model[0])


def test_errors():
    with pytest.raises(ValueError, match="unknown score"):
        GraphTransformerConv(5, 4, score="euclid")
    with pytest.raises(ValueError, match="edge_attr"):
        GraphTransformerConv(5, 4, edge_dim=3)(*_graph()[:2])
    with pytest.raises(ValueError):
        GraphTransformerConv(5, 4)(torch.randn(3, 5), torch.tensor([[0, 7], [1, 2]]))
