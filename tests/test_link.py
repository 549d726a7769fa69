"""Link prediction: the edge split (no leakage), the GAT link predictor, and the recipe end to end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from graphmem.cli import main
from graphmem.data import LinkDataModule
from graphmem.data.planetoid import karate_club
from graphmem.models import GATLinkPredictor

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "cora_link_gat.yaml"


def _pairs(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    """Undirected node pairs as sorted tuples."""
    return {(min(a, b), max(a, b)) for a, b in edge_index.t().tolist()}


@pytest.fixture(scope="module")
def karate() -> LinkDataModule:
    module = LinkDataModule("karate", split_seed=3)
    module.setup()
    return module


def test_split_covers_every_edge_once_and_holds_out_val_and_test(karate):
    edges = _pairs(karate_club().edge_index)
    train, val, test = (_pairs(karate.splits[s].pos_edge_label_index) for s in ("train", "val", "test"))
    assert len(edges) == 78 and (len(val), len(test)) == (3, 7)  # floor(0.05 * 78), floor(0.1 * 78)
    assert train | val | test == edges and len(train) + len(val) + len(test) == len(edges)
    for stage in ("train", "val", "test"):
        graph = karate.splits[stage].edge_index
        # messages pass over the training edges only, in both directions
        assert _pairs(graph) == train and graph.size(1) == 2 * len(train)
        assert not _pairs(graph) & (val | test)


def test_negatives_are_non_edges_fixed_by_seed_and_fresh_for_training(karate):
    edges = _pairs(karate_club().edge_index)
    for stage in ("val", "test"):
        split = karate.splits[stage]
        negatives = _pairs(split.neg_edge_label_index)
        assert split.neg_edge_label_index.size(1) == split.pos_edge_label_index.size(1)
        assert not negatives & edges and all(a != b for a, b in negatives)
    again = LinkDataModule("karate", split_seed=3)
    again.setup()
    other = LinkDataModule("karate", split_seed=4)
    other.setup()
    assert torch.equal(again.splits["test"].neg_edge_label_index, karate.splits["test"].neg_edge_label_index)
    assert not torch.equal(other.splits["test"].pos_edge_label_index, karate.splits["test"].pos_edge_label_index)
    train_edges = _pairs(karate.splits["train"].edge_index)
    draws = [batch.neg_edge_label_index for batch in (next(iter(karate.train_dataloader())) for _ in range(2))]
    assert not torch.equal(draws[0], draws[1])
    assert all(not _pairs(draw) & train_edges and draw.size(1) == len(train_edges) for draw in draws)


@pytest.mark.skipif(not (Path(os.environ.get("GRAPHMEM_DATA", "/nonexistent")) / "planetoid" / "ind.cora.x").exists(),
                    reason="Cora is not in $GRAPHMEM_DATA")
def test_cora_split_sizes():
    module = LinkDataModule("cora")
    module.setup()
    sizes = [module.splits[s].pos_edge_label_index.size(1) for s in ("train", "val", "test")]
    assert sizes == [4488, 263, 527] and module.num_features == 1433  # 5278 undirected edges


def test_dot_decoder_scores_pairs_symmetrically():
    torch.manual_seed(0)
    model = GATLinkPredictor(5, hidden_channels=8, out_channels=3, heads=2)
    z = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0], [2.0, 0.0, 1.0]])
    scores = model.decode(z, torch.tensor([[0, 1, 2], [1, 0, 0]]))
    assert scores.tolist() == [-1.5, -1.5, 2.0]
    mlp = GATLinkPredictor(5, hidden_channels=8, out_channels=3, heads=2, decoder="mlp")
    forth, back = mlp.decode(z, torch.tensor([[0, 2], [2, 0]]))
    assert torch.isclose(forth, back)
    with pytest.raises(ValueError, match=r"pairs must have shape \(2, P\)"):
        model.decode(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unknown decoder 'cosine'"):
        GATLinkPredictor(5, decoder="cosine")
    with pytest.raises(ValueError, match="unknown link dataset 'pubmedx'"):
        LinkDataModule("pubmedx")


def test_recipe_fits_and_test_metrics_match_sklearn(tmp_path):
    small = ["--data.init_args.dataset", "karate", "--model.init_args.model.init_args.hidden_channels", "16",
             "--model.init_args.model.init_args.out_channels", "8"]
    cli = main(["fit", "--config", str(RECIPE), *small, "--trainer.max_epochs", "3",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path)])
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    model = GATLinkPredictor(34, hidden_channels=16, out_channels=8, heads=4, dropout=0.5).eval()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
    test = cli.datamodule.splits["test"]
    with torch.no_grad():
        positive = model(test.x, test.edge_index, test.pos_edge_label_index)
        negative = model(test.x, test.edge_index, test.neg_edge_label_index)
    labels = [1] * len(positive) + [0] * len(negative)
    scores = torch.cat([positive, negative]).tolist()
    metrics = cli.trainer.callback_metrics
    assert float(metrics["test_roc_auc"]) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert float(metrics["test_ap"]) == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
