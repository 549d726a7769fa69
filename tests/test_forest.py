"""The random forest on molecule features: Morgan count fingerprints against RDKit's older API,
the torch forest against scikit-learn's predict_proba on the same trees, and fit -> predict ->
an ensemble beside a GAT through the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from torch_geometric.data import Batch, Data

from graphmem.cli import main
from graphmem.data import (DESCRIPTOR_NAMES, FINGERPRINT_SIZE, MoleculeDataModule, add_fingerprints, descriptor_table,
                           fingerprint_table)
from graphmem.data.molecule import smiles_to_graph
from graphmem.ensemble import load_ensemble
from graphmem.errors import GraphmemError
from graphmem.lit import ForestTask
from graphmem.models import MoleculeForest, MoleculeGAT
from tests.conftest import TOX21_TASKS, molecule_table, reference_probabilities, write_tox21

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SMALL = ["--model.init_args.model.init_args.num_trees", "15", "--model.init_args.model.init_args.max_leaf_nodes", "8"]


def _hashed_morgan_counts(smiles: str) -> np.ndarray:
    """RDKit's older Morgan API, independent of the generator graphmem calls."""
    fingerprint = AllChem.GetHashedMorganFingerprint(Chem.MolFromSmiles(smiles), 2, nBits=FINGERPRINT_SIZE)
    counts = np.zeros(FINGERPRINT_SIZE, np.float32)
    for bit, count in fingerprint.GetNonzeroElements().items():
        counts[bit] = count
    return counts


