"""The modern Hopfield update (Ramsauer et al. 2020): dense attention of a state on stored patterns."""

from __future__ import annotations

import math

from torch import Tensor

from graphmem.attention import ScoreFn, attention, dot_score
from graphmem.attention.core import Normalizer


def hopfield_update(
    state: Tensor,
    stored: Tensor,
    beta: float | Tensor | None = None,
    num_iterations: int = 1,
    tol: float | None = 1e-4,
    mask: Tensor | None = None,
    value: Tensor | None = None,
    normalizer: Normalizer = "softmax",
    dropout: float = 0.0,
    training: bool = False,
    score: ScoreFn = dot_score,
) -> tuple[Tensor, Tensor]:
    r"""Retrieves from stored patterns by iterating the modern Hopfield update.

    .. math::
        \xi^{\text{new}} = X \operatorname{normalize}\big(\beta\, s(X, \xi)\big),
        \qquad s(X, \xi) = X^\top \xi \text{ by default}

    with the stored patterns :math:`X` as columns, i.e. in row layout
    ``state <- softmax(beta * state @ stored.T) @ stored``: the attention core's dense layout
    with a :math:`\beta`-scaled dot score (:func:`graphmem.attention.attention` with
    ``scale=beta``), keys and values both ``stored``. The update is the
    minimisation step of the energy :math:`E = -\mathrm{lse}(\beta, X^\top\xi) + \frac12
    \xi^\top\xi + \mathrm{const}`; for well-separated patterns one step retrieves the
    nearest, for small :math:`\beta` it goes to the global average.

    Iterates at most ``num_iterations`` times and stops early once no state entry moves by
    more than ``tol`` (``None`` disables the check and its device sync). With ``value`` the
    last step reads ``value`` instead of ``stored`` with the same weights (the "pattern
    projection" of a Hopfield layer): retrieval happens in the stored space, the result is
    read out in the value space.

    Args:
        state: ``(..., L_q, D)`` state (query) patterns :math:`\xi`.
        stored: ``(..., L_k, D)`` stored patterns :math:`X^\top`.
        beta: inverse temperature, a number or a tensor broadcasting against the
            ``(..., L_q, L_k)`` logits (e.g. ``(H, 1, 1)`` per head); default
            :math:`1/\sqrt{D}`, the transformer's scaling.
        num_iterations: the most updates to run.
        tol: convergence threshold on :math:`\max|\xi^\text{new} - \xi|`.
        mask: boolean, broadcasting to ``(..., L_q, L_k)``; ``True`` = may attend.
        value: optional ``(..., L_k, D_v)`` read by the last step.
        normalizer: a name of :data:`graphmem.attention.NORMALIZERS`.
        dropout: dropout on the weights of the last step, in training.
        training: apply dropout.
        score: any score with the core's signature (a :class:`~graphmem.attention.Score`
            module or a function); :math:`\beta` multiplies it as an inverse temperature.

    Returns:
        The new state ``(..., L_q, D)`` (``(..., L_q, D_v)`` with ``value``) and the last
        step's weights ``(..., L_q, L_k)``.
    """
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be at least 1, got {num_iterations}")
    beta = 1.0 / math.sqrt(state.size(-1)) if beta is None else beta
    for _ in range(num_iterations - 1):
        new = attention(state, stored, stored, score, normalizer, mask=mask, scale=beta).out
        converged = tol is not None and bool((new - state).abs().amax() <= tol)
        state = new
        if converged:
            break
    result = attention(state, stored, stored if value is None else value, score, normalizer, mask=mask,
                       scale=beta, dropout=dropout, training=training)
    return result.out, result.weights
