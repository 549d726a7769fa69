"""The one registry of the attention core: score and normalizer names, their check, and the
factory that builds a score module by name. Every layer's ``score=`` / ``normalizer=`` goes
through here, so a name means the same thing everywhere and fails the same way."""

from __future__ import annotations

import inspect
from typing import Any

from graphmem.attention import scorers
from graphmem.attention.scorers import Score

SCORES: dict[str, type[Score]] = {
    "gat": scorers.GATScore,
    "gatv2": scorers.GATv2Score,
    "additive": scorers.AdditiveScore,
    "dot": scorers.DotScore,
    "scaled_dot": scorers.ScaledDotScore,
    "bilinear": scorers.BilinearScore,
    "cosine": scorers.CosineScore,
}
"""Score name -> module: ``gat`` (GAT's decomposed LeakyReLU score), ``gatv2``, ``additive``
(Bahdanau's tanh score), ``dot``, ``scaled_dot``, ``bilinear``, ``cosine``."""

NORMALIZERS: tuple[str, ...] = ("softmax", "hard", "gumbel", "gumbel_hard", "none")
"""Normalizer names of :func:`graphmem.attention.normalize`; ``none`` keeps the logits."""


def check_attention_options(score: str | None = None, normalizer: str | None = None) -> None:
    """Raises a one-line ``ValueError`` naming a ``score`` or ``normalizer`` the core does not
    have and listing the choices, so that a layer fails when it is built rather than at its
    first forward. ``None`` skips that check."""
    for kind, name, choices in (("score", score, tuple(SCORES)), ("normalizer", normalizer, NORMALIZERS)):
        if name is not None and name not in choices:
            raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(choices)}")


def make_score(name: str, channels: int, heads: int = 1, key_channels: int | None = None,
               **options: Any) -> Score:
    """Builds the score module called ``name`` (a key of :data:`SCORES`).

    ``channels`` is the query size per head, ``key_channels`` the key size (default
    ``channels``). ``options`` are the scorers' own settings (``negative_slope`` of ``gat`` /
    ``gatv2``, ``hidden_channels`` of ``additive``, ``beta`` of ``cosine``); each scorer takes
    those it has and ignores the rest, so that a layer can offer them whatever its score.
    """
    check_attention_options(score=name)
    cls = SCORES[name]
    accepted = inspect.signature(cls).parameters
    return cls(channels, heads, key_channels, **{k: v for k, v in options.items() if k in accepted})