@pytest.mark.parametrize("smiles", ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "[Na+].[Cl-]"])
def test_fingerprints_are_rdkits_hashed_morgan_counts(smiles, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHMEM_CACHE", str(tmp_path))
    np.testing.assert_array_equal(fingerprint_table([smiles], cache=False)[0].numpy(), _hashed_morgan_counts(smiles))
    graphs = [smiles_to_graph(smiles)]
    add_fingerprints(graphs)
    assert graphs[0].fingerprints.shape == (1, FINGERPRINT_SIZE)
    assert len(list((tmp_path / "fingerprints").glob("*.pt"))) == 1  # cached for the next run


def _features_batch(x: torch.Tensor, descriptor_size: int) -> Batch:
    return Batch.from_data_list([Data(descriptors=row[:descriptor_size].unsqueeze(0),
                                      fingerprints=row[descriptor_size:].unsqueeze(0), num_nodes=1) for row in x])


def test_forest_gives_sklearns_probabilities_on_the_same_trees():
    torch.manual_seed(0)
    n, descriptors, bins, tasks = 300, 6, 10, 3
    x = torch.cat([torch.randn(n, descriptors), torch.randint(0, 4, (n, bins)).float()], 1)
    y = ((x[:, :1] + 0.5 * x[:, descriptors:descriptors + tasks] + torch.randn(n, tasks)) > 1).float()
    y[torch.rand(n, tasks) < 0.2] = float("nan")
    forest = MoleculeForest(tasks, descriptors, bins, num_trees=25, max_leaf_nodes=12, min_samples_leaf=2)
    forest.fit(x, y, seed=7)
    got = torch.sigmoid(forest(_features_batch(x, descriptors))).double()
    for task in range(tasks):
        labelled = ~torch.isnan(y[:, task])
        reference = RandomForestClassifier(25, max_leaf_nodes=12, min_samples_leaf=2, class_weight="balanced",
                                           random_state=7 + task).fit(x[labelled].numpy(), y[labelled, task].numpy())
        expected = torch.tensor(reference.predict_proba(x.numpy())[:, 1]).clamp(1e-6, 1 - 1e-6)
        torch.testing.assert_close(got[:, task], expected, atol=1e-6, rtol=1e-5)


def test_a_feature_between_adjacent_float32_values_goes_the_way_sklearn_sends_it():
    """sklearn's threshold is the float64 midpoint of two neighbouring float32 values; rounded to
    the nearest float32 (ties to even) it would equal the upper one and send it left."""
    # an odd last bit (the midpoint rounds up to ``high``), where float32s lie further apart than
    # the 1e-7 below which sklearn does not split
    low = np.nextafter(np.float32(100.0), np.float32(200.0))
    high = np.nextafter(low, np.float32(200.0))
    x = torch.tensor([[low], [high]] * 20, dtype=torch.float32)
    y = torch.tensor([[0.0], [1.0]] * 20)
    forest = MoleculeForest(1, descriptor_size=1, num_trees=1, max_leaf_nodes=2)
    forest.fit(x, y)
    reference = RandomForestClassifier(1, max_leaf_nodes=2, class_weight="balanced", random_state=0).fit(x, y[:, 0])
    expected = torch.tensor(reference.predict_proba(x.numpy())[:, 1]).clamp(1e-6, 1 - 1e-6)
    batch = Batch.from_data_list([Data(descriptors=row.unsqueeze(0), num_nodes=1) for row in x])
    torch.testing.assert_close(torch.sigmoid(forest(batch))[:, 0].double(), expected, atol=1e-6, rtol=0)
    assert forest.threshold[0, 0, 0] < high


def test_forest_refuses_what_it_cannot_use():
    forest = MoleculeForest(2, descriptor_size=3, fingerprint_size=4, num_trees=2, max_leaf_nodes=4)
    batch = Batch.from_data_list([Data(descriptors=torch.zeros(1, 3), num_nodes=1)])
    with pytest.raises(GraphmemError, match="not fitted"):
        forest(batch)
    with pytest.raises(GraphmemError, match=r"4 fingerprints.*got none.*fingerprints=True"):
        forest.features(batch)
    with pytest.raises(GraphmemError, match="labels are"):
        forest.fit(torch.randn(10, 7), torch.ones(10, 3))
    with pytest.raises(GraphmemError, match="needs molecule features"):
        MoleculeForest(2)
    with pytest.raises(GraphmemError, match="max_leaf_nodes"):
        MoleculeForest(2, descriptor_size=3, max_leaf_nodes=1)


def test_a_task_of_one_class_gets_a_constant_forest_and_a_warning():
    forest = MoleculeForest(2, descriptor_size=3, num_trees=4, max_leaf_nodes=4)
    y = torch.stack([torch.ones(20), torch.arange(20.0) % 2], 1)
    y[:5, 0] = float("nan")
    with pytest.warns(UserWarning, match="task 0 has 15 labelled training molecules, all of one class"):
        forest.fit(torch.randn(20, 3), y)
    batch = Batch.from_data_list([Data(descriptors=torch.randn(1, 3), num_nodes=1) for _ in range(6)])
    assert torch.allclose(torch.sigmoid(forest(batch)[:, 0]), torch.tensor(1 - 1e-6))


def test_forest_task_refuses_a_network():
    task = ForestTask(MoleculeGAT(num_tasks=2, hidden_channels=8, heads=2, num_layers=1))
    with pytest.raises(GraphmemError, match="MoleculeForest, not a MoleculeGAT"):
        task.setup("fit")


def _hand_features(smiles: list[str]) -> Batch:
    """A batch of ``smiles``' descriptors and fingerprints, the fingerprints by RDKit's older API."""
    table = torch.cat([descriptor_table(smiles, cache=False), torch.from_numpy(np.stack(
        [_hashed_morgan_counts(text) for text in smiles]))], 1)
    return _features_batch(table, len(DESCRIPTOR_NAMES))


def _forest(checkpoint: Path) -> MoleculeForest:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    forest = MoleculeForest(12, descriptor_size=len(DESCRIPTOR_NAMES), fingerprint_size=FINGERPRINT_SIZE, num_trees=15,
                            max_leaf_nodes=8)
    forest.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
    return forest


@pytest.fixture(scope="module")
def forest_and_gat(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    write_tox21(root, molecule_table(240))
    runs = {}
    for name, recipe, extra in (("forest", "tox21_forest_scaffold.yaml", SMALL),
                                ("gat", "tox21_gat.yaml", ["--model.init_args.model.init_args.hidden_channels", "16",
                                                           "--trainer.max_epochs", "1", "--seed_everything", "3"])):
        run = tmp_path_factory.mktemp(name)
        main(["fit", "--config", str(RECIPES / recipe), "--data.init_args.root", str(root),
              "--data.init_args.split", "random", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
              "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run), *extra])
        runs[name] = next(run.rglob("best-*.ckpt"))
    runs["root"] = root
    return runs


def test_fit_writes_a_forest_checkpoint_that_predict_reads(forest_and_gat, tmp_path):
    checkpoint = forest_and_gat["forest"]
    forest = _forest(checkpoint)
    assert forest.fitted and checkpoint.name.startswith("best-epoch=0")
    out = tmp_path / "p.csv"
    smiles = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O"]
    main(["predict", "--config", str(checkpoint.parent.parent / "config.yaml"), "--ckpt_path", str(checkpoint),
          "--smiles", *smiles, "bad(", "--out", str(out)])
    predicted = pd.read_csv(out)
    batch = _hand_features(smiles)
    with torch.no_grad():
        expected = torch.sigmoid(forest(batch))
    np.testing.assert_allclose(predicted[list(TOX21_TASKS)].to_numpy()[:3], expected.numpy(), atol=1e-6)
    assert predicted["error"].fillna("").astype(bool).tolist() == [False, False, False, True]


def test_forest_seeds_give_other_forests_and_the_same_seed_the_same(forest_and_gat, tmp_path):
    run = tmp_path / "again"
    main(["fit", "--config", str(RECIPES / "tox21_forest_scaffold.yaml"), "--data.init_args.root",
          str(forest_and_gat["root"]), "--data.init_args.split", "random", "--trainer.enable_progress_bar", "false",
          "--test_after_fit", "false", "--trainer.logger.init_args.save_dir", str(run), *SMALL])
    again = torch.load(next(run.rglob("best-*.ckpt")), weights_only=True)["state_dict"]
    first = torch.load(forest_and_gat["forest"], weights_only=True)["state_dict"]
    assert all(torch.equal(first[key], again[key]) for key in first)
    other = tmp_path / "other"
    main(["fit", "--config", str(RECIPES / "tox21_forest_scaffold.yaml"), "--data.init_args.root",
          str(forest_and_gat["root"]), "--data.init_args.split", "random", "--trainer.enable_progress_bar", "false",
          "--test_after_fit", "false", "--trainer.logger.init_args.save_dir", str(other), "--seed_everything", "1",
          *SMALL])
    assert not torch.equal(first["model.threshold"],
                           torch.load(next(other.rglob("best-*.ckpt")), weights_only=True)["state_dict"]["model.threshold"])


def test_an_ensemble_of_a_gat_and_a_forest_averages_their_probabilities(forest_and_gat, tmp_path):
    """The GAT's recipe loads no fingerprints: named first, its data must still give the forest them."""
    out = tmp_path / "mixed"
    main(["ensemble", "--out", str(out), str(forest_and_gat["gat"]), str(forest_and_gat["forest"])])
    assert [m.seed for m in load_ensemble(out).members] == [0, 3]
    data = MoleculeDataModule(root=str(forest_and_gat["root"]), batch_size=32, descriptors=True, fingerprints=True)
    data.setup()
    graphs = data.splits["test"]
    labels = torch.cat([graph.y for graph in graphs]).numpy()
    gat = reference_probabilities(forest_and_gat["gat"], graphs).numpy()
    with torch.no_grad():
        forest = torch.sigmoid(_forest(forest_and_gat["forest"])(Batch.from_data_list(graphs))).numpy()
    mean = (gat + forest) / 2
    labelled = ~np.isnan(labels)
    expected = [roc_auc_score(labels[labelled[:, t], t], mean[labelled[:, t], t]) for t in range(12)]
    scores = pd.read_csv(out / "test_roc_auc.csv", index_col="task")
    assert np.allclose(scores["ensemble"].iloc[:12], expected, atol=1e-6)
    predictions = tmp_path / "p.csv"
    main(["predict", "--ckpt_path", str(out), "--smiles", "CCO", "c1ccccc1", "--out", str(predictions)])
    assert len(pd.read_csv(predictions)) == 2
