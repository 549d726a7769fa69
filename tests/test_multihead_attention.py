"""graphmem.nn.MultiheadAttention and the transformer encoder against torch's (same weights, same inputs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphmem.nn import MultiheadAttention, TransformerEncoder, TransformerEncoderLayer

ATOL = RTOL = 1e-5
E, H, L, S, N = 8, 2, 4, 5, 3


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _pair(**kwargs):
    ref = nn.MultiheadAttention(E, H, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.5)
    ours = MultiheadAttention(E, H, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _inputs(batch_first: bool, kdim: int = E, vdim: int = E, batched: bool = True):
    def make(length: int, dim: int) -> torch.Tensor:
        if not batched:
            return torch.randn(length, dim)
        return torch.randn(N, length, dim) if batch_first else torch.randn(length, N, dim)

    return make(L, E), make(S, kdim), make(S, vdim)


def _masks(kind: str):
    padding = torch.zeros(N, S, dtype=torch.bool)
    padding[0, 3:] = True
    padding[2, 0] = True
    if kind == "none":
        return {}
    if kind == "bool_attn":
        return {"attn_mask": torch.rand(L, S) < 0.3}
    if kind == "float_attn":
        return {"attn_mask": torch.randn(L, S)}
    if kind == "float_attn_inf":
        mask = torch.randn(L, S)
        mask[1, 2] = mask[3, 0] = float("-inf")
        return {"attn_mask": mask}
    if kind == "3d_attn":
        return {"attn_mask": torch.rand(N * H, L, S) < 0.3}
    if kind == "padding":
        return {"key_padding_mask": padding}
    if kind == "float_padding":
        return {"key_padding_mask": torch.where(padding, float("-inf"), 0.0)}
    if kind == "both":
        return {"key_padding_mask": padding, "attn_mask": torch.rand(L, S) < 0.3}
    raise ValueError(kind)


def _compare(ours, ref, q, k, v, **kwargs):
    q_o, k_o, v_o = (t.clone().requires_grad_(True) for t in (q, k, v))
    q_r, k_r, v_r = (t.clone().requires_grad_(True) for t in (q, k, v))
    out_o, w_o = ours(q_o, k_o, v_o, **kwargs)
    out_r, w_r = ref(q_r, k_r, v_r, **kwargs)
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=RTOL)
    if w_r is None:
        assert w_o is None
    else:
        torch.testing.assert_close(w_o, w_r, atol=ATOL, rtol=RTOL)
    c = torch.randn_like(out_r)
    (out_o * c).sum().backward()
    (out_r * c).sum().backward()
    for a, b in zip((q_o, k_o, v_o), (q_r, k_r, v_r)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)
    for (name, p_o), (_, p_r) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p_o.grad, p_r.grad, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("masks", ["none", "bool_attn", "float_attn", "float_attn_inf", "3d_attn", "padding",
                                   "float_padding", "both"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_torch_masks(masks, batch_first):
    ours, ref = _pair(batch_first=batch_first)
    _compare(ours, ref, *_inputs(batch_first), **_masks(masks), average_attn_weights=False)


@pytest.mark.parametrize("bias,add_bias_kv,add_zero_attn", [(False, False, False), (True, True, False),
                                                             (True, False, True), (True, True, True)])
def test_matches_torch_key_value_dims_and_extras(bias, add_bias_kv, add_zero_attn):
    ours, ref = _pair(kdim=6, vdim=3, bias=bias, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn,
                      batch_first=True)
    assert "q_proj_weight" in dict(ours.named_parameters()) and ours.in_proj_weight is None
    _compare(ours, ref, *_inputs(True, 6, 3), **_masks("both"))


def test_matches_torch_unbatched_and_averaged_weights():
    ours, ref = _pair()
    q, k, v = _inputs(False, batched=False)
    _compare(ours, ref, q, k, v, key_padding_mask=torch.tensor([False, False, True, False, True]))
    _compare(ours, ref, q, k, v, attn_mask=torch.rand(H, L, S) < 0.3, average_attn_weights=False)
    _compare(ours, ref, q, k, v, need_weights=False)


def test_is_causal_builds_the_causal_mask():
    ours, ref = _pair(batch_first=True)
    x = torch.randn(N, L, E)
    causal = nn.Transformer.generate_square_subsequent_mask(L)
    out, weights = ours(x, x, x, is_causal=True)
    expected, expected_w = ref(x, x, x, attn_mask=causal)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(weights, expected_w, atol=ATOL, rtol=RTOL)


def test_fully_masked_query_reads_zeros_not_nan():
    ours, _ = _pair(batch_first=True)
    q, k, v = _inputs(True)
    mask = torch.zeros(L, S, dtype=torch.bool)
    mask[2] = True
    out, weights = ours(q, k, v, attn_mask=mask)
    assert torch.isfinite(out).all() and torch.all(weights[:, 2] == 0)
    torch.testing.assert_close(out[:, 2], ours.out_proj.bias.expand(N, E))


def test_dropout_only_in_training():
    ours, _ = _pair(batch_first=True, dropout=0.5)
    q, k, v = _inputs(True)
    ours.eval()
    _, w_eval = ours(q, k, v)
    torch.testing.assert_close(w_eval.sum(-1), torch.ones(N, L))
    ours.train()
    _, w_train = ours(q, k, v, average_attn_weights=False)
    assert (w_train == 0).any()


@pytest.mark.parametrize("score", ["dot", "additive", "bilinear", "cosine"])
def test_other_scores(score):
    layer = MultiheadAttention(E, H, batch_first=True, score=score)
    q, k, v = _inputs(True)
    out, weights = layer(q, k, v, key_padding_mask=_masks("padding")["key_padding_mask"])
    assert out.shape == (N, L, E) and torch.isfinite(out).all()
    assert torch.all(weights[0, :, 3:] == 0)
    assert f"score={score!r}" in repr(layer)


def test_hard_normalizer_gives_one_hot_weights():
    layer = MultiheadAttention(E, H, batch_first=True, normalizer="hard")
    _, weights = layer(*_inputs(True), average_attn_weights=False)
    assert torch.all((weights == 0) | (weights == 1)) and torch.all(weights.sum(-1) == 1)


def test_logits_transform_and_returned_logits():
    ours, _ = _pair(batch_first=True)
    q, k, v = _inputs(True)
    padding = _masks("padding")["key_padding_mask"]
    seen = {}

    def transform(logits, mask):
        seen["mask"] = mask
        return logits * 2.0

    out, weights, logits = ours(q, k, v, key_padding_mask=padding, average_attn_weights=False,
                                logits_transform=transform, return_attention_logits=True)
    assert logits.shape == (N, H, L, S)
    assert torch.equal(seen["mask"].expand(N, H, L, S), ~padding.view(N, 1, 1, S).expand(N, H, L, S))
    expected = torch.softmax(logits.masked_fill(~seen["mask"], float("-inf")), -1)
    torch.testing.assert_close(weights, expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="unknown score"):
        MultiheadAttention(8, 2, score="euclid")
    with pytest.raises(ValueError, match="unknown normalizer"):
        MultiheadAttention(8, 2, normalizer="sparsemax")


# --------------------------------------------------------------------------------------------
# Transformer encoder layer and stack
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_layer_matches_torch(norm_first, batch_first):
    ref = nn.TransformerEncoderLayer(E, H, 16, dropout=0.1, batch_first=batch_first, norm_first=norm_first,
                                     activation="gelu").eval()
    ours = TransformerEncoderLayer(E, H, 16, dropout=0.1, batch_first=batch_first, norm_first=norm_first,
                                   activation="gelu").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    src = torch.randn(N, S, E) if batch_first else torch.randn(S, N, E)
    padding = torch.zeros(N, S, dtype=torch.bool)
    padding[0, 3:] = True  # under the causal mask no query may lose all its keys (torch gives NaN)
    mask = torch.ones(S, S, dtype=torch.bool).triu(1)  # causal, the same mask type as padding
    with torch.no_grad():
        torch.testing.assert_close(ours(src, mask, padding), ref(src, mask, padding), atol=ATOL, rtol=RTOL)


def test_encoder_matches_torch():
    layer = nn.TransformerEncoderLayer(E, H, 16, batch_first=True)
    ref = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(E), enable_nested_tensor=False).eval()
    ours = TransformerEncoder(TransformerEncoderLayer(E, H, 16, batch_first=True), 3, norm=nn.LayerNorm(E))
    ours.eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.3)
    ours.load_state_dict(ref.state_dict(), strict=True)
    src = torch.randn(N, S, E)
    padding = _masks("padding")["key_padding_mask"]
    with torch.no_grad():
        out, weights = ours(src, src_key_padding_mask=padding, return_attention_weights=True)
        torch.testing.assert_close(out, ref(src, src_key_padding_mask=padding), atol=ATOL, rtol=RTOL)
    assert len(weights) == 3 and weights[0].shape == (N, H, S, S)
