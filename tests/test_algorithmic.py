"""The NTM's procedural tasks and the sequence training module."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from graphmem.cli import main
from graphmem.data import AlgorithmicDataModule, associative_recall_batch, copy_batch, repeat_copy_batch
from graphmem.data.algorithmic import repeat_count_code
from graphmem.lit import SequenceTask, sequence_costs
from graphmem.memory import NTM
from tests.conftest import assert_graphmem_tables_only, rows_in_order

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_copy_batch_layout():
    inputs, targets, mask = copy_batch(5, 3, width=4, generator=torch.Generator().manual_seed(1))
    assert inputs.shape == (11, 3, 5) and targets.shape == (11, 3, 4) and mask.shape == (11, 3)
    assert torch.equal(targets[6:], inputs[:5, :, :4])
    assert inputs[5, :, 4].eq(1).all() and inputs[:5, :, 4].eq(0).all() and inputs[6:].eq(0).all()
    assert mask[6:].all() and not mask[:6].any()


def test_repeat_count_code_by_hand():
    # counts 1..10 have mean 5.5 and variance (10^2 - 1) / 12 = 8.25
    assert repeat_count_code(10, (1, 10)) == pytest.approx(4.5 / math.sqrt(8.25))
    assert repeat_count_code(20, (1, 10)) == pytest.approx(14.5 / math.sqrt(8.25))  # beyond training: 5.05
    assert repeat_count_code(4, (1, 8)) == pytest.approx(-0.5 / math.sqrt(5.25))
    assert repeat_count_code(3, (3, 3)) == 0.0
    with pytest.raises(ValueError, match="repeat_range"):
        repeat_count_code(1, (0, 10))


def test_repeat_copy_batch_by_hand():
    # length 2, 3 repeats, 2 bits: input 2 steps + 1 marker step, answer 2 * 3 + 1 = 7 steps
    inputs, targets, mask = repeat_copy_batch(2, 3, 1, width=2, repeat_range=(1, 4),
                                              generator=torch.Generator().manual_seed(4))
    a, b = inputs[0, 0, :2].tolist(), inputs[1, 0, :2].tolist()
    code = 0.5 / math.sqrt(1.25)  # counts 1..4: mean 2.5, variance (4^2 - 1) / 12 = 1.25
    expected_inputs = [a + [0, 0], b + [0, 0], [0, 0, 1, code]] + [[0, 0, 0, 0]] * 7
    torch.testing.assert_close(inputs[:, 0], torch.tensor(expected_inputs))
    assert targets[:, 0].tolist() == [[0, 0, 0]] * 3 + [a + [0], b + [0]] * 3 + [[0, 0, 1]]
    assert mask[:, 0].tolist() == [False] * 3 + [True] * 7
    with pytest.raises(ValueError, match="repeats >= 1"):
        repeat_copy_batch(3, 0, 2)


def test_associative_recall_batch_by_hand():
    # 3 items of one 2-bit vector: delimiter, item, delimiter, item, delimiter, item, then the
    # query between two query delimiters, then one answer step
    inputs, targets, mask = associative_recall_batch(3, 1, width=2, item_length=1,
                                                     generator=torch.Generator().manual_seed(5))
    x0, x1, x2 = (inputs[t, 0, :2].tolist() for t in (1, 3, 5))
    query = inputs[7, 0, :2].tolist()
    answer = {tuple(x0): x1, tuple(x1): x2}[tuple(query)]  # the query is one of the first two items
    assert inputs[:, 0].tolist() == [[0, 0, 1, 0], x0 + [0, 0], [0, 0, 1, 0], x1 + [0, 0], [0, 0, 1, 0],
                                     x2 + [0, 0], [0, 0, 0, 1], query + [0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert targets[:, 0].tolist() == [[0, 0]] * 9 + [answer]
    assert mask[:, 0].tolist() == [False] * 9 + [True]


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
    assert [(int(m.sum(0)[0]), label) for _, _, m, label in dm.test_dataloader()] == [(7, "7"), (9, "9")]
    with pytest.raises(ValueError, match="unknown task"):
        AlgorithmicDataModule(task="sorting")


def test_eval_batch_size_sets_validation_and_test_batches():
    dm = AlgorithmicDataModule(batch_size=1, eval_batch_size=5, val_batches=2, test_sizes=(7,))
    assert [b[0].size(1) for b in dm.train_dataloader()][:3] == [1, 1, 1]
    assert [b[0].size(1) for b in dm.val_dataloader()] == [5, 5]
    assert [b[0].size(1) for b in dm.test_dataloader()] == [5]
    sized = AlgorithmicDataModule(val_sizes=(30, 40), val_batches=3, eval_batch_size=2)
    assert [int(m.sum(0)[0]) for _, _, m, _ in sized.val_dataloader()] == [30, 40, 30]  # cycled, longer than trained
    with pytest.raises(ValueError, match="eval_batch_size must be at least 1"):
        AlgorithmicDataModule(eval_batch_size=0)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_sequence_task_optimizers(optimizer):
    from graphmem.optim import GravesRMSprop

    model = SequenceTask(NTM(3, 2, memory_size=4, memory_width=2, controller_size=4), optimizer=optimizer, eps=1e-6)
    built = model.configure_optimizers()
    assert isinstance(built, torch.optim.Adam if optimizer == "adam" else GravesRMSprop)
    assert built.defaults["eps"] == 1e-6
    with pytest.raises(ValueError, match="optimizer must be"):
        SequenceTask(NTM(3, 2), optimizer="sgd")


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
    assert "test_bit_error_rate/3" in result and "test_cost/3" in result


@pytest.mark.slow
def test_compiled_ntm_step_matches_eager():
    torch.manual_seed(0)
    options = dict(memory_size=16, memory_width=8, controller_size=32, read_heads=2, write_heads=2)
    eager = NTM(5, 4, **options)
    compiled = NTM(5, 4, compile_step=True, **options)
    compiled.load_state_dict(eager.state_dict())
    inputs, _, _ = copy_batch(4, 3, width=4)
    outputs = [model(inputs)[0] for model in (eager, compiled)]
    assert torch.allclose(*outputs, atol=1e-5)
    for output in outputs:  # training runs the compiled backward too
        output.square().sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    # a deep copy steps with its own parameters, not those of the model it was copied from
    twin = copy.deepcopy(compiled)
    with torch.no_grad():
        twin.cell.read_heads.linear.weight.zero_()
        eager.cell.read_heads.linear.weight.zero_()
    torch.testing.assert_close(twin(inputs)[0], eager(inputs)[0], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_compiled_ntm_step_compiles_once_per_grad_mode():
    """Step 0 shares the later steps' graph, and a new batch size, ``no_grad`` and
    ``inference_mode`` add one graph each: 4 in all, under dynamo's recompile limit of 8, which
    a Lightning fit, validate and test used to exceed (the step then fell back to eager)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    options = dict(memory_size=8, memory_width=4, controller_size=8)
    eager = NTM(3, 2, **options)
    compiled = NTM(3, 2, compile_step=True, **options)
    compiled.load_state_dict(eager.state_dict())
    for batch in (6, 6, 5):
        inputs = torch.randn(4, batch, 3)
        for model in (eager, compiled):
            model(inputs)[0].sum().backward()
    for mode in (torch.no_grad, torch.inference_mode):
        for batch in (6, 2):
            inputs = torch.randn(4, batch, 3)
            with mode():
                torch.testing.assert_close(compiled(inputs)[0], eager(inputs)[0], atol=1e-5, rtol=1e-4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 4


@pytest.mark.parametrize("recipe, sizes, keys, fused", [
    ("ntm_repeat_copy", "[[2, 3], 4]", ["2x3", "4"], False),  # a fixed count, and a count from the training range
    ("ntm_associative_recall", "[3, 12]", ["3", "12"], False),  # item counts, not the 3 scored answer steps
    ("ntm_associative_recall_lstm", "[3]", ["3"], False),
    ("ntm_copy", "[3, 5]", ["3", "5"], True),  # the fused C++ kernel inside a Lightning fit, validation and test
])
def test_ntm_recipe_smoke(recipe, sizes, keys, fused, tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    cli = main(["fit", "--config", str(RECIPES / f"{recipe}.yaml"), "--trainer.max_epochs", "1",
                "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
                "--trainer.logger.init_args.save_dir", str(tmp_path),
                "--model.init_args.model.init_args.compile_step", "false",
                "--model.init_args.model.init_args.fused", str(fused).lower(),
                "--model.init_args.model.init_args.memory_size", "16", "--data.init_args.test_sizes", sizes])
    assert cli.model.model.fused is fused
    cell, dm = cli.model.model.cell, cli.datamodule
    assert (cell.input_size, cell.output_size) == (dm.input_size, dm.output_size)  # sized by its data
    metrics = cli.trainer.callback_metrics
    logged = {name.split("/", 1)[1] for name in metrics if name.startswith("test_bit_error_rate/")}
    assert logged == set(keys)
    # once, at the end of test, in the order of test_sizes (Lightning's table put 12 before 3)
    assert caplog.text.count("test cost and bit error rate per size:") == 1
    assert rows_in_order(caplog.text, keys)
    assert_graphmem_tables_only(capsys, caplog)
    assert all(0 <= float(metrics[f"test_bit_error_rate/{key}"]) <= 1 for key in keys)
    assert float(metrics["test_cost"]) > 0 and list(tmp_path.rglob("best-*.ckpt"))
