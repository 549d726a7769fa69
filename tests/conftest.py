"""Shared fixtures (small molecule tables written to a temporary data folder), a hand-built reference
model, and checks of what a run prints."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.loader import DataLoader

from graphmem.data import smiles_to_graph
from graphmem.data.molecule import TOX21_TASKS
from graphmem.data.descriptors import add_descriptors
from graphmem.models import MoleculeGAT

# Real drug-like molecules of varied size; enough distinct scaffolds for a scaffold split.
SMILES = [
    "CCO", "CC(=O)O", "c1ccccc1", "Cc1ccccc1", "c1ccc2ccccc2c1", "CCN(CC)CC", "O=C(O)c1ccccc1O",
    "CC(=O)Oc1ccccc1C(=O)O", "CN1CCC[C@H]1c1cccnc1", "c1ccncc1", "C1CCCCC1", "C1CCNCC1", "c1ccoc1",
    "c1ccsc1", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "COc1ccc2[nH]cc(CCN)c2c1", "NC(=O)c1cccnc1", "Clc1ccccc1",
    "OC1CCCCC1", "c1ccc(cc1)-c1ccccc1", "CC1=CC(=O)C=CC1=O", "O=C1CCCN1", "C1COCCN1", "c1cc[nH]c1",
]


def molecule_table(n: int, seed: int = 0, bad: tuple[str, ...] = (), molecules: list[str] = SMILES) -> pd.DataFrame:
    """A Tox21-shaped table: ``n`` of ``molecules`` (cycled) with random labels (about 20% missing), then ``bad`` rows."""
    rng = np.random.default_rng(seed)
    smiles = [molecules[i % len(molecules)] for i in range(n)] + list(bad)
    labels = rng.integers(0, 2, size=(len(smiles), len(TOX21_TASKS))).astype(float)
    labels[rng.random(labels.shape) < 0.2] = np.nan
    table = pd.DataFrame(labels, columns=list(TOX21_TASKS))
    table.insert(0, "smiles", smiles)
    return table


def write_tox21(root: Path, table: pd.DataFrame) -> Path:
    path = root / "moleculenet" / "tox21.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        table.to_csv(f, index=False)
    return path


@pytest.fixture
def tox21_root(tmp_path: Path) -> Path:
    """A data folder holding a 240-molecule Tox21-shaped file with two unreadable rows."""
    write_tox21(tmp_path, molecule_table(240, bad=("C1CC(", "not a smiles")))
    return tmp_path


def assert_graphmem_tables_only(capsys, caplog) -> None:
    """The run printed graphmem's overall test line once, and not Lightning's table of every
    test metric in alphabetic order."""
    assert "DataLoader 0" not in capsys.readouterr().out + caplog.text
    assert caplog.text.count("test: test_") == 1, caplog.text


def rows_in_order(text: str, names: list[str]) -> bool:
    """Whether the table rows ``| name |`` appear once each in ``text``, in the order of ``names``."""
    positions = [text.find(f"| {name} |") for name in names]
    return all(text.count(f"| {name} |") == 1 for name in names) and positions == sorted(positions)


def reference_probabilities(checkpoint: Path, molecules: list, hidden_channels: int = 16,
                            num_layers: int = 3) -> torch.Tensor:
    """sigmoid of the logits of a Tox21-recipe checkpoint's network, built and run by hand on
    ``molecules`` (SMILES strings or graphs), with ``hidden_channels`` and ``num_layers`` as it
    was trained."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    state = {key.removeprefix("model."): value for key, value in state.items()}
    # the recipe's options, read off the weights: a virtual node, descriptors joined or averaged
    descriptors = state["descriptor_norm.running_mean"].numel() if "descriptor_norm.running_mean" in state else 0
    model = MoleculeGAT(num_tasks=12, hidden_channels=hidden_channels, heads=4, num_layers=num_layers, dropout=0.1,
                        readout="mean+max", virtual_node="virtual_node" in state, descriptor_size=descriptors,
                        descriptor_fusion="mean" if "descriptor_mlp.1.weight" in state else "concat")
    model.load_state_dict(state)
    graphs = [smiles_to_graph(m) if isinstance(m, str) else m for m in molecules]
    if descriptors:
        add_descriptors(graphs, cache=False)
    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    with torch.no_grad():
        return torch.sigmoid(model.eval()(batch))
