"""Score modules: the score functions with their learned parameters, one interface for all.

Each module is called as ``score(query, key, edge_index=None)`` and returns logits like the
functions in :mod:`graphmem.attention.score`. Multi-head inputs put the head dimension at
``-2`` in the sparse layout (``(N, H, D)``) and at ``-3`` in the dense layout
(``(B, H, L, D)``); per-head parameters are laid out to match either.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graphmem.attention.core import NORMALIZERS
from graphmem.attention.score import (
    bilinear_score,
    cosine_score,
    decomposed_additive_score,
    dot_score,
    scaled_dot_score,
)


def _per_head(param: Tensor, edge_index: Tensor | None) -> Tensor:
    """``(H, *)`` parameters as ``(H, *)`` for sparse inputs and ``(H, 1, *)`` for dense ones."""
    return param if edge_index is not None else param.unsqueeze(1)


class Score(nn.Module):
    """Base class of score modules: ``forward(query, key, edge_index=None) -> logits``."""

    def reset_parameters(self) -> None:
        """Score modules without parameters have nothing to reset."""

    def forward(self, query: Tensor, key: Tensor, edge_index: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class DotScore(Score):
    r""":math:`s(k, q) = k^\top q`."""

    def forward(self, query: Tensor, key: Tensor, edge_index: Tensor | None = None) -> Tensor:
        return dot_score(query, key, edge_index)


class ScaledDotScore(Score):
    r""":math:`s(k, q) = k^\top q / \sqrt{D}`."""

    def forward(self, query: Tensor, key: Tensor, edge_index: Tensor | None = None) -> Tensor:
        return scaled_dot_score(query, key, edge_index)


class AdditiveScore(Score):
    r"""GAT's additive score :math:`\mathrm{LeakyReLU}(a_q^\top q_i + a_k^\top k_j)`, decomposed.

    Args:
        channels: feature size ``D`` per head.
        heads: number of heads ``H``.
        negative_slope: LeakyReLU slope.
    """

    def __init__(self, channels: int, heads: int = 1, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.att_query = nn.Parameter(torch.empty(heads, channels))
        self.att_key = nn.Parameter(torch.empty(heads, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.att_query, self.att_key):
            bound = math.sqrt(6.0 / (p.size(-1) + 1))
            nn.init.uniform_(p, -bound, bound)

    def forward(self, query: Tensor, key: Tensor, edge_index: Tensor | None = None) -> Tensor:
        return decomposed_additive_score(
            query,
            key,
            _per_head(self.att_query, edge_index),
            _per_head(self.att_key, edge_index),
            edge_index,
            negative_slope=self.negative_slope,
        )


class BilinearScore(Score):
    r""":math:`s(k, q) = k^\top W_h q` with one ``D x D`` matrix per head, initialised to the identity.

    Starting from the identity makes it start as the dot score and learn an asymmetric form.
    """

    def __init__(self, channels: int, heads: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(heads, channels, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.eye(self.weight.size(-1)).expand_as(self.weight))

    def forward(self, query: Tensor, key: Tensor, edge_index: Tensor | None = None) -> Tensor:
        return bilinear_score(query, key, _per_head(self.weight, edge_index), edge_index)


class CosineScore(Score):
    r""":math:`s(k, q) = \beta_h \cos(k, q)` with a learned strength per head,
    :math:`\beta_h = \mathrm{softplus}(\rho_h) > 0`, initialised to ``beta``.

    For the NTM, where each query brings its own strength, use
    :func:`~graphmem.attention.score.cosine_score` with ``beta`` per query.
    """

    def __init__(self, heads: int = 1, beta: float = 1.0) -> None:
        super().__init__()
        self.initial_beta = beta
        self.raw_beta = nn.Parameter(torch.empty(heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # inverse softplus, so that beta starts at the requested value
        nn.init.constant_(self.raw_beta, math.log(math.expm1(self.initial_beta)))

    @property
    def beta(self) -> Tensor:
        return nn.functional.softplus(self.raw_beta)

    def forward(self, query: Tensor, key: Tensor, edge_index: Tensor | None = None) -> Tensor:
        beta = self.beta if edge_index is not None else self.beta.view(-1, 1, 1)
        return cosine_score(query, key, 1.0, edge_index) * beta


SCORES: tuple[str, ...] = ("additive", "dot", "scaled_dot", "bilinear", "cosine")


def make_score(name: str, channels: int, heads: int = 1, negative_slope: float = 0.2) -> Score:
    """Builds the score module called ``name`` (one of :data:`SCORES`)."""
    if name == "additive":
        return AdditiveScore(channels, heads, negative_slope)
    if name == "dot":
        return DotScore()
    if name == "scaled_dot":
        return ScaledDotScore()
    if name == "bilinear":
        return BilinearScore(channels, heads)
    if name == "cosine":
        return CosineScore(heads)
    raise ValueError(f"unknown score {name!r}; choose one of {SCORES}")


def check_attention_options(score: str, normalizer: str) -> None:
    """Raises ``ValueError`` naming a ``score`` or ``normalizer`` the core does not have, so a
    layer fails when it is built rather than at its first forward."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")
    if normalizer not in NORMALIZERS:
        raise ValueError(f"unknown normalizer {normalizer!r}; choose one of {NORMALIZERS}")
