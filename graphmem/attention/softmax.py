"""Normalizers: logits to weights over a set of keys, for the dense and the sparse layout.

Dense: weights over the last dimension (or ``dim``), with an optional boolean ``mask``
(``True`` = may attend). Sparse: weights over the edges that share a target, given by
``index`` (the edge list's row 1), one segment per query. Both are numerically stable and
return all-zero weights, not NaN, for a query with nothing to attend to (a fully masked row,
an isolated node, an empty edge list).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _expand_index(index: Tensor, like: Tensor) -> Tensor:
    return index.view((-1,) + (1,) * (like.dim() - 1)).expand_as(like)


def segment_max(src: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Maximum of ``src`` ``(E, *)`` per segment, ``(num_segments, *)``; ``-inf`` where empty."""
    # In place on a fresh tensor: the out-of-place variants would copy it first.
    out = src.new_full((num_segments,) + tuple(src.shape[1:]), float("-inf"))
    return out.scatter_reduce_(0, _expand_index(index, src), src, reduce="amax", include_self=True)


def segment_sum(src: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Sum of ``src`` ``(E, *)`` per segment, ``(num_segments, *)``; zero where empty."""
    out = src.new_zeros((num_segments,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


def _num_segments(index: Tensor, num_segments: int | None) -> int:
    if num_segments is not None:
        return num_segments
    return int(index.max()) + 1 if index.numel() > 0 else 0


def _finite_or_zero(x: Tensor) -> Tensor:
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def segment_softmax(logits: Tensor, index: Tensor, num_segments: int | None = None) -> Tensor:
    r"""Softmax over the edges that share a target node.

    .. math::
        \alpha_{e} = \frac{\exp(s_e - m_{t(e)})}{\sum_{e' : t(e') = t(e)} \exp(s_{e'} - m_{t(e)})},
        \qquad m_t = \max_{e : t(e) = t} s_e

    Args:
        logits: ``(E, *)`` one score per edge (and head).
        index: ``(E,)`` target of each edge.
        num_segments: number of targets; inferred from ``index`` when omitted (a device sync).

    Returns:
        ``(E, *)`` weights that sum to one over each target's edges.
    """
    num_segments = _num_segments(index, num_segments)
    # The shift only guards exp() against overflow; softmax does not depend on it, so it
    # carries no gradient. Segments whose logits are all -inf get shift 0 and weights 0.
    shift = _finite_or_zero(segment_max(logits.detach(), index, num_segments))
    # Per-edge work is gathers and products only (no advanced indexing, no per-edge division):
    # these run over E x heads entries, everything per segment is cheap.
    exp = (logits - shift.index_select(0, index)).exp()
    total = segment_sum(exp, index, num_segments)
    return exp * total.clamp_min(torch.finfo(exp.dtype).tiny).reciprocal().index_select(0, index)


def masked_softmax(logits: Tensor, mask: Tensor | None = None, dim: int = -1) -> Tensor:
    """Softmax along ``dim``; entries where ``mask`` is ``False`` get weight 0.

    ``mask`` broadcasts against ``logits``. A row with every entry masked gets all-zero
    weights (``torch.softmax`` would give NaN).
    """
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    shift = _finite_or_zero(logits.detach().amax(dim, keepdim=True))
    exp = (logits - shift).exp()
    return exp / exp.sum(dim, keepdim=True).clamp_min(torch.finfo(exp.dtype).tiny)
