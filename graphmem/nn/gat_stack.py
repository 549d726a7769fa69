"""GATStack: the GAT paper's node-classification network, optionally with evolving attention."""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.nn.evolving import EvolvingAttention
from graphmem.nn.gat_conv import GATConv


class GATStack(nn.Module):
    r"""``num_layers`` :class:`GATConv` layers: heads concatenated with ELU in the hidden layers,
    averaged in the last one (Veličković et al. 2018).

    .. math::
        h^{(0)} = x, \qquad
        h^{(l+1)} = \mathrm{ELU}\Big(\big\Vert_{k=1}^{H} \sum_{j} \alpha^{(l),k}_{ij}
            W^{(l),k} h^{(l)}_j\Big), \qquad
        y_i = \frac1H \sum_{k=1}^{H} \sum_j \alpha^{(L),k}_{ij} W^{(L),k} h^{(L-1)}_j

    with dropout on the input of every layer (one mask for all heads, or with
    ``dropout_per_head=True`` one per head, as the GAT paper's code draws it). With ``evolving=True`` the attention of layer
    :math:`l > 1` is :class:`EvolvingAttention` over the edge list (``layout="sparse"``):
    :math:`A_{\text{in}}^{l} = \alpha \hat A^{l-1} + (1 - \alpha) S^{l}`,
    :math:`\alpha^{(l)} = \operatorname{softmax}(\beta\, \mathrm{ReLU}(W A_{\text{in}}^{l})
    + (1 - \beta) A_{\text{in}}^{l})`, where :math:`W` mixes the :math:`H` heads of each
    edge. Evolving layers all use ``heads`` heads so that the maps line up.

    :class:`~graphmem.models.GATNodeClassifier` and :class:`~graphmem.models.GATLinkPredictor`
    are this stack (attribute ``stack``) with their own constructor arguments.

    Args:
        in_channels: input features.
        hidden_channels: features per head in the hidden layers.
        out_channels: output features (classes).
        num_layers: GAT layers, at least 1.
        heads: heads per hidden layer.
        output_heads: heads of the last layer (averaged); ``None`` for ``heads``. Must equal
            ``heads`` with ``evolving=True``.
        dropout: dropout on every layer's input features.
        attention_dropout: dropout on the attention weights.
        value_dropout: dropout on every layer's projected features before they are summed
            (:class:`GATConv`'s ``value_dropout``; the GAT paper's code uses ``dropout`` here too).
        dropout_per_head: draw the input dropout for every head on its own
            (:class:`GATConv`'s ``input_dropout``) instead of once per layer.
        edge_dim: edge feature size, or ``None``.
        score: attention score of every layer (see :class:`GATConv`).
        normalizer: attention normalizer of every layer.
        evolving: evolve the attention maps from layer to layer.
        alpha: :math:`\alpha`, weight of the previous map.
        beta: :math:`\beta`, weight of the head-mixing convolution.

    Shapes:
        - input: ``x`` :math:`(N, F_{in})`, ``edge_index`` :math:`(2, E)`, ``edge_attr``
          :math:`(E, D)` (optional)
        - output: :math:`(N, F_{out})`; with ``return_attention_weights`` also one
          ``(edge_index, alpha)`` per layer, ``alpha`` of shape :math:`(E', H)`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        heads: int = 8,
        output_heads: int | None = None,
        dropout: float = 0.6,
        attention_dropout: float = 0.6,
        value_dropout: float = 0.0,
        dropout_per_head: bool = False,
        edge_dim: int | None = None,
        score: str = "gat",
        normalizer: str = "softmax",
        evolving: bool = False,
        alpha: float = 0.5,
        beta: float = 0.5,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        output_heads = heads if output_heads is None else output_heads
        if evolving and output_heads != heads:
            raise ValueError(f"evolving attention needs the same heads in every layer; got heads={heads}, "
                             f"output_heads={output_heads}")
        self.dropout = dropout
        self.dropout_per_head = dropout_per_head
        self.convs = nn.ModuleList()
        for layer in range(num_layers):
            last = layer == num_layers - 1
            self.convs.append(GATConv(in_channels if layer == 0 else heads * hidden_channels,
                                      out_channels if last else hidden_channels,
                                      heads=output_heads if last else heads, concat=not last,
                                      dropout=attention_dropout, edge_dim=edge_dim, score=score,
                                      normalizer=normalizer, value_dropout=value_dropout,
                                      input_dropout=dropout if dropout_per_head else 0.0))
        self.evolve = (nn.ModuleList(EvolvingAttention(heads, alpha, beta, layout="sparse")
                                     for _ in range(num_layers - 1)) if evolving else None)
        # each layer initialises itself when built; no second draw here, so that a seeded model
        # gets the same weights as a hand-built stack of the same layers

    def reset_parameters(self) -> None:
        for conv in self.convs:
            conv.reset_parameters()
        for evolve in self.evolve if self.evolve is not None else ():
            evolve.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Runs the stack; see the class docstring for shapes."""
        attention: list[tuple[Tensor, Tensor]] = []
        previous: Tensor | None = None
        last = len(self.convs) - 1
        for layer, conv in enumerate(self.convs):
            if not self.dropout_per_head:
                x = F.dropout(x, self.dropout, self.training)
            transform = None
            if self.evolve is not None and previous is not None:
                transform = partial(self.evolve[layer - 1], previous=previous)
            # ask a layer only for what is used: its logits feed the next evolving layer
            keep_logits = self.evolve is not None and layer < last
            result = conv(x, edge_index, edge_attr, return_attention_weights=return_attention_weights,
                          logits_transform=transform, return_attention_logits=keep_logits)
            if keep_logits:
                result, previous = (result[:-1] if return_attention_weights else result[0]), result[-1]
            if return_attention_weights:
                result, weights = result
                attention.append(weights)
            x = F.elu(result) if layer < last else result
        return (x, attention) if return_attention_weights else x

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}" + (", dropout_per_head=True" if self.dropout_per_head else "")



class GATStackModel(nn.Module):
    """Base of a model built around a :class:`GATStack` in ``self.stack``: exposes its
    ``dropout`` and loads checkpoints written before the layers moved into the stack, renaming
    the keys under the old prefixes of :attr:`renamed_keys` (old prefix -> new prefix)."""

    renamed_keys: dict[str, str] = {}
    stack: GATStack

    @property
    def dropout(self) -> float:
        return self.stack.dropout

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for key in list(state_dict):
            name = key[len(prefix):]
            for old, new in self.renamed_keys.items() if key.startswith(prefix) else ():
                if name.startswith(old):
                    state_dict[prefix + new + name[len(old):]] = state_dict.pop(key)
                    break
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
