"""LightningModule for link prediction: is there an edge between two nodes?"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from torch import Tensor, nn
from torch_geometric.data import Batch

from graphmem.lit.metrics import multitask_roc_auc


class LinkPredictionTask(L.LightningModule):
    """Binary cross-entropy on edges (label 1) against as many non-edges (label 0).

    A batch is one graph (see :class:`graphmem.data.LinkDataModule`): messages pass over its
    ``edge_index``; the stage's pairs are ``pos_edge_label_index`` and ``neg_edge_label_index``.
    Logs ``train_loss``, ``{val,test}_loss``, ``{val,test}_roc_auc`` and ``{val,test}_ap``
    (average precision), both over the stage's positive and negative pairs.

    The model is called as ``model(x, edge_index, pairs)`` and returns ``(P,)`` logits, e.g.
    :class:`graphmem.models.GATLinkPredictor`.

    Args:
        model: the network.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
    """

    def __init__(self, model: nn.Module, lr: float = 0.005, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model

    def forward(self, batch: Batch, pairs: Tensor) -> Tensor:
        return self.model(batch.x, batch.edge_index, pairs)

    def _scored(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Logits and 0/1 labels of the batch's positive then negative pairs."""
        positive, negative = batch.pos_edge_label_index, batch.neg_edge_label_index
        logits = self(batch, torch.cat([positive, negative], 1))
        labels = torch.cat([logits.new_ones(positive.size(1)), logits.new_zeros(negative.size(1))])
        return logits, labels

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits, labels = self._scored(batch)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        self.log("train_loss", loss, batch_size=1, prog_bar=True)
        return loss

    def _evaluate(self, batch: Batch, stage: str) -> None:
        logits, labels = self._scored(batch)
        self.log(f"{stage}_loss", F.binary_cross_entropy_with_logits(logits, labels), batch_size=1)
        roc_auc, _ = multitask_roc_auc(labels[:, None], logits[:, None])
        ap = average_precision_score(labels.cpu().numpy(), logits.detach().float().cpu().numpy())
        self.log(f"{stage}_roc_auc", roc_auc, batch_size=1, prog_bar=True)
        self.log(f"{stage}_ap", float(ap), batch_size=1)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
