"""Score modules: each score function with the parameters it learns, one interface for all.

Every module is called as ``score(query, key, edge_index=None, bias=None)`` (the signature of
:mod:`graphmem.attention.score`) and returns logits. Multi-head inputs put the head dimension
at ``-2`` in the sparse layout (``(N, H, D)``) and at ``-3`` in the dense layout
(``(B, H, L, D)``); per-head parameters are laid out to match either, and with one head the
inputs may have no head dimension at all (``(N, D)``, ``(B, L, D)``).

All modules are built with ``(channels, heads=1, key_channels=None, ...)``: ``channels`` is the
query size per head and ``key_channels`` the key size (default ``channels``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graphmem.attention.score import (
    additive_score,
    bilinear_score,
    cosine_score,
    decomposed_additive_score,
    dot_score,
    gatv2_score,
    scaled_dot_score,
)


def _per_head(param: Tensor, edge_index: Tensor | None) -> Tensor:
    """``(H, *)`` parameters as ``(H, *)`` for sparse inputs and ``(H, 1, *)`` for dense ones."""
    return param if edge_index is not None else param.unsqueeze(1)


def _glorot(param: Tensor) -> None:
    # PyG's glorot (over the last two dimensions), so that GAT's vectors start as in PyG
    bound = math.sqrt(6.0 / (param.size(-2) + param.size(-1)))
    nn.init.uniform_(param, -bound, bound)


class Score(nn.Module):
    r"""Base class of score modules: ``forward(query, key, edge_index=None, bias=None) -> logits``.

    A score may split into a key side that does not depend on the query,
    :meth:`project_key`, and :meth:`logits` of the projected keys, so that keys read by many
    queries (an encoder's outputs at every decoding step) are projected once:
    ``score(q, k) == score.logits(q, score.project_key(k))``.
    """

    def __init__(self, channels: int, heads: int = 1, key_channels: int | None = None) -> None:
        super().__init__()
        self.channels, self.heads = channels, heads
        self.key_channels = channels if key_channels is None else key_channels

    def reset_parameters(self) -> None:
        """Score modules without parameters have nothing to reset."""

    def project_key(self, key: Tensor, edge_index: Tensor | None = None) -> Tensor:
        """The key side of the score; the keys themselves unless a subclass projects them."""
        return key

    def logits(self, query: Tensor, key: Tensor, *, edge_index: Tensor | None = None,
               bias: Tensor | None = None) -> Tensor:
        """Logits of ``query`` against keys already passed through :meth:`project_key`."""
        raise NotImplementedError

    def forward(self, query: Tensor, key: Tensor, *, edge_index: Tensor | None = None,
                bias: Tensor | None = None) -> Tensor:
        """Logits ``(..., L_q, L_k)`` (dense) or ``(E, *)`` (sparse); see the module docstring."""
        return self.logits(query, self.project_key(key, edge_index), edge_index=edge_index, bias=bias)

    def _require_equal_sizes(self, name: str) -> None:
        if self.key_channels != self.channels:
            raise ValueError(f"score={name!r} compares query and key directly: the query size "
                             f"({self.channels}) must equal the key size ({self.key_channels}); "
                             "use 'additive', 'gat' or 'bilinear'")

    def extra_repr(self) -> str:
        sizes = f"{self.channels}" if self.key_channels == self.channels else f"{self.channels}, {self.key_channels}"
        return f"{sizes}, heads={self.heads}"


class DotScore(Score):
    r""":math:`s(k, q) = k^\top q` (:func:`~graphmem.attention.dot_score`)."""

    _function = staticmethod(dot_score)

    def __init__(self, channels: int, heads: int = 1, key_channels: int | None = None) -> None:
        super().__init__(channels, heads, key_channels)
        self._require_equal_sizes(self._function.__name__.removesuffix("_score"))

    def logits(self, query: Tensor, key: Tensor, *, edge_index: Tensor | None = None,
               bias: Tensor | None = None) -> Tensor:
        return self._function(query, key, edge_index=edge_index, bias=bias)


class ScaledDotScore(DotScore):
    r""":math:`s(k, q) = k^\top q / \sqrt{D}` (:func:`~graphmem.attention.scaled_dot_score`)."""

    _function = staticmethod(scaled_dot_score)


class GATScore(Score):
    r"""GAT's score :math:`\mathrm{LeakyReLU}(a_t^{h\top} q_i + a_s^{h\top} k_j + b_{ij})`, decomposed
    (:func:`~graphmem.attention.decomposed_additive_score`).

    The vectors are PyG's ``att_dst`` (query side, :math:`a_t`) and ``att_src`` (key side,
    :math:`a_s`), shape ``(1, H, C)``, Glorot-initialised as in PyG.

    Args:
        channels: query size ``C`` per head; ``key_channels`` the key size.
        heads: ``H``.
        negative_slope: LeakyReLU slope.
    """

    def __init__(self, channels: int, heads: int = 1, key_channels: int | None = None,
                 negative_slope: float = 0.2) -> None:
        super().__init__(channels, heads, key_channels)
        self.negative_slope = negative_slope
        self.att_src = nn.Parameter(torch.empty(1, heads, self.key_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.att_src)
        _glorot(self.att_dst)

    def logits(self, query: Tensor | None, key: Tensor, *, edge_index: Tensor | None = None,
               bias: Tensor | None = None) -> Tensor:
        return decomposed_additive_score(
            query, key, _per_head(self.att_dst[0], edge_index), _per_head(self.att_src[0], edge_index),
            edge_index=edge_index, bias=bias, negative_slope=self.negative_slope,
        )


class GATv2Score(Score):
    r"""GATv2's score :math:`a^{h\top} \mathrm{LeakyReLU}(q_i + k_j) + b_{ij}`
    (:func:`~graphmem.attention.gatv2_score`), ``att`` of shape ``(1, H, C)`` as in PyG."""

    def __init__(self, channels: int, heads: int = 1, key_channels: int | None = None,
                 negative_slope: float = 0.2) -> None:
        super().__init__(channels, heads, key_channels)
        self._require_equal_sizes("gatv2")
        self.negative_slope = negative_slope
        self.att = nn.Parameter(torch.empty(1, heads, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.att)

    def logits(self, query: Tensor, key: Tensor, *, edge_index: Tensor | None = None,
               bias: Tensor | None = None) -> Tensor:
        return gatv2_score(query, key, _per_head(self.att[0], edge_index), edge_index=edge_index,
                           bias=bias, negative_slope=self.negative_slope)


def _project(x: Tensor, weight: Tensor, edge_index: Tensor | None) -> Tensor:
    """``x`` through one ``(A, D)`` matrix per head (``weight`` ``(H, A, D)``) in either layout."""
    if edge_index is None:
        return x @ weight.transpose(-1, -2)  # (..., H, L, D) @ (H, D, A)
    return (x.unsqueeze(-2) @ weight.transpose(-1, -2)).squeeze(-2)  # (N, H, 1, D) @ (H, D, A)


class AdditiveScore(Score):
    r"""Bahdanau's additive score :math:`s(k, q) = v_h^\top \tanh(W_h k + U_h q) + b`
    (:func:`~graphmem.attention.additive_score`).

    :math:`U_h` (``query_weight``, ``(H, A, C)``), :math:`W_h` (``key_weight``,
    ``(H, A, C_k)``) and :math:`v_h` (``att``, ``(H, A)``) are initialised like
    :class:`torch.nn.Linear` (uniform in :math:`\pm 1/\sqrt{\text{fan-in}}`). The key side
    :math:`W_h k` is :meth:`project_key`.

    Args:
        channels: query size ``C`` per head; ``key_channels`` the key size.
        heads: ``H``.
        hidden_channels: ``A`` (default ``key_channels``).
    """

    def __init__(self, channels: int, heads: int = 1, key_channels: int | None = None,
                 hidden_channels: int | None = None) -> None:
        super().__init__(channels, heads, key_channels)
        self.hidden_channels = self.key_channels if hidden_channels is None else hidden_channels
        self.query_weight = nn.Parameter(torch.empty(heads, self.hidden_channels, channels))
        self.key_weight = nn.Parameter(torch.empty(heads, self.hidden_channels, self.key_channels))
        self.att = nn.Parameter(torch.empty(heads, self.hidden_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for param in (self.query_weight, self.key_weight, self.att):
            bound = 1.0 / math.sqrt(param.size(-1))
            nn.init.uniform_(param, -bound, bound)

    def project_key(self, key: Tensor, edge_index: Tensor | None = None) -> Tensor:
        return _project(key, self.key_weight, edge_index)

    def logits(self, query: Tensor, key: Tensor, *, edge_index: Tensor | None = None,
               bias: Tensor | None = None) -> Tensor:
        return additive_score(_project(query, self.query_weight, edge_index), key,
                              _per_head(self.att, edge_index), edge_index=edge_index, bias=bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_channels={self.hidden_channels}"


class BilinearScore(Score):
    r""":math:`s(k, q) = k^\top W_h q` with one ``C_k x C`` matrix per head
    (:func:`~graphmem.attention.bilinear_score`).

    Square matrices start as the identity, so the score starts as the dot score and learns an
    asymmetric form; others are Xavier-uniform.
    """

    def __init__(self, channels: int, heads: int = 1, key_channels: int | None = None) -> None:
        super().__init__(channels, heads, key_channels)
        self.weight = nn.Parameter(torch.empty(heads, self.key_channels, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.key_channels != self.channels:
            nn.init.xavier_uniform_(self.weight)
            return
        with torch.no_grad():
            self.weight.copy_(torch.eye(self.channels).expand_as(self.weight))

    def logits(self, query: Tensor, key: Tensor, *, edge_index: Tensor | None = None,
               bias: Tensor | None = None) -> Tensor:
        return bilinear_score(query, key, _per_head(self.weight, edge_index), edge_index=edge_index,
                              bias=bias)


class CosineScore(Score):
    r""":math:`s(k, q) = \beta_h \cos(k, q)` with a learned strength per head,
    :math:`\beta_h = \mathrm{softplus}(\rho_h) > 0`, initialised to ``beta``
    (:func:`~graphmem.attention.cosine_score`).

    Where each query brings its own strength (the NTM's key strength), use
    :func:`~graphmem.attention.cosine_score` itself, which takes ``beta`` per query.
    """

    def __init__(self, channels: int, heads: int = 1, key_channels: int | None = None,
                 beta: float = 1.0) -> None:
        super().__init__(channels, heads, key_channels)
        self._require_equal_sizes("cosine")
        self.initial_beta = beta
        self.raw_beta = nn.Parameter(torch.empty(heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # inverse softplus, so that beta starts at the requested value
        nn.init.constant_(self.raw_beta, math.log(math.expm1(self.initial_beta)))

    @property
    def beta(self) -> Tensor:
        return nn.functional.softplus(self.raw_beta)

    def logits(self, query: Tensor, key: Tensor, *, edge_index: Tensor | None = None,
               bias: Tensor | None = None) -> Tensor:
        beta = self.beta if edge_index is not None else self.beta.view(-1, 1, 1)
        logits = cosine_score(query, key, edge_index=edge_index) * beta
        return logits if bias is None else logits + bias
