"""CapsulePooling: routing pools a set of node features into a few capsules per graph."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graphmem import checks
from graphmem.nn.routing import Router, Routing


class CapsulePooling(nn.Module):
    r"""Set and graph pooling by capsule routing: the nodes of each graph are the lower
    capsules, ``num_capsules`` upper capsules per graph are the readout.

    Nodes have no fixed identity across graphs, so the transformation is shared over them
    (as convolutional capsules share it over positions): :math:`\hat u_{j|i} = W_j x_i`.
    Dynamic routing (Sabour et al. 2017) then gives

    .. math::
        v_{gj} = \mathrm{squash}\Big(\sum_{i \in g} c_{ij} W_j x_i\Big), \qquad
        c_{i\cdot} = \mathrm{softmax}_j(b_{i\cdot}), \qquad
        b_{ij} \mathrel{+}= W_j x_i \cdot v_{g(i)j},

    each node dividing itself among the capsules of its own graph
    (:func:`~graphmem.nn.routing.dynamic_routing`). With ``routing="em"`` each node also gets
    an activation :math:`a_i = \sigma(w_a^\top x_i + b_a)` and the votes are routed by
    :func:`~graphmem.nn.routing.em_routing`; the output is then the capsules' means
    :math:`\mu_{gj}`, their activations come with ``return_routing=True``.

    Graphs are routed independently and only over their own nodes, so pooling a PyG
    ``Batch`` gives the same result as pooling its graphs one by one.

    Args:
        in_channels: node feature size ``F``.
        num_capsules: upper capsules per graph ``J``.
        capsule_dim: upper pose size ``D``.
        routing: ``"dynamic"`` or ``"em"``.
        iterations: routing iterations.
        normalizer: ``"softmax"`` or a hard / Gumbel normalizer of the attention core
            (each node goes to a single capsule).
        inverse_temperature: EM routing's final :math:`\lambda`.
        flatten: return ``(G, J * D)`` instead of ``(G, J, D)``.

    Shapes:
        - input: ``x`` :math:`(N, F)`, ``batch`` :math:`(N,)` graph of each node (all zeros
          when omitted)
        - output: :math:`(G, J, D)` or :math:`(G, J D)`; with ``return_routing=True`` also the
          :class:`~graphmem.nn.routing.Routing` (activations :math:`(G, J)`, coupling
          :math:`(N, J)`)
    """

    def __init__(self, in_channels: int, num_capsules: int, capsule_dim: int, routing: str = "dynamic",
                 iterations: int = 3, normalizer: str = "softmax", inverse_temperature: float = 1.0,
                 flatten: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_capsules = num_capsules
        self.capsule_dim = capsule_dim
        self.flatten = flatten
        self.weight = nn.Parameter(torch.empty(num_capsules, in_channels, capsule_dim))
        self.router = Router(num_capsules, routing, iterations, normalizer, inverse_temperature)
        self.activation = nn.Linear(in_channels, 1) if routing == "em" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(6.0 / (self.in_channels + self.capsule_dim))
        nn.init.uniform_(self.weight, -bound, bound)
        self.router.reset_parameters()
        if self.activation is not None:
            self.activation.reset_parameters()

    def votes(self, x: Tensor) -> Tensor:
        r"""The predictions :math:`\hat u_{j|i} = W_j x_i`, ``(N, J, D)``."""
        return torch.einsum("nf,jfd->njd", x, self.weight)

    def forward(self, x: Tensor, batch: Tensor | None = None, num_graphs: int | None = None,
                return_routing: bool = False) -> Tensor | tuple[Tensor, Routing]:
        """Pools ``x`` per graph of ``batch``; see the class docstring for shapes."""
        if checks.enabled():
            checks.check_features(x)
            if batch is not None and batch.shape != x.shape[:1]:
                raise ValueError(f"batch must have shape ({x.size(0)},), got {tuple(batch.shape)}")
        if batch is None:
            batch = x.new_zeros(x.size(0), dtype=torch.long)
            num_graphs = 1
        activations = self.activation(x).sigmoid().squeeze(-1) if self.activation is not None else None
        routing = self.router(self.votes(x), activations, index=batch, num_groups=num_graphs)
        out = routing.poses.flatten(-2) if self.flatten else routing.poses
        return (out, routing) if return_routing else out

    def extra_repr(self) -> str:
        extra = f"{self.in_channels}, num_capsules={self.num_capsules}, capsule_dim={self.capsule_dim}"
        return extra + (", flatten=True" if self.flatten else "")
