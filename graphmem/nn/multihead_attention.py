"""MultiheadAttention: transformer attention on graphmem's attention core, a drop-in for torch's."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.attention import attention, check_attention_options, combine_heads, make_score

LogitsTransform = Callable[..., Tensor]


def split_mask(mask: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """A torch-style mask as a keep mask (``True`` = may attend) and a finite additive bias.

    Boolean (or byte) masks mark positions *not* to attend with ``True``; float masks are
    added to the logits, and their ``-inf`` entries forbid a position. Splitting the
    ``-inf`` entries off keeps the logits finite, so that they can be mixed and convolved
    (evolving attention) without producing NaN.
    """
    if mask is None:
        return None, None
    if mask.dtype in (torch.bool, torch.uint8):
        return ~mask.bool(), None
    keep = mask != float("-inf")
    return keep, torch.where(keep, mask, torch.zeros_like(mask))


def _merge(a: Tensor | None, b: Tensor | None, op: Callable[[Tensor, Tensor], Tensor]) -> Tensor | None:
    if a is None or b is None:
        return a if b is None else b
    return op(a, b)


class MultiheadAttention(nn.Module):
    r"""Multi-head attention (Vaswani et al. 2017), a drop-in for :class:`torch.nn.MultiheadAttention`.

    .. math::
        \mathrm{MHA}(Q, K, V) = \Big\Vert_{h=1}^{H} \operatorname{normalize}\big(
            s(Q W_Q^h, K W_K^h) + M\big)\, V W_V^h \; W_O,
        \qquad s(q, k) = \frac{q^\top k}{\sqrt{d}},\; d = E / H

    It is :func:`graphmem.attention.attention` in the dense layout: any score of :data:`graphmem.attention.SCORES`
    (``score``) and any normalizer (``normalizer``) can replace scaled dot and softmax;
    :math:`M` holds the masks. Parameters have torch's names and shapes
    (``in_proj_weight`` or ``q/k/v_proj_weight``, ``in_proj_bias``, ``out_proj``,
    ``bias_k``/``bias_v``), so ``load_state_dict`` takes a trained
    :class:`torch.nn.MultiheadAttention`; scores with parameters add a ``scorer``.

    Masks follow torch: ``attn_mask`` ``(L, S)`` or ``(N H, L, S)`` and
    ``key_padding_mask`` ``(N, S)``, boolean (``True`` = do *not* attend) or float (added
    to the logits; ``-inf`` forbids). One difference: a query whose every key is masked
    gets zero weights and a zero read (torch gives NaN).

    Args:
        embed_dim: model size :math:`E`.
        num_heads: :math:`H`; must divide ``embed_dim``.
        dropout: dropout on the attention weights.
        bias: biases in the input and output projections.
        add_bias_kv: append a learned key and value to the key/value sequence.
        add_zero_attn: append an all-zero key and value (after the heads are split).
        kdim, vdim: key and value features (default ``embed_dim``).
        batch_first: inputs are ``(N, L, E)`` rather than ``(L, N, E)``.
        score: a name of :data:`graphmem.attention.SCORES` (default ``"scaled_dot"``).
        normalizer: a name of :data:`graphmem.attention.NORMALIZERS` (default ``"softmax"``).

    Shapes:
        - query :math:`(L, N, E)`, key :math:`(S, N, E_k)`, value :math:`(S, N, E_v)`
          (batch first: :math:`(N, L, E)`; unbatched: :math:`(L, E)`).
        - output :math:`(L, N, E)` and weights :math:`(N, L, S)` averaged over heads, or
          :math:`(N, H, L, S)` with ``average_attn_weights=False`` (``None`` when
          ``need_weights=False``); with ``return_attention_logits`` also the logits
          :math:`(N, H, L, S)` that were normalized (:math:`N = 1` for unbatched input,
          so that maps of successive layers line up).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        score: str = "scaled_dot",
        normalizer: str = "softmax",
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        check_attention_options(score, normalizer)
        self.embed_dim = embed_dim
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.add_zero_attn = add_zero_attn
        self.score = score
        self.normalizer = normalizer

        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim))
        else:
            self.bias_k = self.bias_v = None
        self.scorer = make_score(score, self.head_dim, num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform projections, zero biases, Xavier-normal ``bias_k``/``bias_v`` (as torch)."""
        for weight in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if weight is not None:
                nn.init.xavier_uniform_(weight)
        self.out_proj.reset_parameters()
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        for extra in (self.bias_k, self.bias_v):
            if extra is not None:
                nn.init.xavier_normal_(extra)
        self.scorer.reset_parameters()

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.in_proj_weight is not None:
            weights = self.in_proj_weight.chunk(3)
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        return tuple(F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))

    def _split_heads(self, x: Tensor) -> Tensor:
        """``(N, L, E)`` as ``(N, H, L, E / H)``."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _masks(self, attn_mask: Tensor | None, key_padding_mask: Tensor | None, batch: int,
               num_queries: int) -> tuple[Tensor | None, Tensor | None]:
        """torch's two masks as one keep mask and one bias, each broadcasting to ``(N, H, L, S)``."""
        keep_a, bias_a = split_mask(attn_mask)
        keep_p, bias_p = split_mask(key_padding_mask)

        def per_query(m: Tensor | None) -> Tensor | None:
            if m is None or m.dim() == 2:
                return m
            return m.view(batch, self.num_heads, num_queries, -1)

        def per_key(m: Tensor | None) -> Tensor | None:
            return None if m is None else m.view(batch, 1, 1, -1)

        keep = _merge(per_query(keep_a), per_key(keep_p), torch.logical_and)
        bias = _merge(per_query(bias_a), per_key(bias_p), torch.add)
        return keep, bias

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        logits_transform: LogitsTransform | None = None,
        return_attention_logits: bool = False,
    ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, Tensor]:
        """Attends ``query`` to ``key``/``value``; see the class docstring for shapes.

        ``is_causal`` without ``attn_mask`` builds the causal mask. ``logits_transform`` is
        called as ``logits_transform(logits, mask=keep)`` on the ``(N, H, L, S)`` logits
        (float masks already added) with the boolean keep mask (``True`` = may attend, or
        ``None``) and returns the logits to normalize, e.g. an
        :class:`~graphmem.nn.EvolvingAttention` step.
        """
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if self.batch_first and not unbatched:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        # from here on (L, N, E), as torch's reference computation
        num_queries, batch = query.shape[:2]
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(num_queries, key.size(0), dtype=torch.bool, device=query.device).triu(1)

        q, k, v = self._project(query, key, value)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(1, batch, -1)])
            v = torch.cat([v, self.bias_v.expand(1, batch, -1)])
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        q, k, v = (self._split_heads(x.transpose(0, 1)) for x in (q, k, v))
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(k.shape[:2] + (1, k.size(-1)))], dim=2)
            v = torch.cat([v, v.new_zeros(v.shape[:2] + (1, v.size(-1)))], dim=2)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        keep, bias = self._masks(attn_mask, key_padding_mask, batch, num_queries)

        transform = None if logits_transform is None else functools.partial(logits_transform, mask=keep)
        result = attention(q, k, v, self.scorer, self.normalizer, mask=keep, bias=bias, dropout=self.dropout,
                           training=self.training, logits_transform=transform)
        weights, logits = result.weights, result.logits
        out = self.out_proj(combine_heads(result.out, dim=1))

        out = out.transpose(0, 1) if not self.batch_first and not unbatched else out
        returned: Tensor | None = None
        if need_weights:
            returned = weights.mean(1) if average_attn_weights else weights
        if unbatched:
            out = out.squeeze(0)
            returned = None if returned is None else returned.squeeze(0)
        if return_attention_logits:
            return out, returned, logits
        return out, returned

    def extra_repr(self) -> str:
        parts = [f"{self.embed_dim}", f"num_heads={self.num_heads}"]
        if not self._qkv_same_embed_dim:
            parts.append(f"kdim={self.kdim}, vdim={self.vdim}")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        if self.batch_first:
            parts.append("batch_first=True")
        if self.score != "scaled_dot":
            parts.append(f"score={self.score!r}")
        if self.normalizer != "softmax":
            parts.append(f"normalizer={self.normalizer!r}")
        return ", ".join(parts)
