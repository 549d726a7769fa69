"""Issue 13 item 4: the Tox21 model shipped inside the package predicts out of the box, without
training and without the data (docs/models/tox21.md is its model card)."""

from __future__ import annotations

import fnmatch
import sys
import tomllib
from importlib.resources import files
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graphmem.cli import main
from graphmem.data.molecule import TOX21_TASKS
from graphmem.ensemble import load_ensemble
from graphmem.pretrained import available_models, pretrained_model
from tests.conftest import reference_probabilities

ROOT = Path(__file__).resolve().parent.parent
# ethanol, benzene, aspirin, bisphenol A (an estrogen-receptor agonist, positive in Tox21's NR-ER and
# NR-ER-LBD); all four are in the training split, so these pin the shipped weights, not its accuracy
MOLECULES = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CC(C)(c1ccc(O)cc1)c1ccc(O)cc1"]
# the shipped ensemble's mean probabilities for MOLECULES, recorded when it was shipped (one row
# per molecule, the tasks in Tox21's order)
RECORDED = np.array([
    [0.001475, 0.000093, 0.000135, 0.000056, 0.023444, 0.000141, 0.000007, 0.000499, 0.000006, 0.000140, 0.000046, 0.000004],
    [0.000806, 0.000099, 0.000488, 0.000028, 0.051865, 0.000442, 0.000025, 0.000565, 0.000061, 0.000379, 0.000375, 0.000023],
    [0.006236, 0.001498, 0.022889, 0.000857, 0.037503, 0.003128, 0.009573, 0.022388, 0.002649, 0.003687, 0.005135, 0.002933],
    [0.016379, 0.008811, 0.098838, 0.122118, 0.752598, 0.734474, 0.021451, 0.547198, 0.023516, 0.162943, 0.945576, 0.115201],
])


def test_shipped_model_is_package_data_and_small():
    assert available_models() == ["tox21"]
    folder = files("graphmem.pretrained").joinpath("tox21")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["graphmem"]
    shipped = [entry for entry in folder.iterdir() if entry.is_file()]
    assert {entry.name for entry in shipped} >= {"ensemble.json", "seed_0.ckpt", "seed_0.yaml", "test_roc_auc.csv"}
    for entry in shipped:  # every file goes into the wheel (the wheel test in test_cli_errors builds one)
        assert any(fnmatch.fnmatch(f"pretrained/tox21/{entry.name}", pattern) for pattern in patterns), entry.name
    assert sum(Path(str(entry)).stat().st_size for entry in shipped) < 2_000_000
    ensemble = load_ensemble(pretrained_model("tox21"))
    assert [m.seed for m in ensemble.members] == [0, 1, 2] and ensemble.tasks == list(TOX21_TASKS)


def test_shipped_model_predicts_the_recorded_probabilities_without_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAPHMEM_DATA", str(tmp_path / "no_mirror"))  # no data anywhere, and none fetched
    monkeypatch.setenv("GRAPHMEM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "p.csv"
    main(["predict", "--model", "tox21", "--smiles", *MOLECULES, "--out", str(out)])
    table = pd.read_csv(out, keep_default_na=False)
    stds = [f"{task}_std" for task in TOX21_TASKS]
    assert list(table.columns) == ["index", "smiles", *TOX21_TASKS, *stds, "error"]
    assert table["smiles"].tolist() == MOLECULES and (table["error"] == "").all()
    mean = table[list(TOX21_TASKS)].to_numpy(dtype=float)
    assert np.allclose(mean, RECORDED, atol=1e-5)
    members = np.stack([reference_probabilities(m.checkpoint, MOLECULES, hidden_channels=64).numpy()
                        for m in load_ensemble(pretrained_model("tox21")).members])
    assert np.allclose(mean, members.mean(axis=0), atol=1e-6)
    assert np.allclose(table[stds].to_numpy(dtype=float), members.std(axis=0), atol=1e-6)
    assert not (tmp_path / "cache").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_predict_without_out_writes_the_table_to_stdout(capsys):
    main(["predict", "--model", "tox21", "--smiles", "CCO", "C1CC("])
    captured = capsys.readouterr()
    table = pd.read_csv(StringIO(captured.out), keep_default_na=False)
    assert table["smiles"].tolist() == ["CCO", "C1CC("] and table["error"].ne("").tolist() == [False, True]
    assert float(table.loc[0, "NR-AR"]) == pytest.approx(RECORDED[0, 0], abs=1e-5)
    assert "predicted 1 molecules, 1 unparseable (index 1) with 3 models" in captured.err


def test_unknown_model_is_one_line_naming_the_shipped_ones(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["graphmem", "predict", "--model", "tox22", "--smiles", "CCO"])
    with pytest.raises(SystemExit) as exit_:
        main()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("graphmem: error:")]
    assert exit_.value.code == 2 and errors == ["graphmem: error: unknown model 'tox22'; the shipped models are: tox21"]
