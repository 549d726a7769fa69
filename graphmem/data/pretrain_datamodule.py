"""Unlabelled molecules for self-supervised pretraining, with a downstream task's held-out molecules left out."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from graphmem.data.held_out import held_out_keys, molecule_keys
from graphmem.data.molecule import MOLECULENET, load_moleculenet, moleculenet_path, moleculenet_tasks
from graphmem.data.molecule_datamodule import graph_loader
from graphmem.errors import GraphmemError


class MoleculePretrainDataModule(L.LightningDataModule):
    """The molecules of several MoleculeNet sets, without labels, for pretraining a molecule encoder
    (:class:`graphmem.lit.AttributeMaskingTask`), split at random into train and validation.

    Every molecule of the ``exclude`` set's validation and test parts (its ``exclude_split``, as
    :class:`~graphmem.data.MoleculeDataModule` makes it with the same ``fractions`` and
    ``split_seed``) is left out, stereoisomers included, so that a model pretrained here and then
    fine-tuned on that set has never seen a molecule it is scored on. A molecule that is in
    several sets is kept once.

    Args:
        datasets: the MoleculeNet sets whose molecules make the corpus.
        exclude: the downstream set whose validation and test molecules are left out (``None``: none).
        exclude_split: the downstream split, ``scaffold`` or ``random``.
        fractions: the downstream split's fractions.
        split_seed: the downstream random split's seed.
        val_fraction: the part of the corpus held out to validate the pretraining.
        seed: seed of that random hold-out.
        batch_size: molecules per batch.
        num_workers: data loader workers.
        root: a folder holding ``moleculenet/<file>`` (as :class:`~graphmem.data.MoleculeDataModule`).
    """

    def __init__(
        self,
        datasets: Sequence[str] = ("hiv", "toxcast", "tox21", "bbbp", "bace", "clintox", "sider"),
        exclude: str | None = "tox21",
        exclude_split: str = "scaffold",
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        val_fraction: float = 0.05,
        seed: int = 0,
        batch_size: int = 256,
        num_workers: int = 0,
        root: str | None = None,
    ) -> None:
        super().__init__()
        unknown = [name for name in [*datasets, exclude] if name is not None and name.lower() not in MOLECULENET]
        if unknown:
            raise GraphmemError(f"unknown MoleculeNet set(s) {unknown}; choose from {sorted(MOLECULENET)}")
        if not datasets:
            raise GraphmemError("datasets is empty: name at least one MoleculeNet set to pretrain on")
        if not 0 < val_fraction < 1:
            raise GraphmemError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        self.save_hyperparameters()
        self.splits: dict[str, list[Data]] = {}
        self.counts: dict[str, int] = {}

    def prepare_data(self) -> None:
        for name in {*self.hparams.datasets, *([self.hparams.exclude] if self.hparams.exclude else [])}:
            moleculenet_path(name, self.hparams.root)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        held_out = (held_out_keys(self.hparams.exclude, self.hparams.exclude_split, self.hparams.fractions,
                                  self.hparams.split_seed, self.hparams.root) if self.hparams.exclude else set())
        corpus: dict[str, Data] = {}
        skipped = duplicates = excluded = 0
        for name in self.hparams.datasets:
            with warnings.catch_warnings():
                # counted below, in one line for the whole corpus
                warnings.simplefilter("ignore")
                molecules = load_moleculenet(name, self.hparams.root)
            skipped += len(molecules.skipped)
            for key, graph in zip(molecule_keys(molecules.smiles), molecules.graphs):
                if key in held_out:
                    excluded += 1
                elif key in corpus:
                    duplicates += 1
                else:
                    # labels differ in width from set to set and are not used
                    corpus[key] = Data(x=graph.x, edge_index=graph.edge_index, edge_attr=graph.edge_attr,
                                       smiles=graph.smiles)
        graphs = list(corpus.values())
        if len(graphs) < 2:
            raise GraphmemError(f"the pretraining corpus of {list(self.hparams.datasets)} holds {len(graphs)} "
                                f"molecule(s) once the held-out ones are left out; add datasets")
        order = torch.randperm(len(graphs), generator=torch.Generator().manual_seed(self.hparams.seed)).tolist()
        num_val = max(1, round(self.hparams.val_fraction * len(graphs)))
        self.splits = {"valid": [graphs[i] for i in order[:num_val]], "train": [graphs[i] for i in order[num_val:]]}
        self.counts = {"molecules": len(graphs), "skipped": skipped, "duplicates": duplicates, "excluded": excluded}
        left_out = (f", {excluded} left out as {self.hparams.exclude}'s {self.hparams.exclude_split} validation "
                    f"and test molecules" if self.hparams.exclude else "")
        rank_zero_info(f"pretraining corpus of {'+'.join(self.hparams.datasets)}: {len(graphs)} molecules "
                       f"({len(self.splits['train'])} train, {num_val} validation), {duplicates} repeats kept once"
                       f"{left_out}, {skipped} unreadable rows skipped")

    @property
    def num_tasks(self) -> int:
        """The width of the head that pretraining leaves untrained (see :class:`~graphmem.lit.AttributeMaskingTask`):
        the ``exclude`` set's task count, so that the pretrained network has the fine-tuned one's shape."""
        return len(moleculenet_tasks(self.hparams.exclude, self.hparams.root)) if self.hparams.exclude else 1

    def train_dataloader(self) -> DataLoader:
        return graph_loader(self.splits["train"], self.hparams.batch_size, self.hparams.num_workers, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return graph_loader(self.splits["valid"], self.hparams.batch_size, self.hparams.num_workers)
