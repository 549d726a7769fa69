r"""NTM addressing (Graves et al. 2014, section 3.3): content, interpolation, shift, sharpening.

Shapes: memory ``(B, N, M)`` (``N`` rows of width ``M`` per batch element), one query per
head, weightings ``(B, K, N)`` for ``K`` heads. Content addressing is the attention core's
dense layout: cosine score times key strength, then softmax over the memory rows.
"""

from __future__ import annotations

import operator
from functools import reduce

import torch
from torch import Tensor

from graphmem.attention import cosine_score, masked_softmax


def content_weights(memory: Tensor, key: Tensor, beta: Tensor) -> Tensor:
    r""":math:`w^c_i = \mathrm{softmax}_i\big(\beta\, \cos(k, M(i))\big)`.

    Args:
        memory: ``(B, N, M)``.
        key: ``(B, K, M)`` one key per head.
        beta: ``(B, K)`` key strengths, :math:`\beta > 0`.

    Returns:
        ``(B, K, N)``.
    """
    return masked_softmax(cosine_score(key, memory, beta))


def interpolate(content: Tensor, previous: Tensor, gate: Tensor) -> Tensor:
    r""":math:`w^g = g\, w^c + (1 - g)\, w_{t-1}`; ``gate`` is ``(B, K)`` in (0, 1)."""
    gate = gate.unsqueeze(-1)
    return gate * content + (1 - gate) * previous


def circular_shift(weights: Tensor, shift: Tensor) -> Tensor:
    r"""Circular convolution :math:`\tilde w_i = \sum_j w_j\, s_{(i - j) \bmod N}`.

    Args:
        weights: ``(B, K, N)``.
        shift: ``(B, K, 2R + 1)`` a distribution over the offsets ``-R .. R``
            (``shift[..., R]`` keeps the focus where it is, ``shift[..., R + 1]`` moves it
            one row forward).

    Returns:
        ``(B, K, N)``: :math:`\tilde w = \sum_{o=-R}^{R} s_o\, \mathrm{roll}(w, o)` with
        :math:`\mathrm{roll}(w, o)_i = w_{(i - o) \bmod N}`, for the whole batch at once.
    """
    # 2R + 1 rolled copies rather than one gather through an (N, 2R + 1) index table: a roll
    # is a contiguous copy that compiled CPU kernels vectorise, the modular gather is not
    # (it made the whole sharpening loop after it scalar).
    shift_range = (shift.size(-1) - 1) // 2
    rolled = (shift[..., j, None] * weights.roll(j - shift_range, -1) for j in range(shift.size(-1)))
    return reduce(operator.add, rolled)


def sharpen(weights: Tensor, gamma: Tensor, eps: float = 1e-12) -> Tensor:
    r""":math:`w_i = \tilde w_i^{\gamma} / \sum_j \tilde w_j^{\gamma}` with ``gamma`` ``(B, K)``, :math:`\gamma \ge 1`.

    ``eps`` keeps :math:`\partial w / \partial \gamma = w^\gamma \log w` finite for rows whose
    weight is exactly zero.
    """
    # (w + eps)^gamma / sum_j (w_j + eps)^gamma, computed in log space: the plain powers
    # underflow to 0 / 0 = NaN for flat weightings and large gamma.
    return torch.softmax(gamma.unsqueeze(-1) * (weights + eps).log(), -1)


def address(
    memory: Tensor,
    previous: Tensor,
    key: Tensor,
    beta: Tensor,
    gate: Tensor,
    shift: Tensor,
    gamma: Tensor,
) -> Tensor:
    """The four addressing steps in order: content, interpolate, shift, sharpen; ``(B, K, N)``."""
    weights = interpolate(content_weights(memory, key, beta), previous, gate)
    return sharpen(circular_shift(weights, shift), gamma)
