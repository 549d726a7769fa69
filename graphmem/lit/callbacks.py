"""Callbacks: a one-line-per-epoch summary for logs, the GAT paper's early stopping on several
metrics, and random states and the data's identity saved in checkpoints."""

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


class JointEarlyStopping(L.Callback):
    """The GAT paper's model selection: early stopping and checkpointing on several validation
    metrics at once (Veličković et al. 2018, their released code).

    After each validation, an epoch *counts as best* when every metric is at least as good as
    its best so far (``>=`` for ``"max"``, ``<=`` for ``"min"``); training stops after
    ``patience`` epochs in which no metric reached its best. The epoch that last counted as best
    is published as ``joint_best_epoch`` (``-1`` on other epochs), so that a
    ``ModelCheckpoint(monitor="joint_best_epoch", mode="max")`` keeps exactly those weights;
    Lightning runs checkpoint callbacks after the others, so it sees this epoch's value.

    Args:
        monitors: metric name to ``"max"`` or ``"min"``, e.g. ``{"val_acc": "max", "val_loss": "min"}``.
        patience: epochs without any metric reaching its best before training stops.
    """

    METRIC = "joint_best_epoch"

    def __init__(self, monitors: dict[str, str] | None = None, patience: int = 100) -> None:
        self.monitors = dict(monitors or {"val_acc": "max", "val_loss": "min"})
        for name, mode in self.monitors.items():
            if mode not in ("max", "min"):
                raise ValueError(f"JointEarlyStopping: mode of {name!r} is {mode!r}; use 'max' or 'min'")
        self.patience = patience
        self.best: dict[str, float] = {}
        self.wait = 0

    def _at_least_as_good(self, name: str, value: float) -> bool:
        if name not in self.best:
            return True
        return value >= self.best[name] if self.monitors[name] == "max" else value <= self.best[name]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        missing = [name for name in self.monitors if name not in trainer.callback_metrics]
        if missing:
            raise KeyError(f"JointEarlyStopping monitors {missing}, which the model does not log; "
                           f"logged: {sorted(trainer.callback_metrics)}")
        values = {name: float(trainer.callback_metrics[name]) for name in self.monitors}
        reached = {name: self._at_least_as_good(name, value) for name, value in values.items()}
        joint = all(reached.values())
        for name, value in values.items():
            if reached[name]:
                self.best[name] = value
        self.wait = 0 if any(reached.values()) else self.wait + 1
        trainer.callback_metrics[self.METRIC] = torch.tensor(float(trainer.current_epoch if joint else -1))
        if self.wait >= self.patience:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "wait": self.wait}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.wait = dict(state_dict["best"]), state_dict["wait"]


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
