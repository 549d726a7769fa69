"""Planetoid citation graphs (Cora, CiteSeer, PubMed) with the standard public split, and
Zachary's karate club from networkx."""

from __future__ import annotations

import os

import networkx as nx
import torch
from torch_geometric.data import Data
from torch_geometric.io import read_planetoid_data
from torch_geometric.utils import from_networkx

from graphmem.data.download import DataFileError, fetch
from graphmem.errors import GraphmemError

PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/"
PLANETOID = ("cora", "citeseer", "pubmed")
PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def load_planetoid(name: str, root: str | os.PathLike | None = None) -> Data:
    """One Planetoid graph with the public split of Yang et al. (2016).

    Returns ``Data(x, edge_index, y, train_mask, val_mask, test_mask)`` (Cora: 2708 nodes,
    1433 features, 7 classes, 140 / 500 / 1000 train / validation / test nodes). Reads the
    eight ``ind.<name>.*`` files from ``$GRAPHMEM_DATA/planetoid`` (or ``root``), the cache, or
    downloads them. Features are the raw bag-of-words; row-normalise them in the model's
    transform if wanted.
    """
    key = name.lower()
    if key not in PLANETOID:
        raise GraphmemError(f"unknown Planetoid graph {name!r}; choose one of {PLANETOID}")
    paths = [fetch(f"planetoid/ind.{key}.{part}", f"{PLANETOID_URL}ind.{key}.{part}", root)
             for part in PLANETOID_PARTS]
    folders = {p.parent for p in paths}
    if len(folders) != 1:
        raise DataFileError(f"the files of {name} are split over {sorted(map(str, folders))}; keep them in one folder")
    try:
        data = read_planetoid_data(str(folders.pop()), key)
    except (EOFError, OSError, ValueError, IndexError) as error:  # pickle errors of truncated files
        raise DataFileError(f"the {name} files under {paths[0].parent} are truncated or corrupted ({error}); "
                            f"delete them and download again") from error
    return data


def karate_club() -> Data:
    """Zachary's karate club: 34 members, which club each joins after the split (2 classes).

    Features are one-hot node identities; one member of each faction (the instructor, node 0,
    and the administrator, node 33) is labelled for training, the rest are split evenly into
    validation and test.
    """
    graph = nx.karate_club_graph()
    data = from_networkx(graph)
    y = torch.tensor([0 if graph.nodes[n]["club"] == "Mr. Hi" else 1 for n in graph.nodes])
    n = graph.number_of_nodes()
    train = torch.zeros(n, dtype=torch.bool)
    train[[0, 33]] = True
    rest = torch.arange(n)[~train]
    val, test = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    val[rest[::2]] = True
    test[rest[1::2]] = True
    return Data(x=torch.eye(n), edge_index=data.edge_index, y=y, train_mask=train, val_mask=val, test_mask=test)
