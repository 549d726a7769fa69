"""The NTM's content addressing with every score and normalizer of the core, against the
paper's addressing written out by hand (Graves et al. 2014, eq. 5-9)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from graphmem.memory import NTM, NTMCell
from graphmem.memory.addressing import CONTENT_NORMALIZERS
from graphmem.memory.heads import ReadHeads, WriteHeads
from tests.hand_attention import SCORE_NAMES, hand_normalize, hand_score, randomize

DT = torch.float64
B, N, M, K, C = 2, 7, 5, 3, 8  # batch, memory rows, width, heads, controller size


def _hand_content(name: str, scorer, key: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """s(k, M(i)) for keys ``(B, K, M)`` and rows ``(B, N, M)``, as ``(B, K, N)``."""
    if name == "cosine":  # the plain cosine: the controller's beta is the strength
        return torch.einsum("bkm,bnm->bkn", F.normalize(key, dim=-1), F.normalize(memory, dim=-1))
    return hand_score(name, scorer, key[:, None], memory[:, None])[:, 0]  # one scorer shared by the heads


def _hand_location(content, previous, gate, shift, gamma):
    """Interpolation, circular shift by -R..R and sharpening, one loop per row."""
    gated = gate[..., None] * content + (1 - gate[..., None]) * previous
    radius = (shift.size(-1) - 1) // 2
    shifted = torch.zeros_like(gated)
    for i in range(gated.size(-1)):
        for offset in range(-radius, radius + 1):
            shifted[..., i] += gated[..., (i - offset) % gated.size(-1)] * shift[..., offset + radius]
    powered = shifted ** gamma[..., None]
    return powered / powered.sum(-1, keepdim=True)


@pytest.mark.parametrize("normalizer", CONTENT_NORMALIZERS)
@pytest.mark.parametrize("score", SCORE_NAMES)
def test_content_addressing_every_score_and_normalizer_by_hand(score, normalizer):
    torch.manual_seed(0)
    heads = ReadHeads(C, M, K, shift_range=1, score=score, normalizer=normalizer).to(DT)
    if heads.scorer is not None:
        randomize(heads.scorer)
    controller_out = torch.randn(B, C, dtype=DT)
    memory = torch.randn(B, N, M, dtype=DT)
    memory[1, 2] = 0.0  # an unwritten row
    previous = torch.softmax(torch.randn(B, K, N, dtype=DT), -1)
    torch.manual_seed(1)
    read, weights = heads(controller_out, memory, previous)

    key, beta, gate, shift, gamma = heads.parameters_from(controller_out)
    uniform = None
    if normalizer.startswith("gumbel"):  # the U(0, 1) draws the Gumbel normalizer made
        torch.manual_seed(1)
        uniform = torch.rand(B, K, N, dtype=DT)
    logits = beta[..., None] * _hand_content(score, heads.scorer, key, memory)
    content = hand_normalize(normalizer, logits, torch.ones(B, K, N, dtype=torch.bool), uniform)
    expected = _hand_location(content, previous, gate, shift, gamma)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(read, torch.einsum("bkn,bnm->bkm", expected, memory))


def test_a_score_with_parameters_learns_inside_the_ntm():
    torch.manual_seed(0)
    ntm = NTM(4, 3, memory_size=6, memory_width=5, controller_size=8, read_heads=2, write_heads=1, score="bilinear")
    assert isinstance(ntm.cell.read_heads.scorer, torch.nn.Module) and isinstance(ntm.cell.write_heads, WriteHeads)
    assert "score='bilinear'" in repr(ntm)
    ntm(torch.randn(5, 2, 4))[0].square().sum().backward()
    for heads in (ntm.cell.read_heads, ntm.cell.write_heads):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in heads.scorer.parameters())


def test_the_paper_s_addressing_keeps_its_state_dict():
    # the default score has no parameters: checkpoints of earlier NTMs load unchanged
    cell = NTMCell(4, 3, memory_size=6, memory_width=5, controller_size=8)
    assert cell.read_heads.scorer is None and not any("scorer" in name for name in cell.state_dict())


def test_a_normalizer_without_a_distribution_is_refused():
    with pytest.raises(ValueError, match="needs weights that sum to one .* normalizer 'none'"):
        NTMCell(4, 3, normalizer="none")
    with pytest.raises(ValueError, match="unknown score 'euclid'"):
        NTMCell(4, 3, score="euclid")
