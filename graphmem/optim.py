"""Optimizers that the published memory-network results were trained with and torch lacks."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class GravesRMSprop(torch.optim.Optimizer):
    r"""RMSProp in the form of Graves (2013, eq. 38-41), which the NTM paper trained with.

    .. math::
        n &\leftarrow \aleph\, n + (1 - \aleph)\, g^2 \qquad
        \bar g \leftarrow \aleph\, \bar g + (1 - \aleph)\, g \\
        \Delta &\leftarrow \beth\, \Delta - \eta\, g / \sqrt{n - \bar g^2 + \epsilon} \qquad
        w \leftarrow w + \Delta

    It differs from ``torch.optim.RMSprop(centered=True, momentum=...)`` in where ``eps`` sits:
    inside the square root here, so a parameter whose gradients are all tiny moves by at most
    about ``lr * |g| / sqrt(eps)`` instead of being rescaled to a full step.

    Args:
        params: the parameters or parameter groups.
        lr: :math:`\eta` (the NTM paper: ``1e-4``).
        alpha: :math:`\aleph`, the decay of both running averages (``0.95``).
        momentum: :math:`\beth` (``0.9``).
        eps: :math:`\epsilon` inside the root (``1e-4``). It is in the units of a squared gradient,
            so scale it with the loss: a loss divided by ``k`` wants ``eps / k**2``.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-4, alpha: float = 0.95,
                 momentum: float = 0.9, eps: float = 1e-4) -> None:
        for name, value, low, high in (("lr", lr, 0.0, None), ("alpha", alpha, 0.0, 1.0),
                                       ("momentum", momentum, 0.0, 1.0), ("eps", eps, 0.0, None)):
            if value < low or (high is not None and value >= high):
                bound = f"in [{low}, {high})" if high is not None else f"at least {low}"
                raise ValueError(f"GravesRMSprop: {name} must be {bound}, got {value}")
        super().__init__(params, {"lr": lr, "alpha": alpha, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            alpha, momentum = group["alpha"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if not state:
                    state["square_avg"] = torch.zeros_like(param)
                    state["grad_avg"] = torch.zeros_like(param)
                    state["delta"] = torch.zeros_like(param)
                square_avg, grad_avg, delta = state["square_avg"], state["grad_avg"], state["delta"]
                square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
                grad_avg.mul_(alpha).add_(grad, alpha=1 - alpha)
                # n - g_bar^2 >= 0 in exact arithmetic; the clamp guards round-off
                denom = square_avg.addcmul(grad_avg, grad_avg, value=-1).clamp_(min=0).add_(group["eps"]).sqrt_()
                delta.mul_(momentum).addcdiv_(grad, denom, value=-group["lr"])
                param.add_(delta)
        return loss
