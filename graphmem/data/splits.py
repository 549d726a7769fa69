"""Train / validation / test splits for molecule sets: random (seeded) and Bemis-Murcko scaffold."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from rdkit import Chem, RDLogger
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


def scaffold(smiles: str, include_chirality: bool = False) -> str:
    """The Bemis-Murcko scaffold SMILES of a molecule, ``""`` for acyclic molecules.

    Chirality is dropped by default (``includeChirality=False``), as DeepChem's
    ``_generate_scaffold`` does, so enantiomers and diastereomers share a scaffold.
    Raises ``ValueError`` when RDKit cannot parse ``smiles``.
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> Split:
    """Deterministic Bemis-Murcko scaffold split with DeepChem's ``ScaffoldSplitter`` rule.

    1. Each molecule's scaffold is :func:`scaffold` without chirality
       (``MurckoScaffoldSmiles(mol=..., includeChirality=False)``); molecules sharing a
       scaffold form one group, its indices in increasing order.
    2. Groups are ordered by ``(len(group), group[0])`` descending: larger groups first, among
       equal sizes the group whose first molecule comes later in ``smiles`` first.
    3. With ``n = len(smiles)``, ``train_cutoff = frac_train * n`` and
       ``valid_cutoff = (frac_train + frac_valid) * n`` (floats, not rounded), each group in
       turn goes to train if ``len(train) + len(group) <= train_cutoff``; otherwise to validation
       if ``len(train) + len(valid) + len(group) <= valid_cutoff`` (the *cumulative* cutoff, so
       room train left unused is validation's); otherwise to test. A group that does not fit
       is passed over, later smaller groups may still fill train or validation.

    ``n`` counts every entry of ``smiles``: pass only molecules RDKit can parse, as DeepChem
    splits the rows its featuriser kept (:func:`~graphmem.data.load_moleculenet` already skips
    unreadable rows; here an unreadable SMILES raises ``ValueError``). On the MoleculeNet
    files this gives BBBP 1631/204/204 of 2039 molecules, DeepChem's sizes. Test scaffolds are
    never seen in training. Returns train, validation and test indices, each in the order the
    groups were placed.
    """
    train_frac, valid_frac, _ = _check_fractions(fractions)
    groups: dict[str, list[int]] = defaultdict(list)
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, s in enumerate(smiles):
            groups[scaffold(s)].append(i)
    finally:
        RDLogger.EnableLog("rdApp.*")
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    n = len(smiles)
    train_cutoff, valid_cutoff = train_frac * n, (train_frac + valid_frac) * n
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for group in ordered:
        if len(train) + len(group) <= train_cutoff:
            train += group
        elif len(train) + len(valid) + len(group) <= valid_cutoff:
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
