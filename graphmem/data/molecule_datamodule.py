"""LightningDataModule for MoleculeNet property prediction."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch_geometric.loader import DataLoader

from graphmem.data.descriptors import DESCRIPTOR_NAMES, add_descriptors
from graphmem.data.fingerprints import FINGERPRINT_SIZE, add_fingerprints
from graphmem.data.held_out import held_out_keys, molecule_keys
from graphmem.data.molecule import MOLECULENET, MoleculeSet, load_moleculenet, moleculenet_path, moleculenet_tasks
from graphmem.data.splits import make_split
from graphmem.errors import GraphmemError


def graph_loader(graphs: Sequence, batch_size: int, num_workers: int, shuffle: bool = False) -> DataLoader:
    """PyG batches of ``graphs``; workers, when there are any, live as long as the loader."""
    return DataLoader(graphs, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


class MoleculeDataModule(L.LightningDataModule):
    """MoleculeNet set ``dataset`` split into train / validation / test and batched as PyG ``Batch``es.

    Args:
        dataset: ``tox21``, ``clintox``, ``sider``, ``bbbp``, ``bace``, ``hiv`` or ``toxcast``.
        split: ``random`` (seeded by ``split_seed``) or ``scaffold``.
        fractions: train, validation and test fractions.
        split_seed: seed of the random split.
        batch_size: molecules per batch.
        num_workers: data loader workers.
        root: a folder holding ``moleculenet/<file>`` (defaults to ``$GRAPHMEM_DATA``, then
            the download cache).
        task_names: the data set's task names where they are known without its file (graphmem
            gives a checkpoint's here when it predicts, see :func:`graphmem.recipe.load_recipe`);
            ``None`` takes them from the data set. The loaded file must have these tasks.
        descriptors: give every molecule RDKit's 2D descriptors as ``graph.descriptors``
            (:mod:`graphmem.data.descriptors`); a recipe's model takes their number as
            ``descriptor_size``.
        fingerprints: give every molecule its Morgan count fingerprint as ``graph.fingerprints``
            (:mod:`graphmem.data.fingerprints`); a recipe's model takes their size as
            ``fingerprint_size``.
        exclude: a downstream set whose validation and test molecules (under ``exclude_split`` with
            the recipes' fractions 0.8/0.1/0.1 and split seed 0), stereoisomers included, are removed from this set
            before it is split, so that a model trained here (supervised pretraining, then
            ``--model.init_args.pretrained``) has never seen a molecule it is scored on there;
            ``None``: none. The count removed is reported beside the split.
        exclude_split: the downstream set's split, ``scaffold`` or ``random``.
    """

    def __init__(
        self,
        dataset: str = "tox21",
        split: str = "random",
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        batch_size: int = 128,
        num_workers: int = 0,
        root: str | None = None,
        task_names: Sequence[str] | None = None,
        descriptors: bool = False,
        fingerprints: bool = False,
        exclude: str | None = None,
        exclude_split: str = "scaffold",
    ) -> None:
        super().__init__()
        if exclude is not None and exclude.lower() not in MOLECULENET:
            raise GraphmemError(f"unknown MoleculeNet set {exclude!r} to exclude; choose from {sorted(MOLECULENET)}")
        self.save_hyperparameters()
        self.excluded = 0
        self.molecules: MoleculeSet | None = None
        self.splits: dict[str, list] = {}

    def prepare_data(self) -> None:
        # Download once per node, before the processes of a multi-device run read the file.
        for name in {self.hparams.dataset, *([self.hparams.exclude] if self.hparams.exclude else [])}:
            moleculenet_path(name, self.hparams.root)

    def setup(self, stage: str | None = None) -> None:
        if self.molecules is not None:
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.molecules = load_moleculenet(self.hparams.dataset, self.hparams.root)
        # the summary of skipped rows is printed once below, beside the split; other warnings pass on
        for warning in caught:
            if str(warning.message) != self.molecules.summary():
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        if self.hparams.exclude:
            self._exclude()
        if self.hparams.descriptors:
            add_descriptors(self.molecules.graphs)
        if self.hparams.fingerprints:
            add_fingerprints(self.molecules.graphs)
        train, valid, test = make_split(self.hparams.split, self.molecules.smiles, self.hparams.fractions,
                                        self.hparams.split_seed)
        graphs = self.molecules.graphs
        self.splits = {name: [graphs[i] for i in idx] for name, idx in
                       (("train", train), ("valid", valid), ("test", test))}
        names = self.hparams.task_names
        if names is not None and tuple(names) != self.molecules.tasks:
            raise GraphmemError(f"{self.molecules.path or self.hparams.dataset} has the tasks "
                                f"{list(self.molecules.tasks)}, not the task_names {list(names)}")
        for name in ("valid", "test"):
            self._check_two_classes(name)
        excluded = (f"; {self.excluded} left out as {self.hparams.exclude}'s {self.hparams.exclude_split} "
                    f"validation and test molecules" if self.hparams.exclude else "")
        rank_zero_info(f"{self.molecules.summary()}{excluded}; {self.hparams.split} split "
                       f"{len(train)}/{len(valid)}/{len(test)}")

    def _exclude(self) -> None:
        # the downstream recipes' split, not this set's own fractions and seed
        held_out = held_out_keys(self.hparams.exclude, self.hparams.exclude_split, root=self.hparams.root)
        molecules = self.molecules
        keep = [i for i, key in enumerate(molecule_keys(molecules.smiles)) if key not in held_out]
        self.excluded = len(molecules) - len(keep)
        if not keep:
            raise GraphmemError(f"every molecule of {self.hparams.dataset} is among {self.hparams.exclude}'s "
                                f"validation and test molecules; nothing is left to train on")
        molecules.graphs = [molecules.graphs[i] for i in keep]
        molecules.rows = [molecules.rows[i] for i in keep]

    def _check_two_classes(self, name: str) -> None:
        """Refuses a validation or test split on which ROC-AUC is undefined in every task (each
        holds one class only): the run would end after its first epoch, with no checkpoint."""
        graphs = self.splits[name]
        if not graphs:
            return
        labels = torch.cat([graph.y for graph in graphs])
        if any(len(column[~torch.isnan(column)].unique()) == 2 for column in labels.t()):
            return
        raise GraphmemError(f"{self.hparams.dataset}: the {self.hparams.split} split gives a {name} set of "
                            f"{len(graphs)} molecules whose labels are of one class in every task, so its "
                            f"ROC-AUC is undefined; use --data.init_args.split random, another split_seed, "
                            f"or larger --data.init_args.fractions for it")

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names in the order of the model's outputs; before :meth:`setup`, without
        reading more of the data file than its header (MoleculeNet names most sets' tasks)."""
        if self.molecules is not None:
            return self.molecules.tasks
        if self.hparams.task_names is not None:
            return tuple(self.hparams.task_names)
        return moleculenet_tasks(self.hparams.dataset, self.hparams.root)

    @property
    def num_tasks(self) -> int:
        """The number of tasks, which sizes a recipe's model (see :class:`graphmem.recipe.GraphmemCLI`)."""
        return len(self.tasks)

    @property
    def descriptor_size(self) -> int:
        """Descriptors per molecule (0 without ``descriptors``), which sizes a recipe's model."""
        return len(DESCRIPTOR_NAMES) if self.hparams.descriptors else 0

    @property
    def fingerprint_size(self) -> int:
        """Fingerprint bins per molecule (0 without ``fingerprints``), which sizes a recipe's model."""
        return FINGERPRINT_SIZE if self.hparams.fingerprints else 0

    def _loader(self, name: str, shuffle: bool = False) -> DataLoader:
        return graph_loader(self.splits[name], self.hparams.batch_size, self.hparams.num_workers, shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
