r"""RDKit's 2D descriptors as molecule-level features, as Chemprop's ``rdkit_2d`` features.

Every descriptor of ``rdkit.Chem.Descriptors.descList`` (molecular weight, logP, TPSA, ring and
atom counts, charges, the fragment counts ``fr_*``, ...; 217 in RDKit 2025) is computed on the
molecule and squashed with a fixed, data-independent map,

.. math::
    \phi(x) = \operatorname{sign}(x) \log(1 + |x|),

so that descriptors spanning many orders of magnitude (``Ipc`` reaches 10^20) become numbers a
network can take, and a trained model needs nothing but the SMILES to predict; the model
standardises them itself (:class:`graphmem.models.MoleculeGAT` with ``descriptor_size``). A
descriptor RDKit cannot compute for a molecule (``NaN`` or infinite) is 0.

The list is RDKit's, so a model trained with one RDKit release needs the same number of
descriptors at prediction time; a different count is refused when the checkpoint is loaded.
Computing them costs about 10 ms a molecule, so a data set's table is cached in
``<GRAPHMEM_CACHE or ./datasets>/descriptors``, keyed by its SMILES and the RDKit version.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rdkit import Chem
from rdkit.Chem import Descriptors
from torch import Tensor
from torch_geometric.data import Data

from graphmem.data.feature_cache import cached_table

DESCRIPTOR_NAMES: tuple[str, ...] = tuple(name for name, _ in Descriptors.descList)
_FUNCTIONS = tuple(function for _, function in Descriptors.descList)


def rdkit_descriptors(smiles: str) -> Tensor:
    r""":math:`\phi` of every RDKit 2D descriptor of ``smiles`` (a SMILES RDKit reads): ``(D,)`` float32."""
    mol = Chem.MolFromSmiles(smiles)
    values = []
    for function in _FUNCTIONS:
        try:
            values.append(float(function(mol)))
        except (ValueError, ZeroDivisionError, RuntimeError):  # RDKit's failures on odd molecules
            values.append(0.0)
    x = torch.tensor(values, dtype=torch.float64)
    x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    return (x.sign() * x.abs().log1p()).float()


def descriptor_table(smiles: Sequence[str], cache: bool = True) -> Tensor:
    """``(len(smiles), D)``: :func:`rdkit_descriptors` of each SMILES, read from the cache when
    the same SMILES were computed before with this RDKit (``cache=False``: always computed)."""
    return cached_table("descriptors", DESCRIPTOR_NAMES, smiles, len(DESCRIPTOR_NAMES), rdkit_descriptors,
                        seconds_per_molecule=0.01, cache=cache)


def add_descriptors(graphs: Sequence[Data], cache: bool = True) -> None:
    """Gives each molecule graph (from :func:`graphmem.data.molecule.smiles_to_graph`) its
    descriptors as ``graph.descriptors``, ``(1, D)``, so that a batch holds ``(G, D)``."""
    table = descriptor_table([graph.smiles for graph in graphs], cache)
    for graph, row in zip(graphs, table):
        graph.descriptors = row.unsqueeze(0)

