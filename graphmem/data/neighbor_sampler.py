"""Neighbour-sampled mini-batches (GraphSAGE-style) for graphs too large to train on whole.

PyG's :class:`~torch_geometric.loader.NeighborLoader` samples with compiled kernels from
``pyg-lib`` or ``torch-sparse``; neither installs from PyPI for every PyTorch release (no wheels
for torch 2.13 CPU when this was written), and PyG has no pure-PyTorch fallback. So
:func:`neighbor_loader` uses PyG's sampler when one of them is installed, and otherwise
:class:`UniformNeighborSampler`, a vectorised PyTorch sampler, inside PyG's own
:class:`~torch_geometric.loader.NodeLoader`. Either way the batches look the same: a ``Data``
subgraph whose first ``batch_size`` nodes are the seeds, with ``n_id`` (global node ids),
``e_id``, ``input_id`` and ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_geometric.typing
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader, NodeLoader
from torch_geometric.sampler import BaseSampler, NodeSamplerInput, SamplerOutput

from graphmem.errors import GraphmemError


def has_compiled_sampler() -> bool:
    """Whether PyG's own neighbour sampler can run (it needs ``pyg-lib`` or ``torch-sparse``)."""
    return bool(torch_geometric.typing.WITH_PYG_LIB or torch_geometric.typing.WITH_TORCH_SPARSE)


def _check_fanouts(num_neighbors: Sequence[int]) -> list[int]:
    fanouts = [int(k) for k in num_neighbors]
    if not fanouts or any(k == 0 or k < -1 for k in fanouts):
        raise GraphmemError(f"num_neighbors must be a non-empty list of positive numbers (or -1 for all "
                            f"neighbours), one per layer; got {list(num_neighbors)}")
    return fanouts


class UniformNeighborSampler(BaseSampler):
    """Samples, hop by hop, up to ``num_neighbors[h]`` in-neighbours of every node reached so far,
    uniformly and without replacement (``-1``: all of them), as PyG's ``NeighborSampler`` does.

    The graph is kept in compressed sparse column form (edges grouped by target), so the
    candidates of a hop are contiguous ranges. Each candidate edge gets a random key; sorting
    by (target, key) and keeping each target's first ``k`` edges is a uniform sample without
    replacement, done for the whole frontier in a few tensor operations.

    Args:
        data: the graph; only ``edge_index`` and ``num_nodes`` are read.
        num_neighbors: fan-out per hop, e.g. ``[10, 10]`` for a 2-layer model.
    """

    def __init__(self, data: Data, num_neighbors: Sequence[int]) -> None:
        self.num_neighbors = _check_fanouts(num_neighbors)
        self.num_nodes = int(data.num_nodes)
        source, target = data.edge_index
        order = torch.argsort(target, stable=True)
        self.edge_ids = order  # CSC position -> original edge id (edge features are looked up by it)
        self.sources = source[order]
        counts = torch.bincount(target, minlength=self.num_nodes)
        self.colptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def _sample_edges(self, frontier: Tensor, fanout: int) -> tuple[Tensor, Tensor]:
        """CSC positions of the sampled in-edges of ``frontier`` and, per edge, its target's
        index in ``frontier``."""
        start = self.colptr[frontier]
        degree = self.colptr[frontier + 1] - start
        target = torch.repeat_interleave(torch.arange(frontier.numel()), degree)
        first = degree.cumsum(0) - degree  # where each target's candidates begin
        rank = torch.arange(target.numel()) - first[target]
        positions = start[target] + rank
        if fanout < 0:
            return positions, target
        # a random order within each target (targets stay sorted: keys lie in [0, 1))
        order = torch.argsort(target.double() + torch.rand(target.numel(), dtype=torch.float64))
        keep = rank < fanout  # rank of a slot within its target is unchanged by the reordering
        return positions[order][keep], target[keep]

    def sample_from_nodes(self, index: NodeSamplerInput, **kwargs) -> SamplerOutput:
        """The subgraph around the seed nodes ``index.node``, with local edge indices."""
        seeds = index.node.long()
        local = torch.full((self.num_nodes,), -1, dtype=torch.long)
        local[seeds] = torch.arange(seeds.numel())
        nodes, rows, cols, edges = [seeds], [], [], []
        num_sampled_nodes, num_sampled_edges = [seeds.numel()], []
        frontier, count = seeds, seeds.numel()
        for fanout in self.num_neighbors:
            positions, target = self._sample_edges(frontier, fanout)
            sources = self.sources[positions]
            new = torch.unique(sources[local[sources] < 0])
            local[new] = torch.arange(count, count + new.numel())
            count += new.numel()
            rows.append(local[sources])
            cols.append(local[frontier[target]])
            edges.append(self.edge_ids[positions])
            nodes.append(new)
            num_sampled_nodes.append(new.numel())
            num_sampled_edges.append(positions.numel())
            frontier = new
        return SamplerOutput(node=torch.cat(nodes), row=torch.cat(rows), col=torch.cat(cols),
                             edge=torch.cat(edges), num_sampled_nodes=num_sampled_nodes,
                             num_sampled_edges=num_sampled_edges, metadata=(index.input_id, index.time))

    def sample_from_edges(self, index, neg_sampling=None) -> SamplerOutput:
        """Link-level sampling is not supported; node classification needs only :meth:`sample_from_nodes`."""
        raise NotImplementedError("UniformNeighborSampler samples around nodes only; for link prediction "
                                  "install pyg-lib and use torch_geometric.loader.LinkNeighborLoader")


def neighbor_loader(data: Data, num_neighbors: Sequence[int], input_nodes: Tensor, batch_size: int,
                    shuffle: bool = False, num_workers: int = 0) -> NodeLoader:
    """Mini-batches of ``batch_size`` seed nodes from ``input_nodes`` (indices or a mask), each
    with its sampled ``len(num_neighbors)``-hop neighbourhood. PyG's ``NeighborLoader`` when a
    compiled sampler is installed, else :class:`UniformNeighborSampler` in a ``NodeLoader``."""
    fanouts = _check_fanouts(num_neighbors)
    options = dict(input_nodes=input_nodes, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                   persistent_workers=num_workers > 0)
    if has_compiled_sampler():
        return NeighborLoader(data, num_neighbors=fanouts, **options)
    return NodeLoader(data, node_sampler=UniformNeighborSampler(data, fanouts), **options)
