"""LightningModule for sequence-to-sequence bit tasks (the NTM's copy, repeat copy, recall)."""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from graphmem.data.algorithmic import Batch
from graphmem.optim import GravesRMSprop

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": GravesRMSprop}


def sequence_costs(logits: Tensor, targets: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Cost per sequence as in the NTM paper: binary cross-entropy in **bits**, summed over the
    scored steps and channels and averaged over the batch; and the mean number of wrong bits
    per sequence after thresholding at 0.5.

    ``logits``/``targets`` ``(T, B, O)``, ``mask`` ``(T, B)``.
    """
    weight = mask.unsqueeze(-1).to(logits.dtype)
    nats = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    batch = logits.size(1)
    bits = (nats * weight).sum() / (batch * math.log(2))
    errors = (((logits > 0).to(targets.dtype) - targets).abs() * weight).sum() / batch
    return bits, errors


def size_table(scores: dict[str, tuple[float, float]]) -> str:
    """A Markdown table of test cost (bits per sequence) and bit error rate per test size, in the
    given order (the data's ``test_sizes``)."""
    rows = ["| size | cost (bits/seq) | bit error rate (%) |", "| --- | ---: | ---: |"]
    rows += [f"| {size} | {cost:.3f} | {100 * rate:.2f} |" for size, (cost, rate) in scores.items()]
    return "test cost and bit error rate per size:\n" + "\n".join(rows)


class SequenceTask(L.LightningModule):
    """Trains a sequence model ``(T, B, I) -> (T, B, O)`` logits on bit-sequence tasks.

    Logs ``{train,val}_cost`` (bits per sequence, the NTM paper's cost), ``{val,test}_bit_errors``
    (wrong bits per sequence) and, in test, ``test_cost/<size>`` (bits per sequence) and
    ``test_bit_error_rate/<size>`` for each test batch:
    ``<size>`` is the label a test batch carries as a fourth element (the task's size:
    ``30`` for copy length 30, ``12`` for 12 recall items, ``20x10`` for repeat copy), or else the
    number of scored steps. The test ends by printing both as a table, one row per size in
    the order of the test batches (:class:`graphmem.data.AlgorithmicDataModule`'s ``test_sizes``).
    Gradients are clipped by the trainer (``gradient_clip_val`` in the recipe).

    Args:
        model: e.g. :class:`graphmem.memory.NTM` (time-first).
        lr: learning rate.
        optimizer: ``"adam"`` or ``"rmsprop"``, the NTM paper's
            (:class:`graphmem.optim.GravesRMSprop`: momentum 0.9, decay 0.95).
        eps: the optimizer's epsilon (``None``: the optimizer's default). The loss is per bit, so
            the paper's ``1e-4`` inside RMSProp's root, meant for a cost summed over a sequence,
            becomes about ``1e-4 / (scored bits)**2``.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, optimizer: Literal["adam", "rmsprop"] = "adam",
                 eps: float | None = None) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self._test_scores: dict[str, list[tuple[float, float]]] = {}  # size -> (cost, bit error rate) per batch

    def forward(self, inputs: Tensor) -> Tensor:
        out = self.model(inputs)
        return out[0] if isinstance(out, tuple) else out

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, targets, mask = batch
        bits, errors = sequence_costs(self(inputs), targets, mask)
        # the loss is the cost in bits divided by the scored bits, so its scale is length-independent
        loss = bits * math.log(2) / (mask.sum() / mask.size(1) * targets.size(-1))
        self.log("train_cost", bits, prog_bar=True, batch_size=inputs.size(1))
        self.log("train_bit_errors", errors, batch_size=inputs.size(1))
        return loss

    def validation_step(self, batch: Batch | tuple[Tensor, Tensor, Tensor, str], batch_idx: int) -> None:
        inputs, targets, mask, *_ = batch  # batches of named val_sizes carry their label
        bits, errors = sequence_costs(self(inputs), targets, mask)
        self.log("val_cost", bits, prog_bar=True, batch_size=inputs.size(1))
        self.log("val_bit_errors", errors, batch_size=inputs.size(1))

    def on_test_epoch_start(self) -> None:
        self._test_scores = {}

    def test_step(self, batch: Batch | tuple[Tensor, Tensor, Tensor, str], batch_idx: int) -> None:
        inputs, targets, mask, *label = batch
        bits, errors = sequence_costs(self(inputs), targets, mask)
        scored_bits = mask.sum() / mask.size(1) * targets.size(-1)
        # the scored steps name a copy length, but not a recall item count (always one item is
        # answered) nor a repeat copy size (length x repeats + 1): the data names those
        size = label[0] if label else int(mask.sum(0)[0])
        rate = errors / scored_bits
        self.log("test_cost", bits, batch_size=inputs.size(1))
        self.log(f"test_cost/{size}", bits, batch_size=inputs.size(1))
        self.log(f"test_bit_error_rate/{size}", rate, batch_size=inputs.size(1))
        self._test_scores.setdefault(str(size), []).append((float(bits), float(rate)))

    def on_test_epoch_end(self) -> None:
        if self._test_scores:
            rank_zero_info(size_table({size: tuple(sum(column) / len(scores) for column in zip(*scores))
                                       for size, scores in self._test_scores.items()}))

    def configure_optimizers(self):
        eps = {} if self.hparams.eps is None else {"eps": self.hparams.eps}
        return OPTIMIZERS[self.hparams.optimizer](self.parameters(), lr=self.hparams.lr, **eps)
