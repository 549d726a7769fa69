"""A molecule drawn with RDKit, its atoms shaded by how much attention a GAT layer pays them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib import colormaps
from rdkit import Chem
from rdkit.Chem.Draw import rdMolDraw2D
from torch import Tensor, nn
from torch_geometric.data import Batch

from graphmem.data.molecule import SmilesError, smiles_to_graph
from graphmem.errors import GraphmemError


def atom_attention(model: nn.Module, smiles: str, layer: int = -1, relative: bool = False) -> Tensor:
    r"""How much attention each atom of ``smiles`` receives from its bonded neighbours in one
    GAT layer of ``model`` (a :class:`~graphmem.models.MoleculeGAT`), averaged over heads:

    .. math::
        a_j = \frac{1}{H} \sum_h \sum_{i \ne j,\ (j \to i) \in E} \alpha^h_{ij}

    Self-loops are left out: every atom attends to itself, and that says nothing about which
    atoms matter to their neighbours. An atom with more neighbours collects more attention even
    from a layer that attends uniformly; ``relative=True`` subtracts what uniform attention
    (:math:`1 / (\deg_i + 1)` from each neighbour :math:`i`) would give, so that positive values
    mark atoms the layer prefers and negative ones atoms it passes over.

    Returns ``(num_atoms,)`` in RDKit's atom order.
    """
    graph = smiles_to_graph(smiles)
    batch = Batch.from_data_list([graph])
    was_training = model.training
    model.eval()  # no dropout on the attention weights
    try:
        with torch.no_grad():
            _, attention = model.node_states(batch, return_attention_weights=True)
    finally:
        model.train(was_training)
    edge_index, alpha = attention[layer]
    source, target = edge_index
    between = source != target
    weights = alpha.mean(-1).float()
    if relative:  # the softmax spreads one unit over each target's incoming edges, self-loop included
        incoming = torch.bincount(target, minlength=graph.num_nodes).float()
        weights = weights - 1.0 / incoming[target]
    return torch.zeros(graph.num_nodes).index_add(0, source[between], weights[between])


def draw_molecule_attention(smiles: str, weights: Sequence[float] | Tensor, path: str | os.PathLike,
                            size: tuple[int, int] = (500, 400), colormap: str | None = None,
                            legend: str = "", notes: bool = True) -> Path:
    """Draws ``smiles`` into a PNG at ``path`` with atom ``i`` shaded by ``weights[i]`` and, with
    ``notes``, labelled by its value.

    Non-negative weights are shaded from light to dark (``colormap`` default ``"Reds"``), the
    largest darkest; weights of both signs on a diverging map centred at zero (default
    ``"RdBu_r"``: red above zero, blue below). Uses RDKit's Cairo drawer
    (``rdMolDraw2D.MolDraw2DCairo``). Returns the path.
    """
    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
    if mol is None:
        raise SmilesError(f"RDKit cannot parse SMILES {smiles!r}")
    values = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if values.numel() != mol.GetNumAtoms():
        raise GraphmemError(f"got {values.numel()} weights for the {mol.GetNumAtoms()} atoms of {smiles!r}")
    if not bool(torch.isfinite(values).all()):
        raise GraphmemError("atom weights must be finite")
    top = float(values.abs().max()) or 1.0
    signed = bool((values < 0).any())
    cmap = colormaps[colormap or ("RdBu_r" if signed else "Reds")]
    # sequential: light shades start at 0.15 of the map, so an unimportant atom is still tinted;
    # diverging: zero sits in the (white) middle
    shades = (0.5 + 0.45 * values / top) if signed else (0.15 + 0.75 * values / top)
    colours = {i: tuple(cmap(float(s))[:3]) for i, s in enumerate(shades)}
    if notes:
        for atom, value in zip(mol.GetAtoms(), values.tolist()):
            atom.SetProp("atomNote", f"{value:.2f}")
    drawer = rdMolDraw2D.MolDraw2DCairo(*size)
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol, legend=legend, highlightAtoms=list(colours),
                                       highlightAtomColors=colours, highlightBonds=[])
    drawer.FinishDrawing()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(drawer.GetDrawingText())
    return path


def plot_molecule_attention(model: nn.Module, smiles: str, path: str | os.PathLike, layer: int = -1,
                            relative: bool = False, **draw_options) -> Path:
    """:func:`atom_attention` of ``model`` on ``smiles``, drawn by :func:`draw_molecule_attention`."""
    weights = atom_attention(model, smiles, layer, relative)
    kind = "attention relative to uniform" if relative else "attention received"
    draw_options.setdefault("legend", f"{smiles}  (GAT layer {layer % len(model.convs) + 1}, {kind})")
    return draw_molecule_attention(smiles, weights, path, **draw_options)
