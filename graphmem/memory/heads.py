"""NTM read and write heads: a linear map from the controller to the addressing parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.attention import ScoreFn, check_attention_options, cosine_score, dot_score, make_score, scaled_dot_score
from graphmem.memory.addressing import address, check_content_normalizer, update_usage
from graphmem.memory.memory import read, write

#: the scores without parameters, as the core's functions: the controller's key strength is the
#: scale of every score, so ``"cosine"`` is the plain cosine (``CosineScore`` would learn a second
#: strength on top)
FUNCTION_SCORES: dict[str, ScoreFn] = {"cosine": cosine_score, "dot": dot_score, "scaled_dot": scaled_dot_score}


class Head(nn.Module):
    r"""``K`` addressing heads that share one linear layer over the controller output.

    Per head and step the controller emits a key :math:`k \in \mathbb{R}^M`, a strength
    :math:`\beta = \mathrm{softplus}(\hat\beta) > 0`, a gate :math:`g = \sigma(\hat g)`, a
    shift distribution :math:`s = \mathrm{softmax}(\hat s)` over offsets ``-R .. R`` and a
    sharpening exponent :math:`\gamma = 1 + \mathrm{softplus}(\hat\gamma) \ge 1`; write heads
    also emit an erase vector :math:`e = \sigma(\hat e) \in (0, 1)^M` and an add vector
    :math:`a = \tanh(\hat a)`, and with least-recently-used writing a usage strength
    :math:`\pi = \mathrm{softplus}(\hat\pi)` and discount :math:`\lambda = \sigma(\hat\lambda)`.

    Args:
        controller_size: width of the controller output.
        memory_width: ``M``.
        num_heads: ``K``.
        shift_range: ``R``; the shift distribution has ``2R + 1`` entries.
        write: emit erase and add vectors too.
        score: the content score, a name of :data:`graphmem.attention.SCORES` (default the
            paper's ``"cosine"``): :math:`w^c = \mathrm{normalize}(\beta\, s(k, M(i)))`. A score
            with parameters (``"bilinear"``, ``"additive"``, ``"gat"``, ``"gatv2"``) is one module
            that the ``K`` heads share.
        normalizer: the content normalizer, one of
            :data:`~graphmem.memory.addressing.CONTENT_NORMALIZERS` (default ``"softmax"``).
        key_width: width of the rows the keys are scored against (default ``memory_width``;
            wider with the D-NTM's address vectors, :class:`~graphmem.memory.NTMCell`).
        lru: (write heads) least-recently-used writing, see :class:`WriteHeads`.
    """

    def __init__(self, controller_size: int, memory_width: int, num_heads: int = 1,
                 shift_range: int = 1, write: bool = False, score: str = "cosine",
                 normalizer: str = "softmax", key_width: int | None = None, lru: bool = False) -> None:
        super().__init__()
        check_attention_options(score=score)
        check_content_normalizer(normalizer)
        self.score, self.normalizer = score, normalizer
        # a module score's parameters belong to the heads; the default keeps the paper's state_dict
        key_width = memory_width if key_width is None else key_width
        self.scorer = None if score in FUNCTION_SCORES else make_score(score, key_width)
        self.memory_width = memory_width
        self.key_width = key_width
        self.num_heads = num_heads
        self.shift_range = shift_range
        self.is_write = write
        self.lru = lru
        self.sizes = ([key_width, 1, 1, 2 * shift_range + 1, 1] + ([1, 1] if lru else [])
                      + ([memory_width] * 2 if write else []))
        self.linear = nn.Linear(controller_size, num_heads * sum(self.sizes))
        self.reset_parameters()

    #: the usage strength's initial bias, :math:`\pi \approx 5`: an untrained LRU head already
    #: moves off the rows it wrote (softplus(0) would give 0.7, below the content logits' spread)
    LRU_STRENGTH_BIAS = 5.0

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()
        if self.lru:
            at = sum(self.sizes[:5])  # the strength follows the five addressing parameters
            with torch.no_grad():
                self.linear.bias.view(self.num_heads, -1)[:, at] = self.LRU_STRENGTH_BIAS
        if self.scorer is not None:
            self.scorer.reset_parameters()

    def address(self, memory: Tensor, previous: Tensor, addressing: list[Tensor],
                penalty: Tensor | None = None) -> Tensor:
        """The heads' weightings ``(B, K, N)`` from their addressing parameters (key, strength,
        gate, shift, sharpening), with this head's content score and normalizer."""
        score = self.scorer if self.scorer is not None else FUNCTION_SCORES[self.score]
        return address(memory, previous, *addressing, score=score, normalizer=self.normalizer, penalty=penalty)

    def parameters_from(self, controller_out: Tensor) -> list[Tensor]:
        """Splits and activates the head parameters; each is ``(B, K, size)`` (scalars squeezed)."""
        raw = self.linear(controller_out).view(controller_out.size(0), self.num_heads, -1)
        key, beta, gate, shift, gamma, *rest = raw.split(self.sizes, dim=-1)
        params = [key, F.softplus(beta).squeeze(-1), gate.sigmoid().squeeze(-1),
                  shift.softmax(-1), 1 + F.softplus(gamma).squeeze(-1)]
        if self.lru:
            strength, discount, *rest = rest
            params += [F.softplus(strength).squeeze(-1), discount.sigmoid().squeeze(-1)]
        if self.is_write:
            erase, add = rest
            params += [erase.sigmoid(), add.tanh()]
        return params

    def extra_repr(self) -> str:
        kind = "write" if self.is_write else "read"
        extra = "".join(f", {name}={value!r}" for name, value, default in
                        (("score", self.score, "cosine"), ("normalizer", self.normalizer, "softmax"),
                         ("key_width", self.key_width, self.memory_width), ("lru", self.lru, False))
                        if value != default)
        return (f"{kind}, heads={self.num_heads}, memory_width={self.memory_width}, "
                f"shift_range={self.shift_range}{extra}")


class ReadHeads(Head):
    """Read heads: address the memory, return the read vectors ``(B, K, M)`` and weightings."""

    def __init__(self, controller_size: int, memory_width: int, num_heads: int = 1, shift_range: int = 1,
                 score: str = "cosine", normalizer: str = "softmax", key_width: int | None = None) -> None:
        super().__init__(controller_size, memory_width, num_heads, shift_range, False, score, normalizer, key_width)

    def forward(self, controller_out: Tensor, memory: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
        """Addresses and reads ``memory`` ``(B, N, key_width)``: the read vectors are whole rows."""
        weights = self.address(memory, previous, self.parameters_from(controller_out))
        return read(memory, weights), weights


class WriteHeads(Head):
    r"""Write heads: address the memory, erase and add; return the new memory and weightings.

    With ``lru=True`` (least-recently-used writing, after the D-NTM, Gulcehre et al. 2018) each
    head keeps a usage :math:`u` (``(B, K, N)``, zeros at the start) and its content logits are
    penalised on the rows it wrote recently:

    .. math::
        w^c_t = \mathrm{softmax}\big(\beta\, s(k, M(i)) - \pi\, u_{t-1}(i)\big), \qquad
        u_t = \lambda\, u_{t-1} + w_t,

    so that a head writing a stream of facts gives each its own row unless its key asks for an
    old one (the NTM's location steps follow the content step as usual).
    """

    def __init__(self, controller_size: int, memory_width: int, num_heads: int = 1, shift_range: int = 1,
                 score: str = "cosine", normalizer: str = "softmax", key_width: int | None = None,
                 lru: bool = False) -> None:
        super().__init__(controller_size, memory_width, num_heads, shift_range, True, score, normalizer,
                         key_width, lru)

    def forward(self, controller_out: Tensor, memory: Tensor, previous: Tensor, rows: Tensor | None = None,
                usage: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Returns the new memory, the write weightings and the new usage (``None`` without LRU).

        ``rows`` ``(B, N, key_width)`` are what the keys are scored against (default ``memory``;
        the memory with address columns in front of it in a D-NTM); only ``memory``
        ``(B, N, M)`` is written.
        """
        params = self.parameters_from(controller_out)
        addressing, (erase, add) = params[:5], params[-2:]
        rows = memory if rows is None else rows
        if not self.lru:
            weights = self.address(rows, previous, addressing)
            return write(memory, weights, erase, add), weights, None
        strength, discount = params[5:7]
        if usage is None:
            usage = torch.zeros_like(previous)
        weights = self.address(rows, previous, addressing, strength.unsqueeze(-1) * usage)
        return write(memory, weights, erase, add), weights, update_usage(usage, weights, discount)
