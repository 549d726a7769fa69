"""Capsule routing against hand computation: explicit loops over lower units, upper units, dimensions."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from graphmem.nn import CapsuleLayer, CapsulePooling
from graphmem.nn.routing import Router, dynamic_routing, em_routing, squash

DT = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _squash_ref(s: list[float]) -> list[float]:
    norm2 = sum(x * x for x in s)
    norm = math.sqrt(norm2)
    return [norm2 / (1 + norm2) * x / norm for x in s]


def _dynamic_ref(votes: torch.Tensor, iterations: int) -> tuple[list[list[float]], list[list[float]]]:
    """Sabour et al.'s Procedure 1, one number at a time."""
    n, j_count, d_count = votes.shape
    u = votes.tolist()
    b = [[0.0] * j_count for _ in range(n)]
    for _ in range(iterations):
        c = [[math.exp(b[i][j]) / sum(math.exp(b[i][k]) for k in range(j_count)) for j in range(j_count)]
             for i in range(n)]
        s = [[sum(c[i][j] * u[i][j][d] for i in range(n)) for d in range(d_count)] for j in range(j_count)]
        v = [_squash_ref(s[j]) for j in range(j_count)]
        for i in range(n):
            for j in range(j_count):
                b[i][j] += sum(u[i][j][d] * v[j][d] for d in range(d_count))
    return v, c


def _em_ref(votes: torch.Tensor, a: list[float], iterations: int, beta_u: list[float], beta_a: list[float],
            lam: float, eps: float) -> tuple[list[list[float]], list[float], list[list[float]]]:
    """EM routing as documented in graphmem.nn.routing.em_routing, one number at a time."""
    n, j_count, d_count = votes.shape
    v = votes.tolist()
    r = [[1.0 / j_count] * j_count for _ in range(n)]
    total = sum(a)
    for t in range(iterations):
        lam_t = lam * (t + 1) / iterations
        rr = [[r[i][j] * a[i] for j in range(j_count)] for i in range(n)]
        mass = [sum(rr[i][j] for i in range(n)) for j in range(j_count)]
        mu = [[sum(rr[i][j] * v[i][j][h] for i in range(n)) / mass[j] for h in range(d_count)]
              for j in range(j_count)]
        var = [[sum(rr[i][j] * (v[i][j][h] - mu[j][h]) ** 2 for i in range(n)) / mass[j] + eps
                for h in range(d_count)] for j in range(j_count)]
        act = []
        for j in range(j_count):
            cost = sum(beta_u[j] + math.log(math.sqrt(var[j][h])) for h in range(d_count)) * mass[j] / total
            act.append(1 / (1 + math.exp(-lam_t * (beta_a[j] - cost))))
        if t == iterations - 1:
            break
        for i in range(n):
            p = []
            for j in range(j_count):
                pij = 1.0
                for h in range(d_count):
                    pij *= math.exp(-(v[i][j][h] - mu[j][h]) ** 2 / (2 * var[j][h])) / math.sqrt(
                        2 * math.pi * var[j][h])
                p.append(act[j] * pij)
            r[i] = [pj / sum(p) for pj in p]
    return mu, act, r


# --------------------------------------------------------------------------------------------
# squash and dynamic routing


def test_squash_formula():
    s = torch.tensor([[3.0, 4.0], [0.3, -0.4]], dtype=DT)
    expected = torch.tensor([_squash_ref([3.0, 4.0]), _squash_ref([0.3, -0.4])], dtype=DT)
    torch.testing.assert_close(squash(s), expected)
    assert torch.allclose(squash(s)[0], torch.tensor([15 / 26, 20 / 26], dtype=DT))
    zero = torch.zeros(1, 3, requires_grad=True)
    squash(zero).sum().backward()
    assert torch.equal(squash(zero.detach()), torch.zeros(1, 3)) and torch.isfinite(zero.grad).all()


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_dynamic_routing_matches_loops(iterations):
    votes = torch.randn(5, 3, 4, dtype=DT)
    poses, activations, coupling = dynamic_routing(votes, iterations)
    v_ref, c_ref = _dynamic_ref(votes, iterations)
    torch.testing.assert_close(poses, torch.tensor(v_ref, dtype=DT))
    torch.testing.assert_close(coupling, torch.tensor(c_ref, dtype=DT))
    torch.testing.assert_close(activations, poses.norm(dim=-1))


