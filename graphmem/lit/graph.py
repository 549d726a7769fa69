"""LightningModule for graph-level (multi-task binary) property prediction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch_geometric.data import Batch

from graphmem.errors import GraphmemError
from graphmem.lit.distributed import gather_rows
from graphmem.lit.metrics import UndefinedMetricError, multitask_roc_auc
from graphmem.lit.pretrain import load_encoder


def masked_bce_with_logits(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy averaged over the labelled entries; ``NaN`` targets are missing labels."""
    if logits.shape != target.shape:
        # else the mask below fails with an IndexError that names neither the model nor the data
        raise GraphmemError(f"the model predicts {logits.shape[-1]} tasks but the data has {target.shape[-1]}; "
                            f"set the model's num_tasks to {target.shape[-1]}")
    labelled = ~torch.isnan(target)
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[labelled], target[labelled])


def roc_auc_table(names: Sequence[str], columns: Mapping[str, tuple[Sequence[float], float]],
                  part: str = "test") -> str:
    """A Markdown table of ROC-AUC per task on ``part`` in the given order, one column per model
    (``{header: (per_task, mean)}``, e.g. an ensemble's members and the ensemble), with the mean
    over tasks in the last row."""
    def row(name: str, values: Iterable[float]) -> str:
        return "| " + " | ".join([name, *(f"{value:.4f}" for value in values)]) + " |"

    rows = ["| task | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    rows += [row(name, (per_task[i] for per_task, _ in columns.values())) for i, name in enumerate(names)]
    rows.append(row("mean", (mean for _, mean in columns.values())))
    return f"per-task {part} ROC-AUC:\n" + "\n".join(rows)


class GraphPropertyTask(L.LightningModule):
    """Trains any graph model ``Batch -> (G, T) logits`` on ``T`` binary tasks with missing labels.

    Logs ``{train,val,test}_loss`` and ``{val,test}_roc_auc`` (mean over tasks, OGB's
    convention), and per-task ``test_roc_auc/<task>``, named by the data module's task names
    (``molecules.tasks``, e.g. ``NR-AR``) when it has them, else by index; the test also prints a
    table of the per-task ROC-AUC in the data set's order. Under DDP the ROC-AUC is computed
    on the outputs of all ranks, each example once (see :mod:`graphmem.lit.distributed`), so it
    equals the single-process value; every rank logs it, so callbacks may monitor it.

    A model with a ``member_logits(batch)`` method (a tuple of ``(G, T)`` logits, one per
    predictor its output averages) is trained on the mean of the members' losses, each member's
    on its own predictions; validation, test and prediction use the model's output.

    Args:
        model: the network, e.g. :class:`graphmem.models.MoleculeGAT`.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        cosine_epochs: when set, cosine-anneal the learning rate over this many epochs.
        pretrained: the checkpoint of a pretraining run (:class:`graphmem.lit.AttributeMaskingTask`)
            or of another molecule recipe, whose encoder weights ``fit`` starts from
            (:func:`graphmem.lit.pretrain.load_encoder`); a resumed fit takes its checkpoint's.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0,
                 cosine_epochs: int | None = None, pretrained: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self._outputs: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": []}
        self._warned_undefined = False

    def on_fit_start(self) -> None:
        # here, not in setup: a resumed fit has restored its checkpoint by now (and set ckpt_path),
        # and the pretrained file is not needed; EMA's average copies the weights at its first update
        if self.hparams.get("pretrained") and self.trainer.ckpt_path is None:
            copied = load_encoder(self.model, self.hparams.pretrained)
            rank_zero_info(f"encoder ({copied} tensors) from {self.hparams.pretrained}")

    def forward(self, batch: Batch) -> Tensor:
        return self.model(batch)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        # a model that averages several predictors (MoleculeGAT's descriptor_fusion="mean")
        # trains each on its own loss; their mean keeps the loss on one predictor's scale
        members = self.model.member_logits(batch) if hasattr(self.model, "member_logits") else (self(batch),)
        loss = torch.stack([masked_bce_with_logits(logits, batch.y) for logits in members]).mean()
        self.log("train_loss", loss, batch_size=batch.num_graphs, prog_bar=True)
        return loss

    def _eval_step(self, batch: Batch, stage: str) -> None:
        logits = self(batch)
        self.log(f"{stage}_loss", masked_bce_with_logits(logits, batch.y), batch_size=batch.num_graphs,
                 sync_dist=True)
        self._outputs[stage].append((batch.y.detach().cpu(), logits.detach().cpu()))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return torch.sigmoid(self(batch))

    def _gathered(self, stage: str) -> tuple[Tensor, Tensor]:
        outputs, self._outputs[stage] = self._outputs[stage], []
        loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        y, scores = torch.cat([y for y, _ in outputs]), torch.cat([s for _, s in outputs])
        return gather_rows((y, scores), loaders)

    def _log_roc_auc(self, stage: str) -> None:
        # under DDP every rank has the same number of batches (the sampler pads), so either all
        # ranks return here or all reach the gather
        if not self._outputs[stage] or self.trainer.sanity_checking:
            self._outputs[stage] = []
            return
        y, scores = self._gathered(stage)
        try:
            mean, per_task = multitask_roc_auc(y, scores)
        except UndefinedMetricError:
            # a few examples (fast_dev_run, a tiny batch) may hold one class only: log the metric as
            # undefined and go on, rather than end the run (the data module refuses a whole split
            # of one class when it is set up)
            if not self._warned_undefined:
                rank_zero_warn(f"{stage}_roc_auc is undefined (logged as nan): the {len(y)} {stage} "
                               f"examples hold one class only in every task")
                self._warned_undefined = True
            mean, per_task = float("nan"), [float("nan")] * y.shape[1]
        # identical on every rank (computed from the same gathered outputs): no sync needed
        self.log(f"{stage}_roc_auc", mean, prog_bar=True)
        if stage == "test":
            names = self._task_names(len(per_task))
            for name, value in zip(names, per_task):
                self.log(f"test_roc_auc/{name}", value)
            rank_zero_info(roc_auc_table(names, {"test ROC-AUC": (per_task, mean)}))

    def _task_names(self, num_tasks: int) -> list[str]:
        molecules = getattr(getattr(self.trainer, "datamodule", None), "molecules", None)
        names = list(getattr(molecules, "tasks", None) or [])
        return names if len(names) == num_tasks else [str(task) for task in range(num_tasks)]

    def on_validation_epoch_end(self) -> None:
        self._log_roc_auc("val")

    def on_test_epoch_end(self) -> None:
        self._log_roc_auc("test")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if not self.hparams.cosine_epochs:
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.cosine_epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
