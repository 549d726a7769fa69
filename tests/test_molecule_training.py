"""The molecule GAT, the multi-task loss and metric, and the graphmem command end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ogb.graphproppred import Evaluator
from torch_geometric.loader import DataLoader

from graphmem.cli import main
from graphmem.recipe import recipe_summaries
from graphmem.data import smiles_to_graph
from graphmem.data.molecule import TOX21_TASKS
from graphmem.lit import masked_bce_with_logits, multitask_roc_auc
from graphmem.models import MoleculeGAT
from tests.conftest import SMILES

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tox21_gat.yaml"


def test_roc_auc_matches_ogb_evaluator():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, size=(300, 12)).astype(float)
    y_true[rng.random(y_true.shape) < 0.3] = np.nan
    y_true[:, 5] = np.where(np.isnan(y_true[:, 5]), np.nan, 0.0)  # one task without positives
    y_pred = rng.normal(size=(300, 12)) + np.nan_to_num(y_true)
    reference = Evaluator("ogbg-moltox21").eval({"y_true": y_true, "y_pred": y_pred})["rocauc"]
    ours, per_task = multitask_roc_auc(torch.tensor(y_true), torch.tensor(y_pred))
    assert ours == pytest.approx(reference, abs=1e-12)
    assert np.isnan(per_task[5]) and sum(np.isnan(per_task)) == 1


def test_fast_dev_run_fits_and_tests_without_library_noise(tox21_root, tmp_path, recwarn, caplog):
    # fast_dev_run replaces the logger with one that has no folder
    caplog.set_level("INFO")
    cli = main(["fit", "--config", str(RECIPE), "--data.init_args.root", str(tox21_root),
                "--model.init_args.model.init_args.hidden_channels", "16", "--trainer.fast_dev_run", "true",
                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run")])
    assert "test_roc_auc" in cli.trainer.callback_metrics
    assert not [w for w in recwarn if "LeafSpec" in str(w.message) or "IterableDataset" in str(w.message)]
    assert "litlogger" not in caplog.text and "per-task test ROC-AUC" in caplog.text


def test_roc_auc_table_keeps_the_given_order():
    from graphmem.lit.graph import roc_auc_table

    table = roc_auc_table(["NR-AR", "SR-p53", "NR-AhR"], {"test ROC-AUC": ([0.8, 0.7, 0.9], 0.8)})
    lines = table.splitlines()
    assert [line.split(" | ")[0] for line in lines[3:6]] == ["| NR-AR", "| SR-p53", "| NR-AhR"]
    assert lines[-1] == "| mean | 0.8000 |"


def test_roc_auc_undefined_raises():
    with pytest.raises(ValueError, match="both positive and negative"):
        multitask_roc_auc(torch.zeros(4, 2), torch.rand(4, 2))


def test_masked_bce_ignores_missing_labels():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0]], requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    loss = masked_bce_with_logits(logits, target)
    p = torch.sigmoid(torch.tensor([0.5, 2.0, 0.0]))
    expected = -(torch.log(p[0]) + torch.log(1 - p[1]) + torch.log(p[2])) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0
    assert masked_bce_with_logits(logits, torch.full((2, 2), float("nan"))).item() == 0


def _batch(n=6):
    graphs = [smiles_to_graph(s) for s in SMILES[:n]]
    for g in graphs:
        g.y = torch.zeros(1, 3)
    return next(iter(DataLoader(graphs, batch_size=n)))


def test_molecule_gat_shapes_attention_and_gradients():
    torch.manual_seed(0)
    model = MoleculeGAT(num_tasks=3, hidden_channels=16, heads=4, num_layers=2)
    batch = _batch()
    out = model(batch)
    assert out.shape == (6, 3)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    _, attention = model.node_states(batch, return_attention_weights=True)
    edge_index, alpha = attention[0]
    # softmax over each atom's incoming bonds (self-loops included) sums to one per head
    sums = torch.zeros(batch.num_nodes, 4).index_add(0, edge_index[1], alpha)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)


def test_molecule_gat_is_permutation_invariant_over_graphs():
    torch.manual_seed(0)
    model = MoleculeGAT(num_tasks=2, hidden_channels=8, heads=2, num_layers=2).eval()
    graphs = [smiles_to_graph(s) for s in SMILES[:5]]
    forward = model(next(iter(DataLoader(graphs, batch_size=5))))
    backward = model(next(iter(DataLoader(graphs[::-1], batch_size=5))))
    assert torch.allclose(forward, backward.flip(0), atol=1e-5)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="divisible"):
        MoleculeGAT(3, hidden_channels=10, heads=4)
    with pytest.raises(ValueError, match="readout"):
        MoleculeGAT(3, hidden_channels=8, heads=2, readout="median")


def test_recipes_listed():
    names = dict(recipe_summaries())
    assert "tox21_gat" in names and "Tox21" in names["tox21_gat"]


def test_cli_fit_then_test_on_small_data(tox21_root, tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    cli = main([
        "fit", "--config", str(RECIPE),
        "--data.init_args.root", str(tox21_root),
        "--data.init_args.batch_size", "32",
        "--model.init_args.model.init_args.hidden_channels", "16",
        "--trainer.max_epochs", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "run"),
    ])
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["test_roc_auc"]) <= 1.0
    # per-task metrics carry the data set's task names, and their mean is the logged mean
    per_task = [float(metrics[f"test_roc_auc/{task}"]) for task in TOX21_TASKS]
    assert float(metrics["test_roc_auc"]) == pytest.approx(float(np.mean(per_task)), abs=1e-5)
    assert not any(name.split("/")[-1].isdigit() for name in metrics if name.startswith("test_roc_auc/"))
    checkpoints = list((tmp_path / "run").rglob("*.ckpt"))
    assert checkpoints and (tmp_path / "run").rglob("metrics.csv")
    assert f"best checkpoint: {cli.trainer.checkpoint_callback.best_model_path}" in caplog.text
    # the best checkpoint reloads through the same command
    cli = main([
        "test", "--config", str(RECIPE),
        "--data.init_args.root", str(tox21_root),
        "--model.init_args.model.init_args.hidden_channels", "16",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--ckpt_path", str(checkpoints[0]),
    ])
    assert "test_roc_auc" in cli.trainer.callback_metrics



def test_skipped_rows_summary_is_printed_once_not_warned(tox21_root, recwarn, caplog):
    from graphmem.data import MoleculeDataModule

    caplog.set_level("INFO")
    data = MoleculeDataModule(dataset="tox21", root=str(tox21_root))
    data.setup()
    assert data.molecules.skipped  # the fixture holds two unreadable rows
    assert not [w for w in recwarn if "rows skipped" in str(w.message)]
    assert caplog.text.count("rows skipped") == 1
