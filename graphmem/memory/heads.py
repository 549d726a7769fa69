"""NTM read and write heads: a linear map from the controller to the addressing parameters."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.memory.addressing import address
from graphmem.memory.memory import read, write


class Head(nn.Module):
    r"""``K`` addressing heads that share one linear layer over the controller output.

    Per head and step the controller emits a key :math:`k \in \mathbb{R}^M`, a strength
    :math:`\beta = \mathrm{softplus}(\hat\beta) > 0`, a gate :math:`g = \sigma(\hat g)`, a
    shift distribution :math:`s = \mathrm{softmax}(\hat s)` over offsets ``-R .. R`` and a
    sharpening exponent :math:`\gamma = 1 + \mathrm{softplus}(\hat\gamma) \ge 1`; write heads
    also emit an erase vector :math:`e = \sigma(\hat e) \in (0, 1)^M` and an add vector
    :math:`a = \tanh(\hat a)`.

    Args:
        controller_size: width of the controller output.
        memory_width: ``M``.
        num_heads: ``K``.
        shift_range: ``R``; the shift distribution has ``2R + 1`` entries.
        write: emit erase and add vectors too.
    """

    def __init__(self, controller_size: int, memory_width: int, num_heads: int = 1,
                 shift_range: int = 1, write: bool = False) -> None:
        super().__init__()
        self.memory_width = memory_width
        self.num_heads = num_heads
        self.shift_range = shift_range
        self.is_write = write
        self.sizes = [memory_width, 1, 1, 2 * shift_range + 1, 1] + ([memory_width] * 2 if write else [])
        self.linear = nn.Linear(controller_size, num_heads * sum(self.sizes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()

    def parameters_from(self, controller_out: Tensor) -> list[Tensor]:
        """Splits and activates the head parameters; each is ``(B, K, size)`` (scalars squeezed)."""
        raw = self.linear(controller_out).view(controller_out.size(0), self.num_heads, -1)
        key, beta, gate, shift, gamma, *rest = raw.split(self.sizes, dim=-1)
        params = [key, F.softplus(beta).squeeze(-1), gate.sigmoid().squeeze(-1),
                  shift.softmax(-1), 1 + F.softplus(gamma).squeeze(-1)]
        if self.is_write:
            erase, add = rest
            params += [erase.sigmoid(), add.tanh()]
        return params

    def extra_repr(self) -> str:
        kind = "write" if self.is_write else "read"
        return f"{kind}, heads={self.num_heads}, memory_width={self.memory_width}, shift_range={self.shift_range}"


class ReadHeads(Head):
    """Read heads: address the memory, return the read vectors ``(B, K, M)`` and weightings."""

    def __init__(self, controller_size: int, memory_width: int, num_heads: int = 1, shift_range: int = 1) -> None:
        super().__init__(controller_size, memory_width, num_heads, shift_range, write=False)

    def forward(self, controller_out: Tensor, memory: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
        weights = address(memory, previous, *self.parameters_from(controller_out))
        return read(memory, weights), weights


class WriteHeads(Head):
    """Write heads: address the memory, erase and add; return the new memory and weightings."""

    def __init__(self, controller_size: int, memory_width: int, num_heads: int = 1, shift_range: int = 1) -> None:
        super().__init__(controller_size, memory_width, num_heads, shift_range, write=True)

    def forward(self, controller_out: Tensor, memory: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
        *addressing, erase, add = self.parameters_from(controller_out)
        weights = address(memory, previous, *addressing)
        return write(memory, weights, erase, add), weights
