"""Ensembles of question-answering models: `graphmem fit --ensemble N` on a bAbI recipe, and
`graphmem ensemble --out FOLDER CKPT ...` of finished runs. Both score every member and the mean
of their probabilities as error per task.

The reference is computed by hand: each member's network run outside Lightning on the test
tensors, the softmax averaged with numpy, the answer the most probable word, the error per
task counted with pandas."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from graphmem.cli import main
from graphmem.ensemble import load_ensemble
from graphmem.errors import GraphmemError
from graphmem.lit.qa import compare_error_table, per_task_error
from graphmem.recipe import load_recipe
from tests.test_babi import STORY, write_task

RECIPE = str(Path(__file__).resolve().parent.parent / "recipes" / "babi_memn2n.yaml")
TASKS = (1, 2, 10)


def _fit_args(root: Path, run: Path, *extra: str) -> list[str]:
    return ["fit", "--config", RECIPE, "--data.init_args.root", str(root), "--data.init_args.tasks", "[1, 2, 10]",
            "--data.init_args.batch_size", "8", "--model.init_args.model.init_args.embedding_dim", "8",
            "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
            "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run), *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """An ensemble of two bAbI models (seeds 3 and 4) trained by fit --ensemble, and one made of
    the same two runs by graphmem ensemble."""
    root = tmp_path_factory.mktemp("babi")
    for task in TASKS:
        write_task(root, task, "train", STORY * 8)
        write_task(root, task, "test", STORY * 3)
    run = tmp_path_factory.mktemp("run")
    main(_fit_args(root, run, "--ensemble", "2", "--seed_everything", "3"))
    fitted = run / "lightning_logs" / "ensemble_0"
    assembled = tmp_path_factory.mktemp("assembled") / "ensemble"
    main(["ensemble", "--out", str(assembled), *(str(m.checkpoint) for m in load_ensemble(fitted).members)])
    return {"root": root, "run": run, "fitted": fitted, "assembled": assembled}


def _by_hand(folder: Path, part: str = "test") -> pd.DataFrame:
    """Error per task, mean and failed count of each member and of the mean probability, on
    ``part`` (``test`` or ``valid``)."""
    columns, probabilities = {}, []
    for member in load_ensemble(folder).members:
        cli = load_recipe(str(member.config), str(member.checkpoint))
        cli.datamodule.setup("test")
        stories, questions, answers, tasks = cli.datamodule.splits[part]
        network = cli.model.model.eval()
        # the recipe's first 6 epochs are linear start (no softmax in the hops): both epochs here
        network.linear_start = torch.load(member.checkpoint, weights_only=True)["epoch"] < 6
        with torch.no_grad():
            probabilities.append(torch.softmax(network(stories, questions), -1).numpy())
        columns[f"seed {member.seed}"] = probabilities[-1]
    columns["ensemble"] = np.mean(probabilities, axis=0)
    table = {}
    for name, p in columns.items():
        wrong = pd.Series(p.argmax(-1) != answers.numpy()).groupby(tasks.numpy()).mean()
        table[name] = [*wrong.to_numpy(), wrong.mean(), int((wrong > 0.05).sum())]
    return pd.DataFrame(table, index=[*(f"qa{t}" for t in wrong.index), "mean", "failed"])


@pytest.mark.parametrize("which", ["fitted", "assembled"])
def test_qa_ensemble_scores_are_the_error_of_the_mean_probability(trained, which):
    folder = trained[which]
    scores = pd.read_csv(folder / "test_error.csv", index_col="task")
    assert list(scores.columns) == ["seed 3", "seed 4", "ensemble"]
    expected = _by_hand(folder)
    assert list(scores.index) == list(expected.index) == ["qa1", "qa2", "qa10", "mean", "failed"]
    np.testing.assert_allclose(scores.to_numpy(dtype=float), expected.to_numpy(dtype=float), atol=1e-4)
    assert (folder / "val_error.csv").is_file() and not (folder / "test_roc_auc.csv").exists()


def test_an_ensemble_of_finished_runs_copies_them_and_scores_as_fit_does(trained):
    fitted, assembled = load_ensemble(trained["fitted"]), load_ensemble(trained["assembled"])
    assert assembled.data == fitted.data and assembled.data["data"] == "BabiDataModule"
    assert [m.seed for m in assembled.members] == [3, 4]
    for ours, theirs in zip(assembled.members, fitted.members):
        assert ours.checkpoint.read_bytes() == theirs.checkpoint.read_bytes()
        assert ours.checkpoint.is_relative_to(trained["assembled"]) and ours.config.is_file()
        assert (ours.config.parent / "metrics.csv").is_file()
    for name in ("val_error.csv", "test_error.csv"):
        assert (trained["assembled"] / name).read_text() == (trained["fitted"] / name).read_text()


def test_per_task_error_and_its_table_by_hand():
    predicted, answers = torch.tensor([1, 2, 3, 4, 5, 6]), torch.tensor([1, 0, 3, 4, 0, 0])
    tasks = torch.tensor([7, 7, 1, 1, 2, 2])
    errors = per_task_error(predicted, answers, tasks)
    assert errors == {1: 0.0, 2: 1.0, 7: 0.5}
    table = compare_error_table({"seed 0": errors, "ensemble": {1: 0.0, 2: 0.04, 7: 0.1}}, 0.05, "validation")
    assert table.splitlines()[0] == "per-task validation error:"
    assert "| qa2 | 100.0 | 4.0 |" in table and "| mean | 50.00 | 4.67 |" in table and "| failed | 2 | 1 |" in table


def _checkpoints(trained) -> list[str]:
    return [str(m.checkpoint) for m in load_ensemble(trained["fitted"]).members]


def test_bad_ensembles_of_runs_are_refused_before_anything_is_written(trained, tmp_path):
    first, second = _checkpoints(trained)
    with pytest.raises(GraphmemError, match="at least 2 models"):
        main(["ensemble", "--out", str(tmp_path / "one"), first])
    with pytest.raises(GraphmemError, match="hold the same weights"):
        main(["ensemble", "--out", str(tmp_path / "same"), first, first])
    with pytest.raises(GraphmemError, match="not an empty folder"):
        main(["ensemble", "--out", str(trained["assembled"]), first, second])
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(Path(first).read_bytes())
    with pytest.raises(GraphmemError, match="checkpoints/ folder beside its config.yaml"):
        main(["ensemble", "--out", str(tmp_path / "loose"), first, str(loose)])
    assert not any((tmp_path / name).exists() for name in ("one", "same", "loose"))


def test_an_ensemble_of_runs_of_another_network_scores_each_with_its_own(trained, tmp_path):
    """A run with more hops joins an ensemble: it is built from its own config (loading its
    weights into the first member's network would fail), and the ensemble is scored."""
    first, _ = _checkpoints(trained)
    other = tmp_path / "other"
    main(_fit_args(trained["root"], other, "--seed_everything", "5", "--trainer.max_epochs", "1",
                   "--model.init_args.model.init_args.hops", "2"))
    main(["ensemble", "--out", str(tmp_path / "mixed"), first, str(next(other.rglob("*.ckpt")))])
    mixed = load_ensemble(tmp_path / "mixed")
    seed = load_ensemble(trained["fitted"]).members[0].seed
    assert [m.seed for m in mixed.members] == [seed, 5]
    scores = pd.read_csv(tmp_path / "mixed" / "test_error.csv", index_col="task")
    assert list(scores.columns) == [f"seed {seed}", "seed 5", "ensemble"]


def test_ensemble_of_other_data_is_refused(trained, tmp_path):
    first, second = _checkpoints(trained)
    # the second run's config and checkpoint say it was trained on other tasks
    run = tmp_path / "run"
    original = Path(second).parent.parent
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = torch.load(second, weights_only=True)
    checkpoint["graphmem_data"]["tasks"] = [1, 2]
    torch.save(checkpoint, run / "checkpoints" / "best.ckpt")
    (run / "config.yaml").write_text((original / "config.yaml").read_text())
    with pytest.raises(GraphmemError, match="trained on different data"):
        main(["ensemble", "--out", str(tmp_path / "out"), first, str(run / "checkpoints" / "best.ckpt")])
    assert not (tmp_path / "out").exists()


def test_graphmem_ensemble_from_the_shell_names_a_bad_argument_in_one_line(trained, tmp_path, monkeypatch, capsys):
    first = _checkpoints(trained)[0]
    monkeypatch.setattr(sys, "argv", ["graphmem", "ensemble", "--out", str(tmp_path / "x"), first, first])
    with pytest.raises(SystemExit) as exit_:
        main()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("graphmem: error:")]
    assert exit_.value.code == 2 and len(errors) == 1 and "hold the same weights" in errors[0]


