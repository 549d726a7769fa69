"""A GAT encoder with a pair decoder for link prediction (graph auto-encoder style)."""

from __future__ import annotations

from torch import Tensor, nn

from graphmem.nn import GATStack
from graphmem.nn.gat_stack import GATStackModel

DECODERS = ("dot", "mlp")


class GATLinkPredictor(GATStackModel):
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
    ``out_channels``. The encoder is a :class:`~graphmem.nn.GATStack` (``self.stack``;
    ``convs`` names its layers), and checkpoints with the old ``convs.*`` keys still load.

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

    renamed_keys = {"convs.": "stack.convs."}  # checkpoints from before ``stack``

    def __init__(self, in_channels: int, hidden_channels: int = 256, out_channels: int = 64, heads: int = 4,
                 num_layers: int = 2, dropout: float = 0.5, attention_dropout: float = 0.0,
                 decoder: str = "dot", score: str = "gat") -> None:
        super().__init__()
        if hidden_channels % heads:
            raise ValueError(f"hidden_channels ({hidden_channels}) must be divisible by heads ({heads})")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
        self.decoder = decoder
        self.stack = GATStack(in_channels, hidden_channels // heads, out_channels, num_layers=num_layers,
                              heads=heads, dropout=dropout, attention_dropout=attention_dropout, score=score)
        self.mlp = (nn.Sequential(nn.Linear(out_channels, out_channels), nn.ReLU(), nn.Linear(out_channels, 1))
                    if decoder == "mlp" else None)

    @property
    def convs(self) -> nn.ModuleList:
        return self.stack.convs

    def reset_parameters(self) -> None:
        self.stack.reset_parameters()
        if self.mlp is not None:
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    def encode(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.stack(x, edge_index)

    def decode(self, z: Tensor, pairs: Tensor) -> Tensor:
        if pairs.dim() != 2 or pairs.size(0) != 2:
            raise ValueError(f"pairs must have shape (2, P), got {tuple(pairs.shape)}")
        product = z[pairs[0]] * z[pairs[1]]
        return product.sum(-1) if self.mlp is None else self.mlp(product).squeeze(-1)

    def forward(self, x: Tensor, edge_index: Tensor, pairs: Tensor) -> Tensor:
        return self.decode(self.encode(x, edge_index), pairs)
