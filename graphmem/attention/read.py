"""Reads: the last step of attention, weights times values, and the multi-head combine."""

from __future__ import annotations

from torch import Tensor


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
    """
    message = weights.unsqueeze(-1) * value[edge_index[0]]
    out = message.new_zeros((num_queries,) + tuple(message.shape[1:]))
    return out.index_add(0, edge_index[1], message)


def combine_heads(x: Tensor, concat: bool = True, dim: int = -2) -> Tensor:
    """Merges the head dimension ``dim`` of ``(..., H, D)``-like tensors.

    ``concat=True`` concatenates the heads (``H * D`` features: hidden GAT layers,
    transformers); ``concat=False`` averages them (``D`` features: GAT's last layer).
    """
    if not concat:
        return x.mean(dim)
    x = x.movedim(dim, -2)
    return x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))