def test_fit_ensemble_of_a_qa_recipe_keeps_its_config(trained):
    for member in load_ensemble(trained["fitted"]).members:
        config = yaml.safe_load(member.config.read_text())
        assert config["seed_everything"] == member.seed and config["ensemble"] == 1


def test_greedy_selection_of_qa_runs_scores_minus_the_mean_validation_error(trained, tmp_path):
    """The first run chosen is the one of the lowest validation error alone (computed by hand);
    the second is kept only if the pair's mean probability has a lower error still."""
    members = load_ensemble(trained["fitted"]).members
    main(["ensemble", "--select", "greedy", "--out", str(tmp_path / "greedy"), *(str(m.checkpoint) for m in members)])
    valid = _by_hand(trained["fitted"], "valid").loc["mean"]
    steps = pd.read_csv(tmp_path / "greedy" / "selection.csv", index_col="size")
    alone = {name: -valid[name] for name in ("seed 3", "seed 4")}
    assert steps["added"].iloc[0] == max(alone, key=lambda name: (alone[name], name == "seed 3"))
    assert steps["validation"].iloc[0] == pytest.approx(max(alone.values()), abs=1e-4)
    if len(steps) == 2:
        assert steps["validation"].iloc[1] == pytest.approx(-valid["ensemble"], abs=1e-4)
        assert -valid["ensemble"] > max(alone.values())
    else:
        assert -valid["ensemble"] <= max(alone.values()) + 1e-4
    kept = [f"seed {m.seed}" for m in load_ensemble(tmp_path / "greedy").members]
    assert sorted(kept) == sorted(steps["added"])
