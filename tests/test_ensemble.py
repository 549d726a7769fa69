"""Issue 13 item 3: `graphmem fit --ensemble N` trains N seeds into one folder with a manifest;
`graphmem predict` on it writes the members' mean probability and standard deviation.

The references are computed by hand: each member's network built from its checkpoint and run
outside Lightning (tests.conftest.reference_probabilities), ROC-AUC with scikit-learn."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from graphmem.cli import main
from graphmem.data import MoleculeDataModule
from graphmem.data.molecule import TOX21_TASKS
from graphmem.ensemble import (CROSS_VALIDATED, Member, cross_validated_selection, export_ensemble, greedy_selection,
                               load_ensemble, validation_folds, write_manifest)
from graphmem.errors import GraphmemError
from graphmem.recipe import checkpoint_data
from tests.conftest import molecule_table, reference_probabilities, write_tox21

RECIPE = str(Path(__file__).resolve().parent.parent / "recipes" / "tox21_gat.yaml")
HIDDEN = ["--model.init_args.model.init_args.hidden_channels", "16"]
GOOD = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC"]


def _fit_args(root: Path, run: Path, *extra: str) -> list[str]:
    return ["fit", "--config", RECIPE, "--data.init_args.root", str(root), *HIDDEN, "--trainer.max_epochs", "1",
            "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
            "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run), *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A two-member ensemble (seeds 0 and 1, one epoch each on the tiny Tox21 table), what fit
    printed, and a plain fit of seed 1 beside it."""
    root = tmp_path_factory.mktemp("data")
    write_tox21(root, molecule_table(240))
    run = tmp_path_factory.mktemp("run")
    main(_fit_args(root, run, "--ensemble", "2"))
    plain = tmp_path_factory.mktemp("plain")
    main(_fit_args(root, plain, "--seed_everything", "1"))
    return {"root": root, "run": run, "folder": run / "lightning_logs" / "ensemble_0",
            "plain": next(plain.rglob("*.ckpt"))}


