"""Neighbour-sampled mini-batches, the generated planted-partition graph, the node recipe path
with sampling, and bf16 mixed precision (on the CPU, and on CUDA when there is a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.sampler import NodeSamplerInput

from graphmem.cli import main
from graphmem.data import NodeDataModule, SyntheticGraph, UniformNeighborSampler, neighbor_loader
from graphmem.lit import NodeClassificationTask
from graphmem.models import GATNodeClassifier

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SMALL = dict(num_nodes=600, num_classes=4, avg_degree=8.0, num_features=8, noise=1.0)


@pytest.fixture(scope="module")
def graph():
    return SyntheticGraph(**SMALL).generate()


def _in_neighbours(graph, node: int) -> set[int]:
    return set(graph.edge_index[0, graph.edge_index[1] == node].tolist())


def test_sampled_edges_are_real_and_fanout_is_respected(graph):
    torch.manual_seed(0)
    sampler = UniformNeighborSampler(graph, [3, 2])
    seeds = torch.tensor([5, 17, 230, 599])
    out = sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=seeds))
    assert torch.equal(out.node[:4], seeds) and out.node.unique().numel() == out.node.numel()
    assert sum(out.num_sampled_nodes) == out.node.numel() and sum(out.num_sampled_edges) == out.row.numel()
    source, target = out.node[out.row], out.node[out.col]
    # each sampled edge is an edge of the graph, found by its id
    assert torch.equal(graph.edge_index[:, out.edge], torch.stack([source, target]))
    assert out.edge.unique().numel() == out.edge.numel()  # without replacement
    first_hop = out.num_sampled_edges[0]
    for node in seeds.tolist():
        sampled = source[:first_hop][target[:first_hop] == node]
        assert sampled.numel() == min(3, len(_in_neighbours(graph, node)))
        assert set(sampled.tolist()) <= _in_neighbours(graph, node)
    hop2_targets = target[first_hop:]
    assert int(torch.bincount(hop2_targets).max()) <= 2


def test_minus_one_takes_every_neighbour(graph):
    sampler = UniformNeighborSampler(graph, [-1])
    out = sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=torch.tensor([7])))
    assert set(out.node[out.row].tolist()) == _in_neighbours(graph, 7)


def test_sampling_is_uniform():
    # node 0 has 10 in-neighbours; sampling 2 of them 3000 times picks each about 600 times
    edge_index = torch.stack([torch.arange(1, 11), torch.zeros(10, dtype=torch.long)])
    sampler = UniformNeighborSampler(type("G", (), {"edge_index": edge_index, "num_nodes": 11})(), [2])
    torch.manual_seed(0)
    counts = torch.zeros(11)
    for _ in range(3000):
        out = sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=torch.tensor([0])))
        counts[out.node[out.row]] += 1
    assert counts[0] == 0 and counts[1:].sum() == 6000
    assert counts[1:].min() > 500 and counts[1:].max() < 700


@pytest.mark.parametrize("bad", [[], [0], [3, -2]])
def test_bad_fanouts(graph, bad):
    with pytest.raises(ValueError, match="num_neighbors"):
        neighbor_loader(graph, bad, graph.train_mask, 16)


def test_loader_covers_each_seed_once(graph):
    loader = neighbor_loader(graph, [4, 4], graph.val_mask, batch_size=25, shuffle=True)
    seeds = torch.cat([batch.n_id[:batch.batch_size] for batch in loader])
    assert torch.equal(seeds.sort().values, graph.val_mask.nonzero().view(-1))
    batch = next(iter(loader))
    assert torch.equal(batch.x, graph.x[batch.n_id]) and torch.equal(batch.y, graph.y[batch.n_id])


def test_full_neighbourhood_batches_give_the_whole_graph_outputs(graph):
    """A 2-layer GAT sees 2 hops: with every neighbour of 2 hops sampled, the seeds' outputs are
    exactly those of a whole-graph pass."""
    torch.manual_seed(0)
    model = GATNodeClassifier(8, 4, hidden_channels=4, heads=2).eval()
    with torch.no_grad():
        whole = model(graph.x, graph.edge_index)
        for batch in neighbor_loader(graph, [-1, -1], graph.test_mask, batch_size=32):
            seeds = batch.n_id[:batch.batch_size]
            torch.testing.assert_close(model(batch.x, batch.edge_index)[:batch.batch_size], whole[seeds],
                                       atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# The generated graph
# ---------------------------------------------------------------------------------------------


def test_synthetic_graph_shape_split_and_homophily(graph):
    assert graph.num_nodes == 600 and graph.x.shape == (600, 8) and int(graph.y.max()) == 3
    source, target = graph.edge_index
    assert graph.is_undirected() and not bool((source == target).any())
    assert 0.9 * 600 * 8 < graph.num_edges <= 600 * 8
    same = (graph.y[source] == graph.y[target]).float().mean()
    assert 0.8 < same < 0.9  # 0.8 planted + 0.2 * 1/4 by chance
    sizes = [int(m.sum()) for m in (graph.train_mask, graph.val_mask, graph.test_mask)]
    assert sizes == [60, 60, 480] and not bool((graph.train_mask & graph.test_mask).any())
    again = SyntheticGraph(**SMALL).generate()
    assert torch.equal(again.edge_index, graph.edge_index) and torch.equal(again.x, graph.x)


@pytest.mark.parametrize("bad, message", [({"homophily": 1.5}, "homophily"),
                                          ({"num_classes": 1}, "num_classes"),
                                          ({"fractions": (0.5, 0.5, 0.5)}, "fractions"),
                                          ({"avg_degree": 0}, "avg_degree")])
def test_synthetic_graph_bad_arguments(bad, message):
    with pytest.raises(ValueError, match=message):
        SyntheticGraph(**{**SMALL, **bad})


def test_datamodule_options():
    with pytest.raises(ValueError, match="set dataset: synthetic"):
        NodeDataModule("karate", synthetic=SyntheticGraph())
    dm = NodeDataModule("synthetic", num_neighbors=[5, 5], batch_size=30, synthetic=SyntheticGraph(**SMALL))
    assert dm.sampled and dm.num_features == 8 and dm.num_classes == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch.batch_size == 30 and bool(batch.train_mask[:30].all())
    assert not NodeDataModule("karate").sampled


def test_task_scores_seed_nodes_of_sampled_batches(graph):
    task = NodeClassificationTask(GATNodeClassifier(8, 4, hidden_channels=4, heads=2))
    batch = next(iter(neighbor_loader(graph, [3, 3], graph.train_mask, batch_size=10)))
    nodes, size = task._scored(batch, "train_mask")
    assert nodes == slice(0, 10) and size == 10
    assert task.predict_step(batch, 0).shape == (10, 4)


# ---------------------------------------------------------------------------------------------
# Through the graphmem command
# ---------------------------------------------------------------------------------------------


def test_large_graph_recipe_on_a_small_generated_graph(tmp_path):
    cli = main(["fit", "--config", str(RECIPES / "large_graph_sampled.yaml"),
                "--data.init_args.synthetic.num_nodes", "3000", "--data.init_args.synthetic.noise", "2.0",
                "--data.init_args.batch_size", "64", "--trainer.max_epochs", "4",
                "--trainer.default_root_dir", str(tmp_path),
                "--trainer.logger.init_args.save_dir", str(tmp_path)])
    assert cli.datamodule.sampled and cli.datamodule.data.num_nodes == 3000
    accuracy = float(cli.trainer.callback_metrics["test_acc"])
    assert accuracy > 0.3  # 8 classes: chance is 0.125
    assert list(tmp_path.rglob("best-*.ckpt"))


DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])]


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_mixed_precision(device, tmp_path):
    """Lightning's ``bf16-mixed`` runs under autocast: GATConv's projections run in bf16."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    cli = main(["fit", "--config", str(RECIPES / "karate_gat.yaml"), "--trainer.precision", "bf16-mixed",
                "--trainer.accelerator", accelerator,
                "--trainer.max_epochs", "30", "--trainer.default_root_dir", str(tmp_path),
                "--trainer.logger", "false"])
    plugin = cli.trainer.precision_plugin
    assert cli.trainer.precision == plugin.precision == "bf16-mixed" and plugin.device == device
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["test_loss"]) and float(metrics["test_acc"]) >= 0.75
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())  # mixed: weights stay float32


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_nodes, num_edges", [(40, 200), (3000, 60000)])  # plain and fused sparse read
def test_gat_conv_under_autocast(device, num_nodes, num_edges):
    from graphmem.nn import GATConv

    torch.manual_seed(0)
    conv = GATConv(16, 8, heads=4, edge_dim=3).to(device)
    x, edge_attr = torch.randn(num_nodes, 16, device=device), torch.randn(num_edges, 3, device=device)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), device=device)
    projected = []
    conv.lin.register_forward_hook(lambda module, inputs, output: projected.append(output.dtype))
    reference = conv(x, edge_index, edge_attr)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = conv(x, edge_index, edge_attr)
    assert projected == [torch.float32, torch.bfloat16]
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)  # bf16 keeps ~3 digits
    out.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
