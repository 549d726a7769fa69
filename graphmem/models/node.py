"""The two-layer GAT node classifier of Veličković et al. (2018)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.nn import GATConv


class GATNodeClassifier(nn.Module):
    r"""Input dropout, a multi-head GAT layer (heads concatenated), ELU, dropout, and an output
    GAT layer that averages ``output_heads`` heads into class logits:

    .. math::
        \hat Y = \mathrm{GAT}_{\text{mean}}\big(\mathrm{ELU}(\mathrm{GAT}_{\Vert}(X))\big)

    The defaults are the paper's transductive setting (8 heads x 8 features, dropout 0.6).

    Args:
        in_channels: node features.
        num_classes: classes.
        hidden_channels: features per head in the hidden layer.
        heads: hidden-layer heads.
        output_heads: output-layer heads (averaged; the paper uses 8 for PubMed).
        dropout: dropout on inputs, hidden features and attention weights.
        score: attention score of both layers (see :class:`~graphmem.nn.GATConv`).

    Shapes:
        - input: ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)`
        - output: :math:`(N, C)` logits
    """

    def __init__(self, in_channels: int, num_classes: int, hidden_channels: int = 8, heads: int = 8,
                 output_heads: int = 1, dropout: float = 0.6, score: str = "additive") -> None:
        super().__init__()
        self.dropout = dropout
        self.conv1 = GATConv(in_channels, hidden_channels, heads=heads, dropout=dropout, score=score)
        self.conv2 = GATConv(hidden_channels * heads, num_classes, heads=output_heads, concat=False,
                             dropout=dropout, score=score)

    def reset_parameters(self) -> None:
        self.conv1.reset_parameters()
        self.conv2.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)