def _shell(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Runs ``graphmem *args`` as the console script does: (exit status, the one error line)."""
    monkeypatch.setattr(sys, "argv", ["graphmem", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("graphmem: error:")]
    assert len(errors) == 1, errors
    return exit_.value.code, errors[0]


def test_fit_ensemble_trains_one_run_per_seed_and_lists_them(trained):
    folder = trained["folder"]
    record = json.loads((folder / "ensemble.json").read_text())
    assert [m["seed"] for m in record["members"]] == [0, 1]
    assert record["data"] == {"data": "MoleculeDataModule", "dataset": "tox21", "tasks": list(TOX21_TASKS)}
    states = []
    for member in record["members"]:
        checkpoint, config = folder / member["checkpoint"], folder / member["config"]
        assert checkpoint.parent == folder / f"seed_{member['seed']}" / "checkpoints"
        assert yaml.safe_load(config.read_text())["seed_everything"] == member["seed"]
        assert checkpoint_data(checkpoint) == record["data"]
        states.append(torch.load(checkpoint, weights_only=True)["state_dict"])
    assert not torch.equal(states[0]["model.head.3.weight"], states[1]["model.head.3.weight"])
    # a member is the run that `graphmem fit --seed_everything <its seed>` gives
    plain = torch.load(trained["plain"], weights_only=True)["state_dict"]
    assert all(torch.equal(plain[key], states[1][key]) for key in plain)


@pytest.mark.parametrize(("part", "csv"), [("test", "test_roc_auc.csv"), ("valid", "val_roc_auc.csv")])
def test_ensemble_scores_are_the_roc_auc_of_the_mean_probability(trained, part, csv):
    folder = trained["folder"]
    data = MoleculeDataModule(root=str(trained["root"]), batch_size=32)
    data.setup()
    graphs = data.splits[part]
    labels = torch.cat([graph.y for graph in graphs]).numpy()
    members = load_ensemble(folder).members
    probabilities = [reference_probabilities(m.checkpoint, graphs).numpy() for m in members]

    def roc_auc(scores: np.ndarray) -> list[float]:
        labelled = ~np.isnan(labels)
        return [roc_auc_score(labels[labelled[:, t], t], scores[labelled[:, t], t]) for t in range(12)]

    expected = {"seed 0": roc_auc(probabilities[0]), "seed 1": roc_auc(probabilities[1]),
                "ensemble": roc_auc((probabilities[0] + probabilities[1]) / 2)}
    scores = pd.read_csv(folder / csv, index_col="task")
    assert list(scores.index) == [*TOX21_TASKS, "mean"] and list(scores.columns) == list(expected)
    for column, per_task in expected.items():
        assert np.allclose(scores[column].iloc[:12], per_task, atol=1e-6)
        assert scores[column]["mean"] == pytest.approx(np.mean(per_task))


@pytest.mark.parametrize("target", ["folder", "manifest", "folder and recipe"])
def test_predict_on_an_ensemble_is_the_members_mean_and_std(trained, tmp_path, target, capsys):
    path = trained["folder"] / "ensemble.json" if target == "manifest" else trained["folder"]
    # the members' saved configs, or one recipe for all of them with the overrides they were trained with
    recipe = ["--config", RECIPE] if target == "folder and recipe" else []
    overrides = ["--", *HIDDEN, "--data.init_args.root", str(trained["root"])] if recipe else []
    inputs = [GOOD[0], "C1CC(", GOOD[1], GOOD[2], GOOD[3]]
    out = tmp_path / "p.csv"
    main(["predict", *recipe, "--ckpt_path", str(path), "--smiles", *inputs, "--out", str(out), *overrides])
    table = pd.read_csv(out, keep_default_na=False)
    stds = [f"{task}_std" for task in TOX21_TASKS]
    assert list(table.columns) == ["index", "smiles", *TOX21_TASKS, *stds, "error"]
    assert table["smiles"].tolist() == inputs and table["error"].ne("").tolist() == [False, True, False, False, False]
    good = table.drop(index=1)
    members = np.stack([reference_probabilities(m.checkpoint, GOOD).numpy() for m in load_ensemble(path).members])
    assert np.allclose(good[list(TOX21_TASKS)].astype(float), members.mean(axis=0), atol=1e-6)
    assert np.allclose(good[stds].astype(float), np.abs(members[0] - members[1]) / 2, atol=1e-6)  # ddof 0
    assert "predicted 4 molecules, 1 unparseable (index 1) with 2 models" in capsys.readouterr().out


def test_ensemble_member_of_other_data_is_refused_in_one_line(trained, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    members = load_ensemble(trained["folder"]).members
    other = torch.load(members[1].checkpoint, weights_only=True)
    other["graphmem_data"]["tasks"] = other["graphmem_data"]["tasks"][::-1]  # same set, columns reordered
    torch.save(other, folder / "other.ckpt")
    manifest = json.loads((trained["folder"] / "ensemble.json").read_text())
    manifest["members"][0]["checkpoint"] = str(members[0].checkpoint)
    manifest["members"][1]["checkpoint"] = "other.ckpt"
    manifest["members"] = [{**m, "config": str(members[0].config)} for m in manifest["members"]]
    (folder / "ensemble.json").write_text(json.dumps(manifest))
    code, err = _shell(monkeypatch, capsys, "predict", "--ckpt_path", str(folder), "--smiles", "CCO",
                       "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "other.ckpt was trained on" in err and "same data and tasks" in err
    assert not (tmp_path / "p.csv").exists()


def test_ensemble_never_writes_into_a_used_folder(trained, tmp_path):
    folder = trained["folder"]
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    with pytest.raises(GraphmemError, match="already holds files"):
        main(_fit_args(trained["root"], trained["run"], "--ensemble", "2",
                       "--trainer.logger.init_args.version", "ensemble_0"))
    with pytest.raises(GraphmemError, match="exists: another ensemble"):
        write_manifest(folder, load_ensemble(folder).members, {})
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize("extra, message", [
    (["--ensemble", "0"], "at least 2"),
    (["--ensemble=x"], "at least 2"),
    (["--ensemble", "2", "--ckpt_path", "last"], "cannot resume"),
    (["--ensemble", "2", "--seed_everything", "false"], "set --seed_everything to a number"),
    (["--ensemble", "2", "--trainer.logger", "false"], "needs a logger"),
])
def test_bad_ensemble_arguments_are_refused_before_training(tmp_path, extra, message):
    write_tox21(tmp_path, molecule_table(240))
    with pytest.raises(GraphmemError, match=message):
        main(_fit_args(tmp_path, tmp_path / "run", *extra))
    assert not (tmp_path / "run").exists()


def test_the_recipe_key_trains_an_ensemble_and_the_command_line_overrides_it(tmp_path):
    write_tox21(tmp_path, molecule_table(240))
    keyed = tmp_path / "ensemble.yaml"
    keyed.write_text("ensemble: 2\n")
    main(_fit_args(tmp_path, tmp_path / "keyed", "--config", str(keyed)))
    manifest = json.loads((tmp_path / "keyed" / "lightning_logs" / "ensemble_0" / "ensemble.json").read_text())
    assert [member["seed"] for member in manifest["members"]] == [0, 1]
    # every member's saved config trains one model when fit again
    member_config = yaml.safe_load(next((tmp_path / "keyed").rglob("seed_0/config.yaml")).read_text())
    assert member_config["ensemble"] == 1
    run = main(_fit_args(tmp_path, tmp_path / "single", "--config", str(keyed), "--ensemble", "1"))
    assert run is not None and not list((tmp_path / "single").rglob("ensemble.json"))


def test_ensemble_of_another_kind_of_recipe_is_refused(tmp_path):
    karate = str(Path(RECIPE).with_name("karate_gat.yaml"))
    with pytest.raises(GraphmemError, match="trains molecule recipes"):
        main(["fit", "--config", karate, "--ensemble", "2", "--trainer.default_root_dir", str(tmp_path)])


def test_export_keeps_predictions_and_drops_training_state(trained, tmp_path):
    shipped = export_ensemble(trained["folder"], tmp_path / "shipped")
    original = load_ensemble(trained["folder"])
    assert shipped.data == original.data and [m.seed for m in shipped.members] == [0, 1]
    for ours, theirs in zip(shipped.members, original.members):
        contents = torch.load(ours.checkpoint, weights_only=True)
        assert "optimizer_states" not in contents and "callbacks" not in contents
        assert ours.checkpoint.stat().st_size < theirs.checkpoint.stat().st_size / 2
        assert yaml.safe_load(ours.config.read_text())["data"]["init_args"]["root"] is None
        assert torch.equal(reference_probabilities(ours.checkpoint, GOOD), reference_probabilities(theirs.checkpoint, GOOD))
    assert (tmp_path / "shipped" / "test_roc_auc.csv").read_text() == (trained["folder"] / "test_roc_auc.csv").read_text()
    with pytest.raises(GraphmemError, match="already holds files"):
        export_ensemble(trained["folder"], tmp_path / "shipped")


def test_predict_with_a_checkpoint_file_needs_its_recipe(trained, tmp_path):
    member = load_ensemble(trained["folder"]).members[0]
    with pytest.raises(GraphmemError, match="--config is required with a checkpoint file"):
        main(["predict", "--ckpt_path", str(member.checkpoint), "--smiles", "CCO", "--out", str(tmp_path / "p.csv")])


def test_an_ensemble_of_finished_molecule_runs_scores_as_fit_does(trained, tmp_path):
    members = load_ensemble(trained["folder"]).members
    main(["ensemble", "--out", str(tmp_path / "assembled"), *(str(m.checkpoint) for m in members)])
    assembled = load_ensemble(tmp_path / "assembled")
    assert assembled.data == load_ensemble(trained["folder"]).data and [m.seed for m in assembled.members] == [0, 1]
    for name in ("val_roc_auc.csv", "test_roc_auc.csv"):
        assert (tmp_path / "assembled" / name).read_text() == (trained["folder"] / name).read_text()
    predictions = main(["predict", "--ckpt_path", str(tmp_path / "assembled"), "--smiles", *GOOD,
                        "--out", str(tmp_path / "p.csv")])
    assert predictions is None and len(pd.read_csv(tmp_path / "p.csv")) == len(GOOD)


@pytest.mark.parametrize("other_first", [False, True])
def test_an_ensemble_of_runs_of_different_networks_builds_each_member_from_its_config(trained, tmp_path, other_first):
    """A member of another network (2 layers instead of 3) is scored with its own network,
    whichever run is named first: the scores are those of the mean of each member's
    probabilities computed by hand."""
    run = tmp_path / "two_layers"
    main(_fit_args(trained["root"], run, "--seed_everything", "5", "--model.init_args.model.init_args.num_layers", "2"))
    other = next(run.rglob("best-*.ckpt"))
    first = load_ensemble(trained["folder"]).members[0]
    named = [str(first.checkpoint), str(other)]
    main(["ensemble", "--out", str(tmp_path / "mixed"), *(named[::-1] if other_first else named)])
    members = load_ensemble(tmp_path / "mixed").members
    assert [m.seed for m in members] == [0, 5]
    data = MoleculeDataModule(root=str(trained["root"]), batch_size=32)
    data.setup()
    graphs = data.splits["test"]
    labels = torch.cat([graph.y for graph in graphs]).numpy()
    mean = (reference_probabilities(members[0].checkpoint, graphs).numpy()
            + reference_probabilities(members[1].checkpoint, graphs, num_layers=2).numpy()) / 2
    labelled = ~np.isnan(labels)
    expected = [roc_auc_score(labels[labelled[:, t], t], mean[labelled[:, t], t]) for t in range(12)]
    scores = pd.read_csv(tmp_path / "mixed" / "test_roc_auc.csv", index_col="task")
    assert np.allclose(scores["ensemble"].iloc[:12], expected, atol=1e-6)
    predictions = main(["predict", "--ckpt_path", str(tmp_path / "mixed"), "--smiles", *GOOD,
                        "--out", str(tmp_path / "p.csv")])
    assert predictions is None and len(pd.read_csv(tmp_path / "p.csv")) == len(GOOD)


def test_greedy_selection_adds_the_best_improvement_and_stops_when_none_improves():
    """Caruana et al.'s forward selection, worked by hand: the score is minus the squared
    distance to 0.5. Alone: a (0.8) 0.09, b (0.1) 0.16, c (0.3) 0.04, d (0.9) 0.16: c first.
    With c: a -> 0.55, 0.0025; b -> 0.2; d -> 0.6: a. With c, a: b -> 0.4, 0.01; d -> 0.667,
    0.028: both worse than 0.0025, so the selection stops at c, a."""
    candidates = [torch.tensor([value]) for value in (0.8, 0.1, 0.3, 0.9)]
    chosen, path = greedy_selection(candidates, lambda p: -float((p - 0.5).pow(2).sum()))
    assert chosen == [2, 0]
    assert path == pytest.approx([-0.04, -0.0025])


def test_greedy_selection_keeps_the_smaller_ensemble_on_a_tie():
    candidates = [torch.tensor([0.5]), torch.tensor([0.5])]
    assert greedy_selection(candidates, lambda p: -float((p - 0.5).abs().sum()))[0] == [0]


def test_greedy_selection_with_replacement_may_choose_a_candidate_again():
    """Worked by hand: the score is minus the distance to 0.3. Alone: a (0.0) 0.3, b (0.9) 0.6:
    a. Then a, a: 0.0; a, b: 0.45, 0.15: b. Then a, b, a: 0.3, 0.0; a, b, b: 0.6, 0.3: a again,
    which the selection without replacement cannot take (it stops at a, b). Then a, b, a, a:
    0.225, 0.075; a, b, a, b: 0.45, 0.15: both worse, stop."""
    candidates = [torch.tensor([0.0]), torch.tensor([0.9])]
    def score(p: torch.Tensor) -> float:
        return -float((p - 0.3).abs().sum())
    assert greedy_selection(candidates, score) == ([0, 1], pytest.approx([-0.3, -0.15]))
    chosen, path = greedy_selection(candidates, score, replacement=True)
    assert chosen == [0, 1, 0] and path == pytest.approx([-0.3, -0.15, 0.0], abs=1e-6)


@pytest.mark.parametrize("select", ["greedy", "greedy_with_replacement"])
def test_a_greedy_ensemble_keeps_the_runs_that_validation_chose(trained, tmp_path, select):
    """Three runs (seeds 0, 1 and 7); every score in selection.csv is the validation ROC-AUC of
    the mean probability of the runs chosen so far (with replacement, each counted as many
    times as it was chosen), computed by hand; the first is the best run alone, each addition
    is the best one, and no further addition would have raised the last score. Each member's
    weight is the number of times it was chosen."""
    replacement = select == "greedy_with_replacement"
    extra = tmp_path / "seed7"
    main(_fit_args(trained["root"], extra, "--seed_everything", "7"))
    runs = [*(m.checkpoint for m in load_ensemble(trained["folder"]).members), next(extra.rglob("best-*.ckpt"))]
    main(["ensemble", "--select", select, "--out", str(tmp_path / "greedy"), *map(str, runs)])
    data = MoleculeDataModule(root=str(trained["root"]), batch_size=32)
    data.setup()
    graphs = data.splits["valid"]
    labels = torch.cat([graph.y for graph in graphs]).numpy()
    labelled = ~np.isnan(labels)
    alone = dict(zip((0, 1, 7), (reference_probabilities(run, graphs).numpy() for run in runs)))

    def score(seeds) -> float:
        mean = np.mean([alone[s] for s in seeds], axis=0)
        return float(np.mean([roc_auc_score(labels[labelled[:, t], t], mean[labelled[:, t], t]) for t in range(12)]))

    steps = pd.read_csv(tmp_path / "greedy" / "selection.csv", index_col="size")
    chosen = [int(name.removeprefix("seed ")) for name in steps["added"]]
    def additions(before: list[int]) -> list[int]:
        return [s for s in alone if replacement or s not in before]

    for size in range(1, len(chosen) + 1):
        assert steps["validation"].iloc[size - 1] == pytest.approx(score(chosen[:size]), abs=1e-6)
        assert score(chosen[:size]) >= max(score([*chosen[:size - 1], s]) for s in additions(chosen[:size - 1])) - 1e-9
    assert all(score([*chosen, s]) <= score(chosen) + 1e-9 for s in additions(chosen))
    assert replacement or len(set(chosen)) == len(chosen)
    ensemble = load_ensemble(tmp_path / "greedy")
    assert sorted(Counter(chosen).items()) == [(m.seed, m.weight) for m in ensemble.members]
    assert [Path(run) for run in steps["run"]] == [runs[(0, 1, 7).index(seed)] for seed in chosen]
    val = pd.read_csv(tmp_path / "greedy" / "val_roc_auc.csv", index_col="task")
    assert val.loc["mean", "ensemble"] == pytest.approx(score(chosen), abs=1e-6)


def test_validation_folds_halve_the_rows_and_mirror_each_other():
    folds = validation_folds(11, repeats=3, seed=4)
    assert len(folds) == 6
    for fit, held_out in folds:
        assert sorted([*fit.tolist(), *held_out.tolist()]) == list(range(11)) and len(fit) in (5, 6)
    assert all(torch.equal(folds[i][0], folds[i + 1][1]) for i in range(0, 6, 2))
    assert len({tuple(fit.tolist()) for fit, _ in folds[::2]}) == 3  # three different halvings
    assert all(torch.equal(a, b) for fold, again in zip(folds, validation_folds(11, 3, 4)) for a, b in zip(fold, again))


def test_cross_validated_selection_scores_each_selection_on_the_held_out_half_by_hand():
    """Eight candidates on 60 rows of 2 tasks: one informative, the others noise of which some fit
    a few rows by chance. Every held-out score is recomputed with sklearn from the members each
    selection chose on the other half (greedy_selection is checked by hand above); the
    selection kept is the best on held-out rows, and it then selects on all rows."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (60, 2), generator=generator).float()
    signal = (0.6 * labels + 0.4 * torch.rand(60, 2, generator=generator)).clamp(0, 1)
    candidates = [signal, *(torch.rand(60, 2, generator=generator) for _ in range(7))]

    def score(probability: torch.Tensor, rows: torch.Tensor) -> float:
        return float(np.mean([roc_auc_score(labels[rows, t], probability[:, t]) for t in range(2)]))

    method, table, chosen, path = cross_validated_selection(candidates, score, repeats=2, seed=1)
    folds = validation_folds(60, 2, 1)
    assert list(table.index) == list(CROSS_VALIDATED) and list(table.columns) == ["held_out", "std", 1, 2, 3, 4]
    for number, (fit, held_out) in enumerate(folds, start=1):
        picks = {"all": list(range(8)),
                 "greedy": greedy_selection([c[fit] for c in candidates], lambda p: score(p, fit))[0],
                 "greedy_with_replacement": greedy_selection([c[fit] for c in candidates], lambda p: score(p, fit),
                                                             replacement=True)[0]}
        for selection, members in picks.items():
            mean = torch.stack([candidates[i][held_out] for i in members]).mean(0)
            assert table.loc[selection, number] == pytest.approx(score(mean, held_out), abs=1e-9)
    assert table["held_out"].tolist() == pytest.approx(table[[1, 2, 3, 4]].mean(axis=1).tolist())
    assert method == table["held_out"].idxmax()
    everything = torch.arange(60)
    if method == "all":
        assert chosen == list(range(8))
    else:
        assert (chosen, path) == greedy_selection(candidates, lambda p: score(p, everything),
                                                  replacement=method == "greedy_with_replacement")


def test_a_cross_validated_ensemble_keeps_what_the_held_out_halves_chose(trained, tmp_path, capsys):
    members = load_ensemble(trained["folder"]).members
    main(["ensemble", "--select", "cross_validated", "--out", str(tmp_path / "cv"), *(str(m.checkpoint) for m in members)])
    table = pd.read_csv(tmp_path / "cv" / "cross_validation.csv", index_col="selection")
    assert list(table.index) == list(CROSS_VALIDATED) and len(table.columns) == 2 + 10
    best = table["held_out"].idxmax()
    printed = capsys.readouterr().out
    assert "(mean of 10 folds) " + best.replace('_', ' ') + " scores best" in printed
    ensemble = load_ensemble(tmp_path / "cv")
    if best == "all":
        assert [m.seed for m in ensemble.members] == [m.seed for m in members]
        assert not (tmp_path / "cv" / "selection.csv").exists()
    else:
        steps = pd.read_csv(tmp_path / "cv" / "selection.csv", index_col="size")
        chosen = Counter(int(name.removeprefix("seed ")) for name in steps["added"])
        assert sorted(chosen.items()) == [(m.seed, m.weight) for m in ensemble.members]


def test_an_unknown_selection_is_refused_in_one_line(trained, tmp_path, capsys):
    members = load_ensemble(trained["folder"]).members
    with pytest.raises(SystemExit) as exit_:
        main(["ensemble", "--select", "best", "--out", str(tmp_path / "e"), *(str(m.checkpoint) for m in members)])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exit_.value.code == 2 and len(errors) == 1 and "--select" in errors[0] and "greedy" in errors[0]
    assert not (tmp_path / "e").exists()


def _hand_made_ensemble(trained, folder: Path, weights: list[int]) -> Path:
    """The trained ensemble's members copied into ``folder`` under a manifest with ``weights``."""
    members = []
    for member, weight in zip(load_ensemble(trained["folder"]).members, weights):
        (folder / member.name).mkdir(parents=True)
        copy = Member(member.seed, folder / member.name / "best.ckpt", folder / member.name / "config.yaml", weight)
        shutil.copyfile(member.checkpoint, copy.checkpoint)
        shutil.copyfile(member.config, copy.config)
        members.append(copy)
    return write_manifest(folder, members, load_ensemble(trained["folder"]).data)


def test_predict_on_a_weighted_ensemble_is_the_weighted_mean_and_std(trained, tmp_path):
    """Weights 2 and 1: the mean and standard deviation of the members counted 2 and 1 times,
    computed by hand from each member's network."""
    manifest = _hand_made_ensemble(trained, tmp_path / "weighted", [2, 1])
    assert [m.weight for m in load_ensemble(manifest).members] == [2, 1]
    main(["predict", "--ckpt_path", str(manifest), "--smiles", *GOOD, "--out", str(tmp_path / "p.csv")])
    table = pd.read_csv(tmp_path / "p.csv")
    p0, p1 = (reference_probabilities(m.checkpoint, GOOD).numpy() for m in load_ensemble(manifest).members)
    counted = np.stack([p0, p0, p1])
    assert np.allclose(table[list(TOX21_TASKS)], counted.mean(axis=0), atol=1e-6)
    assert np.allclose(table[[f"{task}_std" for task in TOX21_TASKS]], counted.std(axis=0), atol=1e-6)
    shipped = export_ensemble(manifest, tmp_path / "shipped")
    assert [(m.name, m.weight) for m in shipped.members] == [("seed_0", 2), ("seed_1", 1)]


def test_a_manifest_with_a_bad_weight_or_from_a_newer_graphmem_is_refused(trained, tmp_path):
    manifest = _hand_made_ensemble(trained, tmp_path / "e", [1, 1])
    record = json.loads(manifest.read_text())
    for change, message in (({"version": 99}, "newer than this graphmem reads"),
                            ({"members": [{**record["members"][0], "weight": 0}]}, "weight is below 1")):
        manifest.write_text(json.dumps({**record, **change}))
        with pytest.raises(GraphmemError, match=message):
            load_ensemble(manifest)


def test_runs_of_two_networks_may_share_a_seed(trained, tmp_path):
    """Seed 0 of the 3-layer GAT and seed 0 of a 2-layer one are two members: the second is
    seed_0b, in the folders, the manifest and the score tables; its weights are the 2-layer
    run's. Two runs of one recipe and one seed (the plain fit of seed 1 and the ensemble's seed 1)
    hold the same weights, the same model twice, and are refused."""
    run = tmp_path / "two_layers"
    main(_fit_args(trained["root"], run, "--seed_everything", "0", "--model.init_args.model.init_args.num_layers", "2"))
    other = next(run.rglob("best-*.ckpt"))
    first, second = load_ensemble(trained["folder"]).members
    main(["ensemble", "--out", str(tmp_path / "shared"), str(first.checkpoint), str(other), str(second.checkpoint)])
    members = load_ensemble(tmp_path / "shared").members
    assert [(m.seed, m.name) for m in members] == [(0, "seed_0"), (0, "seed_0b"), (1, "seed_1")]
    assert members[1].checkpoint.parent.parent == tmp_path / "shared" / "seed_0b"
    assert members[1].checkpoint.read_bytes() == other.read_bytes()
    scores = pd.read_csv(tmp_path / "shared" / "test_roc_auc.csv", index_col="task")
    assert list(scores.columns) == ["seed 0", "seed 0b", "seed 1", "ensemble"]
    with pytest.raises(GraphmemError, match="hold the same weights"):
        main(["ensemble", "--out", str(tmp_path / "twins"), str(second.checkpoint), str(trained["plain"])])
    assert not (tmp_path / "twins").exists()