def test_coupling_is_a_softmax_over_upper_units():
    votes = torch.randn(2, 6, 4, 3, dtype=DT)
    coupling = dynamic_routing(votes, 3).coupling  # (2, 6, 4)
    torch.testing.assert_close(coupling.sum(-1), torch.ones(2, 6, dtype=DT))
    assert not torch.allclose(coupling.sum(-2), torch.ones(2, 4, dtype=DT))
    assert (coupling > 0).all()


def test_first_iteration_is_uniform():
    votes = torch.randn(4, 3, 2, dtype=DT)
    poses, _, coupling = dynamic_routing(votes, 1)
    torch.testing.assert_close(coupling, torch.full((4, 3), 1 / 3, dtype=DT))
    torch.testing.assert_close(poses, squash(votes.mean(0) * 4 / 3))


def test_dense_mask_equals_truncated_samples():
    votes = torch.randn(3, 5, 2, 4, dtype=DT)
    lengths = [5, 2, 1]
    mask = torch.arange(5) < torch.tensor(lengths).unsqueeze(-1)
    routed = dynamic_routing(votes, 3, mask=mask)
    for b, n in enumerate(lengths):
        alone = dynamic_routing(votes[b, :n], 3)
        torch.testing.assert_close(routed.poses[b], alone.poses)
        torch.testing.assert_close(routed.coupling[b, :n], alone.coupling)
        assert (routed.coupling[b, n:] == 0).all()


def test_sparse_layout_equals_dense():
    votes = torch.randn(2, 4, 3, 5, dtype=DT)
    dense = dynamic_routing(votes, 2)
    sparse = dynamic_routing(votes.reshape(8, 3, 5), 2, index=torch.tensor([0] * 4 + [1] * 4), num_groups=2)
    torch.testing.assert_close(sparse.poses, dense.poses)
    torch.testing.assert_close(sparse.coupling, dense.coupling.reshape(8, 3))


