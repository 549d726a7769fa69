"""HopfieldPooling: learned query patterns pool a set, or each graph of a PyG batch."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from graphmem.errors import GraphmemError
from graphmem.nn.hopfield.hopfield import Hopfield


class HopfieldPooling(nn.Module):
    r"""Pools a set with ``num_queries`` learned state patterns (``hflayers.HopfieldPooling``).

    .. math::
        z = \Big\Vert_{q=1}^{Q} \operatorname{Hopfield}\big(\xi_q,\; Y\big),
        \qquad
        \operatorname{Hopfield}(\xi, Y) = \Big\Vert_{h=1}^{H}
            \operatorname{normalize}\big(\beta\, s(\xi^h, Y W_K^h)\big)\, Y W_V^h \; W_O

    (by default :math:`s(q, k) = q^\top k` and softmax)

    The queries :math:`\xi_q` live directly in the association space (a learned projection
    of a learned vector would add nothing). They start small, so pooling starts close to
    mean pooling and learns to attend to the members that matter; a larger ``beta`` or
    more ``num_iterations`` move it toward retrieving single members.

    Works on padded sets with a mask and on PyG's batched node sets: node states
    :math:`(N, F)` with a ``batch`` vector are regrouped with
    :func:`torch_geometric.utils.to_dense_batch`, and the padding is masked out, so each
    graph is pooled exactly as it would be alone. A graph without nodes (or a padded set
    whose mask is all ``False``) pools to zeros, as PyG's global pools do, with zero
    attention weights; a set given without ``batch`` must not be empty.

    Args:
        input_size: features of the set members, :math:`F`.
        hidden_size: association size per head (default ``input_size // num_heads``).
        output_size: output features per query (default ``input_size``).
        num_heads: :math:`H`.
        num_queries: :math:`Q`, learned state patterns; their outputs are concatenated.
        beta, num_iterations, tol, dropout, bias, normalize, score, normalizer: as in
            :class:`Hopfield`.

    Shapes:
        - input: ``x`` :math:`(N, F)` with ``batch`` :math:`(N,)` (``size`` = number of
          graphs, inferred when omitted), or ``x`` :math:`(*, L, F)` with an optional
          ``mask`` :math:`(*, L)`, ``True`` for real members; ``x`` :math:`(N, F)` without
          ``batch`` is one set.
        - output: :math:`(G, Q F_{out})` or :math:`(*, Q F_{out})`; with
          ``return_attention_weights`` also the weights :math:`(*, H, Q, L)` over the
          (padded) members.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int | None = None,
        output_size: int | None = None,
        num_heads: int = 1,
        num_queries: int = 1,
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
        self.num_queries = num_queries
        self.hopfield = Hopfield(input_size, hidden_size, output_size, num_heads=num_heads, beta=beta,
                                 num_iterations=num_iterations, tol=tol, dropout=dropout, bias=bias,
                                 normalize=normalize, project_state=False, score=score,
                                 normalizer=normalizer)
        self.query = nn.Parameter(torch.empty(num_queries, num_heads * self.hopfield.hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.hopfield.reset_parameters()
        nn.init.normal_(self.query, std=1.0 / math.sqrt(self.hopfield.hidden_size))

    def forward(
        self,
        x: Tensor,
        batch: Tensor | None = None,
        mask: Tensor | None = None,
        size: int | None = None,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Pools each set (or graph) into ``num_queries * output_size`` features."""
        if batch is not None:
            if mask is not None:
                raise ValueError("give either batch (PyG node sets) or mask (padded sets), not both")
            x, mask = to_dense_batch(x, batch, batch_size=size)
        elif x.dim() == 2:
            x = x.unsqueeze(0)  # one set, as PyG's global pools treat x without batch
        if x.size(-2) == 0:
            if batch is None and mask is None:
                raise GraphmemError(f"HopfieldPooling got an empty set (x of shape {tuple(x.shape)}): a set "
                                    "needs at least one member (pass batch and size to pool empty graphs to zeros)")
            # every set (graph) is empty: nothing to attend to
            heads = self.hopfield.num_heads
            out = x.new_zeros(*x.shape[:-2], self.num_queries * self.hopfield.output_size)
            weights = x.new_zeros(*x.shape[:-2], heads, self.num_queries, 0)
            return (out, weights) if return_attention_weights else out
        out, weights = self.hopfield(self.query, x, stored_mask=mask, return_attention_weights=True)
        out = out.flatten(-2)
        if mask is not None:
            out = out * mask.any(-1, keepdim=True).to(out.dtype)  # a set without members pools to zeros
        return (out, weights) if return_attention_weights else out

    def extra_repr(self) -> str:
        return f"num_queries={self.num_queries}"
