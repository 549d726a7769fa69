"""LightningModule for question answering with one-word answers (bAbI), with per-task errors."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

QABatch = tuple[Tensor, Tensor, Tensor, Tensor]

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def error_table(errors: dict[int, float], threshold: float = 0.05) -> str:
    """A Markdown table of test error per task, with the mean and the failed tasks (error > ``threshold``)."""
    rows = ["| task | error (%) | failed |", "| --- | --- | --- |"]
    rows += [f"| qa{task} | {100 * error:.1f} | {'yes' if error > threshold else ''} |"
             for task, error in sorted(errors.items())]
    failed = sum(error > threshold for error in errors.values())
    mean = sum(errors.values()) / len(errors)
    rows.append(f"| mean | {100 * mean:.1f} | {failed} failed |")
    return "\n".join(rows)


def per_task_error(predicted: Tensor, answers: Tensor, tasks: Tensor) -> dict[int, float]:
    """The fraction of wrong answers per task, ``{task: error}`` in task order, from the predicted
    and true answer words ``(N,)`` of questions of the tasks ``(N,)``."""
    wrong = predicted.ne(answers)
    return {task: float(wrong[tasks.eq(task)].float().mean()) for task in sorted(tasks.unique().tolist())}


def compare_error_table(columns: Mapping[str, Mapping[int, float]], threshold: float = 0.05,
                        part: str = "test") -> str:
    """A Markdown table of the error per task on ``part`` (%), one column per model
    (``{header: {task: error}}``, e.g. an ensemble's members and the ensemble), with the mean
    and the failed tasks (error > ``threshold``) in the last rows."""
    def row(name: str, values: Iterable[str]) -> str:
        return "| " + " | ".join([name, *values]) + " |"

    tasks = list(next(iter(columns.values())))
    rows = [row("task", columns), "| --- |" + " ---: |" * len(columns)]
    rows += [row(f"qa{task}", (f"{100 * errors[task]:.1f}" for errors in columns.values())) for task in tasks]
    rows.append(row("mean", (f"{100 * sum(e.values()) / len(e):.2f}" for e in columns.values())))
    rows.append(row("failed", (str(sum(v > threshold for v in e.values())) for e in columns.values())))
    return f"per-task {part} error:\n" + "\n".join(rows)


def clip_jointly(gradients: Sequence[Tensor], limit: float) -> None:
    r"""Scales ``gradients`` in place by one factor, so that their joint L2 norm is at most ``limit``.

    :math:`g \leftarrow g \cdot \min\big(1, \mathrm{limit} / (\lVert (g_1, \dots, g_n) \rVert_2 +
    10^{-6})\big)`, the rule of :func:`torch.nn.utils.clip_grad_norm_`, on tensors rather than
    parameters (so a group may hold a view of part of a parameter's gradient).
    """
    scale = (limit / (torch.nn.utils.get_total_norm(gradients) + 1e-6)).clamp_max(1.0)
    for gradient in gradients:
        gradient.mul_(scale)


class QATask(L.LightningModule):
    """Trains a QA model ``(story, question) -> (B, V)`` answer logits with cross-entropy.

    Logs ``{train,val}_loss`` and ``{train,val}_acc``; in test, ``test_error/qa<N>`` per task,
    ``test_mean_error`` and ``test_failed_tasks`` (tasks whose error exceeds
    ``failure_threshold``, 5% in the bAbI papers), prints the table and writes it to
    ``per_task_error.csv`` in the logger's folder. Gradients are clipped by the trainer
    (``gradient_clip_val``, one norm over all parameters) or, with ``clip_per_parameter``,
    each parameter on its own, as the MemN2N code clips every weight matrix at norm 40; a model
    with a ``gradient_groups()`` method (:meth:`graphmem.models.MemoryNetwork.gradient_groups`)
    says which gradients make one matrix instead.

    The MemN2N paper's joint recipe is ``optimizer="sgd"``, ``loss_reduction="sum"`` and
    ``clip_per_parameter=40``: plain SGD on the loss summed over the batch (so its step is
    ``batch_size`` times the mean loss's), each weight matrix's gradient scaled to norm at most 40.

    Args:
        model: e.g. :class:`graphmem.models.MemoryNetwork` or :class:`graphmem.models.NTMQA`.
        lr: learning rate.
        lr_decay_every: halve the learning rate every this many epochs (``0``: never).
        linear_start_epochs: train this many first epochs with the model's ``linear_start``
            set (MemN2N's softmax-free start); ignored for models without one.
        linear_start_lr: the learning rate during linear start, as a phase of its own: the
            ordinary schedule (``lr``, halved every ``lr_decay_every``) starts when it ends, as in
            the MemN2N code (30 epochs at 0.005, then 60 at 0.005 halved every 15: with linear
            start its joint config sets both rates to 0.01/2). ``None``: one schedule from the
            first epoch, linear start included.
        failure_threshold: error above which a task counts as failed.
        optimizer: ``"adam"`` or ``"sgd"`` (plain, no momentum).
        loss_reduction: the training loss over a batch, ``"mean"`` or ``"sum"``.
        clip_per_parameter: clip each parameter's gradient to this L2 norm (``None``: off).
        weight_decay: the optimizer's L2 penalty, :math:`g \leftarrow g + \lambda w` (as
            ``torch.optim.Adam``/``SGD`` apply it): a lever against overfitting (the NTM reader
            reaches training accuracy 1.0 on the 1k stories while validation stays near 0.60).
    """

    def __init__(self, model: nn.Module, lr: float = 0.01, lr_decay_every: int = 25,
                 linear_start_epochs: int = 0, linear_start_lr: float | None = None, failure_threshold: float = 0.05,
                 optimizer: Literal["adam", "sgd"] = "adam", loss_reduction: Literal["mean", "sum"] = "mean",
                 clip_per_parameter: float | None = None, weight_decay: float = 0.0) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        if linear_start_lr is not None and linear_start_lr <= 0:
            raise ValueError(f"linear_start_lr must be positive, got {linear_start_lr}")
        if clip_per_parameter is not None and clip_per_parameter <= 0:
            raise ValueError(f"clip_per_parameter must be positive, got {clip_per_parameter}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be at least 0, got {weight_decay}")
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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # a checkpoint of the linear-start epochs was validated without the softmax: it predicts so
        # when loaded (the flag is not a weight, so the state_dict does not hold it)
        if hasattr(self.model, "linear_start"):
            checkpoint["linear_start"] = bool(self.model.linear_start)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if hasattr(self.model, "linear_start"):
            self.model.linear_start = bool(checkpoint.get("linear_start", False))

    def _step(self, batch: QABatch, stage: str) -> tuple[Tensor, Tensor]:
        story, question, answer, _ = batch
        logits = self(story, question)
        loss = F.cross_entropy(logits, answer)
        correct = logits.argmax(-1).eq(answer)
        # the logged loss is always the mean, so runs with either reduction compare
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=answer.size(0))
        self.log(f"{stage}_acc", correct.float().mean(), prog_bar=stage == "val", batch_size=answer.size(0))
        return loss, correct

    def training_step(self, batch: QABatch, batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")[0]
        return loss * batch[2].size(0) if self.hparams.loss_reduction == "sum" else loss

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        limit = self.hparams.clip_per_parameter
        if limit is None:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        groups = (self.model.gradient_groups() if hasattr(self.model, "gradient_groups")
                  else [[p.grad] for p in self.model.parameters() if p.grad is not None])
        for group in groups:
            clip_jointly(group, limit)

    def validation_step(self, batch: QABatch, batch_idx: int) -> None:
        self._step(batch, "val")

    def predict_step(self, batch: QABatch, batch_idx: int) -> Tensor:
        """The answer's probability over the vocabulary, ``(B, V)``."""
        return self(batch[0], batch[1]).softmax(-1)

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

    def lr_factor(self, epoch: int) -> float:
        """The learning rate of ``epoch`` as a multiple of ``lr``."""
        decay_every, start, start_lr = (self.hparams.lr_decay_every, self.hparams.linear_start_epochs,
                                        self.hparams.get("linear_start_lr"))
        if start_lr is not None:
            if epoch < start:
                return start_lr / self.hparams.lr
            epoch -= start
        return 0.5 ** (epoch // decay_every) if decay_every else 1.0

    def configure_optimizers(self):
        optimizer = OPTIMIZERS[self.hparams.optimizer](self.parameters(), lr=self.hparams.lr,
                                                       weight_decay=self.hparams.get("weight_decay", 0.0))
        if not self.hparams.lr_decay_every and self.hparams.get("linear_start_lr") is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
