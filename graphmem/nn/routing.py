r"""Capsule routing as attention: routing-by-agreement and EM routing on the attention core.

Lower capsules :math:`i` vote for upper capsules :math:`j` with predictions
:math:`\hat u_{j|i}` (``votes``). Routing decides how much of each vote reaches each upper
capsule. Read as attention it uses the same three steps as every other layer in graphmem:

* **score**: the agreement :math:`\hat u_{j|i} \cdot v_j` is the core's dot score with the
  upper capsule as query and the vote as key (sparse layout, one edge per lower unit to its
  group); EM routing scores with the Gaussian log-likelihood of the vote instead.
* **normalize**: over the **upper** units, :math:`c_{i\cdot} = \mathrm{softmax}_j(b_{i\cdot})`,
  each lower unit distributing one unit of weight (bottom-up assignment). Transformer
  attention normalizes the other way, each query over the keys (top-down). EM routing does
  both: its E-step normalizes bottom-up, its M-step's weighted mean top-down.
* **read**: :math:`s_j = \sum_i c_{ij} \hat u_{j|i}`, the core's sparse read.

Two layouts, as in :mod:`graphmem.attention`:

* **dense**: ``votes`` ``(..., N, J, D)``, every upper capsule of a sample sees all ``N``
  lower ones; an optional ``mask`` ``(..., N)`` marks the lower units that exist (padding
  gets no weight). Results are ``(..., J, D)``.
* **sparse** (sets and graphs of varying size): ``votes`` ``(N, J, D)`` for all lower units of
  a batch and ``index`` ``(N,)`` the group (graph) of each, as PyG's ``batch`` vector.
  Results are ``(G, J, D)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.attention import check_attention_options, dot_score, normalize, segment_sum, sparse_read

ROUTINGS: tuple[str, ...] = ("dynamic", "em")


class Routing(NamedTuple):
    """What routing returns; the leading dimensions follow the layout (see the module docstring).

    Attributes:
        poses: upper capsules ``(..., J, D)``: :math:`v_j` (dynamic) or the Gaussian means
            :math:`\\mu_j` (EM).
        activations: ``(..., J)`` presence of each upper capsule in ``[0, 1)``:
            :math:`\\lVert v_j \\rVert` (dynamic) or :math:`a_j` (EM).
        coupling: ``(..., N, J)`` the final assignment :math:`c_{ij}` (dynamic) or
            :math:`R_{ij}` (EM); sums to one over ``j`` for every existing lower unit, zero for
            masked ones.
    """

    poses: Tensor
    activations: Tensor
    coupling: Tensor


def squash(s: Tensor, dim: int = -1, eps: float = 1e-8) -> Tensor:
    r"""The capsule non-linearity :math:`v = \frac{\lVert s\rVert^2}{1 + \lVert s\rVert^2}
    \frac{s}{\lVert s\rVert}` (Sabour et al. 2017): keeps the direction, maps the length into
    ``[0, 1)``. ``eps`` keeps the value and the gradient finite at :math:`s = 0`.
    """
    norm2 = s.pow(2).sum(dim, keepdim=True)
    return s * (norm2 / (1 + norm2)) * torch.rsqrt(norm2 + eps * eps)


class _Groups(NamedTuple):
    """Lower units as a flat list with the group of each; remembers how to restore a dense layout."""

    edge_index: Tensor  # (2, N): row 0 the lower unit, row 1 its group, the core's sparse layout
    num_groups: int
    mask: Tensor | None  # (N, 1), broadcasting over the upper units
    lead: tuple[int, ...] | None  # the dense layout's leading dimensions, None when sparse

    def unfold(self, routing: Routing) -> Routing:
        if self.lead is None:
            return routing
        poses, activations, coupling = routing
        return Routing(
            poses.reshape(self.lead + poses.shape[-2:]),
            activations.reshape(self.lead + activations.shape[-1:]),
            coupling.reshape(self.lead + (-1, coupling.size(-1))),
        )


def _fold(votes: Tensor, index: Tensor | None, num_groups: int | None,
          mask: Tensor | None) -> tuple[Tensor, _Groups]:
    """Both layouts as one: ``(N, J, D)`` votes, each lower unit an edge to its group.

    The dense layout becomes the sparse one with one group per sample, so a single code path
    serves both and a batch of padded samples routes exactly like the samples one by one.
    """
    if votes.dim() < 3:
        raise ValueError(f"votes must be (..., N, J, D), got shape {tuple(votes.shape)}")
    lead: tuple[int, ...] | None = None
    if index is None:
        lead = tuple(votes.shape[:-3])
        num_lower = votes.size(-3)
        if mask is not None:
            mask = mask.expand(lead + (num_lower,))
        votes = votes.reshape((-1,) + tuple(votes.shape[-2:]))
        num_groups = votes.size(0) // num_lower if num_lower > 0 else math.prod(lead)
        index = torch.arange(num_groups, device=votes.device).repeat_interleave(num_lower)
    else:
        if votes.dim() != 3 or index.shape != votes.shape[:1]:
            raise ValueError(f"sparse layout needs votes (N, J, D) and index (N,), got "
                             f"{tuple(votes.shape)} and {tuple(index.shape)}")
        if num_groups is None:
            num_groups = int(index.max()) + 1 if index.numel() > 0 else 0
    if mask is not None:
        mask = mask.reshape(-1, 1).to(torch.bool)
    edge_index = torch.stack([torch.arange(votes.size(0), device=votes.device), index])
    return votes, _Groups(edge_index, num_groups, mask, lead)


def _assign(logits: Tensor, normalizer: str, mask: Tensor | None) -> Tensor:
    """Each lower unit's weights over the upper units (the last dimension)."""
    return normalize(logits, normalizer, mask=mask, dim=-1)


