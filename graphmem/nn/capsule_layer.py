"""CapsuleLayer: a fully connected capsule layer (Sabour et al. 2017) routed on the attention core."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graphmem.nn.routing import Router, Routing


class CapsuleLayer(nn.Module):
    r"""Fully connected capsules, e.g. CapsNet's primary-to-digit layer
    (`Dynamic Routing Between Capsules <https://arxiv.org/abs/1710.09829>`_).

    Every lower capsule :math:`i` predicts every upper capsule :math:`j` with its own matrix,

    .. math::
        \hat u_{j|i} = W_{ij} u_i, \qquad
        v_j = \mathrm{squash}\Big(\sum_i c_{ij} \hat u_{j|i}\Big), \qquad
        c_{i\cdot} = \mathrm{softmax}_j(b_{i\cdot}),

    with :math:`b_{ij}` accumulating the agreement :math:`\hat u_{j|i} \cdot v_j` over the
    routing iterations (:func:`~graphmem.nn.routing.dynamic_routing`). With
    ``routing="em"`` the votes are routed by :func:`~graphmem.nn.routing.em_routing` instead,
    weighted by the lower activations passed to :meth:`forward`.

    The number of lower capsules is fixed (one matrix per pair); for sets and graphs of
    varying size use :class:`~graphmem.nn.CapsulePooling`, which shares the matrices over
    the lower units.

    Args:
        in_capsules: lower capsules ``N``.
        in_dim: lower pose size ``D_in``.
        out_capsules: upper capsules ``J``.
        out_dim: upper pose size ``D``.
        routing: ``"dynamic"`` or ``"em"``.
        iterations: routing iterations (3 in both papers).
        normalizer: ``"softmax"`` or a hard / Gumbel normalizer of the attention core.
        inverse_temperature: EM routing's final :math:`\lambda`.

    Shapes:
        - input: ``u`` :math:`(B, N, D_{in})`, optional ``activations`` :math:`(B, N)` (EM) and
          ``mask`` :math:`(B, N)` (``False`` for absent lower capsules)
        - output: :math:`(B, J, D)`; with ``return_routing=True`` also the
          :class:`~graphmem.nn.routing.Routing` (activations :math:`(B, J)`, coupling
          :math:`(B, N, J)`)
    """

    def __init__(self, in_capsules: int, in_dim: int, out_capsules: int, out_dim: int,
                 routing: str = "dynamic", iterations: int = 3, normalizer: str = "softmax",
                 inverse_temperature: float = 1.0) -> None:
        super().__init__()
        self.in_capsules, self.in_dim = in_capsules, in_dim
        self.out_capsules, self.out_dim = out_capsules, out_dim
        self.weight = nn.Parameter(torch.empty(in_capsules, out_capsules, out_dim, in_dim))
        self.router = Router(out_capsules, routing, iterations, normalizer, inverse_temperature)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Glorot over one matrix: each vote keeps roughly the scale of its input capsule.
        bound = math.sqrt(6.0 / (self.in_dim + self.out_dim))
        nn.init.uniform_(self.weight, -bound, bound)
        self.router.reset_parameters()

    def votes(self, u: Tensor) -> Tensor:
        r"""The predictions :math:`\hat u_{j|i} = W_{ij} u_i`, ``(B, N, J, D)``."""
        return torch.einsum("njoi,bni->bnjo", self.weight, u)

    def forward(self, u: Tensor, activations: Tensor | None = None, mask: Tensor | None = None,
                return_routing: bool = False) -> Tensor | tuple[Tensor, Routing]:
        """Routes the lower capsules ``u`` to the upper ones; see the class docstring for shapes."""
        if u.dim() != 3 or u.shape[1:] != (self.in_capsules, self.in_dim):
            raise ValueError(f"u must be (B, {self.in_capsules}, {self.in_dim}), got {tuple(u.shape)}")
        routing = self.router(self.votes(u), activations, mask=mask)
        return (routing.poses, routing) if return_routing else routing.poses

    def extra_repr(self) -> str:
        return (f"in_capsules={self.in_capsules}, in_dim={self.in_dim}, "
                f"out_capsules={self.out_capsules}, out_dim={self.out_dim}")
