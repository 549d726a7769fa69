"""RDKit 2D descriptors as molecule features: values against chemistry known by hand, the
cache, the model's use of them, and fit -> predict with them end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch_geometric.loader import DataLoader

import graphmem.data.descriptors as descriptors_module
from graphmem.cli import main
from graphmem.data import DESCRIPTOR_NAMES, MoleculeDataModule, add_descriptors, descriptor_table, rdkit_descriptors
from graphmem.data.molecule import smiles_to_graph
from graphmem.errors import GraphmemError
from graphmem.models import MoleculeGAT
from tests.conftest import molecule_table, write_tox21

RECIPE = str(Path(__file__).resolve().parent.parent / "recipes" / "tox21_gat.yaml")


def phi(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


def test_ethanol_descriptors_are_the_squashed_textbook_values():
    values = dict(zip(DESCRIPTOR_NAMES, rdkit_descriptors("CCO").tolist()))
    # C2H6O: 2 * 12.011 + 6 * 1.008 + 15.999; one OH donor and acceptor; TPSA of a hydroxyl 20.23
    expected = {"MolWt": 46.069, "NumHDonors": 1, "NumHAcceptors": 1, "TPSA": 20.23, "HeavyAtomCount": 3,
                "RingCount": 0, "NumRotatableBonds": 0}
    for name, value in expected.items():
        assert values[name] == pytest.approx(phi(value), abs=1e-3), name
    assert values["MolLogP"] < 0  # ethanol's Crippen logP is slightly negative: the sign is kept
    assert len(DESCRIPTOR_NAMES) > 100 and torch.isfinite(rdkit_descriptors("[Na+].[Cl-]")).all()


def test_table_is_cached_by_smiles(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHMEM_CACHE", str(tmp_path))
    first = descriptor_table(["CCO", "c1ccccc1"])
    assert len(list((tmp_path / "descriptors").glob("*.pt"))) == 1

    def fail(smiles):
        raise AssertionError("computed again")

    monkeypatch.setattr(descriptors_module, "rdkit_descriptors", fail)
    torch.testing.assert_close(descriptor_table(["CCO", "c1ccccc1"]), first)
    with pytest.raises(AssertionError, match="computed again"):
        descriptor_table(["CCO"])  # other SMILES: another key


def _batch(smiles: list[str]):
    graphs = [smiles_to_graph(s) for s in smiles]
    add_descriptors(graphs, cache=False)
    return next(iter(DataLoader(graphs, batch_size=len(graphs))))


def test_model_joins_standardised_descriptors_to_the_readout():
    torch.manual_seed(0)
    model = MoleculeGAT(num_tasks=2, hidden_channels=16, heads=4, num_layers=2,
                        descriptor_size=len(DESCRIPTOR_NAMES)).eval()
    batch = _batch(["CCO", "c1ccccc1", "CC(=O)O"])
    with torch.no_grad():
        from graphmem.models.molecule import graph_readout

        pooled = graph_readout(model.node_states(batch), batch.batch, "mean+max", batch.num_graphs)
        norm = model.descriptor_norm
        standardised = (batch.descriptors - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
        expected = model.head(torch.cat([pooled, standardised.clamp(-5, 5)], -1))
        torch.testing.assert_close(model(batch), expected)
    del batch.descriptors
    with pytest.raises(GraphmemError, match="descriptors=True"):
        model(batch)


def test_fit_and_predict_with_descriptors(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHMEM_CACHE", str(tmp_path / "cache"))
    write_tox21(tmp_path, molecule_table(240))
    run = tmp_path / "run"
    main(["fit", "--config", RECIPE, "--data.init_args.root", str(tmp_path),
          "--model.init_args.model.init_args.hidden_channels", "16", "--trainer.max_epochs", "1",
          "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
          "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run)])
    checkpoint = next(run.rglob("*.ckpt"))
    out = tmp_path / "p.csv"
    config = next(run.rglob("config.yaml"))
    main(["predict", "--config", str(config), "--ckpt_path", str(checkpoint), "--smiles", "CCO", "c1ccccc1",
          "--out", str(out)])
    predicted = pd.read_csv(out)
    model = MoleculeGAT(num_tasks=12, hidden_channels=16, heads=4, num_layers=3, dropout=0.1, virtual_node=True,
                        descriptor_size=len(DESCRIPTOR_NAMES), descriptor_fusion="mean")  # the recipe's network
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(_batch(["CCO", "c1ccccc1"])))
    tasks = MoleculeDataModule(root=str(tmp_path)).tasks
    torch.testing.assert_close(torch.tensor(predicted[list(tasks)].to_numpy(), dtype=torch.float), expected,
                               atol=1e-5, rtol=1e-4)


def test_mean_fusion_averages_the_two_predictors_probabilities():
    torch.manual_seed(0)
    model = MoleculeGAT(num_tasks=2, hidden_channels=16, heads=4, num_layers=2,
                        descriptor_size=len(DESCRIPTOR_NAMES), descriptor_fusion="mean").eval()
    batch = _batch(["CCO", "c1ccccc1", "CC(=O)O"])
    with torch.no_grad():
        from graphmem.models.molecule import graph_readout

        pooled = graph_readout(model.node_states(batch), batch.batch, "mean+max", batch.num_graphs)
        graph_probability = torch.sigmoid(model.head(pooled))
        standardised = model.descriptor_norm(batch.descriptors).clamp(-5, 5)
        descriptor_probability = torch.sigmoid(model.descriptor_mlp(standardised))
        torch.testing.assert_close(torch.sigmoid(model(batch)), (graph_probability + descriptor_probability) / 2)
    with pytest.raises(ValueError, match="descriptor_fusion 'sum'.*concat"):
        MoleculeGAT(num_tasks=2, descriptor_size=4, descriptor_fusion="sum")


def test_mean_probability_logits_stay_finite_where_the_average_saturates():
    from graphmem.models.molecule import mean_probability_logits

    a, b = torch.tensor([-50.0, 0.0, 3.0, 60.0]), torch.tensor([-40.0, 2.0, -3.0, 70.0])
    expected = torch.logit((torch.sigmoid(a.double()) + torch.sigmoid(b.double())) / 2)
    got = mean_probability_logits(a, b)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[:3].double(), expected[:3], atol=1e-5, rtol=1e-5)
    assert got[3] == pytest.approx(60 + math.log(2), abs=1e-3)  # log(2 / (e^-60 + e^-70)) ~ 60 + log 2


def test_mean_fusion_trains_each_predictor_on_its_own_loss():
    """The training loss is the mean of the two members' BCE, not the BCE of their average."""
    from graphmem.lit import GraphPropertyTask
    from graphmem.lit.graph import masked_bce_with_logits

    torch.manual_seed(0)
    model = MoleculeGAT(num_tasks=2, hidden_channels=16, heads=4, num_layers=2,
                        descriptor_size=len(DESCRIPTOR_NAMES), descriptor_fusion="mean").eval()
    batch = _batch(["CCO", "c1ccccc1", "CC(=O)O"])
    batch.y = torch.tensor([[1.0, 0.0], [0.0, float("nan")], [1.0, 1.0]])
    task = GraphPropertyTask(model)
    task.log = lambda *args, **kwargs: None
    graph, descriptors = model.member_logits(batch)
    expected = (masked_bce_with_logits(graph, batch.y) + masked_bce_with_logits(descriptors, batch.y)) / 2
    torch.testing.assert_close(task.training_step(batch, 0), expected)
    assert not torch.allclose(expected, masked_bce_with_logits(model(batch), batch.y))


