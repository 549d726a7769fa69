"""Reads: the last step of attention, weights times values, and the multi-head combine."""

from __future__ import annotations

import torch
from torch import Tensor

from graphmem.attention.fused import sparse_read_fused

# Below this many per-edge message entries (E * H * C) the message tensor is small and the
# plain read, one gather and one index_add, beats sorting the edges into CSR form; on the
# 2-core CPU of docs/benchmarks.md the crossover lies between 128k and 512k entries.
FUSED_MIN_MESSAGE_SIZE = 2**18


def dense_read(weights: Tensor, value: Tensor) -> Tensor:
    r"""Weighted sum :math:`r_i = \sum_n \alpha_{in} v_n` when every query sees every key.

    ``weights`` ``(..., L_q, L_k)`` times ``value`` ``(..., L_k, D_v)`` gives ``(..., L_q, D_v)``.
    """
    return weights @ value


def sparse_read(weights: Tensor, value: Tensor, edge_index: Tensor, num_queries: int) -> Tensor:
    r"""Weighted sum over each target's in-edges, :math:`r_i = \sum_{(j, i) \in E} \alpha_{ji} v_j`.

    Args:
        weights: ``(E, *)`` one weight per edge (and head).
        value: ``(N_k, *, D_v)`` one value per source node.
        edge_index: ``(2, E)`` source (key) row and target (query) row.
        num_queries: number of target nodes; targets without edges read zeros.

    Returns:
        ``(num_queries, *, D_v)``.

    Forms every message (``E x * x D_v`` entries, all kept for the backward pass); for large
    graphs use :func:`sparse_read_auto` or :func:`~graphmem.attention.sparse_read_fused`.
    """
    # index_select, not value[...]: its backward is an index_add rather than a slower
    # accumulating index_put; index_add_ in place on a fresh tensor saves a copy.
    message = weights.unsqueeze(-1) * value.index_select(0, edge_index[0])
    out = message.new_zeros((num_queries,) + tuple(message.shape[1:]))
    return out.index_add_(0, edge_index[1], message)


def sparse_read_auto(
    weights: Tensor,
    value: Tensor,
    edge_index: Tensor,
    num_queries: int,
    deterministic: bool | None = None,
) -> Tensor:
    r""":func:`sparse_read` through the fused, memory-light kernel wherever it applies.

    Same arguments, shapes and result as :func:`sparse_read`. The fused kernel
    (:func:`~graphmem.attention.sparse_read_fused`) is used when the per-edge messages would
    have at least :data:`FUSED_MIN_MESSAGE_SIZE` entries, or whenever ``deterministic`` is
    true: it sums each target's edges in a fixed order without atomics (the plain read's
    ``index_add`` uses atomics on CUDA), so results are reproducible to the bit.
    ``deterministic=None`` follows :func:`torch.are_deterministic_algorithms_enabled`. While
    ``torch.compile`` traces, the plain read is used so that the graph stays whole.
    """
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    message_size = weights.numel() * value.size(-1)
    if not torch.compiler.is_compiling() and (deterministic or message_size >= FUSED_MIN_MESSAGE_SIZE):
        return sparse_read_fused(weights, value, edge_index, num_queries)
    return sparse_read(weights, value, edge_index, num_queries)


def combine_heads(x: Tensor, concat: bool = True, dim: int = -2) -> Tensor:
    """Merges the head dimension ``dim`` of ``(..., H, D)``-like tensors.

    ``concat=True`` concatenates the heads (``H * D`` features: hidden GAT layers,
    transformers); ``concat=False`` averages them (``D`` features: GAT's last layer).
    """
    if not concat:
        return x.mean(dim)
    x = x.movedim(dim, -2)
    return x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))
