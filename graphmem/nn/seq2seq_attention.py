"""Seq2SeqAttention: a decoder state attends over the encoder outputs (Bahdanau, Luong)."""

from __future__ import annotations

from torch import Tensor, nn

from graphmem.attention import attention, check_attention_options, make_score


class Seq2SeqAttention(nn.Module):
    r"""Encoder-decoder attention: the decoder state :math:`q_t` queries the encoder outputs
    :math:`k_j` (the memory the encoder wrote and the decoder only reads).

    .. math::
        \alpha_{t\cdot} = \mathrm{normalize}_{j : m_j = 1}\big(s(k_j, q_t)\big), \qquad
        c_t = \sum_j \alpha_{tj} v_j

    with :math:`v_j = k_j` unless separate values are given, :math:`m` the source padding
    mask, and the score :math:`s` any of :data:`graphmem.attention.SCORES`, the classic ones being

    ==============  =====================================  =======================
    ``score``       :math:`s(k, q)`                        source
    ==============  =====================================  =======================
    ``additive``    :math:`w^\top \tanh(W k + U q)`        Bahdanau et al. 2015
    ``dot``         :math:`k^\top q`                       Luong et al. 2015
    ``scaled_dot``  :math:`k^\top q / \sqrt{D}`            Vaswani et al. 2017
    ``bilinear``    :math:`k^\top W q` ("general")         Luong et al. 2015
    ==============  =====================================  =======================

    (``cosine``, ``gat``, ``gatv2`` work too; scores that compare query and key directly need
    :math:`D_q = D_k`). It is :func:`graphmem.attention.attention` in the dense layout;
    ``normalizer`` is the core's: ``"softmax"`` (soft attention), ``"hard"`` (the decoder reads
    exactly one source position; straight-through gradients), ``"gumbel"`` or
    ``"gumbel_hard"`` (sampled, temperature ``tau``), ``"none"``.

    The key side of the score does not change while decoding, so :meth:`project_keys` can be
    computed once per source and passed to every step as ``projected_keys``.

    Args:
        query_dim: decoder state size :math:`D_q`.
        key_dim: encoder output size :math:`D_k`.
        score: a name of :data:`graphmem.attention.SCORES` (default ``"additive"``).
        normalizer: a name of :data:`graphmem.attention.NORMALIZERS` (default ``"softmax"``).
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
        check_attention_options(score, normalizer)
        self.query_dim, self.key_dim = query_dim, key_dim
        self.score, self.normalizer, self.tau = score, normalizer, tau
        self.attention_dim = attention_dim or key_dim
        self.scorer = make_score(score, query_dim, key_channels=key_dim, hidden_channels=self.attention_dim)

    def reset_parameters(self) -> None:
        self.scorer.reset_parameters()

    def project_keys(self, keys: Tensor) -> Tensor:
        r"""The key side of the score, :math:`W k` (additive) or :math:`k`; ``(B, L, ·)``."""
        return self.scorer.project_key(keys)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor | None = None, mask: Tensor | None = None,
                projected_keys: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Context vectors and attention weights; see the class docstring for shapes."""
        one_step = query.dim() == keys.dim() - 1
        if one_step:
            query = query.unsqueeze(-2)
        if projected_keys is None:
            projected_keys = self.project_keys(keys)
        context, weights, *_ = attention(
            query, projected_keys, keys if values is None else values, score=self.scorer.logits,
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
