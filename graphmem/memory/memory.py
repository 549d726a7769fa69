"""Reading and writing an NTM memory with attention weightings (Graves et al. 2014, 3.1-3.2)."""

from __future__ import annotations

import operator
from functools import reduce

from torch import Tensor

from graphmem.attention import dense_read


def read(memory: Tensor, weights: Tensor) -> Tensor:
    r""":math:`r = \sum_i w_i M(i)`: memory ``(B, N, M)``, weights ``(B, K, N)`` -> ``(B, K, M)``."""
    return dense_read(weights, memory)


def write(memory: Tensor, weights: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    r"""Erase then add, for ``K`` write heads at once.

    .. math::
        \tilde M(i) = M(i) \circ \prod_{h} \big(1 - w^h_i e^h\big), \qquad
        M'(i) = \tilde M(i) + \sum_h w^h_i a^h

    Args:
        memory: ``(B, N, M)``.
        weights: ``(B, K, N)`` write weightings.
        erase: ``(B, K, M)`` erase vectors in (0, 1).
        add: ``(B, K, M)`` add vectors.

    Returns:
        the new memory ``(B, N, M)``. Erasures commute, so the order of the heads does not matter.
    """
    # The product over heads written out rather than torch.prod: prod's backward goes through
    # two zero-safe cumprods of the (B, K, N, M) factors (1.4 ms a step at batch 32 with four
    # heads), while a chain of K products fuses into one pointwise kernel, forward and backward.
    keep = reduce(operator.mul, (1 - weights.unsqueeze(-1) * erase.unsqueeze(-2)).unbind(1))
    return memory * keep + weights.transpose(1, 2) @ add