def dynamic_routing(
    votes: Tensor,
    iterations: int = 3,
    index: Tensor | None = None,
    num_groups: int | None = None,
    mask: Tensor | None = None,
    normalizer: str = "softmax",
) -> Routing:
    r"""Routing-by-agreement (Sabour et al. 2017, Procedure 1).

    .. math::
        b_{ij} \leftarrow 0; \quad \text{repeat } r \text{ times:}\quad
        c_{i\cdot} = \mathrm{softmax}_j(b_{i\cdot}), \quad
        s_j = \sum_i c_{ij} \hat u_{j|i}, \quad
        v_j = \mathrm{squash}(s_j), \quad
        b_{ij} \mathrel{+}= \hat u_{j|i} \cdot v_j

    Gradients flow through every iteration, as in the paper.

    Args:
        votes: predictions :math:`\hat u_{j|i}`, dense ``(..., N, J, D)`` or sparse ``(N, J, D)``.
        iterations: :math:`r \ge 1`.
        index: sparse layout: ``(N,)`` group (graph) of each lower unit.
        num_groups: number of groups ``G`` in the sparse layout (inferred when omitted).
        mask: ``(..., N)`` / ``(N,)``, ``False`` for lower units that do not exist.
        normalizer: ``"softmax"`` (the paper) or a hard / Gumbel normalizer of the core, which
            assigns each lower unit to one upper unit.

    Returns:
        :class:`Routing` with ``poses`` :math:`v_j`, ``activations`` :math:`\lVert v_j\rVert`
        and ``coupling`` :math:`c_{ij}` of the last iteration.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    flat, groups = _fold(votes, index, num_groups, mask)
    logits = flat.new_zeros(flat.shape[:-1])
    for step in range(iterations):
        coupling = _assign(logits, normalizer, groups.mask)
        poses = squash(sparse_read(coupling, flat, groups.edge_index, groups.num_groups))
        if step + 1 < iterations:
            logits = logits + dot_score(poses, flat, edge_index=groups.edge_index)
    return groups.unfold(Routing(poses, poses.norm(dim=-1), coupling))


def em_routing(
    votes: Tensor,
    activations: Tensor | None = None,
    iterations: int = 3,
    beta_u: Tensor | float = 0.0,
    beta_a: Tensor | float = 0.0,
    inverse_temperature: float = 1.0,
    index: Tensor | None = None,
    num_groups: int | None = None,
    mask: Tensor | None = None,
    normalizer: str = "softmax",
    eps: float = 1e-6,
) -> Routing:
    r"""EM routing (Hinton, Sabour and Frosst 2018, Procedure 1), simplified as described below.

    Each upper capsule is a Gaussian with diagonal covariance over the pose space that is
    fitted to the votes assigned to it; its activation weighs the description length saved
    by that fit against a fixed cost. Starting from :math:`R_{ij} = 1/J`, ``iterations`` times:

    .. math::
        \text{M-step:}\quad r_{ij} = R_{ij} a_i, \quad
        \mu_j = \frac{\sum_i r_{ij} V_{ij}}{\sum_i r_{ij}}, \quad
        (\sigma_j^h)^2 = \frac{\sum_i r_{ij} (V^h_{ij} - \mu^h_j)^2}{\sum_i r_{ij}} + \epsilon,

        \mathrm{cost}_j = \Big(D\beta_u + \sum_h \log \sigma^h_j\Big)
            \frac{\sum_i r_{ij}}{\sum_i a_i}, \quad
        a_j = \mathrm{logistic}\big(\lambda_t (\beta_a - \mathrm{cost}_j)\big)

        \text{E-step:}\quad R_{i\cdot} = \mathrm{softmax}_j\big(\log a_j
            + \log \mathcal{N}(V_{ij}; \mu_j, \sigma_j^2)\big)

    (the E-step is skipped after the last M-step). Simplifications, all common in
    re-implementations of the paper:

    * poses are vectors and votes any linear map of them; the paper's 4x4 pose matrices and
      transformation matrices are the special case of a block-structured map;
    * the data assigned to capsule :math:`j` is divided by the total lower activation
      :math:`\sum_i a_i` of its group, so that the cost does not grow with the number of lower
      units (needed when sets differ in size); the paper uses :math:`\sum_i r_{ij}` as is;
    * the inverse temperature grows linearly, :math:`\lambda_t = \lambda\,(t + 1)/r`; the paper
      says only that it increases;
    * :math:`\beta_u, \beta_a` are learned per upper capsule by the caller (see
      :class:`Router`); convolutional capsules and coordinate addition are left out.

    Args:
        votes: :math:`V_{ij}`, dense ``(..., N, J, D)`` or sparse ``(N, J, D)``.
        activations: lower activations :math:`a_i \in [0, 1]`, ``(..., N)`` / ``(N,)``; ones
            when omitted.
        iterations: EM iterations :math:`r \ge 1`.
        beta_u, beta_a: cost per pose dimension and activation threshold, numbers or
            ``(J,)`` tensors.
        inverse_temperature: final :math:`\lambda`.
        index, num_groups, mask, normalizer: as in :func:`dynamic_routing`.
        eps: variance floor :math:`\epsilon`.

    Returns:
        :class:`Routing` with ``poses`` :math:`\mu_j`, ``activations`` :math:`a_j` and
        ``coupling`` :math:`R_{ij}` (the assignment used by the last M-step).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    flat, groups = _fold(votes, index, num_groups, mask)
    edge_index, num, lower_mask = groups.edge_index, groups.num_groups, groups.mask
    group = edge_index[1]
    lower = flat.new_ones(flat.size(0)) if activations is None else activations.reshape(-1).to(flat.dtype)
    if lower_mask is not None:
        lower = lower * lower_mask.squeeze(-1)
    tiny = torch.finfo(flat.dtype).tiny
    total = segment_sum(lower, group, num).clamp_min(tiny).unsqueeze(-1)  # (G, 1)
    dim = flat.size(-1)

    coupling = _assign(flat.new_zeros(flat.shape[:-1]), "softmax", lower_mask)
    for step in range(iterations):
        # M-step: each upper capsule fits its Gaussian to the votes it was given; the weighted
        # mean normalizes over the lower units, the top-down direction of transformer attention.
        assigned = coupling * lower.unsqueeze(-1)
        mass = segment_sum(assigned, group, num)  # (G, J)
        share = assigned / mass.clamp_min(tiny)[group]
        mean = sparse_read(share, flat, edge_index, num)
        deviation = flat - mean[group]
        variance = sparse_read(share, deviation.pow(2), edge_index, num) + eps
        cost = (dim * beta_u + 0.5 * variance.log().sum(-1)) * (mass / total)
        scale = inverse_temperature * (step + 1) / iterations
        log_activation = F.logsigmoid(scale * (beta_a - cost))
        if step + 1 == iterations:
            break
        # E-step: each lower unit re-divides its vote among the capsules that explain it best.
        log_likelihood = -0.5 * (deviation.pow(2) / variance[group]
                                 + torch.log(2 * math.pi * variance[group])).sum(-1)
        coupling = _assign(log_activation[group] + log_likelihood, normalizer, lower_mask)
    return groups.unfold(Routing(mean, log_activation.exp(), coupling))


