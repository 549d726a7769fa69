"""GATv2Conv: the dynamic graph attention layer of Brody et al. (2022) on graphmem's attention core."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import zeros

from graphmem import checks
from graphmem.attention import attention, check_attention_options
from graphmem.nn.attention_message_passing import attention_adj, edge_index_of, edge_pairs
from graphmem.nn.gat_conv import GATFamily, PairTensor


class GATv2Conv(GATFamily):
    r"""The dynamic graph attention operator of `How Attentive are Graph Attention Networks?
    <https://arxiv.org/abs/2105.14491>`_, a drop-in replacement for
    :class:`torch_geometric.nn.GATv2Conv`.

    .. math::
        \mathbf{x}'_i = \big\Vert_{h=1}^{H} \sum_{j \in \mathcal{N}(i) \cup \{i\}}
            \alpha^{h}_{ij} \mathbf{W}^{h}_{s} \mathbf{x}_j,
        \qquad
        \alpha^{h}_{ij} = \operatorname{softmax}_j \Big( \mathbf{a}^{h\top} \mathrm{LeakyReLU}\big(
            \mathbf{W}^{h}_{s}\mathbf{x}_j + \mathbf{W}^{h}_{t}\mathbf{x}_i
            + \mathbf{W}^{h}_{e}\mathbf{e}_{ji} \big) \Big)

    with the heads concatenated (``concat=True``) or averaged (``concat=False``);
    :math:`\mathbf{W}_s` is ``lin_l``, :math:`\mathbf{W}_t` is ``lin_r`` (the same module with
    ``share_weights=True``), both with a bias when ``bias=True``, as in PyG.

    It is :func:`graphmem.attention.attention` in the sparse layout with the ``"gatv2"``
    score. Unlike GAT's score, the LeakyReLU comes before :math:`\mathbf{a}`, so the score
    does not split into per-node terms: :func:`~graphmem.attention.gatv2_score` forms one hidden
    vector :math:`\mathbf{W}_s\mathbf{x}_j + \mathbf{W}_t\mathbf{x}_i (+ \mathbf{W}_e\mathbf{e}_{ji})`
    of shape :math:`(E', H, C)` **per edge** (with edge features, each edge's key
    :math:`\mathbf{W}_s\mathbf{x}_j + \mathbf{W}_e\mathbf{e}_{ji}` is its own). After the
    segment softmax over each target's in-edges, the weighted sum of
    :math:`\mathbf{W}_s\mathbf{x}_j` is the core's fused,
    memory-light read on the plain path (no per-edge messages), and PyG's
    :meth:`~torch_geometric.nn.MessagePassing.propagate` when edge masks, hooks, another
    ``aggr`` or ``decomposed_layers`` are in play (see
    :class:`~graphmem.nn.attention_message_passing.AttentionMessagePassing`).

    ``score`` swaps the scorer for any of :data:`graphmem.attention.SCORES`, comparing
    :math:`\mathbf{W}_t\mathbf{x}_i` with :math:`\mathbf{W}_s\mathbf{x}_j` (plus
    :math:`\mathbf{W}_e\mathbf{e}_{ji}`); ``normalizer`` swaps softmax.

    Parameters have the names and shapes of PyG's layer built with the same arguments
    (``lin_l``, ``lin_r``, ``att``, ``lin_edge``, ``res``, ``bias``), so ``load_state_dict``
    works both ways (other scores than ``"gatv2"`` replace ``att`` by a ``scorer``).

    Args:
        in_channels: input size, ``-1`` for lazy initialisation, or a ``(source, target)``
            pair for bipartite graphs.
        out_channels: output size per head, :math:`C`.
        heads: number of heads, :math:`H`.
        concat: concatenate the heads (``H * C`` outputs) or average them (``C``).
        negative_slope: LeakyReLU slope inside the score.
        dropout: dropout on the attention weights during training.
        add_self_loops: replace existing self-loops by one per node.
        edge_dim: edge feature size, or ``None`` to ignore edge features.
        fill_value: edge features of added self-loops (``"mean"``, ``"add"``, ``"max"``,
            ``"min"``, ``"mul"`` of the incoming edges' features, or a constant).
        bias: learn biases (in ``lin_l``/``lin_r`` and on the output).
        share_weights: one projection for source and target (``lin_r is lin_l``).
        residual: add a linear projection of the target features to the output.
        score: a name of :data:`graphmem.attention.SCORES` (default ``"gatv2"``).
        normalizer: a name of :data:`graphmem.attention.NORMALIZERS` (default ``"softmax"``).
        **kwargs: MessagePassing's ``aggr`` (default ``"add"``), ``aggr_kwargs``,
            ``decomposed_layers``.

    Shapes:
        - input: node features :math:`(N, F_{in})` or :math:`((N_s, F_s), (N_t, F_t))`,
          edge indices :math:`(2, E)` or a sparse ``adj_t`` :math:`(N_t, N_s)`, edge features
          :math:`(E, D)` or :math:`(E,)` (optional)
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
        share_weights: bool = False,
        residual: bool = False,
        score: str = "gatv2",
        normalizer: str = "softmax",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_attention_options(score, normalizer)
        self.score = score
        self.normalizer = normalizer
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.add_self_loops = add_self_loops
        self.edge_dim = edge_dim
        self.fill_value = fill_value
        self.residual = residual
        self.share_weights = share_weights

        hc = heads * out_channels
        src_in, dst_in = (in_channels, in_channels) if isinstance(in_channels, int) else in_channels
        self.lin_l = Linear(src_in, hc, bias=bias, weight_initializer="glorot")
        self.lin_r = (self.lin_l if share_weights
                      else Linear(dst_in, hc, bias=bias, weight_initializer="glorot"))
        if score != "gatv2":
            self.register_parameter("att", None)
        self._use_score(score, out_channels, heads, native="gatv2", negative_slope=negative_slope)
        self.lin_edge = (Linear(edge_dim, hc, bias=False, weight_initializer="glorot")
                         if edge_dim is not None else None)

        total_out = hc if concat else out_channels
        if residual:
            self.res = Linear(dst_in, total_out, bias=False, weight_initializer="glorot")
        else:
            self.register_parameter("res", None)
        if bias:
            self.bias = nn.Parameter(torch.empty(total_out))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot projections and attention vector, zero bias (as PyG)."""
        super().reset_parameters()
        for module in (self.lin_l, self.lin_r, self.lin_edge, self.res, self.scorer):
            if module is not None:
                module.reset_parameters()
        zeros(self.bias)

    def _project(self, x: Tensor | PairTensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per-head projections ``(N, H, C)`` of source and target features, and the residual."""
        H, C = self.heads, self.out_channels
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        if x_dst is None:
            raise ValueError("GATv2Conv needs target features; x[1] is None")
        res = self.res(x_dst) if self.res is not None else None
        h_src = self.lin_l(x_src).view(-1, H, C)
        if isinstance(x, Tensor) and self.share_weights:
            h_dst = h_src
        else:
            h_dst = self.lin_r(x_dst).view(-1, H, C)
        return h_src, h_dst, res

    def forward(
        self,
        x: Tensor | PairTensor,
        edge_index: Any,
        edge_attr: Tensor | None = None,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple[Tensor, tuple[Any, Tensor]]:
        """Runs the layer; see the class docstring for shapes."""
        adj = edge_index
        edge_index, size = edge_index_of(adj, None)
        if checks.enabled():
            self._check(x, edge_index, edge_attr, size)
        h_src, h_dst, res = self._project(x)
        num_src, num_dst = self._sizes(h_src, h_dst, size)

        edge_index, edge_attr = self._with_self_loops(edge_index, edge_attr, num_src, num_dst)
        key, pattern = h_src, edge_index
        edge_h = self._edge_features(edge_attr)
        if edge_h is not None:
            key, pattern = h_src.index_select(0, edge_index[0]) + edge_h, edge_pairs(edge_index)
        result = attention(h_dst, key, h_src, self.scorer, self.normalizer, pattern, num_dst,
                           dropout=self.dropout, training=self.training, read=self.reader(edge_index))
        out, alpha = self._output(result.out, res), result.weights
        if return_attention_weights:
            return out, (attention_adj(adj, edge_index, alpha, (num_src, num_dst)), alpha)
        return out

    def extra_repr(self) -> str:
        extra: list[Any] = [self.in_channels, self.out_channels, f"heads={self.heads}"]
        if not self.concat:
            extra.append("concat=False")
        if self.edge_dim is not None:
            extra.append(f"edge_dim={self.edge_dim}")
        if self.share_weights:
            extra.append("share_weights=True")
        if self.score != "gatv2":
            extra.append(f"score={self.score!r}")
        if self.normalizer != "softmax":
            extra.append(f"normalizer={self.normalizer!r}")
        return ", ".join(str(e) for e in extra)
