"""Score functions: the first step of attention, logits from queries and keys.

Every score function has the one signature of the attention core,

.. code-block:: python

    score(query, key, *parameters, edge_index=None, bias=None) -> logits

with the scorer's own parameters (if any) after ``query`` and ``key`` and the layout given by
keyword, so that any scorer serves both layouts:

* **dense** (``edge_index is None``): every query sees every key.
  ``query`` is ``(..., L_q, D)``, ``key`` is ``(..., L_k, D)``, logits are ``(..., L_q, L_k)``.
* **sparse** (``edge_index`` of shape ``(2, E)``): query ``i`` sees key ``j`` only for an
  edge ``(j, i)``; row 0 holds keys (sources), row 1 queries (targets), as in PyG.
  ``query`` is ``(N_q, *, D)``, ``key`` is ``(N_k, *, D)``, logits are ``(E, *)``, where ``*``
  is any number of shared dimensions, typically heads.

``bias`` is an optional per-pair logit term shaped like the logits (an edge feature's logit,
a relative position, a float mask). A score whose logit passes through a nonlinearity last
(GAT's LeakyReLU) adds it before that nonlinearity, as GAT does with edge features; every
other score adds it to the logit. :mod:`graphmem.attention.scorers` wraps each function in a
module that holds its parameters.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _per_pair(query_term: Tensor, key_term: Tensor, edge_index: Tensor | None) -> tuple[Tensor, Tensor]:
    """Aligns per-query and per-key terms so that adding them gives one value per pair.

    Dense: ``(..., L_q)`` and ``(..., L_k)`` become ``(..., L_q, 1)`` and ``(..., 1, L_k)``.
    Sparse: both are gathered along the edge list into ``(E, *)``.
    """
    if edge_index is None:
        return query_term.unsqueeze(-1), key_term.unsqueeze(-2)
    # index_select rather than advanced indexing: faster both ways on CPU (its backward is an
    # index_add, not an accumulating index_put).
    return query_term.index_select(0, edge_index[1]), key_term.index_select(0, edge_index[0])


def _plus(logits: Tensor, bias: Tensor | None) -> Tensor:
    return logits if bias is None else logits + bias


def dot_score(query: Tensor, key: Tensor, *, edge_index: Tensor | None = None,
              bias: Tensor | None = None) -> Tensor:
    r"""Dot-product score :math:`s(k, q) = k^\top q` (Luong et al. 2015)."""
    if edge_index is None:
        logits = query @ key.transpose(-1, -2)
    else:
        logits = (query.index_select(0, edge_index[1]) * key.index_select(0, edge_index[0])).sum(-1)
    return _plus(logits, bias)


def scaled_dot_score(query: Tensor, key: Tensor, *, edge_index: Tensor | None = None,
                     bias: Tensor | None = None) -> Tensor:
    r"""Scaled dot-product score :math:`s(k, q) = k^\top q / \sqrt{D}` (Vaswani et al. 2017).

    The scaling keeps the logits' variance independent of ``D`` so that softmax does not
    saturate as the feature size grows.
    """
    return _plus(dot_score(query, key, edge_index=edge_index) / math.sqrt(query.size(-1)), bias)


def bilinear_score(query: Tensor, key: Tensor, weight: Tensor, *, edge_index: Tensor | None = None,
                   bias: Tensor | None = None) -> Tensor:
    r"""Bilinear ("general") score :math:`s(k, q) = k^\top W q` (Luong et al. 2015).

    ``weight`` is ``(..., D_k, D_q)`` and broadcasts against the leading dimensions of
    ``query`` (e.g. ``(H, D_k, D_q)`` for one matrix per head in the sparse layout).
    """
    projected = torch.einsum("...q,...kq->...k", query, weight)
    return dot_score(projected, key, edge_index=edge_index, bias=bias)


def _unit(x: Tensor, eps: float) -> Tensor:
    # sqrt(|x|^2 + eps^2) keeps both the value and its gradient finite for an all-zero row,
    # which is how an NTM memory starts.
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps * eps)


def cosine_score(
    query: Tensor,
    key: Tensor,
    beta: Tensor | float = 1.0,
    *,
    edge_index: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    r"""Cosine similarity times key strength, :math:`s(k, q) = \beta\, k^\top q / (\lVert k\rVert \lVert q\rVert)`.

    The content addressing of the Neural Turing Machine (Graves et al. 2014). ``beta`` is a
    number or a tensor with one strength per query, shaped like ``query`` without its last
    dimension. Zero vectors score 0 rather than NaN.
    """
    scores = dot_score(_unit(query, eps), _unit(key, eps), edge_index=edge_index)
    if isinstance(beta, Tensor):
        beta = beta.unsqueeze(-1) if edge_index is None else beta.index_select(0, edge_index[1])
    return _plus(beta * scores, bias)


def additive_score(
    query: Tensor,
    key: Tensor,
    weight: Tensor,
    *,
    edge_index: Tensor | None = None,
    bias: Tensor | None = None,
    activation: Callable[[Tensor], Tensor] = torch.tanh,
) -> Tensor:
    r"""Additive score :math:`s(k, q) = v^\top \tanh(k + q)` (Bahdanau et al. 2015).

    ``query`` and ``key`` are already projected (:math:`Uq`, :math:`Wk`) to the same size
    ``D``; ``weight`` is :math:`v`, shape ``(..., D)`` broadcasting against the shared
    dimensions. Both layouts build one hidden vector per pair, ``(..., L_q, L_k, D)`` dense
    and ``(E, *, D)`` sparse; GAT's score, whose activation comes after the sum of per-node
    terms, never does (:func:`decomposed_additive_score`).
    """
    if edge_index is None:
        hidden = query.unsqueeze(-2) + key.unsqueeze(-3)
        weight = weight.unsqueeze(-2)
    else:
        hidden = query.index_select(0, edge_index[1]) + key.index_select(0, edge_index[0])
    return _plus((activation(hidden) * weight).sum(-1), bias)


def gatv2_score(
    query: Tensor,
    key: Tensor,
    att: Tensor,
    *,
    edge_index: Tensor | None = None,
    bias: Tensor | None = None,
    negative_slope: float = 0.2,
) -> Tensor:
    r"""GATv2's score (Brody et al. 2022), the additive score with LeakyReLU inside:

    .. math::
        s(k_j, q_i) = a^\top \mathrm{LeakyReLU}\big(q_i + k_j\big),

    with :math:`q_i = W_t x_i` and :math:`k_j = W_s x_j` already projected (edge features
    :math:`W_e e_{ji}` go into per-edge keys). Unlike GAT's :func:`decomposed_additive_score`,
    the nonlinearity sits between the sum and :math:`a`, so the score does not split into
    per-node terms: it builds one ``(E, *, D)`` hidden vector per edge (``(..., L_q, L_k, D)``
    dense). Sparse: ``query`` ``(N_q, H, D)``, ``key`` ``(N_k, H, D)``, ``att`` ``(1, H, D)``
    or ``(H, D)``; logits ``(E, H)``.
    """
    return additive_score(query, key, att, edge_index=edge_index, bias=bias,
                          activation=functools.partial(F.leaky_relu, negative_slope=negative_slope))


def decomposed_additive_score(
    query: Tensor | None,
    key: Tensor,
    att_query: Tensor,
    att_key: Tensor,
    *,
    edge_index: Tensor | None = None,
    bias: Tensor | None = None,
    negative_slope: float = 0.2,
) -> Tensor:
    r"""GAT's additive score in its fast, decomposed form (Veličković et al. 2018).

    .. math::
        s(k_j, q_i) = \mathrm{LeakyReLU}\big(a_q^\top q_i + a_k^\top k_j + b_{ij}\big),

    which equals :math:`\mathrm{LeakyReLU}(a^\top [q_i \Vert k_j])` with
    :math:`a = [a_q \Vert a_k]`. The two dot products are computed once per node and only
    their sums are formed per pair. ``att_query``/``att_key`` broadcast against
    ``query``/``key`` (``(1, H, D)`` for ``(N, H, D)`` inputs); ``bias`` (GAT's edge-feature
    logit) is added before the activation. ``query`` may be ``None`` (PyG's bipartite input
    without target features): then only key and bias terms count.
    """
    key_term = (key * att_key).sum(-1)
    if query is None:
        pair = key_term.unsqueeze(-2) if edge_index is None else key_term.index_select(0, edge_index[0])
    else:
        query_term, key_term = _per_pair((query * att_query).sum(-1), key_term, edge_index)
        pair = query_term + key_term
    return F.leaky_relu(_plus(pair, bias), negative_slope)
