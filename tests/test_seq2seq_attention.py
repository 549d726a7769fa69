"""Seq2SeqAttention against hand computation: every score form, the padding mask, hard attention."""

from __future__ import annotations

import math

import pytest
import torch

from graphmem.nn import Seq2SeqAttention

DT = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _matvec(m: torch.Tensor, x: list[float]) -> list[float]:
    return [_dot(row, x) for row in m.tolist()]


def _score_ref(layer: Seq2SeqAttention, q: list[float], k: list[float]) -> float:
    if layer.score == "additive":
        scorer = layer.scorer
        hidden = [math.tanh(a + b) for a, b in zip(_matvec(scorer.key_weight[0].detach(), k),
                                                  _matvec(scorer.query_weight[0].detach(), q))]
        return _dot(scorer.att[0].tolist(), hidden)
    if layer.score == "bilinear":
        return _dot(k, _matvec(layer.scorer.weight[0].detach(), q))
    if layer.score == "dot":
        return _dot(k, q)
    if layer.score == "cosine":  # learned strength softplus(rho), started at 1
        beta = math.log1p(math.exp(float(layer.scorer.raw_beta)))
        return beta * _dot(k, q) / math.sqrt(_dot(k, k) * _dot(q, q))
    if layer.score == "gat":  # LeakyReLU(a_t . q + a_s . k)
        pre = _dot(layer.scorer.att_dst[0, 0].tolist(), q) + _dot(layer.scorer.att_src[0, 0].tolist(), k)
        return pre if pre >= 0 else 0.2 * pre
    return _dot(k, q) / math.sqrt(len(q))


def _attend_ref(layer, query, keys, values, mask):
    """Softmax over the unmasked source positions and the weighted sum, one number at a time."""
    scores = [_score_ref(layer, query, k) if m else None for k, m in zip(keys, mask)]
    top = max(s for s in scores if s is not None)
    exp = [math.exp(s - top) if s is not None else 0.0 for s in scores]
    weights = [e / sum(exp) for e in exp]
    context = [sum(w * v[d] for w, v in zip(weights, values)) for d in range(len(values[0]))]
    return weights, context


@pytest.mark.parametrize("score", ["additive", "dot", "scaled_dot", "bilinear", "cosine", "gat"])
def test_scores_match_hand_computation(score):
    query_dim = 5 if score in ("dot", "scaled_dot", "cosine") else 3
    attention_dim = 4 if score == "additive" else None
    layer = Seq2SeqAttention(query_dim, 5, score=score, attention_dim=attention_dim).double()
    if score == "bilinear":
        torch.nn.init.normal_(layer.scorer.weight)  # away from the identity it starts at
    keys = torch.randn(2, 4, 5, dtype=DT)
    values = torch.randn(2, 4, 3, dtype=DT)
    query = torch.randn(2, 3, query_dim, dtype=DT)  # three decoder steps at once
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    context, weights = layer(query, keys, values, mask)
    assert context.shape == (2, 3, 3) and weights.shape == (2, 3, 4)
    for b in range(2):
        for t in range(3):
            w_ref, c_ref = _attend_ref(layer, query[b, t].tolist(), keys[b].tolist(), values[b].tolist(),
                                       mask[b].tolist())
            torch.testing.assert_close(weights[b, t], torch.tensor(w_ref, dtype=DT))
            torch.testing.assert_close(context[b, t], torch.tensor(c_ref, dtype=DT))


def test_one_step_query_and_precomputed_keys():
    layer = Seq2SeqAttention(6, 8, score="additive")
    keys, query = torch.randn(3, 5, 8), torch.randn(3, 6)
    context, weights = layer(query, keys)
    assert context.shape == (3, 8) and weights.shape == (3, 5)
    all_steps, all_weights = layer(query.unsqueeze(1), keys)
    torch.testing.assert_close(context, all_steps[:, 0])
    again, _ = layer(query, keys, projected_keys=layer.project_keys(keys))
    torch.testing.assert_close(context, again)


@pytest.mark.parametrize("normalizer", ["softmax", "hard", "gumbel", "gumbel_hard"])
def test_padding_gets_no_weight_and_does_not_matter(normalizer):
    layer = Seq2SeqAttention(4, 4, score="bilinear", normalizer=normalizer)
    keys, query = torch.randn(2, 6, 4), torch.randn(2, 4)
    mask = torch.tensor([[True] * 6, [True, True, False, False, False, False]])
    torch.manual_seed(1)
    context, weights = layer(query, keys, mask=mask)
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    changed = keys.clone()
    changed[1, 2:] = 100 * torch.randn(4, 4)
    torch.manual_seed(1)
    context_changed, _ = layer(query, changed, mask=mask)
    torch.testing.assert_close(context, context_changed)


def test_hard_attention_reads_one_position_with_soft_gradients():
    layer = Seq2SeqAttention(4, 4, score="dot", normalizer="hard")
    keys = torch.randn(2, 5, 4)
    query = torch.randn(2, 4, requires_grad=True)
    context, weights = layer(query, keys)
    assert set(weights.unique().tolist()) == {0.0, 1.0}
    best = torch.einsum("bd,bld->bl", query.detach(), keys).argmax(-1)
    torch.testing.assert_close(context, keys[torch.arange(2), best])
    context.sum().backward()
    assert query.grad.abs().sum() > 0  # the straight-through estimator passes the softmax gradient


def test_repr_and_errors():
    layer = Seq2SeqAttention(8, 8, score="dot", normalizer="hard")
    assert layer.extra_repr() == "8, 8, score='dot', normalizer='hard'"
    with pytest.raises(ValueError, match=r"query size \(4\) must equal the key size \(8\)"):
        Seq2SeqAttention(4, 8, score="dot")
    with pytest.raises(ValueError, match="unknown score 'euclid'; choose one of gat, gatv2, additive"):
        Seq2SeqAttention(4, 4, score="euclid")
    with pytest.raises(ValueError, match="unknown normalizer"):
        Seq2SeqAttention(4, 4, normalizer="sparsemax")
