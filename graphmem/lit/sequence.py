"""LightningModule for sequence-to-sequence bit tasks (the NTM's copy, repeat copy, recall)."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.data.algorithmic import Batch


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


class SequenceTask(L.LightningModule):
    """Trains a sequence model ``(T, B, I) -> (T, B, O)`` logits on bit-sequence tasks.

    Logs ``{train,val}_cost`` (bits per sequence, the NTM paper's cost), ``{val,test}_bit_errors``
    (wrong bits per sequence) and, in test, ``test_bit_error_rate/<size>`` for each test batch:
    ``<size>`` is the label a test batch carries as a fourth element (the task's size:
    ``30`` for copy length 30, ``12`` for 12 recall items, ``20x10`` for repeat copy), or else the
    number of scored steps. Gradients are clipped by the trainer (``gradient_clip_val`` in the recipe).

    Args:
        model: e.g. :class:`graphmem.memory.NTM` (time-first).
        lr: Adam learning rate.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model

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

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        inputs, targets, mask = batch
        bits, errors = sequence_costs(self(inputs), targets, mask)
        self.log("val_cost", bits, prog_bar=True, batch_size=inputs.size(1))
        self.log("val_bit_errors", errors, batch_size=inputs.size(1))

    def test_step(self, batch: Batch | tuple[Tensor, Tensor, Tensor, str], batch_idx: int) -> None:
        inputs, targets, mask, *label = batch
        bits, errors = sequence_costs(self(inputs), targets, mask)
        scored_bits = mask.sum() / mask.size(1) * targets.size(-1)
        # the scored steps name a copy length, but not a recall item count (always one item is
        # answered) nor a repeat copy size (length x repeats + 1): the data names those
        size = label[0] if label else int(mask.sum(0)[0])
        self.log("test_cost", bits, batch_size=inputs.size(1))
        self.log(f"test_bit_error_rate/{size}", errors / scored_bits, batch_size=inputs.size(1))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
