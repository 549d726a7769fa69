"""The full-batch training loop that the Cora examples share (plain PyTorch, no Lightning)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data


def fit_full_batch(model: nn.Module, data: Data, epochs: int, lr: float, weight_decay: float) -> tuple[float, float, int]:
    """Trains ``model(x, edge_index) -> logits`` on ``data.train_mask`` with Adam, one step per
    epoch, and returns (best validation accuracy, test accuracy at that epoch, that epoch)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best = (0.0, 0.0, 0)
    for epoch in range(1, epochs + 1):
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask])
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            predicted = model(data.x, data.edge_index).argmax(-1)
        val = float((predicted[data.val_mask] == data.y[data.val_mask]).float().mean())
        test = float((predicted[data.test_mask] == data.y[data.test_mask]).float().mean())
        if val > best[0]:
            best = (val, test, epoch)
    return best
