"""Awkward and bad input: graphs without edges, isolated nodes, duplicate edges, malformed
tensors (clear ``ValueError`` before any kernel runs, unless the checks are switched off), and
molecules that are unreadable, empty, single atoms or unlabelled."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch_geometric.nn as pygnn
from torch_geometric.loader import DataLoader

import graphmem.nn.attention_message_passing as message_passing_module
import graphmem.nn.gat_conv as gat_conv_module
from graphmem import checks
from graphmem.data import load_moleculenet, smiles_to_graph
from graphmem.models import MoleculeGAT
from graphmem.nn import GATConv
from tests.conftest import molecule_table, write_tox21

# The steps of GATConv.forward after the checks, as the modules call them (the read is its
# MessagePassing base's).
KERNELS = ((gat_conv_module, "attention"), (message_passing_module, "sparse_read_auto"),
           (gat_conv_module, "combine_heads"))


@pytest.fixture(autouse=True)
def _checks_on():
    previous = checks._enabled  # the tests need the checks on, even under GRAPHMEM_CHECKS=0
    checks.set_enabled(True)
    torch.manual_seed(0)
    yield
    checks.set_enabled(previous)


@pytest.fixture
def kernel_calls(monkeypatch) -> list[str]:
    """Records every kernel GATConv calls (and every projection), still running them."""
    calls: list[str] = []
    for module, name in KERNELS:
        original = getattr(module, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    monkeypatch.setattr(torch.nn.Module, "__call__", _recording_call(torch.nn.Module.__call__, calls))
    return calls


def _recording_call(original, calls: list[str]):
    def call(module, *args, **kwargs):
        if not isinstance(module, GATConv):  # the projections inside GATConv
            calls.append(type(module).__name__)
        return original(module, *args, **kwargs)
    return call


def _pair(*args, **kwargs) -> tuple[GATConv, pygnn.GATConv]:
    """Our layer and PyG's with the same (non-default) parameters."""
    ref = pygnn.GATConv(*args, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.5)
    ours = GATConv(*args, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _assert_same_as_pyg(edge_index: torch.Tensor, num_nodes: int = 5, edge_dim: int | None = None,
                        **kwargs) -> torch.Tensor:
    ours, ref = _pair(4, 3, heads=2, edge_dim=edge_dim, **kwargs)
    x = torch.randn(num_nodes, 4)
    edge_attr = torch.randn(edge_index.size(1), edge_dim) if edge_dim else None
    out, (ei, alpha) = ours(x, edge_index, edge_attr, return_attention_weights=True)
    ref_out, (ref_ei, ref_alpha) = ref(x, edge_index, edge_attr, return_attention_weights=True)
    torch.testing.assert_close(out, ref_out)
    assert torch.equal(ei, ref_ei)
    torch.testing.assert_close(alpha, ref_alpha)
    assert torch.isfinite(out).all()
    return out


# ---------------------------------------------------------------------------------------------
# Valid but awkward graphs: same results as PyG
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edge_dim", [None, 2])
@pytest.mark.parametrize("add_self_loops", [True, False])
def test_graph_without_edges_matches_pyg(add_self_loops, edge_dim):
    out = _assert_same_as_pyg(torch.empty(2, 0, dtype=torch.long), edge_dim=edge_dim,
                              add_self_loops=add_self_loops)
    if not add_self_loops:
        # no message reaches any node: only the bias is left
        ours, _ = _pair(4, 3, heads=2, add_self_loops=False)
        assert torch.equal(ours(torch.randn(5, 4), torch.empty(2, 0, dtype=torch.long)),
                           ours.bias.expand(5, -1))
    assert out.shape == (5, 6)


def test_isolated_nodes_match_pyg():
    # nodes 3 and 4 have no edge at all, node 2 only sends
    edge_index = torch.tensor([[0, 1, 2, 2], [1, 0, 0, 1]])
    _assert_same_as_pyg(edge_index, edge_dim=2)
    _assert_same_as_pyg(edge_index, add_self_loops=False)


def test_duplicate_edges_match_pyg():
    # 0 -> 1 three times, 2 -> 1 twice, and a self-loop that add_self_loops replaces
    edge_index = torch.tensor([[0, 0, 0, 2, 2, 1, 3], [1, 1, 1, 1, 1, 1, 4]])
    _assert_same_as_pyg(edge_index, edge_dim=2)
    _assert_same_as_pyg(edge_index, add_self_loops=False)


def test_int32_edge_index_is_accepted():
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    conv = GATConv(4, 3)
    x = torch.randn(3, 4)
    torch.testing.assert_close(conv(x, edge_index.int()), conv(x, edge_index))


# ---------------------------------------------------------------------------------------------
# Bad tensors: ValueError naming the problem, before any kernel runs
# ---------------------------------------------------------------------------------------------


def _bad_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]]:
    x = torch.randn(4, 4)
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    edge_attr = torch.randn(4, 2)

    def poke(t: torch.Tensor, value: float) -> torch.Tensor:
        t = t.clone()
        t[1, 1] = value
        return t

    return {
        "edge_attr too short": (x, edge_index, edge_attr[:3], r"edge_attr has 3 rows but edge_index has 4"),
        "edge_attr too long": (x, edge_index, torch.randn(9, 2), r"edge_attr has 9 rows but edge_index"),
        "float edge_index": (x, edge_index.float(), edge_attr, r"edge_index must hold integers .*float32"),
        "bool edge_index": (x, edge_index.bool(), edge_attr, r"edge_index must hold integers .* torch.bool"),
        "uint8 edge_index": (x, edge_index.to(torch.uint8), edge_attr, r"edge_index must hold integers"),
        "integer x": (x.long(), edge_index, edge_attr, r"x must be a floating-point tensor, got torch.int64"),
        "bool x": (x > 0, edge_index, edge_attr, r"x must be a floating-point tensor, got torch.bool"),
        "integer edge_attr": (x, edge_index, edge_attr.long(), r"edge_attr must be a floating-point tensor"),
        "NaN x": (poke(x, float("nan")), edge_index, edge_attr, r"x contains 1 NaN .*\(first in row 1\)"),
        "+Inf x": (poke(x, float("inf")), edge_index, edge_attr, r"x contains 1 NaN or Inf"),
        "-Inf x": (poke(x, float("-inf")), edge_index, edge_attr, r"x contains 1 NaN or Inf"),
        "NaN edge_attr": (x, edge_index, poke(edge_attr, float("nan")), r"edge_attr contains 1 NaN or Inf"),
        "Inf edge_attr": (x, edge_index, poke(edge_attr, float("inf")), r"edge_attr contains 1 NaN or Inf"),
        "out of range": (x, edge_index + 1, edge_attr, r"source index 4 is out of range for 4 nodes"),
        "negative": (x, edge_index - 1, edge_attr, r"negative node index \(-1\)"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_raises_before_any_kernel(case, kernel_calls):
    x, edge_index, edge_attr, message = _bad_cases()[case]
    conv = GATConv(4, 3, heads=2, edge_dim=2)
    with pytest.raises(ValueError, match=message):
        conv(x, edge_index, edge_attr)
    assert kernel_calls == []


def test_spy_sees_the_kernels_of_a_good_call(kernel_calls):
    # guards the test above: were the spies wrong, "no call" would prove nothing
    x, edge_index, _, _ = _bad_cases()["edge_attr too short"]
    GATConv(4, 3, heads=2, edge_dim=2)(x, edge_index, torch.randn(4, 2))
    assert {name for _, name in KERNELS} <= set(kernel_calls) and "Linear" in kernel_calls


def test_nan_target_features_of_a_bipartite_graph(kernel_calls):
    conv = GATConv((4, 3), 2)
    x_dst = torch.randn(2, 3)
    x_dst[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x\[1\] \(target features\) contains 1 NaN"):
        conv((torch.randn(5, 4), x_dst), torch.tensor([[0, 4], [1, 0]]))
    assert kernel_calls == []


@pytest.mark.parametrize("case", ["NaN x", "Inf edge_attr", "edge_attr too long"])
def test_switched_off_checks_let_the_kernels_run(case, kernel_calls):
    x, edge_index, edge_attr, _ = _bad_cases()[case]
    conv = GATConv(4, 3, heads=2, edge_dim=2)
    with checks.disabled():
        try:
            out = conv(x, edge_index, edge_attr)
        except (RuntimeError, IndexError):  # torch's own error, from deep inside
            out = None
    assert kernel_calls, "with checks off the layer must go straight to the kernels"
    if case == "NaN x":
        assert out is not None and torch.isnan(out).any()  # garbage in, garbage out
    with pytest.raises(ValueError):
        conv(x, edge_index, edge_attr)  # and the checks are back after the block


def test_environment_variable_switches_checks_off(monkeypatch):
    monkeypatch.setenv("GRAPHMEM_CHECKS", "0")
    try:
        importlib.reload(checks)
        assert not checks.enabled()
        x, edge_index, edge_attr, _ = _bad_cases()["NaN x"]
        assert torch.isnan(GATConv(4, 3, edge_dim=2)(x, edge_index, edge_attr)).any()
    finally:
        monkeypatch.delenv("GRAPHMEM_CHECKS")
        importlib.reload(checks)
    assert checks.enabled()


# ---------------------------------------------------------------------------------------------
# Molecules (unreadable and empty SMILES are in test_data_molecule.py)
# ---------------------------------------------------------------------------------------------


def test_one_atom_molecules_are_kept_and_run_through_the_model(tmp_path):
    one_atom = ("C", "[Cu]", "O", "[Na+].[Cl-]")  # the last: two atoms, no bond
    write_tox21(tmp_path, molecule_table(6, bad=one_atom))
    molecules = load_moleculenet("tox21", tmp_path)
    assert len(molecules) == 10 and not molecules.skipped
    batch = next(iter(DataLoader(molecules.graphs, batch_size=10)))
    model = MoleculeGAT(num_tasks=12, hidden_channels=8, heads=2, num_layers=2).eval()
    out = model(batch)
    assert out.shape == (10, 12) and torch.isfinite(out).all()
    # a batch of single atoms only: no edge at all
    lonely = next(iter(DataLoader([smiles_to_graph(s) for s in one_atom[:3]], batch_size=3)))
    assert lonely.edge_index.size(1) == 0
    assert torch.isfinite(model(lonely)).all()


def test_missing_labels_are_counted_and_reported(tmp_path):
    table = molecule_table(20, bad=("C1CC(",))
    table.iloc[3, 1:] = float("nan")  # a molecule without any label
    table.iloc[7, 1:] = float("nan")
    write_tox21(tmp_path, table)
    with pytest.warns(UserWarning) as warned:
        molecules = load_moleculenet("tox21", tmp_path)
    labels = torch.tensor(table.iloc[:20, 1:].to_numpy(dtype="float32"))
    missing = int(torch.isnan(labels).sum())
    assert molecules.missing_labels == (missing, labels.numel(), 2)
    message = str(warned[0].message)
    assert f"{missing}/{labels.numel()} labels missing" in message
    assert "2 molecules unlabelled" in message and "1 rows skipped" in message
    # unlabelled molecules are kept (a graph-level model may still embed them)
    assert len(molecules) == 20 and torch.isnan(molecules.graphs[3].y).all()


def test_fully_labelled_set_reports_no_missing_labels(tmp_path):
    table = molecule_table(10).fillna(0.0)
    write_tox21(tmp_path, table)
    molecules = load_moleculenet("tox21", tmp_path)
    assert molecules.missing_labels == (0, 120, 0)
    assert "missing" not in molecules.summary()


# --- HopfieldPooling of empty sets ---------------------------------------------------------------


def test_hopfield_pooling_of_an_empty_set_is_refused():
    from graphmem.errors import GraphmemError
    from graphmem.nn.hopfield import HopfieldPooling

    pool = HopfieldPooling(4, num_queries=2)
    for x in (torch.randn(0, 4), torch.randn(3, 0, 4)):
        with pytest.raises(GraphmemError, match="HopfieldPooling got an empty set"):
            pool(x)


def test_hopfield_pooling_empty_graphs_pool_to_zeros_like_pyg():
    from graphmem.nn.hopfield import HopfieldPooling

    pool = HopfieldPooling(4, num_heads=2, num_queries=3)
    x, batch = torch.randn(3, 4), torch.tensor([0, 0, 2])
    out, weights = pool(x, batch, size=4, return_attention_weights=True)
    reference = pygnn.global_mean_pool(x, batch, size=4)
    assert out.shape == (4, 12) and torch.isfinite(out).all()
    for graph in (1, 3):  # no nodes: zeros, as in PyG's global pools
        assert (reference[graph] == 0).all() and (out[graph] == 0).all() and (weights[graph] == 0).all()
    # a batch of empty graphs only, and padded sets whose masks are all False
    out, weights = pool(torch.randn(0, 4), torch.zeros(0, dtype=torch.long), size=2, return_attention_weights=True)
    assert out.shape == (2, 12) and (out == 0).all() and weights.shape == (2, 2, 3, 0)
    mask = torch.tensor([[True, False], [False, False]])
    out = pool(torch.randn(2, 2, 4), mask=mask)
    assert (out[1] == 0).all() and (out[0] != 0).any()
    assert (pool(torch.randn(2, 0, 4), mask=torch.zeros(2, 0, dtype=torch.bool)) == 0).all()
