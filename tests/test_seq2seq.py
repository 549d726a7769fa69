"""The reverse / sort task generator and the attention encoder-decoder built on Seq2SeqAttention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from graphmem.data.sequence_tasks import BOS, EOS, NUM_SPECIAL, PAD, sequence_task_batch, vocab_size
from graphmem.models.seq2seq import Seq2Seq


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("task", ["reverse", "sort"])
def test_task_batches_by_hand(task):
    batch = sequence_task_batch(task, 16, 1, 7, num_symbols=5, generator=torch.Generator().manual_seed(3))
    for src, t_in, t_out in zip(*batch):
        tokens = [t for t in src.tolist() if t != PAD]
        assert 1 <= len(tokens) <= 7 and all(NUM_SPECIAL <= t < NUM_SPECIAL + 5 for t in tokens)
        assert src.tolist() == tokens + [PAD] * (src.numel() - len(tokens))  # padding only at the end
        answer = tokens[::-1] if task == "reverse" else sorted(tokens)
        assert t_out.tolist() == answer + [EOS] + [PAD] * (t_out.numel() - len(answer) - 1)
        assert t_in.tolist() == [BOS] + answer + [PAD] * (t_in.numel() - len(answer) - 1)
    assert vocab_size(5) == 8
    with pytest.raises(ValueError, match="unknown task"):
        sequence_task_batch("rotate", 2)


@pytest.mark.parametrize("score", ["additive", "dot", "bilinear"])
def test_teacher_forced_shapes_and_masked_attention(score):
    model = Seq2Seq(vocab_size(6), embedding_dim=8, hidden_dim=12, score=score)
    batch = sequence_task_batch("reverse", 5, 2, 6, num_symbols=6)
    logits, weights = model(batch.source, batch.target_in)
    B, L = batch.source.shape
    assert logits.shape == (B, L + 1, vocab_size(6)) and weights.shape == (B, L + 1, L)
    padded = (batch.source == PAD).unsqueeze(1).expand_as(weights)
    assert (weights[padded] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, L + 1))


def test_padding_does_not_change_a_sequence():
    model = Seq2Seq(vocab_size(6), embedding_dim=8, hidden_dim=12).eval()
    batch = sequence_task_batch("reverse", 6, 1, 8, num_symbols=6, generator=torch.Generator().manual_seed(1))
    logits, _ = model(batch.source, batch.target_in)
    for b in range(6):
        n = int((batch.source[b] != PAD).sum())
        alone, _ = model(batch.source[b:b + 1, :n], batch.target_in[b:b + 1, :n + 1])
        torch.testing.assert_close(logits[b:b + 1, :n + 1], alone, rtol=1e-4, atol=1e-5)


def test_generate_is_greedy_and_stops_at_eos():
    model = Seq2Seq(vocab_size(4), embedding_dim=8, hidden_dim=8).eval()
    source = sequence_task_batch("sort", 3, 2, 4, num_symbols=4).source
    tokens, weights = model.generate(source, max_length=5)
    assert tokens.shape[0] == 3 and tokens.shape[1] <= 5 and weights.shape[:2] == tokens.shape
    logits, _ = model(source, torch.cat([torch.full((3, 1), BOS), tokens[:, :-1]], 1))
    first_eos = [(row == EOS).nonzero()[0].item() if (row == EOS).any() else row.numel() for row in tokens]
    for b, stop in enumerate(first_eos):  # up to EOS, every token is the argmax given the previous ones
        assert torch.equal(tokens[b, :stop + 1], logits[b].argmax(-1)[:stop + 1])
        assert (tokens[b, stop + 1:] == PAD).all()


@pytest.mark.parametrize("normalizer", ["softmax", "hard"])
def test_training_smoke_loss_decreases(normalizer):
    torch.set_num_threads(1)
    model = Seq2Seq(vocab_size(5), embedding_dim=16, hidden_dim=32, normalizer=normalizer)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        batch = sequence_task_batch("reverse", 32, 1, 5, num_symbols=5, generator=generator)
        logits, _ = model(batch.source, batch.target_in)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.target_out.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_errors():
    with pytest.raises(ValueError, match="even"):
        Seq2Seq(10, hidden_dim=7)
    model = Seq2Seq(10, hidden_dim=8)
    with pytest.raises(ValueError, match="non-padding"):
        model.encode(torch.tensor([[3, 4], [0, 0]]))
