"""Seq2SeqAttention: a decoder state attends over the encoder outputs (Bahdanau, Luong)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graphmem.attention import (
    NORMALIZERS,
    additive_score,
    attention,
    bilinear_score,
    dot_score,
    scaled_dot_score,
)

SEQ2SEQ_SCORES: tuple[str, ...] = ("additive", "dot", "scaled_dot", "bilinear")


class Seq2SeqAttention(nn.Module):
    r"""Encoder-decoder attention: the decoder state :math:`q_t` queries the encoder outputs
    :math:`k_j` (the memory the encoder wrote and the decoder only reads).

    .. math::
        \alpha_{t\cdot} = \mathrm{normalize}_{j : m_j = 1}\big(s(k_j, q_t)\big), \qquad
        c_t = \sum_j \alpha_{tj} v_j

    with :math:`v_j = k_j` unless separate values are given, :math:`m` the source padding
    mask, and the score :math:`s` one of

    ==============  =====================================  =======================
    ``score``       :math:`s(k, q)`                        source
    ==============  =====================================  =======================
    ``additive``    :math:`w^\top \tanh(W k + U q)`        Bahdanau et al. 2015
    ``dot``         :math:`k^\top q`                       Luong et al. 2015
    ``scaled_dot``  :math:`k^\top q / \sqrt{D}`            Vaswani et al. 2017
    ``bilinear``    :math:`k^\top W q` ("general")         Luong et al. 2015
    ==============  =====================================  =======================

    ``normalizer`` is the attention core's: ``"softmax"`` (soft attention), ``"hard"`` (the
    decoder reads exactly one source position; straight-through gradients), ``"gumbel"`` or
    ``"gumbel_hard"`` (sampled, temperature ``tau``).

    The key side of the score does not change while decoding, so :meth:`project_keys` can be
    computed once per source and passed to every step as ``projected_keys``.

    Args:
        query_dim: decoder state size :math:`D_q`.
        key_dim: encoder output size :math:`D_k` (``dot``/``scaled_dot`` need :math:`D_q = D_k`).
        score: one of ``"additive"``, ``"dot"``, ``"scaled_dot"``, ``"bilinear"``.
        normalizer: one of ``"softmax"``, ``"hard"``, ``"gumbel"``, ``"gumbel_hard"``.
        attention_dim: hidden size of the additive score (default ``key_dim``).
        tau: Gumbel temperature.

    Shapes:
        - input: ``query`` :math:`(B, D_q)` (one step) or :math:`(B, T, D_q)` (all steps),
          ``keys`` :math:`(B, L, D_k)`, ``values`` :math:`(B, L, D_v)` (optional),
          ``mask`` :math:`(B, L)`, ``True`` at real (non-padding) source positions
        - output: context :math:`(B, D_v)` or :math:`(B, T, D_v)` and weights
          :math:`(B, L)` or :math:`(B, T, L)`
    """

    def __init__(self, query_dim: int, key_dim: int, score: str = "additive", normalizer: str = "softmax",
                 attention_dim: int | None = None, tau: float = 1.0) -> None:
        super().__init__()
        if score not in SEQ2SEQ_SCORES:
            raise ValueError(f"unknown score {score!r}; choose one of {SEQ2SEQ_SCORES}")
        if normalizer not in NORMALIZERS:
            raise ValueError(f"unknown normalizer {normalizer!r}; choose one of {NORMALIZERS}")
        if score in ("dot", "scaled_dot") and query_dim != key_dim:
            raise ValueError(f"score={score!r} compares query and key directly: query_dim ({query_dim}) "
                             f"must equal key_dim ({key_dim}); use 'additive' or 'bilinear'")
        self.query_dim, self.key_dim = query_dim, key_dim
        self.score, self.normalizer, self.tau = score, normalizer, tau
        self.attention_dim = attention_dim or key_dim
        if score == "additive":
            self.key_proj = nn.Linear(key_dim, self.attention_dim, bias=False)
            self.query_proj = nn.Linear(query_dim, self.attention_dim, bias=False)
            self.att = nn.Parameter(torch.empty(self.attention_dim))
        else:
            self.key_proj = self.query_proj = None
            self.register_parameter("att", None)
        if score == "bilinear":
            self.weight = nn.Parameter(torch.empty(key_dim, query_dim))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.key_proj is not None:
            self.key_proj.reset_parameters()
            self.query_proj.reset_parameters()
            bound = 1.0 / math.sqrt(self.attention_dim)
            nn.init.uniform_(self.att, -bound, bound)
        if self.weight is not None:
            if self.key_dim == self.query_dim:
                # starts as the dot score and learns an asymmetric form from there
                with torch.no_grad():
                    self.weight.copy_(torch.eye(self.key_dim))
            else:
                nn.init.xavier_uniform_(self.weight)

    def project_keys(self, keys: Tensor) -> Tensor:
        r"""The key side of the score, :math:`W k` (additive) or :math:`k`; ``(B, L, ·)``."""
        return self.key_proj(keys) if self.key_proj is not None else keys

    def _score(self, query: Tensor, keys: Tensor, edge_index: Tensor | None = None) -> Tensor:
        if self.score == "additive":
            return additive_score(self.query_proj(query), keys, self.att, edge_index)
        if self.score == "bilinear":
            return bilinear_score(query, keys, self.weight, edge_index)
        if self.score == "dot":
            return dot_score(query, keys, edge_index)
        return scaled_dot_score(query, keys, edge_index)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor | None = None, mask: Tensor | None = None,
                projected_keys: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Context vectors and attention weights; see the class docstring for shapes."""
        one_step = query.dim() == keys.dim() - 1
        if one_step:
            query = query.unsqueeze(-2)
        if projected_keys is None:
            projected_keys = self.project_keys(keys)
        context, weights = attention(
            query, projected_keys, keys if values is None else values, score=self._score,
            normalizer=self.normalizer, mask=None if mask is None else mask.unsqueeze(-2), tau=self.tau,
        )
        if one_step:
            return context.squeeze(-2), weights.squeeze(-2)
        return context, weights

    def extra_repr(self) -> str:
        extra = f"{self.query_dim}, {self.key_dim}, score={self.score!r}"
        if self.score == "additive" and self.attention_dim != self.key_dim:
            extra += f", attention_dim={self.attention_dim}"
        if self.normalizer != "softmax":
            extra += f", normalizer={self.normalizer!r}"
        return extra
