"""A GAT encoder with a pair decoder for link prediction (graph auto-encoder style)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.nn import GATConv

DECODERS = ("dot", "mlp")


class GATLinkPredictor(nn.Module):
    r"""Encodes nodes with ``num_layers`` GAT layers and scores a node pair from its two codes.

    .. math::
        Z = \mathrm{GAT}_{\text{mean}}\big(\mathrm{ELU}(\mathrm{GAT}_{\Vert}(\dots X \dots))\big),
        \qquad
        s_{ij} = z_i^\top z_j \;\; (\texttt{dot}) \quad\text{or}\quad
        s_{ij} = \mathrm{MLP}(z_i \odot z_j) \;\; (\texttt{mlp})

    :math:`\sigma(s_{ij})` is the probability that :math:`(i, j)` is an edge. The dot decoder is
    the graph auto-encoder's (Kipf & Welling, 2016) and symmetric; the MLP over the Hadamard
    product is symmetric too. Hidden layers concatenate ``heads`` heads of
    ``hidden_channels // heads`` channels; the last layer averages ``heads`` heads of
    ``out_channels``.

    Args:
        in_channels: node features.
        hidden_channels: width of the hidden layers.
        out_channels: width of the node codes :math:`z`.
        heads: attention heads per layer.
        num_layers: GAT layers (at least 1).
        dropout: dropout on the layer inputs.
        attention_dropout: dropout on the attention weights.
        decoder: ``dot`` or ``mlp``.
        score: attention score of every layer (see :class:`~graphmem.nn.GATConv`).

    Shapes:
        - :meth:`encode`: ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)` -> :math:`(N, D)`
        - :meth:`decode`: ``z`` :math:`(N, D)`, ``pairs`` :math:`(2, P)` -> :math:`(P,)` logits
        - ``forward(x, edge_index, pairs)`` -> :math:`(P,)` logits
    """

    def __init__(self, in_channels: int, hidden_channels: int = 256, out_channels: int = 64, heads: int = 4,
                 num_layers: int = 2, dropout: float = 0.5, attention_dropout: float = 0.0,
                 decoder: str = "dot", score: str = "additive") -> None:
        super().__init__()
        if hidden_channels % heads:
            raise ValueError(f"hidden_channels ({hidden_channels}) must be divisible by heads ({heads})")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
        self.dropout = dropout
        self.decoder = decoder
        self.convs = nn.ModuleList()
        width = in_channels
        for layer in range(num_layers):
            last = layer == num_layers - 1
            self.convs.append(GATConv(width, out_channels if last else hidden_channels // heads, heads=heads,
                                      concat=not last, dropout=attention_dropout, score=score))
            width = hidden_channels
        self.mlp = (nn.Sequential(nn.Linear(out_channels, out_channels), nn.ReLU(), nn.Linear(out_channels, 1))
                    if decoder == "mlp" else None)

    def reset_parameters(self) -> None:
        for conv in self.convs:
            conv.reset_parameters()
        if self.mlp is not None:
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    def encode(self, x: Tensor, edge_index: Tensor) -> Tensor:
        for layer, conv in enumerate(self.convs):
            x = conv(F.dropout(x, self.dropout, self.training), edge_index)
            if layer < len(self.convs) - 1:
                x = F.elu(x)
        return x

    def decode(self, z: Tensor, pairs: Tensor) -> Tensor:
        if pairs.dim() != 2 or pairs.size(0) != 2:
            raise ValueError(f"pairs must have shape (2, P), got {tuple(pairs.shape)}")
        product = z[pairs[0]] * z[pairs[1]]
        return product.sum(-1) if self.mlp is None else self.mlp(product).squeeze(-1)

    def forward(self, x: Tensor, edge_index: Tensor, pairs: Tensor) -> Tensor:
        return self.decode(self.encode(x, edge_index), pairs)

