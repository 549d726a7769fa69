"""LightningDataModule for link prediction: a graph's edges split into train / validation / test
edges, with negative (absent) node pairs to score against them."""

from __future__ import annotations

import random

import lightning as L
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import NormalizeFeatures, RandomLinkSplit
from torch_geometric.utils import negative_sampling

from graphmem.data.planetoid import PLANETOID, karate_club, load_planetoid
from graphmem.errors import GraphmemError

LINK_DATASETS: tuple[str, ...] = PLANETOID + ("karate",)


class FreshNegatives(Dataset):
    """The training graph, with a new draw of negative pairs each time it is read (each step).

    Negatives avoid the training edges only: the held-out edges are unknown at training time.
    """

    def __init__(self, graph: Data) -> None:
        self.graph = graph

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Data:
        graph = self.graph.clone()
        graph.neg_edge_label_index = negative_sampling(graph.edge_index, graph.num_nodes,
                                                       num_neg_samples=graph.pos_edge_label_index.size(1))
        return graph


class LinkDataModule(L.LightningDataModule):
    """One graph whose undirected edges are split into train / validation / test edges.

    Every stage's batch is the whole graph with ``edge_index`` holding the **training edges
    only** (both directions), so held-out edges never carry messages, as in the graph
    auto-encoder paper (Kipf & Welling, 2016). ``pos_edge_label_index`` :math:`(2, P)` holds
    the stage's edges (one direction each) and ``neg_edge_label_index`` :math:`(2, P)` as many
    node pairs that are not edges of the graph: fixed by ``split_seed`` for validation and test
    (sampled against all edges), drawn anew every training step (sampled against the training
    edges, the only ones known while training).

    Args:
        dataset: ``cora``, ``citeseer``, ``pubmed``, or ``karate`` (78 edges: for quick checks).
        val_fraction, test_fraction: shares of the undirected edges held out (GAE: 0.05, 0.1).
        split_seed: seed of the split and of the validation / test negatives.
        normalize_features: row-normalise the features.
        root: folder holding ``planetoid/ind.<name>.*`` (defaults to ``$GRAPHMEM_DATA``, then the cache).
    """

    def __init__(self, dataset: str = "cora", val_fraction: float = 0.05, test_fraction: float = 0.1,
                 split_seed: int = 0, normalize_features: bool = True, root: str | None = None) -> None:
        super().__init__()
        if dataset not in LINK_DATASETS:
            raise GraphmemError(f"unknown link dataset {dataset!r}; choose one of {LINK_DATASETS}")
        if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
            raise GraphmemError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be "
                                f"positive and sum to less than 1")
        self.save_hyperparameters()
        self.splits: dict[str, Data] = {}

    def _graph(self) -> Data:
        if self.hparams.dataset == "karate":
            return karate_club()
        return load_planetoid(self.hparams.dataset, self.hparams.root)

    def prepare_data(self) -> None:
        self._graph()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        data = self._graph()
        if self.hparams.normalize_features:
            data = NormalizeFeatures()(data)
        data = Data(x=data.x, edge_index=data.edge_index)  # node labels and masks play no part
        split = RandomLinkSplit(num_val=self.hparams.val_fraction, num_test=self.hparams.test_fraction,
                                is_undirected=True, split_labels=True, add_negative_train_samples=False)
        # the split draws from torch's generator and the negatives from Python's `random`: seed
        # both here and restore them after, so that the split depends on split_seed alone and
        # leaves the model's seed stream untouched
        with isolate_rng():
            random.seed(self.hparams.split_seed)
            torch.manual_seed(self.hparams.split_seed)
            train, val, test = split(data)
        # RandomLinkSplit lets the test stage pass messages over validation edges too; keep the
        # training edges only, so that every stage sees the same graph
        self.splits = {
            "train": Data(x=data.x, edge_index=train.edge_index, pos_edge_label_index=train.pos_edge_label_index),
            **{name: Data(x=data.x, edge_index=train.edge_index, pos_edge_label_index=part.pos_edge_label_index,
                          neg_edge_label_index=part.neg_edge_label_index)
               for name, part in (("val", val), ("test", test))},
        }

    @property
    def num_features(self) -> int:
        self.setup()
        return self.splits["train"].num_features

    def train_dataloader(self) -> DataLoader:
        return DataLoader(FreshNegatives(self.splits["train"]), batch_size=1)

    def val_dataloader(self) -> DataLoader:
        return DataLoader([self.splits["val"]], batch_size=1)

    def test_dataloader(self) -> DataLoader:
        return DataLoader([self.splits["test"]], batch_size=1)
