"""The two-layer GAT node classifier of Veličković et al. (2018)."""

from __future__ import annotations

from torch import Tensor

from graphmem.nn import GATConv, GATStack
from graphmem.nn.gat_stack import GATStackModel


class GATNodeClassifier(GATStackModel):
    r"""Input dropout, a multi-head GAT layer (heads concatenated), ELU, dropout, and an output
    GAT layer that averages ``output_heads`` heads into class logits:

    .. math::
        \hat Y = \mathrm{GAT}_{\text{mean}}\big(\mathrm{ELU}(\mathrm{GAT}_{\Vert}(X))\big)

    The defaults are the paper's transductive setting (8 heads x 8 features, dropout 0.6).
    It is a two-layer :class:`~graphmem.nn.GATStack` (``self.stack``); ``conv1`` and ``conv2``
    name its two layers, and checkpoints with the old ``conv1.*``/``conv2.*`` keys still load.

    Args:
        in_channels: node features.
        num_classes: classes.
        hidden_channels: features per head in the hidden layer.
        heads: hidden-layer heads.
        output_heads: output-layer heads (averaged; the paper uses 8 for PubMed).
        dropout: dropout on inputs, hidden features and attention weights.
        score: attention score of both layers (see :class:`~graphmem.nn.GATConv`).
        value_dropout: dropout on each layer's projected features before they are summed; the
            GAT paper's code uses ``dropout`` here as well (:class:`~graphmem.nn.GATConv`).
        dropout_per_head: draw the input dropout for every head on its own, as the GAT paper's
            code does (:class:`~graphmem.nn.GATStack`).

    Shapes:
        - input: ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)`
        - output: :math:`(N, C)` logits
    """

    renamed_keys = {"conv1.": "stack.convs.0.", "conv2.": "stack.convs.1."}  # checkpoints from before ``stack``

    def __init__(self, in_channels: int, num_classes: int, hidden_channels: int = 8, heads: int = 8,
                 output_heads: int = 1, dropout: float = 0.6, score: str = "gat",
                 value_dropout: float = 0.0, dropout_per_head: bool = False) -> None:
        super().__init__()
        self.stack = GATStack(in_channels, hidden_channels, num_classes, num_layers=2, heads=heads,
                              output_heads=output_heads, dropout=dropout, attention_dropout=dropout, score=score,
                              value_dropout=value_dropout, dropout_per_head=dropout_per_head)

    @property
    def conv1(self) -> GATConv:
        return self.stack.convs[0]

    @property
    def conv2(self) -> GATConv:
        return self.stack.convs[1]

    def reset_parameters(self) -> None:
        self.stack.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.stack(x, edge_index)
