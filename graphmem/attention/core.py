"""The attention core: score, normalize, read, in either layout.

Every attention layer in graphmem is this function with different choices:

=========  ==========================================  ===========================
step       choices                                     layout
=========  ==========================================  ===========================
score      additive, decomposed additive (GAT), dot,   dense ``(..., L_q, L_k)`` or
           scaled dot, bilinear, cosine x strength      sparse ``(E, *)``
normalize  softmax, hard (straight-through), gumbel,   masked rows / segments
           gumbel-hard
read       weighted sum of values                      ``dense_read`` / ``sparse_read``
=========  ==========================================  ===========================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from graphmem.attention.hard import gumbel_softmax, hard_softmax
from graphmem.attention.read import dense_read, sparse_read
from graphmem.attention.score import scaled_dot_score
from graphmem.attention.softmax import masked_softmax, segment_softmax

Normalizer = Literal["softmax", "hard", "gumbel", "gumbel_hard"]
NORMALIZERS: tuple[str, ...] = ("softmax", "hard", "gumbel", "gumbel_hard")
ScoreFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def normalize(
    logits: Tensor,
    method: Normalizer = "softmax",
    index: Tensor | None = None,
    num_segments: int | None = None,
    mask: Tensor | None = None,
    dim: int = -1,
    tau: float = 1.0,
) -> Tensor:
    """Turns logits into attention weights.

    ``index`` selects the sparse layout (softmax per target segment); otherwise weights are
    taken along ``dim`` with an optional ``mask``. ``method`` is ``"softmax"`` (soft
    attention), ``"hard"`` (one-hot argmax, straight-through gradients), ``"gumbel"``
    (Gumbel-softmax sample at temperature ``tau``) or ``"gumbel_hard"`` (one-hot sample,
    straight-through).
    """
    if method == "softmax":
        if index is None:
            return masked_softmax(logits, mask, dim)
        return segment_softmax(logits, index, num_segments)
    if method == "hard":
        return hard_softmax(logits, index, num_segments, mask, dim)
    if method in ("gumbel", "gumbel_hard"):
        return gumbel_softmax(logits, tau, method == "gumbel_hard", index, num_segments, mask, dim)
    raise ValueError(f"unknown normalizer {method!r}; choose one of {NORMALIZERS}")


def attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    score: ScoreFn = scaled_dot_score,
    normalizer: Normalizer = "softmax",
    edge_index: Tensor | None = None,
    num_queries: int | None = None,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
    tau: float = 1.0,
) -> tuple[Tensor, Tensor]:
    r"""Generic attention :math:`r_i = \sum_j \mathrm{normalize}(s(k_j, q_i) + b_{ij})\, v_j`.

    Dense layout (``edge_index is None``): ``query`` ``(..., L_q, D)``, ``key``
    ``(..., L_k, D)``, ``value`` ``(..., L_k, D_v)``, optional ``mask`` broadcasting to
    ``(..., L_q, L_k)``; returns ``(..., L_q, D_v)`` and weights ``(..., L_q, L_k)``.

    Sparse layout: ``query`` ``(N_q, *, D)``, ``key`` ``(N_k, *, D)``, ``value``
    ``(N_k, *, D_v)``, ``edge_index`` ``(2, E)`` (keys in row 0, queries in row 1); returns
    ``(N_q, *, D_v)`` and weights ``(E, *)``.

    ``score`` is any function ``(query, key, edge_index) -> logits``, e.g. one from
    :mod:`graphmem.attention.score` or a :class:`~graphmem.attention.Score` module;
    ``bias`` is added to the logits (relative positions, edge features, evolving attention).
    """
    logits = score(query, key, edge_index)
    if bias is not None:
        logits = logits + bias
    if edge_index is None:
        weights = normalize(logits, normalizer, mask=mask, tau=tau)
        weights = F.dropout(weights, dropout, training)
        return dense_read(weights, value), weights
    num_queries = query.size(0) if num_queries is None else num_queries
    weights = normalize(logits, normalizer, index=edge_index[1], num_segments=num_queries, tau=tau)
    weights = F.dropout(weights, dropout, training)
    return sparse_read(weights, value, edge_index, num_queries), weights
