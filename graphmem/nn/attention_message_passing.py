r"""The :class:`~torch_geometric.nn.MessagePassing` base of graphmem's graph attention layers.

A graph attention layer computes its weights :math:`\alpha_{eh}` itself and then reads

.. math::
    \mathbf{r}_{ih} = \bigoplus_{e = (j, i)} \alpha_{eh}\,\big(\mathbf{v}_{jh} + \mathbf{u}_{eh}\big)

(:math:`\oplus` the aggregation, a sum by default; :math:`\mathbf{u}` optional per-edge
values). Plain sums go through the fused, memory-light read of :mod:`graphmem.attention`;
whenever PyG's machinery must see the individual messages (an explainer's edge mask, a
message-passing hook, another ``aggr``, ``decomposed_layers``), the same read runs through
:meth:`MessagePassing.propagate` with :meth:`message` below, so PyG applies masks and hooks
exactly as in its own layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import is_sparse, to_edge_index
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

from graphmem.attention import ReadFn, make_score, sparse_read_auto

# Every hook dictionary of MessagePassing; any registered hook must see real messages.
_HOOKS = (
    "_propagate_forward_pre_hooks", "_propagate_forward_hooks",
    "_message_forward_pre_hooks", "_message_forward_hooks",
    "_aggregate_forward_pre_hooks", "_aggregate_forward_hooks",
    "_message_and_aggregate_forward_pre_hooks", "_message_and_aggregate_forward_hooks",
)


class AttentionMessagePassing(MessagePassing):
    """MessagePassing with a fused fast path for attention-weighted sums.

    ``kwargs`` are MessagePassing's (``aggr`` default ``"add"`` as in PyG's attention layers,
    ``aggr_kwargs``, ``decomposed_layers``); ``flow="target_to_source"`` is rejected since
    the layers' scores are defined on source-to-target edges.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("aggr", "add")
        flow = kwargs.get("flow", "source_to_target")
        if flow != "source_to_target":
            raise ValueError(f"{type(self).__name__} supports only flow='source_to_target' "
                             f"(got flow={flow!r})")
        super().__init__(node_dim=0, **kwargs)

    # MessagePassing's repr shows only the channels; keep the layers' own extra_repr.
    __repr__ = torch.nn.Module.__repr__

    def _check_widths(self, x: Tensor | tuple[Tensor, Tensor | None]) -> None:
        """Node features must have ``in_channels`` columns (``-1``: lazy, any width), before a
        projection fails with torch's shape error that names neither the layer nor the input."""
        channels = self.in_channels
        widths = (channels, channels) if isinstance(channels, int) else channels
        inputs = (("x", x),) if isinstance(x, Tensor) else (("x[0] (source features)", x[0]),
                                                            ("x[1] (target features)", x[1]))
        for (name, features), width in zip(inputs, widths):
            if features is not None and width > 0 and features.size(-1) != width:
                raise ValueError(f"{name} has {features.size(-1)} features but {type(self).__name__} "
                                 f"was built for {width}")

    def _fused(self) -> bool:
        """Whether the read may skip PyG's per-edge messages: a plain sum nobody watches."""
        return (not self._explain and self.aggr in ("add", "sum") and self.decomposed_layers == 1
                and not any(getattr(self, name) for name in _HOOKS))

    def _read(self, alpha: Tensor, value: Tensor, edge_index: Tensor, num_dst: int,
              edge_value: Tensor | None = None) -> Tensor:
        """The aggregated messages ``(num_dst, H, C)`` from ``alpha`` ``(E, H)``, source values
        ``(N_s, H, C)`` and optional per-edge values ``(E, H, C)``."""
        if not self._fused():
            if edge_value is not None and self.decomposed_layers > 1:
                # PyG splits only the ``*_j`` inputs into feature chunks, not edge values.
                raise NotImplementedError(f"{type(self).__name__}: decomposed_layers > 1 with edge "
                                          "features")
            return self.propagate(edge_index, x=value, alpha=alpha, edge_value=edge_value,
                                  size=(value.size(0), num_dst))
        if edge_value is None:
            return sparse_read_auto(alpha, value, edge_index, num_dst)
        return sparse_read_auto(alpha, value.index_select(0, edge_index[0]) + edge_value,
                                edge_pairs(edge_index), num_dst)

    def reader(self, edge_index: Tensor, edge_value: Tensor | None = None) -> ReadFn:
        """The layer's read as :func:`graphmem.attention.attention` calls it.

        It always sums over the graph's edges ``edge_index`` (what PyG's machinery must see),
        whatever pattern the score used: a score over per-edge keys runs on
        :func:`edge_pairs`, which has the same targets, so the weights line up.
        """
        def read(alpha: Tensor, value: Tensor, _pattern: Tensor, num_dst: int) -> Tensor:
            return self._read(alpha, value, edge_index, num_dst, edge_value)
        return read

    def _use_score(self, name: str, channels: int, heads: int, native: str, **options: Any) -> None:
        """Builds the score ``name`` (:func:`graphmem.attention.make_score`) as the layer's ``scorer``.

        The layer's own score (``native``: ``"gat"`` for GATConv) keeps its parameters at the
        top of the layer under their own names, which are PyG's (``att_src``, ``att``), so that
        state dicts move between PyG's layer and this one; the module is then kept outside the
        submodules, since its parameters are registered already. Any other score is a
        submodule, ``scorer.*`` in the state dict.
        """
        # The score draws its initial values when built; the layer's reset_parameters draws
        # them again, in PyG's order. Building it on a forked generator keeps the global one
        # where PyG's layer would leave it, so a seed gives PyG's initial weights.
        with torch.random.fork_rng(devices=[]):
            score = make_score(name, channels, heads, **options)
        if name != native:
            self.scorer = score
            return
        for param_name, param in score.named_parameters():
            self.register_parameter(param_name, param)
        object.__setattr__(self, "scorer", score)

    def message(self, x_j: Tensor, alpha: Tensor, edge_value: Tensor | None = None) -> Tensor:
        """One message per edge, :math:`\\alpha_{eh}(\\mathbf{v}_{jh} + \\mathbf{u}_{eh})`."""
        if edge_value is not None:
            x_j = x_j + edge_value
        return alpha.unsqueeze(-1) * x_j


