r"""Morgan (ECFP-like) count fingerprints as molecule-level features.

Each molecule's circular substructures up to ``radius`` bonds around every atom (radius 2: the
ECFP4 of Rogers and Hahn 2010) are hashed into ``size`` bins, and bin ``j`` holds how many
substructures fell into it:

.. math::
    f_j = \big|\{(a, r) : a \text{ an atom},\ r \le \text{radius},\ h(\text{environment}(a, r)) \bmod n = j\}\big|

RDKit's ``rdFingerprintGenerator.GetMorganGenerator(radius, fpSize)`` computes them; counts keep
what bits lose (three nitro groups are not one). They are what tree ensembles on molecules take
(Chemprop's ``morgan_count`` features, DeepTox's ECFP), and :class:`graphmem.models.MoleculeForest`
splits on them. A table of a data set is cached like the descriptors
(:mod:`graphmem.data.feature_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator
from torch import Tensor
from torch_geometric.data import Data

from graphmem.data.descriptors import add_descriptors
from graphmem.data.feature_cache import cached_table

FINGERPRINT_RADIUS = 2
FINGERPRINT_SIZE = 2048


def morgan_counts(smiles: str, radius: int = FINGERPRINT_RADIUS, size: int = FINGERPRINT_SIZE) -> Tensor:
    """The Morgan count fingerprint of ``smiles`` (a SMILES RDKit reads): ``(size,)`` float32."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=size)
    return torch.from_numpy(generator.GetCountFingerprintAsNumPy(Chem.MolFromSmiles(smiles)).astype("float32"))


def fingerprint_table(smiles: Sequence[str], cache: bool = True) -> Tensor:
    """``(len(smiles), FINGERPRINT_SIZE)``: :func:`morgan_counts` of each SMILES, read from the
    cache when the same SMILES were computed before with this RDKit (``cache=False``: always computed)."""
    return cached_table("fingerprints", [f"morgan_counts radius={FINGERPRINT_RADIUS} size={FINGERPRINT_SIZE}"],
                        smiles, FINGERPRINT_SIZE, morgan_counts, seconds_per_molecule=0.001, cache=cache)


def add_fingerprints(graphs: Sequence[Data], cache: bool = True) -> None:
    """Gives each molecule graph (from :func:`graphmem.data.molecule.smiles_to_graph`) its
    fingerprint as ``graph.fingerprints``, ``(1, FINGERPRINT_SIZE)``, so that a batch holds ``(G, FINGERPRINT_SIZE)``."""
    table = fingerprint_table([graph.smiles for graph in graphs], cache)
    for graph, row in zip(graphs, table):
        graph.fingerprints = row.unsqueeze(0)


def add_model_features(model: object, graphs: Sequence[Data], cache: bool = True) -> None:
    """Gives ``graphs`` the molecule-level features that ``model`` reads and they lack: RDKit's
    descriptors when it has a ``descriptor_size``, fingerprints when it has a ``fingerprint_size``
    (what :class:`graphmem.models.MoleculeGAT` and :class:`graphmem.models.MoleculeForest` take).
    Prediction on new SMILES, and an ensemble whose members read different features, need them
    added after the graphs were made."""
    if not graphs:
        return
    if getattr(model, "descriptor_size", 0) and getattr(graphs[0], "descriptors", None) is None:
        add_descriptors(graphs, cache)
    if getattr(model, "fingerprint_size", 0) and getattr(graphs[0], "fingerprints", None) is None:
        add_fingerprints(graphs, cache)
