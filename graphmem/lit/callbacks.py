"""Callbacks for runs whose output goes to a log file rather than a terminal."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class EpochSummary(L.Callback):
    """Prints one line per validation epoch: epoch, elapsed time and the logged metrics.

    A readable replacement for the progress bar when output is not a terminal (CI, ``make demo``).
    """

    def __init__(self, metrics: tuple[str, ...] = ("train_loss", "val_loss", "val_roc_auc")) -> None:
        self.metrics = metrics
        self.start = time.monotonic()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.monotonic()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = trainer.callback_metrics
        shown = " ".join(f"{name}={float(values[name]):.4f}" for name in self.metrics if name in values)
        rank_zero_info(f"epoch {trainer.current_epoch:3d}  {time.monotonic() - self.start:7.1f}s  {shown}")