def edge_pairs(edge_index: Tensor) -> Tensor:
    """``(2, E)`` (edge, target) pairs: the pattern that reads per-edge keys or values, each
    edge its own source."""
    return torch.stack([torch.arange(edge_index.size(1), device=edge_index.device), edge_index[1]])


def edge_index_of(adj: Any, size: tuple[int, int] | None) -> tuple[Tensor, tuple[int, int] | None]:
    """``(2, E)`` source-to-target indices and ``(N_s, N_t)`` of an ``edge_index`` or of a
    sparse ``adj_t`` ``(N_t, N_s)`` (torch COO/CSR or torch_sparse), as PyG reads it."""
    if not is_sparse(adj):
        return adj, size
    (target, source), _ = to_edge_index(adj)
    return torch.stack([source, target]), (adj.size(1), adj.size(0))


def refuse_sparse_tensor_weights(adj: Any) -> None:
    """PyG returns the weights of a torch_sparse ``SparseTensor`` as its values in the
    tensor's own edge order, which this code cannot reproduce without torch_sparse."""
    if isinstance(adj, SparseTensor):
        raise NotImplementedError("return_attention_weights with a torch_sparse SparseTensor adj_t; "
                                  "pass a torch.sparse tensor or an edge_index")


def attention_adj(adj: Any, edge_index: Tensor, alpha: Tensor, size: tuple[int, int]) -> Any:
    """The attention weights ``(E, H)`` as an ``adj_t`` of ``adj``'s layout (PyG's return
    value for sparse input), or ``edge_index`` itself for dense input."""
    if not is_sparse(adj):
        return edge_index
    refuse_sparse_tensor_weights(adj)
    build = to_torch_csr_tensor if adj.layout == torch.sparse_csr else to_torch_coo_tensor
    return build(edge_index.flip(0), alpha, size=(size[1], size[0]))
