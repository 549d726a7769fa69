"""Issue 12: the command never gives a wrong answer, never loses a file, and says what is wrong
in one line. Every case runs the real command (``graphmem.cli.main``) or the real loader."""

from __future__ import annotations

import gzip
import os
import signal
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import yaml

from graphmem.cli import main
from graphmem.data.download import DataFileError
from graphmem.data.molecule import SmilesError, load_moleculenet, smiles_to_graph
from graphmem.errors import GraphmemError
from graphmem.recipe import checkpoint_data

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
KARATE = str(RECIPES / "karate_gat.yaml")
SIDER_TASKS = ["Hepatobiliary disorders", "Eye disorders", "Cardiac disorders"]
SMALL = ["--model.init_args.model.init_args.hidden_channels", "16"]


def _sider_table(n: int = 120) -> pd.DataFrame:
    from tests.conftest import SMILES

    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.integers(0, 2, size=(n, len(SIDER_TASKS))), columns=SIDER_TASKS)
    table.insert(0, "smiles", [SMILES[i % len(SMILES)] for i in range(n)])
    return table


@pytest.fixture(scope="module")
def sider(tmp_path_factory) -> dict[str, Path]:
    """A SIDER-recipe checkpoint (3 tasks, one epoch) whose data file is deleted afterwards:
    its task names then exist only in the checkpoint."""
    root = tmp_path_factory.mktemp("data")
    path = root / "moleculenet" / "sider.csv.gz"
    path.parent.mkdir()
    with gzip.open(path, "wt") as file:
        _sider_table().to_csv(file, index=False)
    run = tmp_path_factory.mktemp("run")
    main(["fit", "--config", str(RECIPES / "sider_gat.yaml"), "--data.init_args.root", str(root), *SMALL,
          "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
          "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run)])
    path.unlink()
    return {"root": root, "ckpt": next(run.rglob("*.ckpt"))}


def _shell(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Runs ``graphmem *args`` as the console script does; returns the exit status and the
    graphmem error line (library warnings on stderr aside), after checking there is one and no
    traceback."""
    monkeypatch.setattr(sys, "argv", ["graphmem", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("graphmem: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return code, errors[0]


# 1. a checkpoint of one data set under another data set's recipe -------------------------------

def test_checkpoint_knows_its_data_and_task_names(sider):
    assert checkpoint_data(sider["ckpt"]) == {"data": "MoleculeDataModule", "dataset": "sider",
                                              "tasks": SIDER_TASKS}


def test_predict_takes_task_names_from_the_checkpoint(sider, tmp_path):
    out = tmp_path / "p.csv"
    main(["predict", "--config", str(RECIPES / "sider_gat.yaml"), "--ckpt_path", str(sider["ckpt"]),
          "--smiles", "CCO", "--out", str(out), "--", *SMALL, "--data.init_args.root", str(sider["root"])])
    assert list(pd.read_csv(out).columns) == ["index", "smiles", *SIDER_TASKS, "error"]


@pytest.mark.parametrize("command", ["predict", "test", "plot"])
def test_checkpoint_under_another_data_sets_recipe_is_refused(sider, tmp_path, monkeypatch, capsys, command):
    hiv = str(RECIPES / "hiv_gat.yaml")
    overrides = SMALL
    args = {"predict": ["predict", "--config", hiv, "--ckpt_path", str(sider["ckpt"]), "--smiles", "CCO",
                        "--out", str(tmp_path / "p.csv"), "--", *overrides],
            "test": ["test", "--config", hiv, "--ckpt_path", str(sider["ckpt"]), *overrides,
                     "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)],
            "plot": ["plot", "molecule", "--config", hiv, "--ckpt_path", str(sider["ckpt"]), "--smiles", "CCO",
                     "--out", str(tmp_path / "a.png"), "--", *overrides]}[command]
    code, err = _shell(monkeypatch, capsys, *args)
    assert code == 2, err
    assert "dataset sider" in err and "dataset hiv" in err and str(sider["ckpt"]) in err
    assert not list(tmp_path.iterdir())  # nothing written


# 2. test without a checkpoint -----------------------------------------------------------------

def test_test_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(GraphmemError, match="--ckpt_path"):
        main(["test", "--config", KARATE, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])


# 3. --ckpt_path last resumes the run, in its own folder ---------------------------------------

def _karate(run: Path, epochs: int, *extra: str):
    return main(["fit", "--config", KARATE, "--trainer.max_epochs", str(epochs), "--test_after_fit", "false",
                 "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run), *extra])


def test_ckpt_path_last_resumes_the_newest_run_in_its_folder(tmp_path):
    with pytest.raises(GraphmemError, match="no checkpoint under"):
        _karate(tmp_path, 3, "--ckpt_path", "last")
    _karate(tmp_path, 3)
    resumed = _karate(tmp_path, 6, "--ckpt_path", "last")
    assert resumed.trainer.current_epoch == 6
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]  # no second folder
    log = pd.read_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    assert sorted(log.dropna(subset=["val_loss"]).epoch.unique()) == list(range(6))  # one log, every epoch


@pytest.mark.parametrize("command", ["test", "fit"])
def test_checkpoint_of_another_model_shape_is_one_line(tmp_path, monkeypatch, capsys, command):
    # the model's sizes come from the data; a checkpoint of other sizes (an earlier bAbI vocab_size)
    # or of other recipe values would else end in Lightning's traceback of every mismatched tensor
    _karate(tmp_path / "run", 1)
    checkpoint = next((tmp_path / "run").rglob("*.ckpt"))
    code, err = _shell(monkeypatch, capsys, command, "--config", KARATE, "--ckpt_path", str(checkpoint),
                       "--model.init_args.model.init_args.hidden_channels", "8", "--trainer.logger", "false",
                       "--trainer.default_root_dir", str(tmp_path / "again"))
    assert code == 2
    assert f"checkpoint {checkpoint} does not fit the model" in err
    assert "model.stack.convs.0.bias is (16,) in the checkpoint, (32,) in the model" in err


# 4. SIGTERM during fit ------------------------------------------------------------------------

class SendSigterm(L.Callback):
    """Sends this process SIGTERM when the second training epoch starts, as a scheduler would."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_fit_exits_non_zero_and_says_so(tmp_path, monkeypatch, capsys):
    code, err = _shell(monkeypatch, capsys, "fit", "--config", KARATE, "--trainer.max_epochs", "50",
                       "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
                       str(tmp_path), "--trainer.callbacks+=tests.test_cli_errors.SendSigterm")
    assert code == 143 and "stopped by SIGTERM" in err, err


# 5. predict --out never loses a file and fails before the work --------------------------------

def test_predict_out_that_would_lose_a_file_or_fail_late_is_refused(sider, tmp_path):
    molecules = tmp_path / "molecules.csv"
    molecules.write_text("smiles\nCCO\n")
    existing = tmp_path / "old.csv"
    existing.write_text("keep me\n")
    cases = {str(molecules): "is an input file", str(existing): "exists; pass --overwrite",
             str(tmp_path): "is a folder", str(existing / "p.csv"): "which is a file"}
    for out, message in cases.items():
        with pytest.raises(GraphmemError, match=message):
            # a missing recipe and checkpoint prove that nothing else was looked at first
            main(["predict", "--config", "nowhere.yaml", "--ckpt_path", "nowhere.ckpt",
                  "--smiles_file", str(molecules), "--out", out])
    assert molecules.read_text() == "smiles\nCCO\n" and existing.read_text() == "keep me\n"
    main(["predict", "--config", str(RECIPES / "sider_gat.yaml"), "--ckpt_path", str(sider["ckpt"]),
          "--smiles_file", str(molecules), "--out", str(existing), "--overwrite", "--", *SMALL,
          "--data.init_args.root", str(sider["root"])])
    assert pd.read_csv(existing).smiles.tolist() == ["CCO"]


# 6. labels, empty task columns, truncated files -----------------------------------------------

def _bbbp(root: Path, text: str) -> Path:
    path = root / "moleculenet" / "BBBP.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("label", ["2", "-1", "yes"])
def test_labels_outside_0_1_blank_are_refused_with_file_column_row(tmp_path, label):
    path = _bbbp(tmp_path, f"smiles,p_np\nCCO,1\nc1ccccc1,\nCCN,{label}\n")
    with pytest.raises(DataFileError, match=rf"{path}: column 'p_np' row 2 holds {label}.*0, 1 or blank"):
        load_moleculenet("bbbp", tmp_path)


def test_task_column_without_labels_warns(tmp_path):
    _bbbp(tmp_path, "smiles,p_np\nCCO,\nc1ccccc1,\n")
    with pytest.warns(UserWarning, match=r"\['p_np'\] hold no label"):
        load_moleculenet("bbbp", tmp_path)


def test_truncated_plain_csv_is_reported(tmp_path):
    whole = "smiles,p_np\n" + "".join(f"{s},1\n" for s in ["CCO", "CCN", "c1ccccc1", "CC(=O)O"])
    path = _bbbp(tmp_path, whole[:-9])  # cut inside the last row, as an interrupted copy leaves it
    with pytest.raises(DataFileError, match=f"{path} is truncated"):
        load_moleculenet("bbbp", tmp_path)
    _bbbp(tmp_path, whole[:-1])  # a complete last row without its line end is fine
    assert len(load_moleculenet("bbbp", tmp_path)) == 4


# 7. whitespace inside a SMILES ----------------------------------------------------------------

def test_smiles_with_whitespace_inside_is_refused_not_cut():
    with pytest.raises(SmilesError, match="contains whitespace"):
        smiles_to_graph("CCO CCC")
    assert smiles_to_graph(" CCO ").num_nodes == 3  # blanks around one SMILES are no ambiguity


# 8. two runs forced into one version folder ---------------------------------------------------

def test_second_run_in_the_same_version_folder_is_refused(tmp_path):
    _karate(tmp_path, 2, "--trainer.logger.init_args.version", "0")
    folder = tmp_path / "lightning_logs" / "version_0"
    before = {name: (folder / name).read_bytes() for name in ("config.yaml", "metrics.csv")}
    with pytest.raises(GraphmemError, match="already holds another run"):
        _karate(tmp_path, 3, "--trainer.logger.init_args.version", "0")
    assert {name: (folder / name).read_bytes() for name in before} == before


# 9. one line per error, the trace on request --------------------------------------------------

def test_user_errors_are_one_line_and_the_trace_is_on_request(tmp_path, monkeypatch, capsys):
    log = tmp_path / "metrics.csv"
    log.write_text("epoch,step,train_loss\n0,1,0.5\n1,2,0.4\n")
    args = ["plot", "curves", "--log", str(log), "--metrics", "val_auc", "--out", str(tmp_path / "c.png")]
    code, err = _shell(monkeypatch, capsys, *args)
    assert code == 2 and err.startswith("graphmem: error: no metric 'val_auc'")
    recipe = tmp_path / "nodata.yaml"
    config = yaml.safe_load(Path(KARATE).read_text())
    config["data"]["init_args"]["dataset"] = "no_such_graph"
    recipe.write_text(yaml.safe_dump(config))
    code, err = _shell(monkeypatch, capsys, "fit", "--config", str(recipe), "--trainer.logger", "false",
                       "--trainer.default_root_dir", str(tmp_path))
    assert code == 2 and "no_such_graph" in err, err
    monkeypatch.setattr(sys, "argv", ["graphmem", "--traceback", *args])
    with pytest.raises(GraphmemError, match="no metric 'val_auc'"):
        main()
    monkeypatch.setenv("GRAPHMEM_TRACEBACK", "1")
    monkeypatch.setattr(sys, "argv", ["graphmem", *args])
    with pytest.raises(GraphmemError):
        main()


# 10. help and version -------------------------------------------------------------------------

def test_help_lists_every_command_and_version(capsys):
    import graphmem

    main(["--help"])
    out = capsys.readouterr().out
    assert all(f"\n  {name} " in out for name in ("fit", "validate", "test", "predict", "recipes", "plot"))
    main(["--version"])
    assert capsys.readouterr().out == f"graphmem {graphmem.__version__}\n"


def test_predict_help_shows_the_smiles_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and all(option in out for option in ("--smiles ", "--smiles_file", "--out"))


# raw errors that are now one line: plot arguments, an empty metrics log, an empty SMILES file ---

@pytest.mark.parametrize("args, message", [
    (["molecule", "--config", str(RECIPES / "tox21_gat.yaml"), "--smiles", "CCO", "--layer", "99"],
     "--layer 99: the model has 3 GAT layers"),
    (["ntm", "--config", str(RECIPES / "ntm_copy.yaml"), "--length", "0"], "--length: must be at least 1, got 0"),
    (["ntm", "--config", str(RECIPES / "ntm_copy.yaml"), "--length", "-3"], "must be at least 1, got -3"),
    (["curves", "--log", "{empty}"], "is empty: the run logged nothing yet"),
])
def test_bad_plot_arguments_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    empty = tmp_path / "metrics.csv"
    empty.write_text("")
    args = [arg.format(empty=empty) for arg in args]
    monkeypatch.setattr(sys, "argv", ["graphmem", "plot", *args, "--out", str(tmp_path / "p.png")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_plot_refuses_an_output_name_it_would_not_honour(tmp_path, capsys):
    log = tmp_path / "metrics.csv"
    log.write_text("epoch,step,train_loss\n0,1,0.5\n1,2,0.4\n")
    with pytest.raises(SystemExit):
        main(["plot", "curves", "--log", str(log), "--out", str(tmp_path / "c.pdf")])
    assert "writes PNG images; name the file .png" in capsys.readouterr().err


def test_empty_smiles_file_is_refused(tmp_path):
    for text in ("", "smiles\n"):
        molecules = tmp_path / "molecules.csv"
        molecules.write_text(text)
        with pytest.raises(GraphmemError, match="is empty|no rows"):
            main(["predict", "--config", str(RECIPES / "tox21_gat.yaml"), "--ckpt_path", "nowhere.ckpt",
                  "--smiles_file", str(molecules), "--out", str(tmp_path / "p.csv")])


# task counts, one-class evaluation sets, predict without SMILES -------------------------------

def _tox21(root: Path, labels: np.ndarray) -> None:
    from tests.conftest import SMILES, write_tox21
    from graphmem.data.molecule import TOX21_TASKS

    table = pd.DataFrame(labels, columns=list(TOX21_TASKS))
    table.insert(0, "smiles", [SMILES[i % len(SMILES)] for i in range(len(labels))])
    write_tox21(root, table)


def _tox21_fit(root: Path, run: Path, *extra: str):
    return main(["fit", "--config", str(RECIPES / "tox21_gat.yaml"), "--data.init_args.root", str(root),
                 "--model.init_args.model.init_args.hidden_channels", "16", "--trainer.enable_progress_bar",
                 "false", "--trainer.default_root_dir", str(run), "--trainer.logger", "false", *extra])


def test_model_with_the_wrong_task_count_is_named(tmp_path):
    # a recipe's model has the data's task count (graphmem.recipe.DATA_SIZES); one built in Python may not
    from graphmem.data import MoleculeDataModule
    from graphmem.lit import GraphPropertyTask
    from graphmem.models import MoleculeGAT

    _tox21(tmp_path, np.random.default_rng(0).integers(0, 2, size=(120, 12)))
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(GraphmemError, match="the model predicts 3 tasks but the data has 12"):
        trainer.fit(GraphPropertyTask(MoleculeGAT(num_tasks=3, hidden_channels=16)),
                    datamodule=MoleculeDataModule(root=str(tmp_path)))


def test_one_class_validation_set_is_refused_at_setup(tmp_path):
    from graphmem.data import MoleculeDataModule
    from graphmem.data.splits import make_split

    _, valid, _ = make_split("random", ["C"] * 120, (0.8, 0.1, 0.1), 0)
    labels = np.ones((120, 12))
    labels[[i for i in range(120) if i not in set(valid)][:8]] = 0  # no negative in the validation set
    _tox21(tmp_path, labels)
    with pytest.raises(GraphmemError, match="valid set of 12 molecules whose labels are of one class"):
        MoleculeDataModule(root=str(tmp_path)).setup()


def test_metric_undefined_on_a_tiny_batch_warns_and_the_run_goes_on(tmp_path):
    labels = np.random.default_rng(0).integers(0, 2, size=(120, 12))
    _tox21(tmp_path, labels)
    with pytest.warns(UserWarning, match="val_roc_auc is undefined"):
        cli = _tox21_fit(tmp_path, tmp_path / "run", "--trainer.fast_dev_run", "true",
                         "--data.init_args.batch_size", "1")
    assert cli.trainer.state.finished


def test_lightning_predict_on_molecules_says_to_pass_smiles(tmp_path):
    _tox21(tmp_path, np.random.default_rng(0).integers(0, 2, size=(120, 12)))
    with pytest.raises(GraphmemError, match="--smiles or --smiles_file"):
        main(["predict", "--config", str(RECIPES / "tox21_gat.yaml"), "--data.init_args.root", str(tmp_path),
              "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])


# quick answers and recipes by name -----------------------------------------------------------

@pytest.mark.parametrize("args", [["recipes"], ["--help"], ["--version"]])
def test_recipes_help_and_version_load_neither_torch_nor_lightning(args):
    import subprocess

    code = (f"import sys; from graphmem.cli import main; main({args!r}); "
            f"print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(RECIPES.parent)}, timeout=60)
    assert result.stdout.splitlines()[-1] == "[]"


def test_config_finds_a_shipped_recipe_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", "karate_gat", "--trainer.max_epochs", "1", "--test_after_fit", "false",
                "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])
    assert cli.trainer.state.finished and cli.datamodule.hparams.dataset == "karate"


def test_wheel_ships_the_recipes_and_the_pretrained_models(tmp_path):
    """A non-editable install finds the recipes and the shipped models: the wheel holds them
    under graphmem/recipes and graphmem/pretrained."""
    import shutil
    import subprocess
    import zipfile

    source, root = tmp_path / "src", RECIPES.parent
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    # symlinks=True: the copy keeps graphmem/recipes a link, as in the checkout
    shutil.copytree(root / "graphmem", source / "graphmem", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(RECIPES, source / "recipes")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(name).name for name in names if name.startswith("graphmem/recipes/")}
    assert shipped == {path.name for path in RECIPES.glob("*.yaml")}
    pretrained = root / "graphmem" / "pretrained"
    assert {name for name in names if name.startswith("graphmem/pretrained/")} == {
        f"graphmem/pretrained/{path.relative_to(pretrained).as_posix()}" for path in pretrained.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts}
