"""The NTM's procedural tasks and the sequence training module."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from graphmem.data import AlgorithmicDataModule, associative_recall_batch, copy_batch, repeat_copy_batch
from graphmem.lit import SequenceTask, sequence_costs
from graphmem.memory import NTM


def test_copy_batch_layout():
    inputs, targets, mask = copy_batch(5, 3, width=4, generator=torch.Generator().manual_seed(1))
    assert inputs.shape == (11, 3, 5) and targets.shape == (11, 3, 4) and mask.shape == (11, 3)
    assert torch.equal(targets[6:], inputs[:5, :, :4])
    assert inputs[5, :, 4].eq(1).all() and inputs[:5, :, 4].eq(0).all() and inputs[6:].eq(0).all()
    assert mask[6:].all() and not mask[:6].any()


def test_repeat_copy_batch_layout():
    inputs, targets, mask = repeat_copy_batch(3, 4, 2, width=4, max_repeats=8)
    seq = inputs[:3, :, :4]
    assert inputs[3, :, 4].eq(0.5).all()
    for r in range(4):
        assert torch.equal(targets[4 + 3 * r:7 + 3 * r, :, :4], seq)
    assert targets[-1, :, 4].eq(1).all() and targets[:-1, :, 4].eq(0).all()
    assert mask.sum(0).eq(13).all()


def test_associative_recall_answer_follows_query():
    width, items, length = 6, 5, 3
    inputs, targets, mask = associative_recall_batch(items, 8, width, length, torch.Generator().manual_seed(3))
    for b in range(8):
        stored = [inputs[i * 4 + 1:i * 4 + 4, b, :width] for i in range(items)]
        query = inputs[items * 4 + 1:items * 4 + 4, b, :width]
        position = next(i for i, item in enumerate(stored) if torch.equal(item, query))
        assert torch.equal(targets[-length:, b], stored[position + 1])
    assert mask.sum(0).eq(length).all()
    with pytest.raises(ValueError, match="at least 2"):
        associative_recall_batch(1, 2)


def test_sequence_costs_by_hand():
    logits = torch.tensor([[[2.0, -1.0]], [[0.5, 0.0]]])
    targets = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]])
    mask = torch.tensor([[False], [True]])
    bits, errors = sequence_costs(logits, targets, mask)
    p = torch.sigmoid(torch.tensor([0.5, 0.0]))
    expected = -(math.log2(1 - p[0]) + math.log2(p[1]))
    assert bits.item() == pytest.approx(expected, rel=1e-6)
    assert errors.item() == 2.0  # 0.5 -> 1 is wrong, 0.0 -> 0 is wrong


def test_datamodule_is_seeded_and_fresh():
    dm = AlgorithmicDataModule(batch_size=4, batches_per_epoch=3, val_batches=2, test_sizes=(7, 9))
    val_a = [b[0] for b in dm.val_dataloader()]
    val_b = [b[0] for b in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(val_a, val_b))
    loader = dm.train_dataloader()
    first, second = [b[0] for b in loader], [b[0] for b in loader]
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, second))
    assert [int(m.sum(0)[0]) for _, _, m in dm.test_dataloader()] == [7, 9]
    with pytest.raises(ValueError, match="unknown task"):
        AlgorithmicDataModule(task="sorting")


def test_ntm_trains_on_copy(tmp_path):
    L.seed_everything(0)
    dm = AlgorithmicDataModule(min_size=1, max_size=3, width=4, batch_size=8, batches_per_epoch=20,
                               val_batches=2, test_sizes=(3,))
    model = SequenceTask(NTM(dm.input_size, dm.output_size, memory_size=16, memory_width=8, controller_size=32),
                         lr=3e-3)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=10, default_root_dir=tmp_path)
    first = trainer.validate(model, dm, verbose=False)[0]["val_cost"]
    trainer.fit(model, dm)
    last = trainer.validate(model, dm, verbose=False)[0]["val_cost"]
    assert last < first
    result = trainer.test(model, dm, verbose=False)[0]
    assert "test_bit_error_rate/3" in result


@pytest.mark.slow
def test_compiled_ntm_step_matches_eager():
    torch.manual_seed(0)
    eager = NTM(5, 4, memory_size=16, memory_width=8, controller_size=32)
    compiled = NTM(5, 4, memory_size=16, memory_width=8, controller_size=32, compile_step=True)
    compiled.load_state_dict(eager.state_dict())
    inputs, _, _ = copy_batch(4, 3, width=4)
    assert torch.allclose(eager(inputs)[0], compiled(inputs)[0], atol=1e-5)
