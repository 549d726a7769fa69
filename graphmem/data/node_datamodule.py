"""LightningDataModule for node classification on one graph: whole-graph batches, or
neighbour-sampled mini-batches for graphs too large for that."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import lightning as L
from torch.utils.data import DataLoader as TorchDataLoader
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import NormalizeFeatures

from graphmem.data.neighbor_sampler import neighbor_loader
from graphmem.data.planetoid import PLANETOID, karate_club, load_planetoid
from graphmem.data.synthetic import SyntheticGraph
from graphmem.errors import GraphmemError

NODE_DATASETS: tuple[str, ...] = PLANETOID + ("karate", "synthetic")


class NodeDataModule(L.LightningDataModule):
    """One graph; the split lives in its ``train/val/test_mask``.

    By default every step sees the whole graph (the GAT paper's transductive setting). With
    ``num_neighbors`` set, each step sees ``batch_size`` seed nodes of the split and their
    sampled neighbourhoods instead (see :mod:`graphmem.data.neighbor_sampler`); the task then
    scores the seed nodes, the first ``batch.batch_size`` nodes of each batch.

    Args:
        dataset: ``cora``, ``citeseer``, ``pubmed``, ``karate``, or ``synthetic`` (a generated
            planted-partition graph, see ``synthetic``).
        normalize_features: row-normalise features (as in the GAT paper).
        root: folder holding ``planetoid/ind.<name>.*`` (defaults to ``$GRAPHMEM_DATA``, then the cache).
        num_neighbors: neighbours sampled per hop, one entry per model layer, e.g. ``[10, 10]``
            (``-1``: all); ``None`` trains on the whole graph.
        batch_size: seed nodes per mini-batch (only with ``num_neighbors``).
        num_workers: data loader workers for sampled mini-batches.
        synthetic: the generated graph's parameters when ``dataset="synthetic"``.
    """

    def __init__(self, dataset: str = "cora", normalize_features: bool = True, root: str | None = None,
                 num_neighbors: Sequence[int] | None = None, batch_size: int = 1024, num_workers: int = 0,
                 synthetic: SyntheticGraph | None = None) -> None:
        super().__init__()
        if dataset not in NODE_DATASETS:
            raise GraphmemError(f"unknown node dataset {dataset!r}; choose one of {NODE_DATASETS}")
        if batch_size < 1:
            raise GraphmemError(f"batch_size must be positive, got {batch_size}")
        if synthetic is not None and dataset != "synthetic":
            raise GraphmemError(f"synthetic graph options were given but dataset is {dataset!r}; "
                                f"set dataset: synthetic to use them")
        # a plain dict in the checkpoint, which torch.load(weights_only=True) reads; a dataclass it refuses
        self.save_hyperparameters(ignore=["synthetic"])
        self.hparams["synthetic"] = asdict(synthetic) if synthetic is not None else None
        self.synthetic = synthetic or SyntheticGraph()
        self.data: Data | None = None

    def prepare_data(self) -> None:
        if self.hparams.dataset in PLANETOID:
            load_planetoid(self.hparams.dataset, self.hparams.root)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        name = self.hparams.dataset
        if name == "karate":
            data = karate_club()
        elif name == "synthetic":
            data = self.synthetic.generate()
        else:
            data = load_planetoid(name, self.hparams.root)
        self.data = NormalizeFeatures()(data) if self.hparams.normalize_features else data

    @property
    def num_features(self) -> int:
        self.setup()
        return self.data.num_features

    @property
    def num_classes(self) -> int:
        self.setup()
        return int(self.data.y.max()) + 1

    @property
    def sampled(self) -> bool:
        """Whether batches are neighbour-sampled mini-batches rather than the whole graph."""
        return self.hparams.num_neighbors is not None

    def _loader(self, mask_name: str | None = None, shuffle: bool = False) -> TorchDataLoader:
        if not self.sampled:
            return DataLoader([self.data], batch_size=1)
        seeds = getattr(self.data, mask_name) if mask_name else None  # None: every node
        return neighbor_loader(self.data, self.hparams.num_neighbors, seeds, self.hparams.batch_size,
                               shuffle=shuffle, num_workers=self.hparams.num_workers)

    def train_dataloader(self) -> TorchDataLoader:
        return self._loader("train_mask", shuffle=True)

    def val_dataloader(self) -> TorchDataLoader:
        return self._loader("val_mask")

    def test_dataloader(self) -> TorchDataLoader:
        return self._loader("test_mask")

    def predict_dataloader(self) -> TorchDataLoader:
        return self._loader()
