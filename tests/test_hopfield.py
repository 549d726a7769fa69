"""Modern Hopfield layers: retrieval, fixed points, hand computation, masks, batched graph pooling."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from graphmem.data import smiles_to_graph
from graphmem.models import MoleculeGAT
from graphmem.nn import Hopfield, HopfieldLayer, HopfieldPooling, hopfield_update
from tests.conftest import SMILES
from tests.hand_attention import NORMALIZER_NAMES, SCORE_NAMES, hand_normalize, hand_score, randomize

DT = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _patterns(num: int = 32, dim: int = 64) -> torch.Tensor:
    """Random +-1 patterns: well separated (overlaps ~ sqrt(dim)) in high dimension."""
    return torch.randint(0, 2, (num, dim), dtype=DT) * 2 - 1


def _flip(pattern: torch.Tensor, fraction: float) -> torch.Tensor:
    noisy = pattern.clone()
    flip = torch.randperm(pattern.size(-1))[: int(fraction * pattern.size(-1))]
    noisy[..., flip] *= -1
    return noisy


# --------------------------------------------------------------------------------------------
# hopfield_update
# --------------------------------------------------------------------------------------------


def test_one_update_retrieves_stored_pattern_from_noisy_query():
    stored = _patterns(32, 64)
    noisy = torch.stack([_flip(p, 0.2) for p in stored])  # 12 of 64 signs flipped
    retrieved, weights = hopfield_update(noisy, stored, beta=1.0)
    torch.testing.assert_close(retrieved, stored, atol=1e-4, rtol=0)
    assert torch.equal(weights.argmax(-1), torch.arange(32))
    # with the transformer's beta = 1/sqrt(d) the same query only gets near its pattern
    blurred, _ = hopfield_update(noisy, stored)
    assert (blurred - stored).abs().amax() > 1e-2


def test_small_beta_fixed_point_is_global_average():
    stored = _patterns(16, 32)
    state = torch.randn(5, 32, dtype=DT)
    fixed, weights = hopfield_update(state, stored, beta=1e-4, num_iterations=20, tol=1e-12)
    average = stored.mean(0).expand_as(fixed)
    torch.testing.assert_close(fixed, average, atol=1e-3, rtol=0)
    torch.testing.assert_close(weights, torch.full_like(weights, 1 / 16), atol=1e-3, rtol=0)
    again, _ = hopfield_update(fixed, stored, beta=1e-4)
    torch.testing.assert_close(again, fixed, atol=1e-9, rtol=0)


def test_update_equals_hand_computation():
    # column layout of the paper: X is (d, N), xi is (d,)
    d, n, beta = 6, 5, 0.7
    X = torch.randn(d, n, dtype=DT)
    xi = torch.randn(d, dtype=DT)
    expected = X @ torch.softmax(beta * X.T @ xi, dim=0)
    new, weights = hopfield_update(xi.view(1, d), X.T, beta=beta)
    torch.testing.assert_close(new.view(d), expected)
    torch.testing.assert_close(weights.view(n), torch.softmax(beta * X.T @ xi, dim=0))


def test_default_beta_is_inverse_sqrt_dim_and_tensor_beta_broadcasts():
    state, stored = torch.randn(2, 3, 4, 8, dtype=DT), torch.randn(2, 3, 5, 8, dtype=DT)
    default, _ = hopfield_update(state, stored)
    explicit, _ = hopfield_update(state, stored, beta=1 / math.sqrt(8))
    torch.testing.assert_close(default, explicit)
    beta = torch.tensor([0.5, 1.0, 2.0], dtype=DT).view(3, 1, 1)  # one per head
    per_head, _ = hopfield_update(state, stored, beta=beta)
    for h in range(3):
        one, _ = hopfield_update(state[:, h], stored[:, h], beta=float(beta[h]))
        torch.testing.assert_close(per_head[:, h], one)


def test_iterations_repeat_the_update_and_stop_at_tolerance():
    stored, state = torch.randn(7, 4, dtype=DT), torch.randn(3, 4, dtype=DT)
    manual = state
    for _ in range(3):
        manual = torch.softmax(0.9 * manual @ stored.T, -1) @ stored
    three, _ = hopfield_update(state, stored, beta=0.9, num_iterations=3, tol=None)
    torch.testing.assert_close(three, manual)
    # a huge tolerance stops after the first iteration; the final read is the second update
    early, _ = hopfield_update(state, stored, beta=0.9, num_iterations=10, tol=1e9)
    two, _ = hopfield_update(state, stored, beta=0.9, num_iterations=2, tol=None)
    torch.testing.assert_close(early, two)
    with pytest.raises(ValueError, match="num_iterations"):
        hopfield_update(state, stored, num_iterations=0)


def test_last_step_reads_values_and_mask_is_respected():
    stored, state = torch.randn(6, 4, dtype=DT), torch.randn(2, 4, dtype=DT)
    value = torch.randn(6, 3, dtype=DT)
    mask = torch.tensor([True, False, True, True, False, True])
    out, weights = hopfield_update(state, stored, beta=1.3, mask=mask, value=value)
    assert torch.all(weights[:, ~mask] == 0)
    expected = torch.softmax(1.3 * state @ stored[mask].T, -1) @ value[mask]
    torch.testing.assert_close(out, expected)


# --------------------------------------------------------------------------------------------
# Hopfield
# --------------------------------------------------------------------------------------------


def test_hopfield_one_iteration_is_torch_multihead_attention():
    """With beta = 1/sqrt(d) and one update, Hopfield is transformer attention (Ramsauer et al.)."""
    E, H = 8, 2
    ref = torch.nn.MultiheadAttention(E, H, batch_first=True)
    ours = Hopfield(E, num_heads=H)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.5)
        wq, wk, wv = ref.in_proj_weight.chunk(3)
        bq, bk, bv = ref.in_proj_bias.chunk(3)
        for lin, w, b in ((ours.query_proj, wq, bq), (ours.key_proj, wk, bk), (ours.value_proj, wv, bv),
                          (ours.out_proj, ref.out_proj.weight, ref.out_proj.bias)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    state, stored = torch.randn(3, 4, E), torch.randn(3, 6, E)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = True
    expected, expected_w = ref(state, stored, stored, key_padding_mask=padding, average_attn_weights=False)
    out, weights = ours(state, stored, stored_mask=~padding, return_attention_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, expected_w, atol=1e-5, rtol=1e-5)


def test_hopfield_self_association_shapes_and_options():
    layer = Hopfield(12, hidden_size=5, output_size=7, num_heads=3, num_iterations=3, normalize=True)
    x = torch.randn(2, 4, 12)
    out, weights = layer(x, return_attention_weights=True)
    assert out.shape == (2, 4, 7) and weights.shape == (2, 3, 4, 4)
    assert layer.beta == pytest.approx(1 / math.sqrt(5))
    assert "num_heads=3" in repr(layer) and "num_iterations=3" in repr(layer)
    out.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    with pytest.raises(ValueError, match="divisible"):
        Hopfield(10, num_heads=3)
    with pytest.raises(ValueError, match="unprojected"):
        Hopfield(8, project_state=False)(torch.randn(2, 5), torch.randn(3, 8))


def test_hopfield_masked_stored_patterns_do_not_matter():
    layer = Hopfield(6, stored_size=4, num_heads=2, hidden_size=3).eval()
    state, stored = torch.randn(2, 3, 6), torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, False, True, False], [True, False, False, False, False]])
    changed = torch.where(mask.unsqueeze(-1), stored, torch.randn_like(stored) * 100)
    out = layer(state, stored, stored_mask=mask)
    torch.testing.assert_close(out, layer(state, changed, stored_mask=mask))
    for b in range(2):
        alone = layer(state[b], stored[b][mask[b]])
        torch.testing.assert_close(layer(state, stored, stored_mask=mask)[b], alone, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# HopfieldPooling, HopfieldLayer
# --------------------------------------------------------------------------------------------


def _graphs(sizes=(3, 1, 5, 2), features=8):
    return [Data(x=torch.randn(n, features), edge_index=torch.empty(2, 0, dtype=torch.long)) for n in sizes]


def test_hopfield_pooling_batch_equals_each_graph_alone():
    pool = HopfieldPooling(8, output_size=6, num_heads=2, num_queries=3, num_iterations=2).eval()
    graphs = _graphs()
    batch = Batch.from_data_list(graphs)
    pooled, weights = pool(batch.x, batch.batch, size=batch.num_graphs, return_attention_weights=True)
    assert pooled.shape == (4, 18) and weights.shape == (4, 2, 3, 5)
    for g, graph in enumerate(graphs):
        torch.testing.assert_close(pooled[g], pool(graph.x).squeeze(0), atol=1e-6, rtol=1e-5)
        assert torch.all(weights[g, ..., graph.num_nodes:] == 0)  # padding gets no weight
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 2, 3))


def test_hopfield_pooling_padded_sets_and_empty_graph():
    pool = HopfieldPooling(8, num_heads=4)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    out = pool(x, mask=mask)
    torch.testing.assert_close(out[1], pool(x[1:, :2]).squeeze(0), atol=1e-6, rtol=1e-5)
    # graph 1 has no nodes: it pools to zeros (as PyG's global pools), without NaN
    batch = torch.tensor([0, 0, 2])
    empty = pool(torch.randn(3, 8), batch, size=3)
    torch.testing.assert_close(empty[1], torch.zeros(8))
    assert empty[0].abs().sum() > 0 and empty[2].abs().sum() > 0
    with pytest.raises(ValueError, match="either batch"):
        pool(torch.randn(3, 8), batch, mask=torch.ones(3, 3, dtype=torch.bool))


def test_hopfield_pooling_starts_near_mean_and_learns():
    pool = HopfieldPooling(16, num_heads=2)
    x = torch.randn(1, 30, 16)
    _, weights = pool(x, return_attention_weights=True)
    assert weights.amax() < 3 / 30  # small queries: nearly uniform weights at initialisation
    optimizer = torch.optim.Adam(pool.parameters(), lr=0.05)
    target = x[0, 7]  # learn to pick member 7 out of the set
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add overhead on a busy machine
    try:
        for _ in range(40):
            optimizer.zero_grad()
            loss = (pool(x) - target).pow(2).mean()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.05


def test_hopfield_layer_lookup():
    layer = HopfieldLayer(10, output_size=4, num_patterns=6, num_heads=2)
    out, weights = layer(torch.randn(3, 5, 10), return_attention_weights=True)
    assert out.shape == (3, 5, 4) and weights.shape == (3, 2, 5, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 5))
    out.sum().backward()
    assert layer.stored_patterns.grad is not None and layer.value_patterns.grad is not None
    # the lookup is Hopfield with the learned patterns as stored and value sets
    x = torch.randn(4, 10)
    torch.testing.assert_close(layer(x), layer.hopfield(x, layer.stored_patterns, layer.value_patterns))
    assert "num_patterns=6" in repr(layer)


# --------------------------------------------------------------------------------------------
# MoleculeGAT with a Hopfield readout
# --------------------------------------------------------------------------------------------


def test_molecule_gat_hopfield_readout():
    graphs = [smiles_to_graph(s) for s in SMILES[:6]]
    batch = next(iter(DataLoader(graphs, batch_size=6)))
    model = MoleculeGAT(num_tasks=3, hidden_channels=16, heads=4, num_layers=2, readout="hopfield").eval()
    out = model(batch)
    assert out.shape == (6, 3) and torch.isfinite(out).all()
    assert isinstance(model.pool, HopfieldPooling)
    # each molecule's prediction does not depend on the others in the batch
    alone = model(next(iter(DataLoader(graphs[2:3], batch_size=1))))
    torch.testing.assert_close(out[2:3], alone, atol=1e-5, rtol=1e-5)
    model.train()
    model(batch).sum().backward()
    assert model.pool.query.grad is not None
    assert MoleculeGAT(num_tasks=3, hidden_channels=16, heads=4, readout="mean").pool is None


# --------------------------------------------------------------------------------------------
# every score and normalizer of the core, against the formulas written out
# --------------------------------------------------------------------------------------------

HEADS, HID = 2, 3  # heads, association size per head
COMBINATIONS = [(s, n) for s in SCORE_NAMES for n in NORMALIZER_NAMES]


def _split(x: torch.Tensor) -> torch.Tensor:
    """``(..., L, H * d)`` as ``(..., H, L, d)``."""
    return x.unflatten(-1, (HEADS, -1)).transpose(-2, -3)


def _linear(lin: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ lin.weight.t() + lin.bias


def _ready(module: torch.nn.Module) -> Hopfield:
    """The module in float64 with its scorer's parameters moved off their start; its Hopfield core."""
    layer = getattr(module.double(), "hopfield", module)
    randomize(layer.scorer)
    return layer


