"""Evolving attention (Wang et al. 2021): each layer's attention map is informed by the previous one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYOUTS = ("dense", "sparse")


class EvolvingAttention(nn.Module):
    r"""Mixes a layer's attention logits with the previous layer's map through a residual convolution.

    .. math::
        A_{\text{in}}^{i} = \alpha\, \hat A^{i-1} + (1 - \alpha)\, S^{i}, \qquad
        \hat A^{i} = \beta\, \mathrm{CNN}(A_{\text{in}}^{i}) + (1 - \beta)\, A_{\text{in}}^{i},
        \qquad A^{i} = \operatorname{normalize}(\hat A^{i})

    where :math:`S^i` are the logits of layer :math:`i` and :math:`\hat A^{i-1}` the
    pre-normalization map of layer :math:`i-1` (what this module returned there), so the
    maps that flow between layers stay logits and masks stay with the normalizer. The
    module returns :math:`\hat A^i`; the layer normalizes it with the attention core.

    The CNN treats the heads as channels:

    - ``layout="dense"``: maps :math:`(*, H, L_q, L_k)` as an :math:`H`-channel image,
      :math:`\mathrm{ReLU}(\mathrm{Conv2d}_{k \times k}(\cdot))` with zero padding. Entries
      that ``mask`` forbids are zeroed before the convolution, so padding keys never leak
      into real ones (a padded batch gives what each sequence gives alone). ``causal=True``
      (decoders, :math:`L_q = L_k`) also zeroes the future entries :math:`j > i` and pads
      only above, so the output at query :math:`i` sees queries :math:`\le i` only.
    - ``layout="sparse"``: graph logits :math:`(E, H)`, one pixel per edge:
      :math:`\mathrm{ReLU}(\mathrm{Linear}_{H \to H}(\cdot))`, a 1x1 convolution across heads.
      Every layer must use the same edge list (a stack over one graph).

    With :math:`\alpha = \beta = 0` the logits pass unchanged.

    Args:
        heads: :math:`H`, the channels of the convolution.
        alpha: weight of the previous map.
        beta: weight of the convolution branch.
        layout: ``"dense"`` or ``"sparse"``.
        kernel_size: odd kernel size of the dense convolution.
        causal: mask the dense convolution for decoders.
    """

    def __init__(self, heads: int, alpha: float = 0.5, beta: float = 0.5, layout: str = "dense",
                 kernel_size: int = 3, causal: bool = False) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.heads = heads
        self.alpha = alpha
        self.beta = beta
        self.layout = layout
        self.kernel_size = kernel_size
        self.causal = causal
        self.conv: nn.Module
        if layout == "dense":
            self.conv = nn.Conv2d(heads, heads, kernel_size)
        else:
            self.conv = nn.Linear(heads, heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def convolve(self, maps: Tensor, mask: Tensor | None = None) -> Tensor:
        r""":math:`\mathrm{CNN}(A)`: ``(*, H, L_q, L_k)`` (dense) or ``(E, H)`` (sparse), same shape out."""
        if self.layout == "sparse":
            return F.relu(self.conv(maps))
        if mask is not None:
            maps = maps.masked_fill(~mask, 0.0)
        k, half = self.kernel_size, self.kernel_size // 2
        if self.causal:
            future = torch.ones(maps.shape[-2:], dtype=torch.bool, device=maps.device).triu(1)
            maps = maps.masked_fill(future, 0.0)
            padding = (half, half, k - 1, 0)  # (left, right, top, bottom): rows above only
        else:
            padding = (half, half, half, half)
        images = maps.reshape((-1,) + tuple(maps.shape[-3:]))
        return F.relu(self.conv(F.pad(images, padding))).reshape(maps.shape)

    def forward(self, logits: Tensor, previous: Tensor, mask: Tensor | None = None) -> Tensor:
        r"""Returns :math:`\hat A^i` from this layer's ``logits`` and the previous layer's map ``previous``.

        ``mask`` (dense only) broadcasts to ``logits``, ``True`` = may attend.
        """
        if previous.shape != logits.shape:
            raise ValueError(f"the previous attention map has shape {tuple(previous.shape)}, these logits "
                             f"{tuple(logits.shape)}; evolving attention needs the same keys, queries "
                             "(edges) and heads in every layer")
        mixed = self.alpha * previous + (1.0 - self.alpha) * logits
        return self.beta * self.convolve(mixed, mask) + (1.0 - self.beta) * mixed

    def extra_repr(self) -> str:
        parts = [f"heads={self.heads}", f"alpha={self.alpha}", f"beta={self.beta}", f"layout={self.layout!r}"]
        if self.layout == "dense":
            parts.append(f"kernel_size={self.kernel_size}")
        if self.causal:
            parts.append("causal=True")
        return ", ".join(parts)
