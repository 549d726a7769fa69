"""LightningModule for transductive node classification on one graph, whole or sampled."""

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

    A batch is either the whole graph, scored on the nodes of the stage's mask, or a
    neighbour-sampled mini-batch (it has ``input_id``), scored on its seed nodes, which the
    loader drew from the stage's mask. Mini-batch metrics are weighted by their number of
    seeds, so an epoch's accuracy is the accuracy over all the split's nodes.

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

    @staticmethod
    def _scored(batch: Batch, mask_name: str) -> tuple[Tensor | slice, int]:
        """The nodes a stage scores and how many: a sampled batch's seeds, else the mask's nodes.

        The whole graph counts as one batch (``1``), as before sampling existed, so that its logs
        are unchanged."""
        if "input_id" in batch:
            return slice(0, batch.batch_size), batch.batch_size
        return getattr(batch, mask_name), 1

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        nodes, size = self._scored(batch, "train_mask")
        loss = F.cross_entropy(self(batch)[nodes], batch.y[nodes])
        self.log("train_loss", loss, batch_size=size, prog_bar=True)
        return loss

    def _evaluate(self, batch: Batch, stage: str) -> None:
        nodes, size = self._scored(batch, f"{stage}_mask")
        logits, y = self(batch)[nodes], batch.y[nodes]
        self.log(f"{stage}_loss", F.cross_entropy(logits, y), batch_size=size)
        self.log(f"{stage}_acc", (logits.argmax(-1) == y).float().mean(), batch_size=size, prog_bar=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Class probabilities of every node (whole graph) or of the batch's seed nodes."""
        probabilities = self(batch).softmax(-1)
        return probabilities[:batch.batch_size] if "input_id" in batch else probabilities

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
