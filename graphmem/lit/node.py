"""LightningModule for transductive node classification on one graph."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch


class NodeClassificationTask(L.LightningModule):
    """Cross-entropy on the training nodes; accuracy on the validation and test nodes.

    Logs ``train_loss``, ``val_loss``, ``val_acc`` and ``test_acc``. The model is called as
    ``model(x, edge_index)`` and returns ``(N, C)`` logits.

    Args:
        model: e.g. :class:`graphmem.models.GATNodeClassifier`.
        lr: Adam learning rate.
        weight_decay: L2 penalty (the GAT paper: 5e-4 on Cora and CiteSeer).
    """

    def __init__(self, model: nn.Module, lr: float = 0.005, weight_decay: float = 5e-4) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model

    def forward(self, batch: Batch) -> Tensor:
        return self.model(batch.x, batch.edge_index)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits[batch.train_mask], batch.y[batch.train_mask])
        self.log("train_loss", loss, batch_size=1, prog_bar=True)
        return loss

    def _evaluate(self, batch: Batch, mask: Tensor, stage: str) -> None:
        logits = self(batch)
        loss = F.cross_entropy(logits[mask], batch.y[mask])
        accuracy = (logits[mask].argmax(-1) == batch.y[mask]).float().mean()
        self.log(f"{stage}_loss", loss, batch_size=1)
        self.log(f"{stage}_acc", accuracy, batch_size=1, prog_bar=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, batch.val_mask, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, batch.test_mask, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch).softmax(-1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