class Router(nn.Module):
    r"""Routes votes ``(..., N, J, D)`` to ``J`` upper capsules: :func:`dynamic_routing` or
    :func:`em_routing`, with EM's per-capsule :math:`\beta_u, \beta_a` as parameters.

    The shared part of :class:`~graphmem.nn.CapsuleLayer` and :class:`~graphmem.nn.CapsulePooling`.

    Args:
        num_capsules: upper capsules ``J``.
        routing: ``"dynamic"`` or ``"em"``.
        iterations: routing iterations.
        normalizer: how lower units are assigned (``"softmax"``, ``"hard"``, ...).
        inverse_temperature: EM's final :math:`\lambda`.
    """

    def __init__(self, num_capsules: int, routing: str = "dynamic", iterations: int = 3,
                 normalizer: str = "softmax", inverse_temperature: float = 1.0) -> None:
        super().__init__()
        if routing not in ROUTINGS:
            raise ValueError(f"unknown routing {routing!r}; choose one of {ROUTINGS}")
        check_attention_options(normalizer=normalizer)
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        self.num_capsules = num_capsules
        self.routing = routing
        self.iterations = iterations
        self.normalizer = normalizer
        self.inverse_temperature = inverse_temperature
        if routing == "em":
            self.beta_u = nn.Parameter(torch.empty(num_capsules))
            self.beta_a = nn.Parameter(torch.empty(num_capsules))
        else:
            self.register_parameter("beta_u", None)
            self.register_parameter("beta_a", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.beta_u is not None:
            nn.init.zeros_(self.beta_u)
            nn.init.zeros_(self.beta_a)

    def forward(self, votes: Tensor, activations: Tensor | None = None, index: Tensor | None = None,
                num_groups: int | None = None, mask: Tensor | None = None) -> Routing:
        """Routes ``votes``; ``activations`` (lower :math:`a_i`) are used by EM routing only."""
        if self.routing == "dynamic":
            return dynamic_routing(votes, self.iterations, index, num_groups, mask, self.normalizer)
        return em_routing(votes, activations, self.iterations, self.beta_u, self.beta_a,
                          self.inverse_temperature, index, num_groups, mask, self.normalizer)

    def extra_repr(self) -> str:
        extra = [f"num_capsules={self.num_capsules}", f"routing={self.routing!r}",
                 f"iterations={self.iterations}"]
        if self.normalizer != "softmax":
            extra.append(f"normalizer={self.normalizer!r}")
        if self.routing == "em":
            extra.append(f"inverse_temperature={self.inverse_temperature}")
        return ", ".join(extra)
