"""HopfieldLayer: learned stored patterns act as a lookup table for the input."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graphmem.nn.hopfield.hopfield import Hopfield


class HopfieldLayer(nn.Module):
    r"""Looks each input up in ``num_patterns`` learned stored patterns (``hflayers.HopfieldLayer``).

    .. math::
        Z = \Big\Vert_{h=1}^{H} \operatorname{normalize}\big(\beta\, s(R W_Q^h, K^h)\big)\,
            V^h \; W_O

    (by default :math:`s(q, k) = q^\top k` and softmax) with learned keys :math:`K` and
    values :math:`V` (``num_patterns`` rows each, stored in the association space) and the
    input :math:`R` as the state. The layer is a
    fully-connected layer whose hidden units are compared by similarity instead of a dot
    product with a fixed activation: the softmax picks the stored patterns most like the
    input, and the values give what they stand for. With large ``beta`` it acts as a
    learned dictionary or prototype memory.

    Args:
        input_size: features of the inputs, :math:`F`.
        hidden_size: association size per head (default ``input_size // num_heads``).
        output_size: output features (default ``input_size``).
        num_patterns: learned stored patterns, :math:`K`.
        num_heads: :math:`H`.
        beta, num_iterations, tol, dropout, bias, normalize, score, normalizer: as in
            :class:`Hopfield`.

    Shapes:
        - input: :math:`(*, L, F)`.
        - output: :math:`(*, L, F_{out})`; with ``return_attention_weights`` also the
          weights :math:`(*, H, L, K)`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int | None = None,
        output_size: int | None = None,
        num_patterns: int = 1,
        num_heads: int = 1,
        beta: float | None = None,
        num_iterations: int = 1,
        tol: float | None = 1e-4,
        dropout: float = 0.0,
        bias: bool = True,
        normalize: bool = False,
        score: str = "dot",
        normalizer: str = "softmax",
    ) -> None:
        super().__init__()
        self.num_patterns = num_patterns
        self.hopfield = Hopfield(input_size, hidden_size, output_size, num_heads=num_heads, beta=beta,
                                 num_iterations=num_iterations, tol=tol, dropout=dropout, bias=bias,
                                 normalize=normalize, project_stored=False, project_value=False,
                                 score=score, normalizer=normalizer)
        inner = num_heads * self.hopfield.hidden_size
        inner_value = num_heads * self.hopfield.value_hidden_size
        self.stored_patterns = nn.Parameter(torch.empty(num_patterns, inner))
        self.value_patterns = nn.Parameter(torch.empty(num_patterns, inner_value))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.hopfield.reset_parameters()
        # unit-variance entries per head: logits of a projected input start at O(1) under beta = 1/sqrt(d)
        nn.init.normal_(self.stored_patterns)
        nn.init.normal_(self.value_patterns, std=1.0 / math.sqrt(self.hopfield.value_hidden_size))

    def forward(self, x: Tensor, return_attention_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Looks ``x`` up in the stored patterns; see the class docstring for shapes."""
        return self.hopfield(x, self.stored_patterns, self.value_patterns,
                             return_attention_weights=return_attention_weights)

    def extra_repr(self) -> str:
        return f"num_patterns={self.num_patterns}"