def _assert_hand_hopfield(layer: Hopfield, out: torch.Tensor, weights: torch.Tensor, q: torch.Tensor,
                          k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor) -> None:
    """``out`` and ``weights`` are Z = W_O ||_h normalize(beta s(q_h, k_h)) v_h for per-head
    ``(B, H, L, d)`` inputs; the layer ran right after ``torch.manual_seed(1)``."""
    uniform = None
    if layer.normalizer.startswith("gumbel"):  # the U(0, 1) draws the Gumbel normalizer made
        torch.manual_seed(1)
        uniform = torch.rand(q.shape[:-1] + k.shape[-2:-1], dtype=DT)
    logits = layer.beta * hand_score(layer.score, layer.scorer, q, k)
    expected_weights = hand_normalize(layer.normalizer, logits, keep, uniform)
    read = (expected_weights @ v).transpose(1, 2).flatten(-2)  # heads concatenated
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(out, _linear(layer.out_proj, read))


@pytest.mark.parametrize(("score", "normalizer"), COMBINATIONS)
def test_hopfield_every_score_and_normalizer_by_hand(score, normalizer):
    layer = _ready(Hopfield(6, hidden_size=HID, num_heads=HEADS, beta=0.7, score=score, normalizer=normalizer))
    state, stored = torch.randn(2, 4, 6, dtype=DT), torch.randn(2, 5, 6, dtype=DT)
    keep = torch.ones(2, 5, dtype=torch.bool)
    keep[1, 3:] = False
    torch.manual_seed(1)
    out, weights = layer(state, stored, stored_mask=keep, return_attention_weights=True)
    q, k, v = (_split(_linear(lin, x)) for lin, x in
               ((layer.query_proj, state), (layer.key_proj, stored), (layer.value_proj, stored)))
    _assert_hand_hopfield(layer, out, weights, q, k, v, keep[:, None, None, :])
    assert (f"score={score!r}" in repr(layer)) == (score != "dot")


