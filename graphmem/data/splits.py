"""Train / validation / test splits for molecule sets: random (seeded) and Bemis-Murcko scaffold."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from rdkit import RDLogger
from rdkit.Chem.Scaffolds import MurckoScaffold

from graphmem.errors import GraphmemError

Split = tuple[list[int], list[int], list[int]]
SPLITS: tuple[str, ...] = ("random", "scaffold")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise GraphmemError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    return fractions[0], fractions[1], fractions[2]


def random_split(num_items: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """A seeded random permutation cut into train, validation and test (sizes rounded down, rest to test)."""
    train_frac, valid_frac, _ = _check_fractions(fractions)
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train, n_valid = int(train_frac * num_items), int(valid_frac * num_items)
    return order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:]


def scaffold(smiles: str) -> str:
    """The Bemis-Murcko scaffold of a molecule (with chirality), ``""`` for acyclic molecules."""
    return MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles, includeChirality=True)


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> Split:
    """Deterministic scaffold split (as DeepChem and OGB): molecules grouped by scaffold,
    largest groups first into train, then validation, then test, so that test scaffolds are
    never seen in training."""
    train_frac, valid_frac, _ = _check_fractions(fractions)
    groups: dict[str, list[int]] = defaultdict(list)
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, s in enumerate(smiles):
            groups[scaffold(s)].append(i)
    finally:
        RDLogger.EnableLog("rdApp.*")
    # DeepChem's and OGB's order: larger groups first, ties broken by the later first molecule
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    n = len(smiles)
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for group in ordered:
        if len(train) + len(group) <= train_frac * n:
            train += group
        elif len(valid) + len(group) <= valid_frac * n:
            valid += group
        else:
            test += group
    return train, valid, test


def make_split(name: str, smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Dispatches to :func:`random_split` or :func:`scaffold_split` by ``name``."""
    if name == "random":
        return random_split(len(smiles), fractions, seed)
    if name == "scaffold":
        return scaffold_split(smiles, fractions)
    raise GraphmemError(f"unknown split {name!r}; choose one of {SPLITS}")
