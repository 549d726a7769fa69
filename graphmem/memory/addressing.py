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

from graphmem.attention import ScoreFn, attention, check_attention_options, cosine_score

#: normalizers that give content weights location addressing can use: a distribution over rows
#: ("none" does not: interpolation and sharpening need weights that sum to one)
CONTENT_NORMALIZERS: tuple[str, ...] = ("softmax", "hard", "gumbel", "gumbel_hard")


def check_content_normalizer(normalizer: str) -> None:
    """Refuses a normalizer whose weights are not a distribution over memory rows."""
    check_attention_options(normalizer=normalizer)
    if normalizer not in CONTENT_NORMALIZERS:
        raise ValueError(f"the NTM's content addressing needs weights that sum to one (interpolation and "
                         f"sharpening follow it); normalizer {normalizer!r} does not give them: choose one of "
                         f"{', '.join(CONTENT_NORMALIZERS)}")


def content_weights(memory: Tensor, key: Tensor, beta: Tensor, score: ScoreFn = cosine_score,
                    normalizer: str = "softmax", penalty: Tensor | None = None) -> Tensor:
    r""":math:`w^c_i = \mathrm{normalize}_i\big(\beta\, s(k, M(i)) - p_i\big)`, by default
    :math:`\mathrm{softmax}_i(\beta \cos(k, M(i)))` (Graves et al. 2014, eq. 5-6).

    The core's :func:`~graphmem.attention.attention` in the dense layout, each head's key the
    query, the memory rows the keys, the key strength its ``scale``; location addressing reads
    with the weights after it, so no read is made here.

    Args:
        memory: ``(B, N, M)``.
        key: ``(B, K, M)`` one key per head.
        beta: ``(B, K)`` key strengths, :math:`\beta > 0`.
        score: any score with the core's signature on ``(B, K, M)`` keys and ``(B, N, M)`` rows.
        normalizer: one of :data:`CONTENT_NORMALIZERS`.
        penalty: ``(B, K, N)`` subtracted from the logits after the key strength, :math:`p_i`
            (least-recently-used writing's usage term, :class:`~graphmem.memory.heads.WriteHeads`);
            ``None`` for none.

    Returns:
        ``(B, K, N)``.
    """
    shift = None if penalty is None else (lambda logits: logits - penalty)
    return attention(key, memory, None, score, normalizer, scale=beta.unsqueeze(-1), logits_transform=shift).weights


def update_usage(usage: Tensor, weights: Tensor, discount: Tensor) -> Tensor:
    r"""A write head's usage for least-recently-used writing (after the D-NTM's, Gulcehre et al.
    2018): :math:`u_t = \lambda\, u_{t-1} + w_t`, the discounted sum of its write weights;
    ``usage`` and ``weights`` ``(B, K, N)``, ``discount`` ``(B, K)`` in (0, 1)."""
    return discount.unsqueeze(-1) * usage + weights


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
    score: ScoreFn = cosine_score,
    normalizer: str = "softmax",
    penalty: Tensor | None = None,
) -> Tensor:
    """The four addressing steps in order: content (with ``score``, ``normalizer`` and an
    optional logit ``penalty``, see :func:`content_weights`), interpolate, shift, sharpen;
    ``(B, K, N)``."""
    weights = interpolate(content_weights(memory, key, beta, score, normalizer, penalty), previous, gate)
    return sharpen(circular_shift(weights, shift), gamma)
