"""A cache of per-molecule feature tables (descriptors, fingerprints), keyed by what made them.

Computing a feature table costs seconds to minutes for a MoleculeNet set, so each is saved as
``<GRAPHMEM_CACHE or ./datasets>/<kind>/<key>.pt``, where the key hashes the RDKit version, the
feature's own settings and the SMILES in order: a table is reused only for the same molecules
made the same way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

import rdkit
import torch
from lightning.pytorch.utilities import rank_zero_info
from rdkit import RDLogger
from torch import Tensor

from graphmem.data.download import cache_dir


def cached_table(kind: str, settings: Sequence[str], smiles: Sequence[str], width: int,
                 row: Callable[[str], Tensor], seconds_per_molecule: float, cache: bool = True) -> Tensor:
    """``(len(smiles), width)``: ``row(s)`` for each SMILES, read from the cache when the same
    SMILES were computed before with this RDKit and these ``settings`` (``cache=False``: always
    computed, nothing written)."""
    key = hashlib.sha256("\n".join([rdkit.__version__, *settings, "", *smiles]).encode()).hexdigest()[:20]
    path = cache_dir() / kind / f"{key}.pt"
    if cache and path.exists():
        table = torch.load(path, weights_only=True)
        if table.shape == (len(smiles), width):
            return table
    if len(smiles) * seconds_per_molecule > 10:  # say why the run is quiet for a while
        rank_zero_info(f"computing {kind} for {len(smiles)} molecules (about "
                       f"{len(smiles) * seconds_per_molecule:.0f} s; cached in {path.parent} for the next run)")
    RDLogger.DisableLog("rdApp.*")
    try:
        table = torch.stack([row(text) for text in smiles]) if smiles else torch.zeros(0, width)
    finally:
        RDLogger.EnableLog("rdApp.*")
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")  # a killed run leaves no half-written cache
        torch.save(table, partial)
        partial.replace(path)
    return table
