"""A generated graph of any size with planted classes, for scale tests of node classification.

A planted-partition (stochastic block) model: every node has a class; an edge joins two nodes
of the same class with probability ``homophily`` and two random nodes otherwise; node features
are a class centre plus Gaussian noise. Features alone classify poorly when the noise is large,
while a graph model that averages neighbours (mostly of the same class) removes the noise:
the gap measures what message passing adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, remove_self_loops

from graphmem.errors import GraphmemError


@dataclass
class SyntheticGraph:
    """Parameters of the planted-partition graph; :meth:`generate` builds it.

    Args:
        num_nodes: nodes.
        num_classes: planted classes (equally likely).
        avg_degree: edges per node in ``edge_index``, both directions counted (so about
            ``num_nodes * avg_degree`` edges in all, fewer the few repeats and self-loops removed).
        homophily: probability that an edge is drawn inside its source's class; otherwise its
            target is any node.
        num_features: feature size.
        noise: standard deviation of the feature noise around the class centres (which are
            standard normal): larger is harder for features alone.
        fractions: train, validation and test fractions of the nodes (the rest are unlabelled
            for training purposes).
        seed: seed of everything random here.
    """

    num_nodes: int = 10_000
    num_classes: int = 8
    avg_degree: float = 10.0
    homophily: float = 0.8
    num_features: int = 32
    noise: float = 3.0
    fractions: Sequence[float] = (0.1, 0.1, 0.8)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_nodes < 2 or self.num_classes < 2 or self.num_nodes < self.num_classes:
            raise GraphmemError(f"need num_nodes >= num_classes >= 2, got {self.num_nodes} and "
                                f"{self.num_classes}")
        if not 0.0 <= self.homophily <= 1.0:
            raise GraphmemError(f"homophily must be in [0, 1], got {self.homophily}")
        if self.avg_degree <= 0 or self.noise < 0:
            raise GraphmemError(f"need avg_degree > 0 and noise >= 0, got {self.avg_degree} and {self.noise}")
        if len(self.fractions) != 3 or min(self.fractions) < 0 or sum(self.fractions) > 1 + 1e-9:
            raise GraphmemError(f"fractions must be three non-negative numbers summing to at most 1, "
                                f"got {tuple(self.fractions)}")

    def generate(self) -> Data:
        """``Data(x (N, F), edge_index (2, E), y (N,), train_mask, val_mask, test_mask)``, undirected."""
        generator = torch.Generator().manual_seed(self.seed)
        n, c = self.num_nodes, self.num_classes
        y = torch.randint(0, c, (n,), generator=generator)
        # nodes grouped by class: a same-class partner is a random slot in the source's group
        by_class = torch.argsort(y)
        counts = torch.bincount(y, minlength=c)
        group_start = counts.cumsum(0) - counts
        pairs = int(n * self.avg_degree / 2)
        source = torch.randint(0, n, (pairs,), generator=generator)
        slot = (torch.rand(pairs, generator=generator) * counts[y[source]]).long()
        same_class = by_class[group_start[y[source]] + slot]
        anywhere = torch.randint(0, n, (pairs,), generator=generator)
        inside = torch.rand(pairs, generator=generator) < self.homophily
        target = torch.where(inside, same_class, anywhere)
        edge_index = torch.stack([torch.cat([source, target]), torch.cat([target, source])])
        edge_index, _ = remove_self_loops(edge_index)
        edge_index = coalesce(edge_index, num_nodes=n)
        centres = torch.randn(c, self.num_features, generator=generator)
        x = centres[y] + self.noise * torch.randn(n, self.num_features, generator=generator)
        masks = self._masks(n, generator)
        return Data(x=x, edge_index=edge_index, y=y, **masks)

    def _masks(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        order = torch.randperm(n, generator=generator)
        sizes = [int(f * n) for f in self.fractions]
        masks, start = {}, 0
        for name, size in zip(("train_mask", "val_mask", "test_mask"), sizes):
            mask = torch.zeros(n, dtype=torch.bool)
            mask[order[start:start + size]] = True
            masks[name] = mask
            start += size
        return masks
