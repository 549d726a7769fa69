"""Hard and stochastic normalizers: one-hot attention trained with straight-through gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from graphmem.attention.softmax import (
    _expand_index,
    _num_segments,
    masked_softmax,
    segment_max,
    segment_softmax,
)


def _one_hot_argmax(weights: Tensor, index: Tensor | None, num_segments: int | None, dim: int) -> Tensor:
    """One-hot of the largest weight per query; ties go to the first key. A query whose weights
    are all zero (everything masked) stays all zero, as in soft attention."""
    if index is None:
        best = weights.amax(dim, keepdim=True)
        one_hot = torch.zeros_like(weights).scatter_(dim, weights.argmax(dim, keepdim=True), 1.0)
        return one_hot * (best > 0)
    num_segments = _num_segments(index, num_segments)
    best = segment_max(weights, index, num_segments)
    shape = (-1,) + (1,) * (weights.dim() - 1)
    position = torch.arange(weights.size(0), device=weights.device).view(shape).expand_as(weights)
    candidate = torch.where(weights == best[index], position, weights.size(0))
    first = candidate.new_full(best.shape, weights.size(0)).scatter_reduce(
        0, _expand_index(index, candidate), candidate, reduce="amin", include_self=True
    )
    return (candidate == first[index]).to(weights.dtype)


def straight_through(soft: Tensor, index: Tensor | None = None, num_segments: int | None = None, dim: int = -1) -> Tensor:
    r"""Forward: one-hot of the argmax of ``soft``; backward: the gradient of ``soft``.

    :math:`y = \mathrm{onehot}(\arg\max \alpha) - \mathrm{sg}(\alpha) + \alpha`, the
    straight-through estimator (Bengio et al. 2013). ``index`` selects the sparse layout.
    """
    hard = _one_hot_argmax(soft.detach(), index, num_segments, dim)
    return hard - soft.detach() + soft


def _soft(logits: Tensor, index: Tensor | None, num_segments: int | None, mask: Tensor | None, dim: int) -> Tensor:
    if index is None:
        return masked_softmax(logits, mask, dim)
    return segment_softmax(logits, index, num_segments)


def hard_softmax(
    logits: Tensor,
    index: Tensor | None = None,
    num_segments: int | None = None,
    mask: Tensor | None = None,
    dim: int = -1,
) -> Tensor:
    """Hard attention: each query reads exactly its best-scoring key, trained straight-through."""
    return straight_through(_soft(logits, index, num_segments, mask, dim), index, num_segments, dim)


def gumbel_softmax(
    logits: Tensor,
    tau: float = 1.0,
    hard: bool = False,
    index: Tensor | None = None,
    num_segments: int | None = None,
    mask: Tensor | None = None,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Gumbel-softmax (Jang et al. 2017) in either layout: :math:`\mathrm{softmax}((s + g)/\tau)`,
    :math:`g \sim \mathrm{Gumbel}(0, 1)`; with ``hard=True`` a one-hot sample, straight-through."""
    uniform = torch.rand(logits.shape, device=logits.device, dtype=logits.dtype, generator=generator)
    tiny = torch.finfo(logits.dtype).tiny
    gumbel = -torch.log((-torch.log(uniform.clamp_min(tiny))).clamp_min(tiny))
    soft = _soft((logits + gumbel) / tau, index, num_segments, mask, dim)
    return straight_through(soft, index, num_segments, dim) if hard else soft
