"""Evolving attention: the module against hand computation, and the GAT and transformer stacks built on it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import softmax as pyg_softmax

from graphmem.nn import EvolvingAttention, GATConv, GATStack, TransformerEncoder, TransformerEncoderLayer

DT = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _conv_by_hand(maps, weight, bias, causal: bool):
    """3x3 convolution with zero padding by loops: centred, or (causal) rows i-2..i only."""
    channels, rows, cols = maps.shape
    out = torch.empty_like(maps)
    top = 2 if causal else 1
    for h in range(channels):
        for i in range(rows):
            for j in range(cols):
                total = float(bias[h])
                for g in range(channels):
                    for a in range(3):
                        for c in range(3):
                            r, s = i + a - top, j + c - 1
                            if 0 <= r < rows and 0 <= s < cols:
                                total += float(weight[h, g, a, c]) * float(maps[g, r, s])
                out[h, i, j] = total
    return out


# --------------------------------------------------------------------------------------------
# EvolvingAttention
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_dense_matches_hand_computation(causal):
    alpha, beta = 0.3, 0.6
    evolve = EvolvingAttention(2, alpha, beta, "dense", causal=causal).to(DT)
    logits, previous = torch.randn(2, 4, 4, dtype=DT), torch.randn(2, 4, 4, dtype=DT)
    mask = torch.tensor([True, True, True, False])  # key 3 is padding
    mixed = alpha * previous + (1 - alpha) * logits
    conv_in = mixed.masked_fill(~mask, 0.0)
    if causal:
        conv_in = conv_in.masked_fill(torch.ones(4, 4, dtype=torch.bool).triu(1), 0.0)
    conv = _conv_by_hand(conv_in, evolve.conv.weight.detach(), evolve.conv.bias.detach(), causal).relu()
    expected = beta * conv + (1 - beta) * mixed
    torch.testing.assert_close(evolve(logits, previous, mask), expected)
    # batched maps give the same per map
    batched = evolve(torch.stack([logits, logits]), torch.stack([previous, previous]), mask)
    torch.testing.assert_close(batched[1], expected)


def test_dense_causal_convolution_sees_no_future():
    evolve = EvolvingAttention(3, 0.5, 0.5, "dense", causal=True)
    logits, previous = torch.randn(3, 6, 6), torch.randn(3, 6, 6)
    out = evolve(logits, previous)
    for t in range(1, 6):
        changed_logits, changed_previous = logits.clone(), previous.clone()
        # everything query t or later computed, and every key after t
        changed_logits[:, t:] = torch.randn(3, 6 - t, 6)
        changed_logits[:, :, t:] = torch.randn(3, 6, 6 - t)
        changed_previous[:, t:] = torch.randn(3, 6 - t, 6)
        changed_previous[:, :, t:] = torch.randn(3, 6, 6 - t)
        new = evolve(changed_logits, changed_previous)
        past = torch.ones(6, 6, dtype=torch.bool).tril()[:t, :t]
        torch.testing.assert_close(new[:, :t, :t][:, past], out[:, :t, :t][:, past])


def test_sparse_matches_hand_computation():
    alpha, beta = 0.25, 0.7
    evolve = EvolvingAttention(3, alpha, beta, "sparse").to(DT)
    logits, previous = torch.randn(10, 3, dtype=DT), torch.randn(10, 3, dtype=DT)
    mixed = alpha * previous + (1 - alpha) * logits
    w, b = evolve.conv.weight.detach(), evolve.conv.bias.detach()
    out = evolve(logits, previous).detach()
    for e in range(10):
        mixed_heads = [sum(float(w[h, g]) * float(mixed[e, g]) for g in range(3)) + float(b[h])
                       for h in range(3)]
        for h in range(3):
            expected = beta * max(mixed_heads[h], 0.0) + (1 - beta) * float(mixed[e, h])
            assert float(out[e, h]) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("layout,shape", [("dense", (2, 3, 5, 5)), ("sparse", (7, 3))])
def test_zero_alpha_beta_passes_logits_through(layout, shape):
    evolve = EvolvingAttention(3, 0.0, 0.0, layout)
    logits = torch.randn(shape)
    assert torch.equal(evolve(logits, torch.randn(shape)), logits)


def test_errors_and_repr():
    with pytest.raises(ValueError, match="layout"):
        EvolvingAttention(2, layout="ragged")
    with pytest.raises(ValueError, match="odd"):
        EvolvingAttention(2, kernel_size=4)
    with pytest.raises(ValueError, match="same keys"):
        EvolvingAttention(2, layout="sparse")(torch.randn(5, 2), torch.randn(6, 2))
    assert "causal=True" in repr(EvolvingAttention(2, causal=True))


# --------------------------------------------------------------------------------------------
# GATConv's logits hook and the GAT stack
# --------------------------------------------------------------------------------------------


def _graph():
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0, 2, 3, 1, 5],
                               [1, 0, 1, 2, 3, 3, 4, 3, 2, 0]])
    return torch.randn(6, 5), edge_index


def test_gat_conv_returns_its_logits_and_applies_the_transform():
    conv = GATConv(5, 4, heads=2)
    x, edge_index = _graph()
    out, (loops, alpha), logits = conv(x, edge_index, return_attention_weights=True,
                                       return_attention_logits=True)
    h = conv.lin(x).view(-1, 2, 4)
    by_hand = F.leaky_relu((h * conv.att_src).sum(-1)[loops[0]] + (h * conv.att_dst).sum(-1)[loops[1]], 0.2)
    torch.testing.assert_close(logits, by_hand)
    torch.testing.assert_close(alpha, pyg_softmax(logits, loops[1], num_nodes=6))
    torch.testing.assert_close(conv(x, edge_index), out)
    doubled, doubled_logits = conv(x, edge_index, logits_transform=lambda s: 2 * s,
                                   return_attention_logits=True)
    torch.testing.assert_close(doubled_logits, 2 * logits)
    assert not torch.allclose(doubled, out)


def test_gat_stack_plain_shapes_and_attention():
    stack = GATStack(5, 4, 3, num_layers=3, heads=2)
    x, edge_index = _graph()
    out, attention = stack(x, edge_index, return_attention_weights=True)
    assert out.shape == (6, 3) and len(attention) == 3
    assert attention[0][1].shape == (15, 2)  # 9 edges + 6 self-loops
    assert stack.evolve is None
    with pytest.raises(ValueError, match="num_layers"):
        GATStack(5, 4, 3, num_layers=0)


def test_evolving_gat_stack_with_zero_alpha_beta_equals_plain_stack():
    evolving = GATStack(5, 4, 3, num_layers=3, heads=2, evolving=True, alpha=0.0, beta=0.0).eval()
    plain = GATStack(5, 4, 3, num_layers=3, heads=2).eval()
    missing, unexpected = plain.load_state_dict(evolving.state_dict(), strict=False)
    assert not missing and all(key.startswith("evolve.") for key in unexpected)
    x, edge_index = _graph()
    torch.testing.assert_close(evolving(x, edge_index), plain(x, edge_index), atol=0, rtol=0)


def test_evolving_gat_stack_second_layer_by_hand():
    alpha, beta = 0.4, 0.5
    stack = GATStack(5, 4, 3, num_layers=2, heads=2, evolving=True, alpha=alpha, beta=beta).eval()
    x, edge_index = _graph()
    _, attention = stack(x, edge_index, return_attention_weights=True)
    first, (loops, _), logits_1 = stack.convs[0](x, edge_index, return_attention_weights=True,
                                                 return_attention_logits=True)
    _, logits_2 = stack.convs[1](F.elu(first), edge_index, return_attention_logits=True)
    mixed = alpha * logits_1 + (1 - alpha) * logits_2
    head_mix = stack.evolve[0].conv
    evolved = beta * F.relu(mixed @ head_mix.weight.T + head_mix.bias) + (1 - beta) * mixed
    torch.testing.assert_close(attention[1][1], pyg_softmax(evolved, loops[1], num_nodes=6))
    torch.testing.assert_close(attention[0][1], pyg_softmax(logits_1, loops[1], num_nodes=6))


def test_evolving_gat_stack_trains():
    stack = GATStack(5, 4, 3, num_layers=2, heads=2, evolving=True)
    x, edge_index = _graph()
    loss = F.cross_entropy(stack(x, edge_index), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    assert stack.evolve[0].conv.weight.grad is not None and stack.convs[0].att_src.grad is not None


# --------------------------------------------------------------------------------------------
# Transformer encoder stack
# --------------------------------------------------------------------------------------------


def _encoder(evolving: bool, alpha: float = 0.5, beta: float = 0.5, causal: bool = False, layers: int = 3):
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    return TransformerEncoder(layer, layers, evolving=evolving, alpha=alpha, beta=beta, causal=causal).eval()


def test_evolving_encoder_with_zero_alpha_beta_equals_plain_encoder():
    evolving, plain = _encoder(True, 0.0, 0.0), _encoder(False)
    plain.load_state_dict(evolving.state_dict(), strict=False)
    src = torch.randn(2, 5, 8)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    expected = plain(src, src_key_padding_mask=padding)
    torch.testing.assert_close(evolving(src, src_key_padding_mask=padding), expected, atol=0, rtol=0)


def test_evolving_encoder_second_layer_by_hand():
    alpha, beta = 0.3, 0.6
    encoder = _encoder(True, alpha, beta, layers=2)
    src = torch.randn(2, 5, 8)
    _, attention = encoder(src, return_attention_weights=True)
    first, _, logits_1 = encoder.layers[0](src, return_attention_weights=True)
    _, _, logits_2 = encoder.layers[1](first, return_attention_weights=True)
    mixed = alpha * logits_1 + (1 - alpha) * logits_2
    conv = encoder.evolve[0].conv
    evolved = beta * F.relu(F.conv2d(mixed, conv.weight, conv.bias, padding=1)) + (1 - beta) * mixed
    torch.testing.assert_close(attention[1], torch.softmax(evolved, -1))


def test_evolving_encoder_padding_does_not_leak():
    encoder = _encoder(True)
    src = torch.randn(1, 3, 8)
    padded = torch.cat([src, torch.randn(1, 2, 8) * 10], dim=1)
    padding = torch.tensor([[False, False, False, True, True]])
    torch.testing.assert_close(encoder(padded, src_key_padding_mask=padding)[:, :3], encoder(src),
                               atol=1e-5, rtol=1e-5)


def test_causal_evolving_encoder_sees_no_future():
    encoder = _encoder(True, causal=True)
    src = torch.randn(1, 6, 8)
    out = encoder(src)
    changed = src.clone()
    changed[:, 4:] = torch.randn(1, 2, 8)
    torch.testing.assert_close(encoder(changed)[:, :4], out[:, :4])
    with pytest.raises(ValueError, match="causal"):
        encoder(src, is_causal=False)
