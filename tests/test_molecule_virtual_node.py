"""MoleculeGAT's virtual node: atoms of one molecule that no bond path joins exchange
information through it, molecules of a batch never do, and one layer matches the formula."""

from __future__ import annotations

import torch
from torch_geometric.data import Batch
from torch_geometric.nn import global_add_pool

from graphmem.data.molecule import smiles_to_graph
from graphmem.models import MoleculeGAT

SALT = "CC(=O)[O-].[Na+]"  # acetate and sodium: two fragments, no bond between them


def _states(model: MoleculeGAT, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return model.node_states(batch)


def _model(virtual_node: bool) -> MoleculeGAT:
    torch.manual_seed(0)
    model = MoleculeGAT(num_tasks=2, hidden_channels=16, heads=4, num_layers=3, virtual_node=virtual_node)
    with torch.no_grad():  # v0 starts at zero; a random one shows where it is added
        if model.virtual_node is not None:
            model.virtual_node.normal_()
    return model.eval()


def _perturbed(graph, atom: int):
    other = graph.clone()
    other.x = graph.x.clone()
    other.x[atom, 0] = (graph.x[atom, 0] + 1) % 5  # another element
    return other


def test_disconnected_fragments_talk_only_through_the_virtual_node():
    salt = smiles_to_graph(SALT)
    sodium = salt.num_nodes - 1
    changed = _perturbed(salt, 0)  # a carbon of the acetate
    for virtual_node, sodium_moves in ((False, False), (True, True)):
        model = _model(virtual_node)
        before = _states(model, Batch.from_data_list([salt]))
        after = _states(model, Batch.from_data_list([changed]))
        assert (not torch.allclose(before[sodium], after[sodium])) == sodium_moves


def test_molecules_of_a_batch_stay_apart():
    model = _model(True)
    salt, ethanol = smiles_to_graph(SALT), smiles_to_graph("CCO")
    before = _states(model, Batch.from_data_list([salt, ethanol]))
    after = _states(model, Batch.from_data_list([_perturbed(salt, 0), ethanol]))
    torch.testing.assert_close(before[salt.num_nodes:], after[salt.num_nodes:])


def test_first_layer_and_virtual_update_match_the_formula():
    """One layer by hand: h1 = h0 + v0 + ELU(BN(GAT(h0 + v0))), v1 = v0 + MLP(sum_i (h0_i + v0) + v0)."""
    model = _model(True)
    model.convs = model.convs[:2]
    batch = Batch.from_data_list([smiles_to_graph(SALT), smiles_to_graph("CCO")])
    with torch.no_grad():
        v0 = model.virtual_node.expand(batch.num_graphs, -1)
        h0 = model.atom_encoder(batch.x) + v0[batch.batch]
        gat = model.convs[0](h0, batch.edge_index, model.bond_encoders[0](batch.edge_attr))
        h1 = h0 + torch.nn.functional.elu(model.norms[0](gat))
        v1 = v0 + model.virtual_mlps[0](global_add_pool(h0, batch.batch) + v0)
        expected = h1 + v1[batch.batch]
        gat = model.convs[1](expected, batch.edge_index, model.bond_encoders[1](batch.edge_attr))
        expected = expected + torch.nn.functional.elu(model.norms[1](gat))
        torch.testing.assert_close(model.node_states(batch), expected)
