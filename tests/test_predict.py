"""`graphmem predict` on molecules: one row per input, in order, probabilities = sigmoid(logits)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from graphmem.cli import main
from graphmem.data.molecule import TOX21_TASKS
from graphmem.errors import GraphmemError
from tests.conftest import reference_probabilities

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
HIDDEN = ["--model.init_args.model.init_args.hidden_channels", "16"]
GOOD = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, checkpoint) of a Tox21-recipe model trained one epoch on the tiny table."""
    from tests.conftest import molecule_table, write_tox21

    root = tmp_path_factory.mktemp("data")
    write_tox21(root, molecule_table(240))
    run = tmp_path_factory.mktemp("run")
    main(["fit", "--config", str(RECIPES / "tox21_gat.yaml"), "--data.init_args.root", str(root), *HIDDEN,
          "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
          "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run)])
    return root, next(run.rglob("*.ckpt"))


def _predict(trained, tmp_path, *source: str) -> tuple[pd.DataFrame, Path]:
    root, checkpoint = trained
    out = tmp_path / "preds.csv"
    main(["predict", "--config", str(RECIPES / "tox21_gat.yaml"), "--ckpt_path", str(checkpoint), *source,
          "--out", str(out), "--", *HIDDEN, "--data.init_args.root", str(root)])
    return pd.read_csv(out, keep_default_na=False), checkpoint


def test_predict_smiles_arguments_keeps_every_row_in_order(trained, tmp_path, capsys):
    inputs = [GOOD[0], "C1CC(", GOOD[1], GOOD[2], "not a smiles", GOOD[3]]
    table, checkpoint = _predict(trained, tmp_path, "--smiles", *inputs)
    assert list(table.columns) == ["index", "smiles", *TOX21_TASKS, "error"]
    assert table["index"].tolist() == list(range(6)) and table["smiles"].tolist() == inputs
    bad = table["error"] != ""
    assert bad.tolist() == [False, True, False, False, True, False]
    assert "cannot parse" in table.loc[1, "error"] and "not a smiles" in table.loc[4, "error"]
    assert (table.loc[bad, list(TOX21_TASKS)] == "").all().all()  # no probability for a bad row
    probabilities = torch.tensor(table.loc[~bad, list(TOX21_TASKS)].astype(float).to_numpy())
    assert torch.allclose(probabilities, reference_probabilities(checkpoint, GOOD).double(), atol=1e-6)
    assert "predicted 4 molecules, 2 unparseable (index 1, 4)" in capsys.readouterr().out


def test_predict_smiles_file_with_named_column(trained, tmp_path, capsys):
    molecules = tmp_path / "molecules.csv"
    pd.DataFrame({"name": ["a", "b", "c"], "structure": [GOOD[2], "", GOOD[0]]}).to_csv(molecules, index=False)
    table, checkpoint = _predict(trained, tmp_path, "--smiles_file", str(molecules), "--smiles_column", "structure")
    assert table["smiles"].tolist() == [GOOD[2], "", GOOD[0]]
    assert table["error"].tolist() == ["", "empty SMILES", ""]
    probabilities = torch.tensor(table.loc[[0, 2], list(TOX21_TASKS)].astype(float).to_numpy())
    assert torch.allclose(probabilities, reference_probabilities(checkpoint, [GOOD[2], GOOD[0]]).double(), atol=1e-6)
    assert "predicted 2 molecules, 1 unparseable (index 1)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no 'smiles' column .* --smiles_column"):
        _predict(trained, tmp_path, "--smiles_file", str(molecules), "--overwrite")


def test_predict_without_smiles_is_lightnings_predict(tmp_path):
    cli = main(["predict", "--config", str(RECIPES / "karate_gat.yaml"), "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path)])
    assert cli.subcommand == "predict" and cli.trainer.state.finished
    checkpoint = tmp_path / "karate.ckpt"
    torch.save({"state_dict": cli.model.state_dict()}, checkpoint)
    with pytest.raises(GraphmemError, match="does not train on molecules"):
        main(["predict", "--config", str(RECIPES / "karate_gat.yaml"), "--ckpt_path", str(checkpoint),
              "--smiles", "CCO", "--out", str(tmp_path / "x.csv")])
