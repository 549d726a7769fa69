"""Transformer encoder layer and stack on graphmem's MultiheadAttention, evolving attention optional."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.nn.evolving import EvolvingAttention
from graphmem.nn.multihead_attention import LogitsTransform, MultiheadAttention, split_mask

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


class TransformerEncoderLayer(nn.Module):
    r"""Self-attention and a feed-forward block, a drop-in for :class:`torch.nn.TransformerEncoderLayer`.

    .. math::
        x \leftarrow \mathrm{LN}_1\big(x + \mathrm{MHA}(x, x, x)\big), \qquad
        x \leftarrow \mathrm{LN}_2\big(x + W_2\, \mathrm{act}(W_1 x)\big)

    (``norm_first=True``: :math:`x \leftarrow x + \mathrm{MHA}(\mathrm{LN}_1 x)`, then
    :math:`x \leftarrow x + \mathrm{FF}(\mathrm{LN}_2 x)`), with dropout after the attention,
    inside and after the feed-forward block. Submodule names are torch's, so
    ``load_state_dict`` takes a trained torch layer; ``score`` and ``normalizer`` choose the
    attention of :class:`MultiheadAttention`.

    Args:
        d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
            norm_first, bias: as in torch.
        score: attention score of the self-attention.
        normalizer: attention normalizer of the self-attention.

    Shapes:
        - src :math:`(S, N, E)` (batch first :math:`(N, S, E)`, unbatched :math:`(S, E)`);
          masks as in :class:`MultiheadAttention`.
        - output: like ``src``; with ``return_attention_weights=True`` also the weights
          :math:`(N, H, S, S)` and the normalized logits :math:`(N, H, S, S)`.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = F.relu,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        score: str = "scaled_dot",
        normalizer: str = "softmax",
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, score=score, normalizer=normalizer)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _ACTIVATIONS[activation] if isinstance(activation, str) else activation

    def reset_parameters(self) -> None:
        for module in (self.self_attn, self.linear1, self.linear2, self.norm1, self.norm2):
            module.reset_parameters()

    def _attend(self, x: Tensor, mask: Tensor | None, padding: Tensor | None, is_causal: bool,
                logits_transform: LogitsTransform | None) -> tuple[Tensor, Tensor, Tensor]:
        out, weights, logits = self.self_attn(x, x, x, key_padding_mask=padding, attn_mask=mask,
                                              average_attn_weights=False, is_causal=is_causal,
                                              logits_transform=logits_transform, return_attention_logits=True)
        return self.dropout1(out), weights, logits

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        logits_transform: LogitsTransform | None = None,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Runs the layer; ``logits_transform`` goes to :meth:`MultiheadAttention.forward`."""
        x = src
        if self.norm_first:
            attended, weights, logits = self._attend(self.norm1(x), src_mask, src_key_padding_mask, is_causal,
                                                     logits_transform)
            x = x + attended
            x = x + self._feed_forward(self.norm2(x))
        else:
            attended, weights, logits = self._attend(x, src_mask, src_key_padding_mask, is_causal,
                                                     logits_transform)
            x = self.norm1(x + attended)
            x = self.norm2(x + self._feed_forward(x))
        return (x, weights, logits) if return_attention_weights else x


def _evolve(evolve: EvolvingAttention, previous: Tensor, rows: Tensor | None, logits: Tensor,
            mask: Tensor | None = None) -> Tensor:
    """One evolving-attention step as a ``logits_transform``, masking padded query rows too."""
    if rows is not None:
        mask = rows if mask is None else mask & rows
    return evolve(logits, previous, mask)


class TransformerEncoder(nn.Module):
    r"""``num_layers`` copies of an encoder layer, optionally with evolving attention.

    A drop-in for :class:`torch.nn.TransformerEncoder` (same ``layers.{i}`` and ``norm``
    names). With ``evolving=True`` the self-attention of layer :math:`i > 1` becomes
    :class:`EvolvingAttention` over the dense maps (a 3x3 convolution with the heads as
    channels, Wang et al. 2021):

    .. math::
        A_{\text{in}}^{i} = \alpha \hat A^{i-1} + (1 - \alpha) \frac{Q^i {K^i}^\top}{\sqrt d},
        \qquad
        A^{i} = \operatorname{softmax}\big(\beta\, \mathrm{CNN}(A_{\text{in}}^{i})
            + (1 - \beta) A_{\text{in}}^{i}\big)

    ``causal=True`` builds a decoder-style stack: every layer attends causally and the
    convolutions are masked so that no future position leaks in. Padding
    (``src_key_padding_mask``) is zeroed in both the key columns and the query rows of the
    maps before each convolution, so a padded batch gives what each sequence gives alone.

    Args:
        encoder_layer: a :class:`TransformerEncoderLayer` to copy.
        num_layers: number of copies.
        norm: optional final normalization.
        evolving: evolve the attention maps from layer to layer.
        alpha: weight of the previous map.
        beta: weight of the convolution branch.
        kernel_size: convolution kernel size.
        causal: causal self-attention and convolutions.

    Shapes:
        - src and masks as in :class:`TransformerEncoderLayer`.
        - output: like ``src``; with ``return_attention_weights`` also the list of each
          layer's weights :math:`(N, H, S, S)`.
    """

    def __init__(
        self,
        encoder_layer: TransformerEncoderLayer,
        num_layers: int,
        norm: nn.Module | None = None,
        evolving: bool = False,
        alpha: float = 0.5,
        beta: float = 0.5,
        kernel_size: int = 3,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm
        self.causal = causal
        heads = encoder_layer.self_attn.num_heads
        self.evolve = (nn.ModuleList(EvolvingAttention(heads, alpha, beta, "dense", kernel_size, causal)
                                     for _ in range(num_layers - 1)) if evolving else None)

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()
        for evolve in self.evolve if self.evolve is not None else ():
            evolve.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Runs the stack; ``is_causal`` defaults to the ``causal`` the stack was built with."""
        is_causal = self.causal if is_causal is None else is_causal
        if self.evolve is not None and is_causal != self.causal:
            raise ValueError(f"this evolving stack was built with causal={self.causal}; its convolutions "
                             f"{'would leak future positions' if is_causal else 'expect causal attention'}")
        if is_causal and mask is None:
            length = src.size(0 if src.dim() == 2 or not self.layers[0].self_attn.batch_first else 1)
            mask = torch.ones(length, length, dtype=torch.bool, device=src.device).triu(1)
        # In self-attention a padded key is also a padded query: its row of the map must not
        # reach real entries through the convolution either.
        rows, _ = split_mask(src_key_padding_mask)
        rows = None if rows is None else rows.view(-1, 1, rows.size(-1), 1)
        x, previous, attention = src, None, []
        for i, layer in enumerate(self.layers):
            transform = None
            if self.evolve is not None and previous is not None:
                transform = partial(_evolve, self.evolve[i - 1], previous, rows)
            x, weights, previous = layer(x, mask, src_key_padding_mask, is_causal, transform,
                                         return_attention_weights=True)
            attention.append(weights)
        if self.norm is not None:
            x = self.norm(x)
        return (x, attention) if return_attention_weights else x

    def extra_repr(self) -> str:
        return "causal=True" if self.causal else ""
