"""GATConv, GATv2Conv and GraphTransformerConv inside PyG's machinery, against PyG's own layers.

Each test builds PyG's layer (or model), copies its weights into graphmem's and checks that
to_hetero, HeteroConv, explainers, edge masks, hooks, get_num_hops, sparse ``adj_t`` and
MessagePassing's constructor keywords give the same results.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch_geometric.nn as pygnn
from torch_geometric.explain import Explainer
from torch_geometric.explain.algorithm import AttentionExplainer, GNNExplainer
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.nn import HeteroConv, MessagePassing, to_hetero
from torch_geometric.utils import get_num_hops

from graphmem.nn import GATConv, GATv2Conv, GraphTransformerConv

ATOL = RTOL = 1e-5
# (ours, PyG's) per layer; keyword arguments valid for both.
LAYERS = {"gat": (GATConv, pygnn.GATConv), "transformer": (GraphTransformerConv, pygnn.TransformerConv),
          "gatv2": (GATv2Conv, pygnn.GATv2Conv)}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _graph():
    """Six nodes with a self-loop, a duplicate edge and a node without in-edges (node 5)."""
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0, 2, 2, 3, 1, 5, 4],
                               [1, 0, 1, 2, 3, 3, 4, 4, 3, 2, 0, 0]])
    return torch.randn(6, 5), edge_index


def _pair(kind: str, *args, **kwargs):
    ours_cls, ref_cls = LAYERS[kind]
    ref = ref_cls(*args, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.5)
    ours = ours_cls(*args, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


class _Net(torch.nn.Module):
    """Two attention layers, the model shape explainers and get_num_hops are used on."""

    def __init__(self, layer: type, **kwargs) -> None:
        super().__init__()
        self.conv1 = layer(5, 4, heads=2, **kwargs)
        self.conv2 = layer(8, 3, heads=1, **kwargs)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


def _nets(kind: str):
    ours_cls, ref_cls = LAYERS[kind]
    ref = _Net(ref_cls)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.5)
    ours = _Net(ours_cls)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours.eval(), ref.eval()


@pytest.mark.parametrize("kind", LAYERS)
def test_is_message_passing_and_counts_hops(kind):
    ours, ref = _nets(kind)
    assert isinstance(ours.conv1, MessagePassing)
    assert get_num_hops(ours) == get_num_hops(ref) == 2


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("aggr", ["mean", "max"])
def test_aggr_matches_pyg(kind, aggr):
    ours, ref = _pair(kind, 5, 4, heads=2, aggr=aggr)
    x, edge_index = _graph()
    torch.testing.assert_close(ours(x, edge_index), ref(x, edge_index), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", LAYERS)
def test_message_path_with_edge_features_matches_pyg(kind):
    ours, ref = _pair(kind, 5, 4, heads=2, edge_dim=3, aggr="mean")
    x, edge_index = _graph()
    edge_attr = torch.randn(edge_index.size(1), 3)
    out_o, out_r = ours(x, edge_index, edge_attr), ref(x, edge_index, edge_attr)
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=RTOL)
    c = torch.randn_like(out_r)
    (out_o * c).sum().backward()
    (out_r * c).sum().backward()
    for (name, p_o), (_, p_r) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p_o.grad, p_r.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_decomposed_layers_with_edge_features_are_refused():
    conv = GraphTransformerConv(5, 4, heads=2, edge_dim=3, decomposed_layers=2)
    x, edge_index = _graph()
    with pytest.raises(NotImplementedError, match="decomposed_layers"):
        conv(x, edge_index, torch.randn(edge_index.size(1), 3))


@pytest.mark.parametrize("kind", LAYERS)
def test_decomposed_layers_give_the_same_result(kind):
    # PyG's own layers fail with decomposed_layers > 1 (GATConv passes x as a pair,
    # TransformerConv chunks the values but not the edge features), so compare with ours.
    ours, _ = _pair(kind, 5, 4, heads=2)
    decomposed, _ = _pair(kind, 5, 4, heads=2, decomposed_layers=2)
    decomposed.load_state_dict(ours.state_dict())
    x, edge_index = _graph()
    torch.testing.assert_close(decomposed(x, edge_index), ours(x, edge_index), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", LAYERS)
def test_flow_target_to_source_is_refused(kind):
    with pytest.raises(ValueError, match="flow='source_to_target'"):
        LAYERS[kind][0](5, 4, flow="target_to_source")


@pytest.mark.parametrize("kind", LAYERS)
def test_hooks_see_messages_and_keep_the_result(kind):
    ours, ref = _pair(kind, 5, 4, heads=2)
    x, edge_index = _graph()
    expected = ours(x, edge_index)
    seen = {}

    def record(name):
        def hook(module, inputs, out=None):  # returns None: observes, replaces nothing
            seen[name] = True if out is None else out.shape
        return hook

    handles = [
        ours.register_message_forward_hook(record("message")),
        ours.register_propagate_forward_hook(record("propagate")),
        ours.register_aggregate_forward_pre_hook(record("aggregate")),
    ]
    torch.testing.assert_close(ours(x, edge_index), expected, atol=ATOL, rtol=RTOL)
    num_edges = edge_index.size(1) + (6 - 1 if kind != "transformer" else 0)  # GAT(v2): self-loops
    assert seen == {"message": (num_edges, 2, 4), "propagate": (6, 2, 4), "aggregate": True}
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("layout", [torch.sparse_csr, torch.sparse_coo])
def test_sparse_adj_t_matches_pyg(kind, layout):
    ours, ref = _pair(kind, 5, 4, heads=2)
    x, edge_index = _graph()
    edge_index = torch.unique(edge_index, dim=1)  # a sparse matrix holds each edge once
    adj_t = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(edge_index.size(1)), (6, 6))
    adj_t = adj_t.coalesce() if layout == torch.sparse_coo else adj_t.to_sparse_csr()
    out_o, (adj_o, alpha_o) = ours(x, adj_t, return_attention_weights=True)
    out_r, (adj_r, alpha_r) = ref(x, adj_t, return_attention_weights=True)
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out_o, ours(x, edge_index), atol=ATOL, rtol=RTOL)
    assert adj_o.layout == adj_r.layout
    torch.testing.assert_close(adj_o.to_dense(), adj_r.to_dense(), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", LAYERS)
def test_edge_masks_match_pyg(kind):
    ours, ref = _nets(kind)
    x, edge_index = _graph()
    mask = torch.randn(edge_index.size(1))
    for model in (ours, ref):
        set_masks(model, mask, edge_index, apply_sigmoid=True)
    masked = ours(x, edge_index)
    torch.testing.assert_close(masked, ref(x, edge_index), atol=ATOL, rtol=RTOL)
    for model in (ours, ref):
        clear_masks(model)
    assert not torch.allclose(masked, ours(x, edge_index))  # the mask was not ignored


@pytest.mark.parametrize("kind", LAYERS)
def test_gnn_explainer_matches_pyg(kind):
    ours, ref = _nets(kind)
    x, edge_index = _graph()
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


@pytest.mark.parametrize("kind", LAYERS)
def test_attention_explainer_matches_pyg(kind):
    ours, ref = _nets(kind)
    x, edge_index = _graph()
    masks = []
    for model in (ours, ref):
        explainer = Explainer(model, algorithm=AttentionExplainer(), explanation_type="model",
                              edge_mask_type="object",
                              model_config=dict(mode="multiclass_classification",
                                                task_level="node", return_type="raw"))
        masks.append(explainer(x, edge_index, index=2).edge_mask)
    torch.testing.assert_close(masks[0], masks[1], atol=ATOL, rtol=RTOL)


def _hetero_data():
    x_dict = {"paper": torch.randn(5, 6), "author": torch.randn(4, 3)}
    edge_index_dict = {
        ("author", "writes", "paper"): torch.tensor([[0, 1, 2, 3, 3], [0, 1, 2, 3, 4]]),
        ("paper", "rev_writes", "author"): torch.tensor([[0, 1, 2, 3, 4], [0, 1, 2, 3, 3]]),
        ("paper", "cites", "paper"): torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]]),
    }
    return x_dict, edge_index_dict


class _Homo(torch.nn.Module):
    def __init__(self, layer: type) -> None:
        super().__init__()
        kwargs = ({"add_self_loops": False}
                  if layer in (GATConv, pygnn.GATConv, GATv2Conv, pygnn.GATv2Conv) else {})
        self.conv1 = layer((-1, -1), 4, heads=2, **kwargs)
        self.conv2 = layer((-1, -1), 3, **kwargs)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


@pytest.mark.parametrize("kind", LAYERS)
def test_to_hetero_matches_pyg(kind):
    x_dict, edge_index_dict = _hetero_data()
    metadata = (list(x_dict), list(edge_index_dict))
    models = [to_hetero(_Homo(layer), metadata, aggr="sum") for layer in LAYERS[kind][::-1]]
    ref, ours = models
    ref(x_dict, edge_index_dict)  # initialises the lazy parameters
    ours(x_dict, edge_index_dict)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.5)
    ours.load_state_dict(ref.state_dict(), strict=True)
    out_o, out_r = ours(x_dict, edge_index_dict), ref(x_dict, edge_index_dict)
    assert out_o.keys() == out_r.keys() == x_dict.keys()
    for key in out_r:
        torch.testing.assert_close(out_o[key], out_r[key], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", LAYERS)
def test_hetero_conv_matches_pyg(kind):
    x_dict, edge_index_dict = _hetero_data()
    ours_cls, ref_cls = LAYERS[kind]
    kwargs = {"add_self_loops": False} if kind != "transformer" else {}
    ref = HeteroConv({et: ref_cls((-1, -1), 4, heads=2, **kwargs) for et in edge_index_dict})
    ours = HeteroConv({et: ours_cls((-1, -1), 4, heads=2, **kwargs) for et in edge_index_dict})
    ref(x_dict, edge_index_dict)
    ours(x_dict, edge_index_dict)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.5)
    ours.load_state_dict(ref.state_dict(), strict=True)
    out_o, out_r = ours(x_dict, edge_index_dict), ref(x_dict, edge_index_dict)
    for key in out_r:
        torch.testing.assert_close(out_o[key], out_r[key], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", LAYERS)
def test_wrong_feature_width_names_the_input(kind):
    x, edge_index = _graph()
    with pytest.raises(ValueError, match=r"x has 5 features but \w+Conv was built for 7"):
        LAYERS[kind][0](7, 4)(x, edge_index)
    with pytest.raises(ValueError, match=r"x\[1\] \(target features\) has 5 features"):
        LAYERS[kind][0]((5, 3), 4)((x, x), edge_index)


@pytest.mark.parametrize("kind", LAYERS)
def test_captum_explainer_matches_pyg(kind):
    pytest.importorskip("captum")
    from torch_geometric.explain.algorithm import CaptumExplainer

    ours, ref = _nets(kind)
    x, edge_index = _graph()
    masks = []
    for model in (ours, ref):
        explainer = Explainer(model, algorithm=CaptumExplainer("IntegratedGradients"),
                              explanation_type="model", node_mask_type="attributes",
                              edge_mask_type="object",
                              model_config=dict(mode="multiclass_classification",
                                                task_level="node", return_type="raw"))
        masks.append(explainer(x, edge_index, index=2).edge_mask)
    torch.testing.assert_close(masks[0], masks[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("edge_dim", [None, 3])
def test_plain_calls_take_the_fused_read_and_masked_calls_the_messages(kind, edge_dim, monkeypatch):
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
    conv = LAYERS[kind][0](5, 4, heads=2, edge_dim=edge_dim)
    x, edge_index = _graph()
    edge_attr = None if edge_dim is None else torch.randn(edge_index.size(1), edge_dim)
    fused = conv(x, edge_index, edge_attr)
    assert calls == ["fused"]
    calls.clear()
    set_masks(conv, torch.full((edge_index.size(1),), 50.0), edge_index)  # sigmoid(50) = 1: no-op mask
    torch.testing.assert_close(conv(x, edge_index, edge_attr), fused, atol=ATOL, rtol=RTOL)
    assert calls == ["message"]


class _Papers(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_dict, edge_index_dict):
        return self.model(x_dict, edge_index_dict)["paper"]


def test_attention_explainer_on_a_to_hetero_model_matches_pyg():
    x_dict, edge_index_dict = _hetero_data()
    metadata = (list(x_dict), list(edge_index_dict))
    ref, ours = (to_hetero(_Homo(layer), metadata, aggr="sum") for layer in (pygnn.GATConv, GATConv))
    ref(x_dict, edge_index_dict)
    ours(x_dict, edge_index_dict)
    ours.load_state_dict(ref.state_dict(), strict=True)
    masks = []
    for model in (ours, ref):
        # Explainers explain one output tensor: the papers'.
        papers = _Papers(model)
        explainer = Explainer(papers, algorithm=AttentionExplainer(), explanation_type="model",
                              edge_mask_type="object",
                              model_config=dict(mode="multiclass_classification",
                                                task_level="node", return_type="raw"))
        explanation = explainer(x_dict, edge_index_dict, index=torch.tensor([1]))
        masks.append({key: explanation[key]["edge_mask"] for key in edge_index_dict})
    for key in edge_index_dict:
        torch.testing.assert_close(masks[0][key], masks[1][key], atol=ATOL, rtol=RTOL)
    assert sum(float(mask.sum()) for mask in masks[0].values()) > 0
