"""JointEarlyStopping: the GAT paper's rule, checked against the epochs it picks by hand."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from graphmem.lit import JointEarlyStopping

# (val_acc, val_loss) per epoch. By the rule (both at least as good as their bests so far):
# epoch 0 best; 1 best (acc ties, loss lower); 2 acc up but loss up: not best, patience reset;
# 3 loss ties its best 0.5 and acc ties 0.8: best; 4, 5, 6 neither reaches a best: stop after 6
# with patience 3. The kept weights are epoch 3's.
SCRIPT = [(0.7, 0.6), (0.7, 0.5), (0.8, 0.55), (0.8, 0.5), (0.75, 0.52), (0.6, 0.7), (0.79, 0.51), (0.9, 0.1)]


class Scripted(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - 1.0).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        acc, loss = SCRIPT[self.current_epoch]
        self.log("val_acc", acc)
        self.log("val_loss", loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.zeros(1, 1)), batch_size=1)


def fit(tmp_path, patience: int) -> tuple[L.Trainer, ModelCheckpoint]:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor=JointEarlyStopping.METRIC, mode="max")
    trainer = L.Trainer(max_epochs=len(SCRIPT), callbacks=[JointEarlyStopping(patience=patience), checkpoint],
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(Scripted(), loader(), loader())
    return trainer, checkpoint


def test_keeps_the_last_epoch_where_both_metrics_were_best_and_stops_after_patience(tmp_path):
    trainer, checkpoint = fit(tmp_path, patience=3)
    assert trainer.current_epoch == 7  # stopped after epoch 6 (the counter is one past it)
    assert torch.load(checkpoint.best_model_path, weights_only=True)["epoch"] == 3


def test_without_the_patience_running_out_the_last_joint_best_is_kept(tmp_path):
    _, checkpoint = fit(tmp_path, patience=10)
    assert torch.load(checkpoint.best_model_path, weights_only=True)["epoch"] == 7


def test_bad_mode_and_missing_metric_are_named():
    with pytest.raises(ValueError, match="'val_acc'.*'up'"):
        JointEarlyStopping({"val_acc": "up"})
    stopper = JointEarlyStopping({"val_f1": "max"})
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(KeyError, match="val_f1"):
        stopper.on_validation_end(trainer, Scripted())
