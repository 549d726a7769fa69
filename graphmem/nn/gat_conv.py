"""GATConv: the graph attention layer of Veličković et al. (2018) on graphmem's attention core."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.utils import add_self_loops as add_loops
from torch_geometric.utils import remove_self_loops

from graphmem import checks
from graphmem.attention import attention, check_attention_options, combine_heads
from graphmem.nn.attention_message_passing import (
    AttentionMessagePassing,
    attention_adj,
    edge_index_of,
)

PairTensor = tuple[Tensor, Tensor | None]


def head_dropout_linear(x: Tensor, lin: Linear, heads: int, p: float, training: bool) -> Tensor:
    r"""``lin(x)`` viewed as ``(N, H, C)``, with dropout on ``x`` drawn for every head on its own
    during training: head :math:`h` reads :math:`(m_h \odot x) W_h^\top / (1 - p)` with
    independent Bernoulli masks :math:`m_h`. The GAT paper's code drops each head's input
    separately like this; one mask shared by all heads (dropout before the layer) is the same
    noise per head but not across heads.

    A dense ``x`` gets one ``(H, N, F)`` draw (``F.dropout`` of ``x`` repeated ``H`` times). A
    sparse one (at most a quarter of its entries nonzero, as bag-of-words features are) gets
    one draw per head and nonzero entry only, since dropping a zero changes nothing: the
    ``(H, N, F)`` tensor would cost ``H`` times the input's memory (400 MB on CiteSeer)."""
    if not (training and p):
        return lin(x).view(x.size(0), heads, -1)
    if torch.nn.parameter.is_lazy(lin.weight):
        lin(x)  # a lazy layer learns its input size on its first call
    weight = lin.weight.view(heads, -1, x.size(-1))  # (H, C, F)
    if 4 * int(torch.count_nonzero(x)) > x.numel():
        dropped = F.dropout(x.expand(heads, *x.shape), p, True)
        return torch.bmm(dropped, weight.transpose(1, 2)).transpose(0, 1)
    rows, columns = x.nonzero().unbind(1)
    values = F.dropout(x[rows, columns].expand(heads, -1), p, True)  # (H, nnz)
    terms = values.unsqueeze(-1) * weight[:, :, columns].transpose(1, 2)  # (H, nnz, C)
    out = terms.new_zeros(heads, x.size(0), weight.size(1)).index_add_(1, rows, terms)
    return out.transpose(0, 1)


class GATFamily(AttentionMessagePassing):
    """The steps GATConv and GATv2Conv share: input checks, self-loops, the edge-feature
    projection ``(E', H, C)`` and the output (heads combined, residual, bias, weights).

    Subclasses set ``heads``, ``out_channels``, ``concat``, ``add_self_loops``, ``fill_value``,
    ``lin_edge`` and ``bias``.
    """

    def _check(self, x: Tensor | PairTensor, edge_index: Tensor, edge_attr: Tensor | None,
               size: tuple[int, int] | None) -> None:
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        checks.check_features(x_src, "x" if isinstance(x, Tensor) else "x[0] (source features)")
        if x_dst is not None and x_dst is not x_src:
            checks.check_features(x_dst, "x[1] (target features)")
        self._check_widths(x)
        num_src, num_dst = self._sizes(x_src, x_dst, size)
        checks.check_edge_index(edge_index, num_src, num_dst)
        if edge_attr is not None:
            checks.check_edge_attr(edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr,
                                   edge_index.size(1))

    @staticmethod
    def _sizes(x_src: Tensor, x_dst: Tensor | None, size: tuple[int, int] | None) -> tuple[int, int]:
        if size is not None:
            return size[0], size[1]
        return x_src.size(0), (x_dst if x_dst is not None else x_src).size(0)

    def _with_self_loops(self, edge_index: Tensor, edge_attr: Tensor | None, num_src: int,
                         num_dst: int) -> tuple[Tensor, Tensor | None]:
        """PyG's self-loops: existing ones replaced by one per node, ``fill_value`` features."""
        if not self.add_self_loops:
            return edge_index, edge_attr
        edge_index, edge_attr = remove_self_loops(edge_index, edge_attr)
        return add_loops(edge_index, edge_attr, fill_value=self.fill_value,
                         num_nodes=min(num_src, num_dst))

    def _edge_features(self, edge_attr: Tensor | None) -> Tensor | None:
        """The projected edge features ``(E', H, C)``, or ``None`` without them."""
        if edge_attr is None or self.lin_edge is None:
            return None
        edge_h = self.lin_edge(edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr)
        return edge_h.view(-1, self.heads, self.out_channels)

    def _output(self, read: Tensor, res: Tensor | None) -> Tensor:
        """Heads of the read ``(N_t, H, C)`` combined, plus residual and bias."""
        out = combine_heads(read, self.concat)
        if res is not None:
            out = out + res
        if self.bias is not None:
            out = out + self.bias
        return out


