"""The attention-family examples: the models they train, their data, and a few training steps."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from graphmem.data.sequence_tasks import NUM_SPECIAL, PAD, vocab_size

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    # the examples import their shared helper (examples/node_training.py) as scripts do
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny ops on a shared 2-core machine: two intra-op threads made these tests 30x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sort_example():
    return _load("transformer_sort")


@pytest.fixture(scope="module")
def cora_example():
    return _load("graph_transformer_cora")


def test_sort_labels_are_the_sorted_sequence(sort_example):
    source, labels = sort_example.labels_of("sort", 16, 9, 10, torch.Generator().manual_seed(3))
    assert source.shape == labels.shape
    for tokens, target in zip(source, labels):
        real = tokens[tokens != PAD]
        assert torch.equal(target[: real.numel()], real.sort().values)
        assert (target[real.numel():] == PAD).all()
        assert (real >= NUM_SPECIAL).all()


@pytest.mark.parametrize("evolving", [False, True])
def test_sequence_labeller_padding_changes_nothing(sort_example, evolving):
    torch.manual_seed(0)
    model = sort_example.SequenceLabeller(vocab_size(10), 8, 16, 2, 2, 32, evolving, 0.5, 0.5,
                                          "scaled_dot").eval()
    alone = torch.tensor([[5, 3, 8, 4]])
    padded = torch.tensor([[5, 3, 8, 4, PAD, PAD, PAD], [7, 6, 5, 9, 3, 4, 12]])
    with torch.no_grad():
        torch.testing.assert_close(model(padded)[:1, :4], model(alone), atol=1e-5, rtol=1e-5)
    assert model(padded).shape == (2, 7, vocab_size(10))


@pytest.mark.parametrize("evolving", [False, True])
def test_sequence_labeller_learns(sort_example, evolving):
    torch.manual_seed(0)
    args = argparse.Namespace(symbols=4, max_length=5, d_model=16, heads=2, layers=2, feedforward=32,
                              alpha=0.5, beta=0.5, score="scaled_dot", lr=3e-3, warmup=1, steps=60,
                              batch_size=32, task="sort", log_every=0)
    test = sort_example.labels_of("sort", 200, 5, 4, torch.Generator().manual_seed(1))
    untrained = sort_example.SequenceLabeller(vocab_size(4), 5, 16, 2, 2, 32, evolving, 0.5, 0.5,
                                              "scaled_dot")
    before, _ = sort_example.evaluate(untrained, *test)
    result = sort_example.train(args, 0, evolving, test)
    assert result["token"] > max(before, 0.5)


def test_graph_transformer_node_classifier(cora_example):
    torch.manual_seed(0)
    model = cora_example.GraphTransformer(12, 4, 3, heads=2, dropout=0.0, root_weight=True, beta=False)
    x, edge_index = torch.randn(10, 12), torch.randint(0, 10, (2, 30))
    y = torch.randint(0, 3, (10,))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x, edge_index), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert model(x, edge_index).shape == (10, 3)
    assert losses[-1] < losses[0]
