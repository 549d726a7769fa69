"""GraphTransformerConv: transformer attention over each node's in-neighbours (Shi et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch_geometric.nn.dense.linear import Linear

from graphmem import checks
from graphmem.attention import attention, check_attention_options, combine_heads, make_score
from graphmem.nn.attention_message_passing import (
    AttentionMessagePassing,
    edge_index_of,
    edge_pairs,
    refuse_sparse_tensor_weights,
)

PairTensor = tuple[Tensor, Tensor]


class GraphTransformerConv(AttentionMessagePassing):
    r"""The graph transformer operator of `Masked Label Prediction
    <https://arxiv.org/abs/2009.03509>`_, a drop-in replacement for
    :class:`torch_geometric.nn.TransformerConv`.

    .. math::
        \mathbf{x}'_i = \mathbf{W}_1 \mathbf{x}_i + \big\Vert_{h=1}^{H}
            \sum_{j \in \mathcal{N}(i)} \alpha^h_{ij} \big(\mathbf{W}^h_2 \mathbf{x}_j
            + \mathbf{W}^h_6 \mathbf{e}_{ij}\big),
        \qquad
        \alpha^h_{ij} = \operatorname{softmax}_j\left(
            \frac{(\mathbf{W}^h_3 \mathbf{x}_i)^\top (\mathbf{W}^h_4 \mathbf{x}_j
            + \mathbf{W}^h_6 \mathbf{e}_{ij})}{\sqrt{C}} \right)

    with the heads concatenated or averaged (``concat``) and, with ``beta=True``, a gated
    skip :math:`\mathbf{x}'_i = \beta_i \mathbf{W}_1\mathbf{x}_i + (1 - \beta_i)\mathbf{m}_i`,
    :math:`\beta_i = \sigma(\mathbf{w}_5^\top[\mathbf{W}_1\mathbf{x}_i, \mathbf{m}_i,
    \mathbf{W}_1\mathbf{x}_i - \mathbf{m}_i])`. It is the attention core's sparse layout
    with the scaled-dot score (:func:`graphmem.attention.attention`). Edge features make each
    edge's key and value its own, so the keys are indexed per edge rather than per source node.

    ``score`` swaps the scaled dot for another score of :data:`graphmem.attention.SCORES`
    and ``normalizer`` swaps softmax (those add a ``scorer`` to the parameters).
    Parameter names are PyG's (``lin_query``, ``lin_key``, ``lin_value``, ``lin_edge``,
    ``lin_skip``, ``lin_beta``), so ``load_state_dict`` takes a trained
    :class:`torch_geometric.nn.TransformerConv`. It is a
    :class:`~torch_geometric.nn.MessagePassing` whose plain path reads through the fused,
    memory-light kernel (:class:`~graphmem.nn.attention_message_passing.AttentionMessagePassing`).

    Args:
        in_channels: input size, ``-1`` for lazy initialisation, or a ``(source, target)`` pair.
        out_channels: output size per head, :math:`C`.
        heads: :math:`H`.
        concat: concatenate the heads (``H * C`` outputs) or average them (``C``).
        beta: gate the skip connection (only with ``root_weight``).
        dropout: dropout on the attention weights during training.
        edge_dim: edge feature size, or ``None``.
        bias: biases in the query, key, value and skip projections.
        root_weight: add the projected target features :math:`\mathbf{W}_1\mathbf{x}_i`.
        score: a name of :data:`graphmem.attention.SCORES` (default ``"scaled_dot"``).
        normalizer: a name of :data:`graphmem.attention.NORMALIZERS` (default ``"softmax"``).
        **kwargs: MessagePassing's ``aggr`` (default ``"add"``), ``aggr_kwargs``,
            ``decomposed_layers``.

    Shapes:
        - input: node features :math:`(N, F)` or :math:`((N_s, F_s), (N_t, F_t))`, edge
          indices :math:`(2, E)` or a sparse ``adj_t`` :math:`(N_t, N_s)` (returned as it came
          with the weights, as PyG), edge features :math:`(E, D)`
        - output: :math:`(N_t, H C)` or :math:`(N_t, C)`; with
          ``return_attention_weights=True`` also ``(edge_index, alpha)``, ``alpha``
          :math:`(E, H)` before dropout (as PyG).
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        beta: bool = False,
        dropout: float = 0.0,
        edge_dim: int | None = None,
        bias: bool = True,
        root_weight: bool = True,
        score: str = "scaled_dot",
        normalizer: str = "softmax",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_attention_options(score, normalizer)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.beta = beta and root_weight
        self.root_weight = root_weight
        self.dropout = dropout
        self.edge_dim = edge_dim
        self.score = score
        self.normalizer = normalizer

        src, dst = (in_channels, in_channels) if isinstance(in_channels, int) else in_channels
        hc = heads * out_channels
        self.lin_key = Linear(src, hc, bias=bias)
        self.lin_query = Linear(dst, hc, bias=bias)
        self.lin_value = Linear(src, hc, bias=bias)
        self.lin_edge = Linear(edge_dim, hc, bias=False) if edge_dim is not None else None
        out = hc if concat else out_channels
        # PyG builds the skip projection even without root_weight; keep it for state-dict parity.
        self.lin_skip = Linear(dst, out, bias=bias)
        self.lin_beta = Linear(3 * out, 1, bias=False) if self.beta else None
        self.scorer = make_score(score, out_channels, heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for module in (self.lin_key, self.lin_query, self.lin_value, self.lin_edge, self.lin_skip,
                       self.lin_beta, self.scorer):
            if module is not None:
                module.reset_parameters()

    def forward(
        self,
        x: Tensor | PairTensor,
        edge_index: Any,
        edge_attr: Tensor | None = None,
        return_attention_weights: bool | None = None,
        logits_transform: Callable[[Tensor], Tensor] | None = None,
        return_attention_logits: bool = False,
    ) -> Tensor | tuple[Any, ...]:
        """Runs the layer; see the class docstring for shapes.

        ``logits_transform`` and ``return_attention_logits`` work as in :class:`GATConv`:
        a map applied to the ``(E, H)`` logits before normalization, and those logits
        appended to the return value.
        """
        H, C = self.heads, self.out_channels
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        adj = edge_index
        edge_index, _ = edge_index_of(adj, None)
        if checks.enabled():
            checks.check_features(x_src, "x" if isinstance(x, Tensor) else "x[0] (source features)")
            if x_dst is not x_src:
                checks.check_features(x_dst, "x[1] (target features)")
            self._check_widths(x)
            checks.check_edge_index(edge_index, x_src.size(0), x_dst.size(0))
        if self.lin_edge is not None and edge_attr is None:
            raise ValueError(f"this layer was built with edge_dim={self.edge_dim}; pass edge_attr")
        num_dst = x_dst.size(0)
        query = self.lin_query(x_dst).view(-1, H, C)
        key = self.lin_key(x_src).view(-1, H, C)
        value = self.lin_value(x_src).view(-1, H, C)

        pairs, edge = edge_index, None
        if self.lin_edge is not None:
            edge = self.lin_edge(edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr).view(-1, H, C)
            key = key.index_select(0, edge_index[0]) + edge
            pairs = edge_pairs(edge_index)

        result = attention(query, key, value, self.scorer, self.normalizer, pairs, num_dst,
                           dropout=self.dropout, training=self.training, logits_transform=logits_transform,
                           read=self.reader(edge_index, edge))
        out, alpha, logits = combine_heads(result.out, self.concat), result.normalized, result.logits

        if self.root_weight:
            skip = self.lin_skip(x_dst)
            if self.lin_beta is not None:
                gate = self.lin_beta(torch.cat([out, skip, out - skip], dim=-1)).sigmoid()
                out = gate * skip + (1 - gate) * out
            else:
                out = out + skip
        if return_attention_weights:
            refuse_sparse_tensor_weights(adj)
        if return_attention_logits:
            return (out, (adj, alpha), logits) if return_attention_weights else (out, logits)
        if return_attention_weights:
            return out, (adj, alpha)
        return out

    def extra_repr(self) -> str:
        extra: list[Any] = [self.in_channels, self.out_channels, f"heads={self.heads}"]
        if not self.concat:
            extra.append("concat=False")
        if self.beta:
            extra.append("beta=True")
        if self.edge_dim is not None:
            extra.append(f"edge_dim={self.edge_dim}")
        if not self.root_weight:
            extra.append("root_weight=False")
        if self.score != "scaled_dot":
            extra.append(f"score={self.score!r}")
        if self.normalizer != "softmax":
            extra.append(f"normalizer={self.normalizer!r}")
        return ", ".join(str(e) for e in extra)