def test_a_training_batch_of_one_molecule_or_atom_uses_the_running_statistics():
    """torch's BatchNorm1d refuses one row in training; a last batch of one molecule must train."""
    torch.manual_seed(0)
    model = MoleculeGAT(num_tasks=2, hidden_channels=16, heads=4, num_layers=2, virtual_node=True,
                        descriptor_size=len(DESCRIPTOR_NAMES), descriptor_fusion="mean")
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    for smiles in ("CCO", "[Na+]"):  # one molecule; one molecule of one atom
        batch = _batch([smiles])
        model.train()(batch).sum().backward()
    for name, buffer in model.named_buffers():  # the per-molecule norms saw one row each time
        if name.startswith(("virtual_mlps", "descriptor_norm")) and name.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(buffer, before[name])
    norm = model.descriptor_norm.train()
    row = _batch(["CCO"]).descriptors
    expected = (row - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    torch.testing.assert_close(norm(row), expected)


def test_a_checkpoint_from_another_descriptor_list_is_refused_in_one_line(tmp_path, monkeypatch):
    import graphmem.data.molecule_datamodule as datamodule_module

    monkeypatch.setenv("GRAPHMEM_CACHE", str(tmp_path / "cache"))
    write_tox21(tmp_path, molecule_table(240))
    run = tmp_path / "run"
    main(["fit", "--config", RECIPE, "--data.init_args.root", str(tmp_path),
          "--model.init_args.model.init_args.hidden_channels", "16", "--trainer.max_epochs", "1",
          "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
          "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run)])
    # an RDKit release with one descriptor fewer
    monkeypatch.setattr(datamodule_module, "DESCRIPTOR_NAMES", DESCRIPTOR_NAMES[:-1])
    with pytest.raises(GraphmemError, match="descriptor_norm") as refused:
        main(["predict", "--config", str(next(run.rglob("config.yaml"))), "--ckpt_path", str(next(run.rglob("*.ckpt"))),
              "--smiles", "CCO", "--out", str(tmp_path / "p.csv")])
    assert "\n" not in str(refused.value) and not (tmp_path / "p.csv").exists()
