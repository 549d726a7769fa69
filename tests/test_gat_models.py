"""GATNodeClassifier and GATLinkPredictor are GATStack users: checked against hand-built GATConv stacks."""

import pytest
import torch
import torch.nn.functional as F

from graphmem.models import GATLinkPredictor, GATNodeClassifier
from graphmem.nn import GATConv, GATStack


def _graph(num_nodes=9, num_edges=30, features=6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(num_nodes, features, generator=g)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    return x, edge_index


def _node_reference(model, in_channels, num_classes, hidden, heads, output_heads, dropout):
    conv1 = GATConv(in_channels, hidden, heads=heads, dropout=dropout)
    conv2 = GATConv(hidden * heads, num_classes, heads=output_heads, concat=False, dropout=dropout)
    conv1.load_state_dict(model.stack.convs[0].state_dict())
    conv2.load_state_dict(model.stack.convs[1].state_dict())

    def forward(x, edge_index, training):
        conv1.train(training), conv2.train(training)
        x = F.dropout(x, dropout, training)
        x = F.elu(conv1(x, edge_index))
        x = F.dropout(x, dropout, training)
        return conv2(x, edge_index)

    return forward


@pytest.mark.parametrize("output_heads", [1, 3])
def test_node_classifier_equals_hand_built_gatconv_stack(output_heads):
    x, edge_index = _graph()
    model = GATNodeClassifier(6, 4, hidden_channels=5, heads=2, output_heads=output_heads, dropout=0.3)
    reference = _node_reference(model, 6, 4, 5, 2, output_heads, 0.3)
    model.eval()
    torch.testing.assert_close(model(x, edge_index), reference(x, edge_index, False))
    model.train()  # same dropout draws in the same order
    torch.manual_seed(3)
    ours = model(x, edge_index)
    torch.manual_seed(3)
    torch.testing.assert_close(ours, reference(x, edge_index, True))
    assert model.conv1 is model.stack.convs[0] and model.conv2 is model.stack.convs[1]
    assert model.conv2.heads == output_heads and model.dropout == 0.3


def test_node_classifier_seeded_init_is_the_hand_built_one():
    torch.manual_seed(0)
    model = GATNodeClassifier(6, 4, hidden_channels=5, heads=2)
    torch.manual_seed(0)
    conv1 = GATConv(6, 5, heads=2, dropout=0.6)
    conv2 = GATConv(10, 4, heads=1, concat=False, dropout=0.6)
    for ours, theirs in ((model.conv1, conv1), (model.conv2, conv2)):
        for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            torch.testing.assert_close(a, b, msg=name)


def test_node_classifier_loads_old_checkpoint_keys():
    x, edge_index = _graph()
    model = GATNodeClassifier(6, 4, hidden_channels=5, heads=2).eval()
    old = {f"conv{i + 1}.{key}": value for i in range(2)
           for key, value in model.stack.convs[i].state_dict().items()}
    fresh = GATNodeClassifier(6, 4, hidden_channels=5, heads=2).eval()
    fresh.load_state_dict(old)  # strict
    torch.testing.assert_close(fresh(x, edge_index), model(x, edge_index))
    fresh.load_state_dict(model.state_dict())  # the new keys load too


def test_link_predictor_encoder_equals_hand_built_gatconv_stack_and_loads_old_keys():
    x, edge_index = _graph()
    model = GATLinkPredictor(6, hidden_channels=8, out_channels=3, heads=2, num_layers=3, decoder="mlp").eval()
    convs = [GATConv(6, 4, heads=2), GATConv(8, 4, heads=2), GATConv(8, 3, heads=2, concat=False)]
    h = x
    for layer, conv in enumerate(convs):
        conv.load_state_dict(model.convs[layer].state_dict())
        h = conv(h, edge_index)
        h = F.elu(h) if layer < 2 else h
    torch.testing.assert_close(model.encode(x, edge_index), h)
    old = {key.replace("stack.convs.", "convs."): value for key, value in model.state_dict().items()}
    assert any(key.startswith("convs.") for key in old) and any(key.startswith("mlp.") for key in old)
    fresh = GATLinkPredictor(6, hidden_channels=8, out_channels=3, heads=2, num_layers=3, decoder="mlp").eval()
    fresh.load_state_dict(old)
    pairs = torch.tensor([[0, 1, 2], [3, 4, 5]])
    torch.testing.assert_close(fresh(x, edge_index, pairs), model(x, edge_index, pairs))


def test_stack_output_heads():
    stack = GATStack(5, 4, 3, num_layers=2, heads=2, output_heads=3)
    assert stack.convs[0].heads == 2 and stack.convs[1].heads == 3
    with pytest.raises(ValueError, match="same heads"):
        GATStack(5, 4, 3, heads=2, output_heads=3, evolving=True)


def test_old_keys_load_under_a_prefix_as_in_a_lightning_checkpoint():
    x, edge_index = _graph()
    model = GATNodeClassifier(6, 4, hidden_channels=5, heads=2).eval()
    old = {f"model.conv{i + 1}.{key}": value for i in range(2)
           for key, value in model.stack.convs[i].state_dict().items()}
    wrapper = torch.nn.Module()
    wrapper.model = GATNodeClassifier(6, 4, hidden_channels=5, heads=2).eval()
    wrapper.load_state_dict(old)  # strict
    torch.testing.assert_close(wrapper.model(x, edge_index), model(x, edge_index))
