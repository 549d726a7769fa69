"""A downstream task's validation and test molecules, to leave out of the data a model is pretrained on."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from rdkit import Chem, RDLogger

from graphmem.data.molecule import load_moleculenet
from graphmem.data.splits import make_split


def molecule_keys(smiles: Sequence[str]) -> list[str]:
    """Each molecule's canonical SMILES without stereochemistry, so that the stereoisomers of a
    held-out molecule count as it (a SMILES RDKit cannot read is its own key)."""
    RDLogger.DisableLog("rdApp.*")
    try:
        mols = [Chem.MolFromSmiles(text) for text in smiles]
    finally:
        RDLogger.EnableLog("rdApp.*")
    return [Chem.MolToSmiles(mol, isomericSmiles=False) if mol is not None else text
            for mol, text in zip(mols, smiles)]


def held_out_keys(dataset: str, split: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0,
                  root: str | None = None) -> set[str]:
    """The keys (:func:`molecule_keys`) of ``dataset``'s validation and test molecules under the
    split that :class:`~graphmem.data.MoleculeDataModule` makes with the same arguments."""
    with warnings.catch_warnings():
        # the downstream set's skipped rows are reported when it is trained on, not here
        warnings.simplefilter("ignore")
        molecules = load_moleculenet(dataset, root)
    _, valid, test = make_split(split, molecules.smiles, fractions, split_seed)
    return set(molecule_keys([molecules.smiles[i] for i in [*valid, *test]]))
