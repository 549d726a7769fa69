"""Callbacks: a one-line-per-epoch summary for logs, and random states and the data's identity
saved in checkpoints."""

from __future__ import annotations

import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch
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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # not on_validation_epoch_end: callbacks' epoch-end hooks run before the module's, where
        # metrics over the whole epoch (ROC-AUC) are logged, so those would show one epoch late
        if trainer.sanity_checking:
            return
        values = trainer.callback_metrics
        shown = " ".join(f"{name}={float(values[name]):.4f}" for name in self.metrics if name in values)
        rank_zero_info(f"epoch {trainer.current_epoch:3d}  {time.monotonic() - self.start:7.1f}s  {shown}")


class RandomStateCheckpoint(L.Callback):
    """Saves the random number generators (torch, CUDA, NumPy, Python) in every checkpoint and
    restores them on resume, so that a run resumed with ``--ckpt_path`` draws the same dropout
    masks and shuffles as a run that was never interrupted (Lightning restores the weights,
    optimizer, schedulers and loop counters, but not the generators).

    The states are stored as tensors and plain lists, so that the checkpoint still loads with
    ``torch.load(..., weights_only=True)``. In a multi-process run the checkpoint holds rank 0's
    states, which every rank restores.
    """

    def state_dict(self) -> dict[str, Any]:
        numpy_state = np.random.get_state(legacy=False)
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                      "pos": int(numpy_state["state"]["pos"]), "has_gauss": int(numpy_state["has_gauss"]),
                      "gauss": float(numpy_state["gauss"])},
            "python": list(random.getstate()),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            # a checkpoint from a machine with more GPUs fills the devices there are
            torch.cuda.set_rng_state_all(state_dict["cuda"][:torch.cuda.device_count()])
        numpy = state_dict["numpy"]
        np.random.set_state({"bit_generator": "MT19937", "has_gauss": numpy["has_gauss"],
                             "gauss": numpy["gauss"],
                             "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]}})
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))


DATA_KEY = "graphmem_data"
# the data-module arguments that say which data it serves (the others say how: batch size, ...)
IDENTITY_KEYS = ("dataset", "task", "tasks", "size")


def data_identity(datamodule: L.LightningDataModule) -> dict[str, Any]:
    """Which data ``datamodule`` serves: its class and the arguments that name its data set,
    as plain values (so that checkpoints holding them load with ``weights_only=True``)."""
    hparams = getattr(datamodule, "hparams", {})
    identity: dict[str, Any] = {"data": type(datamodule).__name__}
    for key in IDENTITY_KEYS:
        if key in hparams:
            value = hparams[key]
            identity[key] = list(value) if isinstance(value, (tuple, list)) else value
    return identity


class DataIdentity(L.Callback):
    """Stores in every checkpoint (under ``"graphmem_data"``) which data the model was trained on,
    see :func:`data_identity`, and the task names of a molecule set, so that running the
    checkpoint under another data set's recipe is refused and prediction needs no data file for
    the column names."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        datamodule = trainer.datamodule
        if datamodule is None:
            return
        checkpoint[DATA_KEY] = data_identity(datamodule)
        molecules = getattr(datamodule, "molecules", None)
        if molecules is not None:
            checkpoint[DATA_KEY]["tasks"] = list(molecules.tasks)