@pytest.mark.parametrize(("score", "normalizer"), COMBINATIONS)
def test_hopfield_pooling_every_score_and_normalizer_by_hand(score, normalizer):
    pool = HopfieldPooling(6, hidden_size=HID, num_heads=HEADS, num_queries=2, beta=0.9, score=score,
                           normalizer=normalizer)
    layer = _ready(pool)
    x = torch.randn(3, 5, 6, dtype=DT)
    keep = torch.ones(3, 5, dtype=torch.bool)
    keep[2, 2:] = False
    torch.manual_seed(1)
    out, weights = pool(x, mask=keep, return_attention_weights=True)
    q = _split(pool.query).expand(3, -1, -1, -1)  # the learned queries, the same for every set
    k, v = _split(_linear(layer.key_proj, x)), _split(_linear(layer.value_proj, x))
    _assert_hand_hopfield(layer, out.unflatten(-1, (2, -1)), weights, q, k, v, keep[:, None, None, :])


@pytest.mark.parametrize(("score", "normalizer"), COMBINATIONS)
def test_hopfield_layer_every_score_and_normalizer_by_hand(score, normalizer):
    lookup = HopfieldLayer(6, hidden_size=HID, num_heads=HEADS, num_patterns=4, beta=1.3, score=score,
                           normalizer=normalizer)
    layer = _ready(lookup)
    x = torch.randn(2, 3, 6, dtype=DT)
    torch.manual_seed(1)
    out, weights = lookup(x, return_attention_weights=True)
    q = _split(_linear(layer.query_proj, x))
    k = _split(lookup.stored_patterns).expand(2, -1, -1, -1)  # learned keys and values
    v = _split(lookup.value_patterns).expand(2, -1, -1, -1)
    _assert_hand_hopfield(layer, out, weights, q, k, v, torch.ones(1, 1, 1, 4, dtype=torch.bool))


def test_hopfield_rejects_unknown_score_and_normalizer():
    with pytest.raises(ValueError, match="unknown score 'euclid'; choose one of gat, gatv2, additive"):
        Hopfield(6, score="euclid")
    with pytest.raises(ValueError, match="unknown normalizer 'sparsemax'; choose one of softmax, hard"):
        HopfieldPooling(6, normalizer="sparsemax")
