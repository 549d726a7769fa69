"""The attention core: score, normalize, read, in either layout.

Every attention layer in graphmem is :func:`attention` with different choices:

=========  ==========================================  ===========================
step       choices                                     layout
=========  ==========================================  ===========================
score      any of :data:`~graphmem.attention.SCORES`   dense ``(..., L_q, L_k)`` or
           (or any callable with the score signature)  sparse ``(E, *)``
normalize  softmax, hard (straight-through), gumbel,   masked rows / segments
           gumbel-hard, none (the logits themselves)
read       weighted sum of values                      ``dense_read`` /
                                                       ``sparse_read_auto`` (fused when large)
=========  ==========================================  ===========================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple, Protocol

import torch.nn.functional as F
from torch import Tensor

from graphmem.attention.hard import gumbel_softmax, hard_softmax
from graphmem.attention.read import dense_read, sparse_read_auto
from graphmem.attention.registry import NORMALIZERS, check_attention_options
from graphmem.attention.score import scaled_dot_score
from graphmem.attention.softmax import masked_softmax, segment_softmax

Normalizer = Literal["softmax", "hard", "gumbel", "gumbel_hard", "none"]


class ScoreFn(Protocol):
    """The one score signature: ``score(query, key, *, edge_index=None, bias=None) -> logits``."""

    def __call__(self, query: Tensor, key: Tensor, *, edge_index: Tensor | None = None,
                 bias: Tensor | None = None) -> Tensor: ...


ReadFn = Callable[[Tensor, Tensor, Tensor, int], Tensor]
"""A sparse read ``(weights (E, *), value (N_k, *, D_v), edge_index, num_queries) -> (N_q, *, D_v)``."""


class AttentionOutput(NamedTuple):
    """What :func:`attention` computed."""

    out: Tensor | None
    """The read, ``(..., L_q, D_v)`` dense or ``(N_q, *, D_v)`` sparse; ``None`` without a value."""
    weights: Tensor
    """The weights that were read (after dropout), ``(..., L_q, L_k)`` or ``(E, *)``."""
    logits: Tensor
    """The logits that were normalized (after ``scale``, ``bias`` and ``logits_transform``)."""
    normalized: Tensor
    """The weights before dropout."""


def normalize(
    logits: Tensor,
    method: Normalizer = "softmax",
    index: Tensor | None = None,
    num_segments: int | None = None,
    mask: Tensor | None = None,
    dim: int = -1,
    tau: float = 1.0,
) -> Tensor:
    r"""Turns logits into attention weights.

    ``index`` selects the sparse layout (weights per target segment); otherwise weights are
    taken along ``dim`` with an optional boolean ``mask`` (``True`` = may attend). ``method``
    is ``"softmax"`` (soft attention), ``"hard"`` (one-hot argmax, straight-through
    gradients), ``"gumbel"`` (Gumbel-softmax sample at temperature ``tau``), ``"gumbel_hard"``
    (one-hot sample, straight-through) or ``"none"``: :math:`\alpha = s`, the logits
    themselves with masked entries set to 0 (linear attention, e.g. a memory network's
    linear start).
    """
    check_attention_options(normalizer=method)
    if method == "none":
        return logits if mask is None else logits.masked_fill(~mask, 0.0)
    if method == "softmax":
        if index is None:
            return masked_softmax(logits, mask, dim)
        return segment_softmax(logits, index, num_segments)
    if method == "hard":
        return hard_softmax(logits, index, num_segments, mask, dim)
    return gumbel_softmax(logits, tau, method == "gumbel_hard", index, num_segments, mask, dim)


def attention(
    query: Tensor | None,
    key: Tensor,
    value: Tensor | None,
    score: ScoreFn = scaled_dot_score,
    normalizer: Normalizer = "softmax",
    edge_index: Tensor | None = None,
    num_queries: int | None = None,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    scale: float | Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
    tau: float = 1.0,
    logits_transform: Callable[[Tensor], Tensor] | None = None,
    read: ReadFn | None = None,
) -> AttentionOutput:
    r"""Generic attention :math:`r_i = \sum_j \mathrm{normalize}_j\big(\lambda\, s(k_j, q_i; b_{ij})\big)\, v_j`.

    Dense layout (``edge_index is None``): ``query`` ``(..., L_q, D)``, ``key``
    ``(..., L_k, D)``, ``value`` ``(..., L_k, D_v)``, optional ``mask`` broadcasting to
    ``(..., L_q, L_k)``; returns ``out`` ``(..., L_q, D_v)`` and weights ``(..., L_q, L_k)``.

    Sparse layout: ``query`` ``(N_q, *, D)``, ``key`` ``(N_k, *, D)`` (or one key per edge,
    with ``edge_index`` a pattern such as ``edge_pairs``), ``value`` ``(N_k, *, D_v)``,
    ``edge_index`` ``(2, E)`` (keys in row 0, queries in row 1); returns ``out``
    ``(N_q, *, D_v)`` and weights ``(E, *)``. The read is :func:`sparse_read_auto`, which takes
    the fused, memory-light kernel when the per-edge messages would be large; ``read``
    replaces it (a message-passing layer's read, which may hand the messages to PyG).
    ``value=None`` skips the read (``out`` is ``None``): for a caller that reads with weights it
    changes first, as the NTM's location addressing does with its content weights.

    Args:
        score: any callable with the score signature, ``score(query, key, edge_index=,
            bias=)``: a function of :mod:`graphmem.attention.score` without parameters or a
            :class:`~graphmem.attention.Score` module (:func:`make_score`).
        normalizer: a name of :data:`NORMALIZERS`.
        num_queries: :math:`N_q` in the sparse layout (default ``query.size(0)``; needed when
            ``query`` is ``None``, GAT's bipartite input without target features).
        mask: dense boolean keep mask.
        bias: per-pair logit term :math:`b_{ij}` passed to the score (edge-feature logits,
            relative positions, float masks), logits-shaped.
        scale: :math:`\lambda`, an inverse temperature multiplying the logits: a number or a
            tensor broadcasting against them (a Hopfield layer's :math:`\beta`, an NTM head's
            key strength per query, ``(..., L_q, 1)``); ``None`` is 1.
        dropout, training: dropout on the weights, applied in training only.
        tau: Gumbel temperature.
        logits_transform: maps the logits to the logits that are normalized (evolving
            attention mixes in the previous layer's map here).

    Returns:
        :class:`AttentionOutput` ``(out, weights, logits, normalized)``.
    """
    logits = score(query, key, edge_index=edge_index, bias=bias)
    if scale is not None:
        logits = scale * logits
    if logits_transform is not None:
        logits = logits_transform(logits)
    if edge_index is None:
        normalized = normalize(logits, normalizer, mask=mask, tau=tau)
        weights = F.dropout(normalized, dropout, training)
        out = None if value is None else dense_read(weights, value)
        return AttentionOutput(out, weights, logits, normalized)
    if num_queries is None:
        if query is None:
            raise ValueError("attention() needs num_queries in the sparse layout when query is None")
        num_queries = query.size(0)
    normalized = normalize(logits, normalizer, index=edge_index[1], num_segments=num_queries, tau=tau)
    weights = F.dropout(normalized, dropout, training)
    out = None if value is None else (sparse_read_auto if read is None else read)(weights, value, edge_index,
                                                                              num_queries)
    return AttentionOutput(out, weights, logits, normalized)
