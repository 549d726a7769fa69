"""LightningDataModule for full-graph node classification (Planetoid graphs, karate club)."""

from __future__ import annotations

import lightning as L
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import NormalizeFeatures

from graphmem.data.planetoid import PLANETOID, karate_club, load_planetoid

NODE_DATASETS: tuple[str, ...] = PLANETOID + ("karate",)


class NodeDataModule(L.LightningDataModule):
    """One graph, trained full-batch; the split lives in its ``train/val/test_mask``.

    Args:
        dataset: ``cora``, ``citeseer``, ``pubmed`` or ``karate``.
        normalize_features: row-normalise features (as in the GAT paper).
        root: folder holding ``planetoid/ind.<name>.*`` (defaults to ``$GRAPHMEM_DATA``, then the cache).
    """

    def __init__(self, dataset: str = "cora", normalize_features: bool = True, root: str | None = None) -> None:
        super().__init__()
        if dataset not in NODE_DATASETS:
            raise ValueError(f"unknown node dataset {dataset!r}; choose one of {NODE_DATASETS}")
        self.save_hyperparameters()
        self.data: Data | None = None

    def prepare_data(self) -> None:
        if self.hparams.dataset in PLANETOID:
            load_planetoid(self.hparams.dataset, self.hparams.root)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        name = self.hparams.dataset
        data = karate_club() if name == "karate" else load_planetoid(name, self.hparams.root)
        self.data = NormalizeFeatures()(data) if self.hparams.normalize_features else data

    @property
    def num_features(self) -> int:
        self.setup()
        return self.data.num_features

    @property
    def num_classes(self) -> int:
        self.setup()
        return int(self.data.y.max()) + 1

    def _loader(self) -> DataLoader:
        return DataLoader([self.data], batch_size=1)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
