"""Every score and normalizer of the attention core written out with plain torch ops, for
tests that check a layer against the formulas rather than against the core's own code.

Inputs are in the dense multi-head layout: queries ``(B, H, L_q, D)``, keys ``(B, H, L_k, D)``,
logits ``(B, H, L_q, L_k)``; a layer without heads is checked with ``H = 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphmem.attention import NORMALIZERS, SCORES, Score

SCORE_NAMES = tuple(SCORES)
NORMALIZER_NAMES = NORMALIZERS


def hand_score(name: str, scorer: Score, q: Tensor, k: Tensor) -> Tensor:
    """The logits of the score ``name`` with the parameters of ``scorer``, by its formula."""
    if name == "dot":  # k^T q
        return torch.einsum("bhid,bhjd->bhij", q, k)
    if name == "scaled_dot":  # k^T q / sqrt(D)
        return torch.einsum("bhid,bhjd->bhij", q, k) / q.size(-1) ** 0.5
    if name == "bilinear":  # k^T W_h q
        return torch.einsum("bhjr,hrc,bhic->bhij", k, scorer.weight, q)
    if name == "cosine":  # softplus(rho_h) cos(k, q)
        beta = F.softplus(scorer.raw_beta).view(1, -1, 1, 1)
        return beta * torch.einsum("bhid,bhjd->bhij", F.normalize(q, dim=-1), F.normalize(k, dim=-1))
    if name == "gat":  # LeakyReLU(a_t . q_i + a_s . k_j)
        a_t, a_s = scorer.att_dst[0], scorer.att_src[0]  # (H, D)
        pre = torch.einsum("bhid,hd->bhi", q, a_t)[..., None] + torch.einsum("bhjd,hd->bhj", k, a_s)[..., None, :]
        return F.leaky_relu(pre, scorer.negative_slope)
    if name == "gatv2":  # a^T LeakyReLU(q_i + k_j)
        hidden = q[..., :, None, :] + k[..., None, :, :]
        return torch.einsum("bhijd,hd->bhij", F.leaky_relu(hidden, scorer.negative_slope), scorer.att[0])
    if name == "additive":  # v^T tanh(U q_i + W k_j)
        uq = torch.einsum("bhid,had->bhia", q, scorer.query_weight)
        wk = torch.einsum("bhjd,had->bhja", k, scorer.key_weight)
        return torch.einsum("bhija,ha->bhij", torch.tanh(uq[..., :, None, :] + wk[..., None, :, :]), scorer.att)
    raise AssertionError(f"no hand formula for score {name!r}")


def hand_normalize(name: str, logits: Tensor, keep: Tensor, uniform: Tensor | None = None,
                   tau: float = 1.0) -> Tensor:
    """Weights over the last dimension; ``keep`` (broadcasting) marks the keys that may be seen,
    ``uniform`` holds the U(0, 1) draws of the Gumbel normalizers."""
    if name == "none":  # the logits themselves, zero where masked
        return torch.where(keep, logits, torch.zeros_like(logits))
    masked = logits.masked_fill(~keep, float("-inf"))
    if name in ("gumbel", "gumbel_hard"):  # softmax((s + g) / tau), g = -log(-log(u))
        masked = (masked - torch.log(-torch.log(uniform))) / tau
    soft = torch.softmax(masked, -1)
    if name in ("hard", "gumbel_hard"):  # one-hot of the best key
        return F.one_hot(soft.argmax(-1), soft.size(-1)).to(soft.dtype)
    return soft


def randomize(scorer: Score) -> None:
    """Moves a scorer's parameters away from their start (identity, equal strengths), so that a
    test can tell its parameters apart."""
    with torch.no_grad():
        for param in scorer.parameters():
            param.normal_()
