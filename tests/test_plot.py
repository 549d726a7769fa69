"""Pictures: GAT attention on molecules, NTM runs over time, and the `graphmem plot` verb."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graphmem.cli import main
from graphmem.data import SmilesError
from graphmem.memory import NTM
from graphmem.models import MoleculeGAT
from graphmem.plot import atom_attention, draw_molecule_attention, ntm_copy_run, plot_molecule_attention
from graphmem.plot.ntm import accessed_rows, plot_ntm_run

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000


@pytest.fixture(scope="module")
def molecule_model() -> MoleculeGAT:
    torch.manual_seed(0)
    return MoleculeGAT(num_tasks=12, hidden_channels=16, heads=4, num_layers=2)


def test_atom_attention_is_attention_received_from_neighbours(molecule_model):
    weights = atom_attention(molecule_model, ASPIRIN)
    assert weights.shape == (13,) and bool((weights > 0).all())
    # each atom spreads one unit of attention per head over its neighbours and itself, so the
    # total received from others is the number of atoms with a neighbour minus the self-loop share
    assert float(weights.sum()) < 13
    assert molecule_model.training  # the mode is given back
    single = atom_attention(molecule_model, "C")
    assert single.tolist() == [0.0]  # a lone atom gets attention from nobody else


def test_molecule_picture_is_written(molecule_model, tmp_path):
    path = plot_molecule_attention(molecule_model, ASPIRIN, tmp_path / "sub" / "aspirin.png")
    _assert_png(path)
    _assert_png(draw_molecule_attention("CCO", [0.0, 0.0, 0.0], tmp_path / "flat.png"))  # no division by zero


@pytest.mark.parametrize("smiles, weights, error, message", [
    ("CCO", [1.0, 2.0], ValueError, "2 weights for the 3 atoms"),
    ("CCO", [1.0, float("nan"), 0.0], ValueError, "finite"),
    ("C1CC(", [1.0], SmilesError, "cannot parse"),
    ("", [], SmilesError, "cannot parse"),
])
def test_molecule_picture_bad_input(tmp_path, smiles, weights, error, message):
    with pytest.raises(error, match=message):
        draw_molecule_attention(smiles, weights, tmp_path / "x.png")


def test_ntm_picture_is_written(tmp_path):
    torch.manual_seed(0)
    model = NTM(9, 8, memory_size=16, memory_width=6, controller_size=16)
    _assert_png(ntm_copy_run(model, 5, tmp_path / "ntm.png"))


def test_accessed_rows_wraps_around_the_memory():
    weights = torch.zeros(3, 20)
    weights[0, 18], weights[1, 19], weights[2, 1] = 1.0, 1.0, 1.0
    assert accessed_rows(weights, margin=1).tolist() == [17, 18, 19, 0, 1, 2]
    weights = torch.zeros(2, 20)
    weights[:, 5:8] = 0.5
    assert accessed_rows(weights, margin=0).tolist() == [5, 6, 7]
    assert accessed_rows(torch.zeros(2, 20)).tolist() == list(range(20))  # nothing touched: all rows


def test_plot_verb_with_and_without_checkpoint(tmp_path, capsys):
    out = tmp_path / "fresh.png"
    main(["plot", "ntm", "--config", str(RECIPES / "ntm_copy.yaml"), "--length", "4", "--out", str(out),
          "--", "--model.init_args.model.init_args.memory_size", "16"])
    _assert_png(out)
    # a checkpoint of the same architecture is loaded into the model
    torch.manual_seed(1)
    trained = NTM(9, 8, memory_size=16, memory_width=20, controller="lstm", controller_size=100,
                  memory_init="constant")
    checkpoint = tmp_path / "ntm.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, checkpoint)
    main(["plot", "ntm", "--config", str(RECIPES / "ntm_copy.yaml"), "--ckpt_path", str(checkpoint),
          "--out", str(tmp_path / "trained.png"),
          "--", "--model.init_args.model.init_args.memory_size", "16"])
    _assert_png(tmp_path / "trained.png")
    assert f"wrote {tmp_path / 'trained.png'}" in capsys.readouterr().out
    # a checkpoint of another shape is named, with what to do
    with pytest.raises(ValueError, match=r"does not fit the model .* overrides it was trained with"):
        main(["plot", "ntm", "--config", str(RECIPES / "ntm_copy.yaml"), "--ckpt_path", str(checkpoint),
              "--out", str(tmp_path / "x.png")])


@pytest.mark.parametrize("recipe, size_args, title", [
    ("ntm_repeat_copy", ["--length", "3", "--repeats", "2"], "NTM repeat copy, length 3, 2 repeats"),
    ("ntm_associative_recall", ["--items", "4"], "NTM associative recall, 4 items"),
])
def test_plot_verb_draws_the_recipes_task(recipe, size_args, title, tmp_path, monkeypatch):
    import graphmem.plot.ntm as ntm_plot

    drawn = {}

    def record(inputs, targets, outputs, history, path, head=0, title=""):
        drawn.update(steps=inputs.size(0), inputs=inputs.size(-1), outputs=outputs.size(-1), title=title, head=head)
        return plot_ntm_run(inputs, targets, outputs, history, path, head=head, title=title)

    monkeypatch.setattr(ntm_plot, "plot_ntm_run", record)
    out = tmp_path / f"{recipe}.png"
    head = ["--head", "3"] if recipe == "ntm_associative_recall" else []  # the recall model has 4 heads
    main(["plot", "ntm", "--config", str(RECIPES / f"{recipe}.yaml"), *size_args, *head, "--out", str(out),
          "--", "--model.init_args.model.init_args.memory_size", "16",
          "--model.init_args.model.init_args.compile_step", "false"])
    _assert_png(out)
    # repeat copy: 3 + 1 input steps, 3 x 2 + 1 answer steps, 10 input and 9 output channels;
    # recall: 4 items of 3 vectors with delimiters (16), the query block (4 + 1), the answer (3)
    expected = {"ntm_repeat_copy": (11, 10, 9), "ntm_associative_recall": (24, 8, 6)}[recipe]
    assert (drawn["steps"], drawn["inputs"], drawn["outputs"]) == expected and drawn["title"] == title
    assert drawn["head"] == (3 if head else 0)
    if head:
        with pytest.raises(ValueError, match="head 4 does not exist: the run has 4 read and 4 write heads"):
            main(["plot", "ntm", "--config", str(RECIPES / f"{recipe}.yaml"), *size_args, "--head", "4",
                  "--out", str(tmp_path / "h4.png"), "--", "--model.init_args.model.init_args.memory_size", "16",
                  "--model.init_args.model.init_args.compile_step", "false"])


def test_plot_verb_molecule_and_wrong_kind(tmp_path):
    out = tmp_path / "ethanol.png"
    main(["plot", "molecule", "--config", str(RECIPES / "tox21_gat.yaml"), "--smiles", "CCO",
          "--out", str(out)])
    _assert_png(out)
    with pytest.raises(ValueError, match="does not build an NTM"):
        main(["plot", "ntm", "--config", str(RECIPES / "tox21_gat.yaml"), "--out", str(tmp_path / "y.png")])
