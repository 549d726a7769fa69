"""Hopfield: associate a set of state patterns with a set of stored patterns."""

from __future__ import annotations

import math

from torch import Tensor, nn

from graphmem.attention import check_attention_options, make_score
from graphmem.nn.hopfield.update import hopfield_update


def _projection(size: int, out: int, learn: bool, normalize: bool,
                bias: bool) -> tuple[nn.LayerNorm | None, nn.Linear | None]:
    """The optional layer norm and linear map of one input; none for inputs passed as they are."""
    if not learn:
        return None, None
    return (nn.LayerNorm(size) if normalize else None), nn.Linear(size, out, bias=bias)


class Hopfield(nn.Module):
    r"""A modern Hopfield association layer (Ramsauer et al. 2020, ``hflayers.Hopfield``).

    State patterns :math:`R` (queries) retrieve from stored patterns :math:`Y` (keys), and
    the result is read from the value patterns :math:`V` (the "pattern projection",
    :math:`Y` unless given):

    .. math::
        Z = \Big\Vert_{h=1}^{H} \operatorname{normalize}\big(\beta\, s(R W_Q^h, Y W_K^h)\big)\,
            V W_V^h \; W_O, \qquad s(q, k) = q^\top k \text{ and normalize = softmax by default}

    computed by :func:`~graphmem.nn.hopfield.hopfield_update` per head: with
    ``num_iterations > 1`` the projected state is first updated in the association space
    (:math:`\xi \leftarrow \operatorname{softmax}(\beta \xi K^\top) K`) until it converges,
    then read out through the values. One iteration with
    :math:`\beta = 1/\sqrt{d}` is transformer attention.

    Args:
        input_size: features of the state patterns, :math:`F_R`.
        hidden_size: size :math:`d` of the association space per head
            (default ``input_size // num_heads``).
        output_size: output features (default ``input_size``).
        stored_size: features of the stored patterns (default ``input_size``).
        value_size: features of the value patterns (default ``stored_size``).
        value_hidden_size: value size per head (default ``hidden_size``).
        num_heads: :math:`H`.
        beta: inverse temperature (default :math:`1/\sqrt{d}`).
        num_iterations: the most Hopfield updates per forward.
        tol: stop iterating once the state moves less than this.
        dropout: dropout on the attention weights.
        bias: biases in the projections.
        normalize: layer-normalise the projected inputs first (as ``hflayers`` does).
        project_state / project_stored / project_value: learn :math:`W_Q` / :math:`W_K` /
            :math:`W_V`; without, that input must already be in the association space
            (``num_heads * hidden_size`` or ``num_heads * value_hidden_size`` features),
            which is how :class:`HopfieldPooling` and :class:`HopfieldLayer` pass learned
            patterns.
        score: a name of :data:`graphmem.attention.SCORES` (default ``"dot"``); :math:`\beta`
            multiplies it as an inverse temperature. Scores with parameters learn one set per
            head (``scorer``).
        normalizer: a name of :data:`graphmem.attention.NORMALIZERS` (default ``"softmax"``).

    Shapes:
        - state: :math:`(*, L_q, F_R)`; stored: :math:`(*, L_k, F_Y)`; value:
          :math:`(*, L_k, F_V)`; ``stored_mask``: :math:`(*, L_k)` boolean, ``True`` for
          real patterns. Leading dimensions broadcast.
        - output: :math:`(*, L_q, F_{out})`; with ``return_attention_weights`` also the
          weights :math:`(*, H, L_q, L_k)`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int | None = None,
        output_size: int | None = None,
        stored_size: int | None = None,
        value_size: int | None = None,
        value_hidden_size: int | None = None,
        num_heads: int = 1,
        beta: float | None = None,
        num_iterations: int = 1,
        tol: float | None = 1e-4,
        dropout: float = 0.0,
        bias: bool = True,
        normalize: bool = False,
        project_state: bool = True,
        project_stored: bool = True,
        project_value: bool = True,
        score: str = "dot",
        normalizer: str = "softmax",
    ) -> None:
        super().__init__()
        check_attention_options(score, normalizer)
        if hidden_size is None:
            if input_size % num_heads:
                raise ValueError(f"input_size ({input_size}) must be divisible by num_heads ({num_heads}) "
                                 "unless hidden_size is given")
            hidden_size = input_size // num_heads
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = input_size if output_size is None else output_size
        self.stored_size = input_size if stored_size is None else stored_size
        self.value_size = self.stored_size if value_size is None else value_size
        self.value_hidden_size = hidden_size if value_hidden_size is None else value_hidden_size
        self.num_heads = num_heads
        self.beta = 1.0 / math.sqrt(hidden_size) if beta is None else beta
        self.num_iterations = num_iterations
        self.tol = tol
        self.dropout = dropout
        self.score = score
        self.normalizer = normalizer
        self.scorer = make_score(score, hidden_size, num_heads)

        inner, inner_value = num_heads * hidden_size, num_heads * self.value_hidden_size
        norm_bias = (normalize, bias)
        self.state_norm, self.query_proj = _projection(input_size, inner, project_state, *norm_bias)
        self.stored_norm, self.key_proj = _projection(self.stored_size, inner, project_stored, *norm_bias)
        self.value_norm, self.value_proj = _projection(self.value_size, inner_value, project_value,
                                                       *norm_bias)
        self.out_proj = nn.Linear(inner_value, self.output_size, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.state_norm, self.query_proj, self.stored_norm, self.key_proj,
                       self.value_norm, self.value_proj, self.out_proj, self.scorer):
            if module is not None:
                module.reset_parameters()

    def _heads(self, x: Tensor, norm: nn.Module | None, proj: nn.Module | None, size: int) -> Tensor:
        """``(*, L, F)`` patterns as ``(*, H, L, size)`` per-head patterns in the association space."""
        if norm is not None:
            x = norm(x)
        if proj is not None:
            x = proj(x)
        if x.size(-1) != self.num_heads * size:
            raise ValueError(f"unprojected patterns need {self.num_heads * size} features "
                             f"(num_heads * per-head size), got {x.size(-1)}")
        return x.unflatten(-1, (self.num_heads, size)).transpose(-2, -3)

    def forward(
        self,
        state: Tensor,
        stored: Tensor | None = None,
        value: Tensor | None = None,
        stored_mask: Tensor | None = None,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Associates ``state`` with ``stored`` (``state`` itself when omitted); see the class docstring."""
        stored = state if stored is None else stored
        value = stored if value is None else value
        query = self._heads(state, self.state_norm, self.query_proj, self.hidden_size)
        key = self._heads(stored, self.stored_norm, self.key_proj, self.hidden_size)
        val = self._heads(value, self.value_norm, self.value_proj, self.value_hidden_size)
        mask = None if stored_mask is None else stored_mask[..., None, None, :]
        out, weights = hopfield_update(query, key, self.beta, self.num_iterations, self.tol, mask, val,
                                       self.normalizer, self.dropout, self.training, self.scorer)
        out = self.out_proj(out.transpose(-2, -3).flatten(-2))
        return (out, weights) if return_attention_weights else out

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}", f"hidden_size={self.hidden_size}", f"output_size={self.output_size}",
                 f"num_heads={self.num_heads}", f"beta={self.beta:.4g}"]
        if self.stored_size != self.input_size:
            parts.append(f"stored_size={self.stored_size}")
        if self.num_iterations != 1:
            parts.append(f"num_iterations={self.num_iterations}")
        if self.score != "dot":
            parts.append(f"score={self.score!r}")
        if self.normalizer != "softmax":
            parts.append(f"normalizer={self.normalizer!r}")
        return ", ".join(parts)