class GATConv(GATFamily):
    r"""The graph attentional operator of `Graph Attention Networks
    <https://arxiv.org/abs/1710.10903>`_, a drop-in replacement for
    :class:`torch_geometric.nn.GATConv`.

    .. math::
        \mathbf{x}'_i = \big\Vert_{h=1}^{H} \sum_{j \in \mathcal{N}(i) \cup \{i\}}
            \alpha^{h}_{ij} \mathbf{W}^{h} \mathbf{x}_j,
        \qquad
        \alpha^{h}_{ij} = \operatorname{softmax}_j \Big( \mathrm{LeakyReLU}\big(
            \mathbf{a}^{h\top}_{s} \mathbf{W}^{h}\mathbf{x}_j
            + \mathbf{a}^{h\top}_{t} \mathbf{W}^{h}\mathbf{x}_i
            + \mathbf{a}^{h\top}_{e} \mathbf{W}^{h}_{e}\mathbf{e}_{ji} \big) \Big)

    with the heads concatenated (``concat=True``) or averaged (``concat=False``). It is
    :func:`graphmem.attention.attention` in the sparse layout with GAT's decomposed score
    (``"gat"``), segment softmax over each node's in-edges, and a weighted sum of the
    projected neighbours (fused, memory-light read on plain calls).

    ``score`` swaps the scorer for any of :data:`graphmem.attention.SCORES`: e.g. ``"dot"``,
    ``"scaled_dot"``, ``"cosine"`` (learned strength per head), ``"bilinear"``,
    ``"additive"`` (Bahdanau) or ``"gatv2"`` compare :math:`\mathbf{W}\mathbf{x}_i` with
    :math:`\mathbf{W}\mathbf{x}_j` instead (edge features then add
    :math:`\mathbf{a}_e^\top \mathbf{W}_e \mathbf{e}_{ji}` to the logit).
    ``normalizer`` swaps softmax for hard (straight-through), Gumbel or no normalization.

    Parameters have the names and shapes of PyG's layer built with the same arguments, so
    ``load_state_dict`` takes one trained with :class:`torch_geometric.nn.GATConv`. It is a
    :class:`~torch_geometric.nn.MessagePassing` (see
    :class:`~graphmem.nn.attention_message_passing.AttentionMessagePassing`), so ``to_hetero``,
    ``HeteroConv``, explainers, edge masks, hooks and sparse ``adj_t`` work as with PyG's.

    Args:
        in_channels: input size, ``-1`` for lazy initialisation, or a ``(source, target)``
            pair for bipartite graphs.
        out_channels: output size per head, :math:`C`.
        heads: number of heads, :math:`H`.
        concat: concatenate the heads (``H * C`` outputs) or average them (``C``).
        negative_slope: LeakyReLU slope of the additive score.
        dropout: dropout on the attention weights during training.
        add_self_loops: replace existing self-loops by one per node.
        edge_dim: edge feature size, or ``None`` to ignore edge features.
        fill_value: edge features of added self-loops (``"mean"``, ``"add"``, ``"max"``,
            ``"min"``, ``"mul"`` of the incoming edges' features, or a constant).
        bias: learn an additive bias.
        residual: add a linear projection of the target features to the output.
        score: a name of :data:`graphmem.attention.SCORES` (default ``"gat"``).
        normalizer: a name of :data:`graphmem.attention.NORMALIZERS` (default ``"softmax"``).
        value_dropout: dropout on the projected source features that are read,
            :math:`W h_j` in the sum, after the attention scores are computed from them, as the
            GAT paper's code does (it drops a layer's input and, again, its projected features).
            Not in PyG's layer; 0 (the default) keeps the two layers' outputs equal.
        input_dropout: dropout on the input features, drawn for every head on its own (see
            :func:`head_dropout_linear`), as the GAT paper's code does. Not in PyG's layer,
            whose callers drop the input once for all heads; 0 (the default) leaves it to them.
        **kwargs: MessagePassing's ``aggr`` (default ``"add"``), ``aggr_kwargs``,
            ``decomposed_layers``.

    Shapes:
        - input: node features :math:`(N, F_{in})` or :math:`((N_s, F_s), (N_t, F_t))`,
          edge indices :math:`(2, E)` or a sparse ``adj_t`` :math:`(N_t, N_s)`, edge features
          :math:`(E, D)` (optional)
        - output: :math:`(N_t, H C)` or :math:`(N_t, C)`; with
          ``return_attention_weights=True`` also ``(edge_index, alpha)`` with
          ``alpha`` of shape :math:`(E', H)`, self-loops included (for a sparse ``adj_t``,
          ``edge_index`` is an ``adj_t`` of the same layout holding ``alpha``).
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        edge_dim: int | None = None,
        fill_value: float | Tensor | str = "mean",
        bias: bool = True,
        residual: bool = False,
        score: str = "gat",
        normalizer: str = "softmax",
        value_dropout: float = 0.0,
        input_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if score == "additive":
            # configs and checkpoints saved before the core named GAT's score "gat" say "additive"
            # and mean GAT's score; Bahdanau's additive score has other parameters and would not load
            warnings.warn("GATConv(score='additive') is the old name of score='gat' (GAT's decomposed score); "
                          "it builds 'gat'. Write score='gat'.", FutureWarning, stacklevel=2)
            score = "gat"
        check_attention_options(score, normalizer)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.value_dropout = value_dropout
        self.input_dropout = input_dropout
        self.add_self_loops = add_self_loops
        self.edge_dim = edge_dim
        self.fill_value = fill_value
        self.residual = residual
        self.score = score
        self.normalizer = normalizer

        hc = heads * out_channels
        self.lin: Linear | None = None
        self.lin_src: Linear | None = None
        self.lin_dst: Linear | None = None
        if isinstance(in_channels, int):
            self.lin = Linear(in_channels, hc, bias=False, weight_initializer="glorot")
        else:
            self.lin_src = Linear(in_channels[0], hc, bias=False, weight_initializer="glorot")
            self.lin_dst = Linear(in_channels[1], hc, bias=False, weight_initializer="glorot")

        if score != "gat":
            self.register_parameter("att_src", None)
            self.register_parameter("att_dst", None)
        self._use_score(score, out_channels, heads, native="gat", negative_slope=negative_slope)

        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, hc, bias=False, weight_initializer="glorot")
            self.att_edge = nn.Parameter(torch.empty(1, heads, out_channels))
        else:
            self.lin_edge = None
            self.register_parameter("att_edge", None)

        total_out = hc if concat else out_channels
        if residual:
            res_in = in_channels if isinstance(in_channels, int) else in_channels[1]
            self.res = Linear(res_in, total_out, bias=False, weight_initializer="glorot")
        else:
            self.register_parameter("res", None)
        if bias:
            self.bias = nn.Parameter(torch.empty(total_out))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot projections and attention vectors, zero bias (as PyG)."""
        super().reset_parameters()
        for module in (self.lin, self.lin_src, self.lin_dst, self.lin_edge, self.res, self.scorer):
            if module is not None:
                module.reset_parameters()
        glorot(self.att_edge)
        zeros(self.bias)

    def _project(self, x: Tensor | PairTensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Per-head projections ``(N, H, C)`` of source and target features, and the residual."""
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        res = self.res(x_dst) if self.res is not None and x_dst is not None else None
        project = partial(head_dropout_linear, heads=self.heads, p=self.input_dropout, training=self.training)
        if isinstance(x, Tensor) and self.lin is not None:
            h_src = h_dst = project(x, self.lin)
        else:
            h_src = project(x_src, self.lin if self.lin is not None else self.lin_src)
            h_dst = project(x_dst, self.lin if self.lin is not None else self.lin_dst) if x_dst is not None else None
        return h_src, h_dst, res

    def forward(
        self,
        x: Tensor | PairTensor,
        edge_index: Any,
        edge_attr: Tensor | None = None,
        size: tuple[int, int] | None = None,
        return_attention_weights: bool | None = None,
        logits_transform: Callable[[Tensor], Tensor] | None = None,
        return_attention_logits: bool = False,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]] | tuple[Any, ...]:
        """Runs the layer; see the class docstring for shapes.

        ``logits_transform`` maps the pre-normalization logits ``(E', H)`` (self-loops
        included) to the logits that are normalized, e.g. an
        :class:`~graphmem.nn.EvolvingAttention` that mixes in the previous layer's map.
        ``return_attention_logits=True`` appends those (transformed) logits to the return
        value: ``(out, logits)`` or ``(out, (edge_index, alpha), logits)``.
        """
        adj = edge_index
        edge_index, size = edge_index_of(adj, size)
        if checks.enabled():
            self._check(x, edge_index, edge_attr, size)
        h_src, h_dst, res = self._project(x)
        num_src, num_dst = self._sizes(h_src, h_dst, size)

        edge_index, edge_attr = self._with_self_loops(edge_index, edge_attr, num_src, num_dst)
        edge_h = self._edge_features(edge_attr)
        edge_logit = None if edge_h is None else (edge_h * self.att_edge).sum(-1)

        if h_dst is None and self.score != "gat":
            raise ValueError(f"score={self.score!r} needs target features; x[1] is None")
        values = F.dropout(h_src, self.value_dropout, self.training) if self.value_dropout else h_src
        result = attention(h_dst, h_src, values, self.scorer, self.normalizer, edge_index, num_dst,
                           bias=edge_logit, dropout=self.dropout, training=self.training,
                           logits_transform=logits_transform, read=self.reader(edge_index))
        out, alpha, logits = self._output(result.out, res), result.weights, result.logits
        if return_attention_weights:
            weights = (attention_adj(adj, edge_index, alpha, (num_src, num_dst)), alpha)
        if return_attention_logits:
            return (out, weights, logits) if return_attention_weights else (out, logits)
        if return_attention_weights:
            return out, weights
        return out

    def extra_repr(self) -> str:
        extra: list[Any] = [self.in_channels, self.out_channels, f"heads={self.heads}"]
        if not self.concat:
            extra.append("concat=False")
        if self.edge_dim is not None:
            extra.append(f"edge_dim={self.edge_dim}")
        if self.score != "gat":
            extra.append(f"score={self.score!r}")
        if self.normalizer != "softmax":
            extra.append(f"normalizer={self.normalizer!r}")
        if self.input_dropout:
            extra.append(f"input_dropout={self.input_dropout}")
        return ", ".join(str(e) for e in extra)