def test_hard_routing_assigns_each_lower_unit_once():
    votes = torch.randn(2, 5, 3, 4)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    coupling = dynamic_routing(votes, 3, mask=mask, normalizer="hard").coupling
    assert set(coupling.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(coupling.sum(-1), mask.float())


# --------------------------------------------------------------------------------------------
# EM routing


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_em_routing_matches_loops(iterations):
    votes = torch.randn(6, 3, 2, dtype=DT)
    a = torch.rand(6, dtype=DT) * 0.8 + 0.1
    beta_u, beta_a = torch.randn(3, dtype=DT), torch.randn(3, dtype=DT)
    poses, activations, coupling = em_routing(votes, a, iterations, beta_u, beta_a, inverse_temperature=2.0,
                                              eps=1e-4)
    mu, act, r = _em_ref(votes, a.tolist(), iterations, beta_u.tolist(), beta_a.tolist(), 2.0, 1e-4)
    torch.testing.assert_close(poses, torch.tensor(mu, dtype=DT))
    torch.testing.assert_close(activations, torch.tensor(act, dtype=DT))
    torch.testing.assert_close(coupling, torch.tensor(r, dtype=DT))


def test_em_routing_fits_clusters():
    # lower units 0-2 agree on upper unit 0, units 3-5 on upper unit 1, and scatter elsewhere:
    # EM must send each lower unit to the capsule its vote agrees with
    which = torch.tensor([0, 0, 0, 1, 1, 1])
    agree = (torch.arange(2) == which.unsqueeze(-1)).unsqueeze(-1)
    votes = torch.where(agree, 1 + 0.05 * torch.randn(6, 2, 3, dtype=DT), 3 * torch.randn(6, 2, 3, dtype=DT))
    poses, activations, coupling = em_routing(votes, iterations=3)
    assert torch.equal(coupling.argmax(-1), which)
    torch.testing.assert_close(poses, torch.ones(2, 3, dtype=DT), atol=0.1, rtol=0)
    assert ((activations > 0) & (activations < 1)).all()
    torch.testing.assert_close(coupling.sum(-1), torch.ones(6, dtype=DT))


def test_em_dense_mask_equals_truncated_samples():
    votes = torch.randn(2, 4, 3, 2, dtype=DT)
    a = torch.rand(2, 4, dtype=DT)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    routed = em_routing(votes, a, 3, mask=mask)
    alone = em_routing(votes[1, :2], a[1, :2], 3)
    torch.testing.assert_close(routed.poses[1], alone.poses)
    torch.testing.assert_close(routed.activations[1], alone.activations)
    assert (routed.coupling[1, 2:] == 0).all()


# --------------------------------------------------------------------------------------------
# layers


def test_capsule_layer_votes_and_routing_by_hand():
    layer = CapsuleLayer(in_capsules=4, in_dim=3, out_capsules=2, out_dim=5, iterations=2).double()
    u = torch.randn(1, 4, 3, dtype=DT)
    weight = layer.weight.detach()
    votes = torch.tensor([[[[sum(float(weight[i, j, o, k]) * float(u[0, i, k]) for k in range(3))
                             for o in range(5)] for j in range(2)] for i in range(4)]], dtype=DT)
    torch.testing.assert_close(layer.votes(u), votes)
    v_ref, _ = _dynamic_ref(votes[0], 2)
    torch.testing.assert_close(layer(u)[0], torch.tensor(v_ref, dtype=DT))


def _graphs() -> list[Data]:
    return [Data(x=torch.randn(n, 6)) for n in (5, 1, 3, 8)]


@pytest.mark.parametrize("routing", ["dynamic", "em"])
def test_capsule_pooling_batch_equals_separate_graphs(routing):
    pool = CapsulePooling(6, num_capsules=3, capsule_dim=4, routing=routing)
    graphs = _graphs()
    batch = Batch.from_data_list(graphs)
    out, routed = pool(batch.x, batch.batch, batch.num_graphs, return_routing=True)
    assert out.shape == (4, 3, 4) and routed.activations.shape == (4, 3) and routed.coupling.shape == (17, 3)
    for g, data in enumerate(graphs):
        alone, alone_routed = pool(data.x, return_routing=True)
        torch.testing.assert_close(out[g], alone[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(routed.activations[g], alone_routed.activations[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(routed.coupling.sum(-1), torch.ones(17))


@pytest.mark.parametrize("routing", ["dynamic", "em"])
def test_capsule_pooling_gradients_finite(routing):
    pool = CapsulePooling(6, num_capsules=3, capsule_dim=4, routing=routing, flatten=True)
    batch = Batch.from_data_list(_graphs())
    x = batch.x.requires_grad_()
    out = pool(x, batch.batch, batch.num_graphs)
    assert out.shape == (4, 12)
    out.pow(2).sum().backward()
    for grad in [x.grad] + [p.grad for p in pool.parameters()]:
        assert grad is not None and torch.isfinite(grad).all()
    assert x.grad.abs().sum() > 0


def test_capsule_layer_em_with_mask_gradients_finite():
    layer = CapsuleLayer(5, 3, 2, 4, routing="em")
    u = torch.randn(2, 5, 3, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, False, False, False, False]])
    out, routed = layer(u, torch.rand(2, 5), mask=mask, return_routing=True)
    (out.sum() + routed.activations.sum()).backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(layer.router.beta_a.grad).all()
    assert (u.grad[1, 1:] == 0).all()


def test_repr_reset_and_errors():
    pool = CapsulePooling(6, 3, 4, routing="em", iterations=2)
    assert "num_capsules=3" in repr(pool) and "routing='em'" in repr(pool)
    before = pool.weight.detach().clone()
    pool.reset_parameters()
    assert not torch.equal(before, pool.weight)
    with pytest.raises(ValueError, match="unknown routing"):
        Router(3, routing="kmeans")
    with pytest.raises(ValueError, match="iterations"):
        dynamic_routing(torch.randn(2, 3, 4), 0)
    with pytest.raises(ValueError, match="u must be"):
        CapsuleLayer(4, 3, 2, 5)(torch.randn(2, 3, 3))
