"""LightningModule for question answering with one-word answers (bAbI), with per-task errors."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

QABatch = tuple[Tensor, Tensor, Tensor, Tensor]


def error_table(errors: dict[int, float], threshold: float = 0.05) -> str:
    """A Markdown table of test error per task, with the mean and the failed tasks (error > ``threshold``)."""
    rows = ["| task | error (%) | failed |", "| --- | --- | --- |"]
    rows += [f"| qa{task} | {100 * error:.1f} | {'yes' if error > threshold else ''} |"
             for task, error in sorted(errors.items())]
    failed = sum(error > threshold for error in errors.values())
    mean = sum(errors.values()) / len(errors)
    rows.append(f"| mean | {100 * mean:.1f} | {failed} failed |")
    return "\n".join(rows)


class QATask(L.LightningModule):
    """Trains a QA model ``(story, question) -> (B, V)`` answer logits with cross-entropy.

    Logs ``{train,val}_loss`` and ``{train,val}_acc``; in test, ``test_error/qa<N>`` per task,
    ``test_mean_error`` and ``test_failed_tasks`` (tasks whose error exceeds
    ``failure_threshold``, 5% in the bAbI papers), prints the table and writes it to
    ``per_task_error.csv`` in the logger's folder. Gradients are clipped by the trainer
    (``gradient_clip_val``; MemN2N used 40).

    Args:
        model: e.g. :class:`graphmem.models.MemoryNetwork` or :class:`graphmem.models.NTMQA`.
        lr: Adam learning rate.
        lr_decay_every: halve the learning rate every this many epochs (``0``: never).
        linear_start_epochs: train this many first epochs with the model's ``linear_start``
            set (MemN2N's softmax-free start); ignored for models without one.
        failure_threshold: error above which a task counts as failed.
    """

    def __init__(self, model: nn.Module, lr: float = 0.01, lr_decay_every: int = 25,
                 linear_start_epochs: int = 0, failure_threshold: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self._test_counts: dict[int, list[int]] = {}  # task -> [wrong, total]

    def forward(self, story: Tensor, question: Tensor) -> Tensor:
        return self.model(story, question)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        words = getattr(datamodule, "vocab_size", None)
        classes = getattr(self.model, "vocab_size", None)
        if words is not None and classes is not None and words > classes:
            raise ValueError(f"the data has {words} words but the model's vocab_size is {classes}; "
                             f"set model vocab_size to at least {words}")

    def on_train_epoch_start(self) -> None:
        if hasattr(self.model, "linear_start"):
            self.model.linear_start = self.current_epoch < self.hparams.linear_start_epochs

    def _step(self, batch: QABatch, stage: str) -> tuple[Tensor, Tensor]:
        story, question, answer, _ = batch
        logits = self(story, question)
        loss = F.cross_entropy(logits, answer)
        correct = logits.argmax(-1).eq(answer)
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=answer.size(0))
        self.log(f"{stage}_acc", correct.float().mean(), prog_bar=stage == "val", batch_size=answer.size(0))
        return loss, correct

    def training_step(self, batch: QABatch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: QABatch, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_test_epoch_start(self) -> None:
        self._test_counts = {}

    def test_step(self, batch: QABatch, batch_idx: int) -> None:
        _, correct = self._step(batch, "test")
        tasks = batch[3]
        for task in tasks.unique().tolist():
            own = tasks.eq(task)
            counts = self._test_counts.setdefault(task, [0, 0])
            counts[0] += int((~correct[own]).sum())
            counts[1] += int(own.sum())

    def on_test_epoch_end(self) -> None:
        errors = {task: wrong / total for task, (wrong, total) in sorted(self._test_counts.items())}
        if not errors:
            return
        for task, error in errors.items():
            self.log(f"test_error/qa{task}", error)
        threshold = self.hparams.failure_threshold
        self.log("test_mean_error", sum(errors.values()) / len(errors))
        self.log("test_failed_tasks", float(sum(error > threshold for error in errors.values())))
        rank_zero_info("per-task test error:\n" + error_table(errors, threshold))
        log_dir = self.trainer.log_dir
        if log_dir is not None and self.trainer.is_global_zero:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(log_dir) / "per_task_error.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["task", "error", "failed"])
                writer.writerows([task, f"{error:.4f}", int(error > threshold)] for task, error in errors.items())

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if not self.hparams.lr_decay_every:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.hparams.lr_decay_every, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
