"""The NTM's algorithmic tasks (Graves et al. 2014, section 4), generated on the fly.

Every task yields ``(inputs, targets, mask)`` batches, time first: ``inputs`` ``(T, B, I)``,
``targets`` ``(T, B, O)`` and ``mask`` ``(T, B)`` marking the steps whose output is scored
(the answer phase). One length is drawn per batch, so sequences in a batch need no padding.
Test batches of :class:`AlgorithmicDataModule` also carry their size's name (``"12"``,
``"20x10"``) as a fourth element, which names the test metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from graphmem.errors import GraphmemError

Batch = tuple[Tensor, Tensor, Tensor]


def _bits(length: int, batch_size: int, width: int, generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (length, batch_size, width), generator=generator).float()


def copy_batch(length: int, batch_size: int, width: int = 8, generator: torch.Generator | None = None) -> Batch:
    """Copy: read ``length`` random ``width``-bit vectors and a delimiter, then write them back.

    Input channels: ``width`` data bits and a delimiter flag (``I = width + 1``); output ``width``.
    Total length ``2 * length + 1``.
    """
    generator = generator or torch.Generator().manual_seed(0)
    seq = _bits(length, batch_size, width, generator)
    steps = 2 * length + 1
    inputs = torch.zeros(steps, batch_size, width + 1)
    inputs[:length, :, :width] = seq
    inputs[length, :, width] = 1.0
    targets = torch.zeros(steps, batch_size, width)
    targets[length + 1:] = seq
    mask = torch.zeros(steps, batch_size, dtype=torch.bool)
    mask[length + 1:] = True
    return inputs, targets, mask


def repeat_count_code(repeats: int, repeat_range: tuple[int, int]) -> float:
    """The repeat count as the network sees it: normalised to mean 0 and variance 1 over the
    counts drawn uniformly from ``repeat_range`` (inclusive) in training, as in the NTM paper.

    Counts outside the training range map outside the trained input range (e.g. 20 for a
    range of 1-10 gives 5.05), which is what the paper's generalisation test asks of the network.
    """
    low, high = repeat_range
    if not 1 <= low <= high:
        raise GraphmemError(f"repeat_range must be 1 <= low <= high, got {repeat_range}")
    mean = (low + high) / 2
    # variance of the discrete uniform distribution on low..high; 0 for a single count
    std = math.sqrt(((high - low + 1) ** 2 - 1) / 12) or 1.0
    return (repeats - mean) / std


def repeat_copy_batch(length: int, repeats: int, batch_size: int, width: int = 8,
                      repeat_range: tuple[int, int] = (1, 10), generator: torch.Generator | None = None) -> Batch:
    """Repeat copy: read a sequence, an end-of-sequence flag and a repeat count; write the sequence
    ``repeats`` times, then raise an end marker.

    Input channels (``I = width + 2``): ``width`` data bits; the end-of-sequence flag, 1 on the
    step after the sequence; and on that same step, on its own channel, the repeat count
    normalised by :func:`repeat_count_code` over ``repeat_range``. Output channels
    (``O = width + 1``): ``width`` bits and the end marker, 1 on the step after the last copy and
    scored (as 0) on every answer step before it. Total length ``length + 1 + length * repeats + 1``,
    of which the last ``length * repeats + 1`` steps are scored.
    """
    if length < 1 or repeats < 1:
        raise GraphmemError(f"repeat copy needs length >= 1 and repeats >= 1, got {length} and {repeats}")
    generator = generator or torch.Generator().manual_seed(0)
    seq = _bits(length, batch_size, width, generator)
    answer = length * repeats + 1
    steps = length + 1 + answer
    inputs = torch.zeros(steps, batch_size, width + 2)
    inputs[:length, :, :width] = seq
    inputs[length, :, width] = 1.0
    inputs[length, :, width + 1] = repeat_count_code(repeats, repeat_range)
    targets = torch.zeros(steps, batch_size, width + 1)
    targets[length + 1:-1, :, :width] = seq.repeat(repeats, 1, 1)
    targets[-1, :, width] = 1.0
    mask = torch.zeros(steps, batch_size, dtype=torch.bool)
    mask[length + 1:] = True
    return inputs, targets, mask


def associative_recall_batch(items: int, batch_size: int, width: int = 6, item_length: int = 3,
                             generator: torch.Generator | None = None) -> Batch:
    """Associative recall: read ``items`` items of ``item_length`` vectors, each after a delimiter;
    then a query item between query delimiters; write the item that followed the query.

    Input channels: ``width`` bits, an item delimiter and a query delimiter (``I = width + 2``);
    output ``width``.
    """
    if items < 2:
        raise GraphmemError(f"associative recall needs at least 2 items, got {items}")
    generator = generator or torch.Generator().manual_seed(0)
    data = _bits(items * item_length, batch_size, width, generator).view(items, item_length, batch_size, width)
    query = torch.randint(0, items - 1, (batch_size,), generator=generator)
    block = item_length + 1
    steps = items * block + block + 1 + item_length
    inputs = torch.zeros(steps, batch_size, width + 2)
    for i in range(items):
        inputs[i * block, :, width] = 1.0
        inputs[i * block + 1:(i + 1) * block, :, :width] = data[i]
    start = items * block
    batch = torch.arange(batch_size)
    inputs[start, :, width + 1] = 1.0
    inputs[start + 1:start + block, :, :width] = data[query, :, batch].transpose(0, 1)
    inputs[start + block, :, width + 1] = 1.0
    targets = torch.zeros(steps, batch_size, width)
    targets[-item_length:] = data[query + 1, :, batch].transpose(0, 1)
    mask = torch.zeros(steps, batch_size, dtype=torch.bool)
    mask[-item_length:] = True
    return inputs, targets, mask


Size = int | tuple[int, int]
"""A task's difficulty: a length (copy), a number of items (associative recall), or for repeat
copy a length, with the count drawn from the training range, or a ``(length, repeats)`` pair."""


def size_label(size: Size) -> str:
    """How a size is named in metric keys: ``"30"``, or ``"20x10"`` for length 20 repeated 10 times."""
    return "x".join(str(int(part)) for part in size) if isinstance(size, (tuple, list)) else str(int(size))


@dataclass
class TaskSpec:
    """Which task, the range of its difficulty parameter (length, or items for recall) and, for
    repeat copy, the training range of the repeat count (which also normalises the count)."""

    task: str = "copy"
    min_size: int = 1
    max_size: int = 20
    width: int = 8
    repeats: tuple[int, int] = (1, 10)

    def batch(self, size: Size, batch_size: int, generator: torch.Generator) -> Batch:
        if isinstance(size, (tuple, list)):
            if self.task != "repeat_copy":
                raise GraphmemError(f"a (length, repeats) size {tuple(size)} only fits repeat_copy, not {self.task}")
            length, repeats = size
            return repeat_copy_batch(length, repeats, batch_size, self.width, self.repeats, generator)
        if self.task == "copy":
            return copy_batch(size, batch_size, self.width, generator)
        if self.task == "repeat_copy":
            low, high = self.repeats
            repeats = int(torch.randint(low, high + 1, (1,), generator=generator))
            return repeat_copy_batch(size, repeats, batch_size, self.width, self.repeats, generator)
        if self.task == "associative_recall":
            return associative_recall_batch(size, batch_size, self.width, generator=generator)
        raise GraphmemError(f"unknown task {self.task!r}; choose copy, repeat_copy or associative_recall")

    @property
    def input_size(self) -> int:
        return self.width + (1 if self.task == "copy" else 2)

    @property
    def output_size(self) -> int:
        return self.width + (1 if self.task == "repeat_copy" else 0)


class RandomBatches(IterableDataset):
    """``num_batches`` batches with sizes drawn uniformly from ``[min_size, max_size]``, seeded.

    With ``fresh=True`` every pass draws new batches (seed, seed + 1, ...): training never
    sees the same batch twice. Otherwise every pass repeats the same batches (evaluation).
    With ``sizes``, batch ``i`` has size ``sizes[i % len(sizes)]`` and carries its
    :func:`size_label` as a fourth element, so that test metrics can be keyed by it.
    """

    def __init__(self, spec: TaskSpec, num_batches: int, batch_size: int, seed: int,
                 sizes: tuple[Size, ...] | None = None, fresh: bool = False) -> None:
        self.spec, self.num_batches, self.batch_size, self.seed, self.sizes = spec, num_batches, batch_size, seed, sizes
        self.fresh = fresh
        self.passes = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Batch | tuple[Tensor, Tensor, Tensor, str]]:
        generator = torch.Generator().manual_seed(self.seed + (self.passes if self.fresh else 0))
        self.passes += 1
        for i in range(self.num_batches):
            if self.sizes:
                size = self.sizes[i % len(self.sizes)]
                yield (*self.spec.batch(size, self.batch_size, generator), size_label(size))
            else:
                size = int(torch.randint(self.spec.min_size, self.spec.max_size + 1, (1,), generator=generator))
                yield self.spec.batch(size, self.batch_size, generator)


class AlgorithmicDataModule(L.LightningDataModule):
    """Copy, repeat copy or associative recall, generated by the project (no files).

    Each training epoch is ``batches_per_epoch`` fresh batches (a new seed per pass);
    validation and test use fixed seeds, test at the sizes ``test_sizes`` (e.g. longer than
    in training, to measure generalisation), one batch per size, labelled with the size.

    Args:
        task: ``copy``, ``repeat_copy`` or ``associative_recall``.
        min_size, max_size: training range of the sequence length (items for recall).
        width: bits per vector.
        repeats: training range of the repeat count (repeat copy only; the count is normalised
            over it, see :func:`repeat_count_code`).
        batch_size: sequences per batch.
        batches_per_epoch: training batches per epoch.
        val_batches: validation batches (sizes from the training range).
        test_sizes: sizes of the test batches: lengths (copy), item counts (recall), or for repeat
            copy lengths or ``[length, repeats]`` pairs (e.g. ``[[10, 10], [20, 10], [10, 20]]``).
        seed: base seed.
        eval_batch_size: sequences per validation and test batch (``None``: ``batch_size``), so that
            training with batch 1, as the NTM paper did, still scores on many sequences.
        val_sizes: sizes of the validation batches, cycled (``None``: drawn from the training
            range); longer than trained, they make the checkpoint and the stopping rule reward
            length generalisation (other sequences than the test's: the seeds differ).
    """

    def __init__(self, task: str = "copy", min_size: int = 1, max_size: int = 20, width: int = 8,
                 batch_size: int = 32, batches_per_epoch: int = 200, val_batches: int = 10,
                 test_sizes: tuple[Size, ...] = (20, 30, 50), seed: int = 0,
                 repeats: tuple[int, int] = (1, 10), eval_batch_size: int | None = None,
                 val_sizes: tuple[Size, ...] | None = None) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and value < 1:
                raise GraphmemError(f"AlgorithmicDataModule: {name} must be at least 1, got {value}")
        self.save_hyperparameters()
        self.spec = TaskSpec(task, min_size, max_size, width, tuple(repeats))
        for size in (min(max(min_size, 2), max_size), *test_sizes, *(val_sizes or ())):  # bad task names and sizes fail here, not in test
            self.spec.batch(size, 1, torch.Generator())

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def output_size(self) -> int:
        return self.spec.output_size

    @property
    def _eval_batch_size(self) -> int:
        return self.hparams.eval_batch_size or self.hparams.batch_size

    def _loader(self, dataset: RandomBatches) -> DataLoader:
        return DataLoader(dataset, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader(RandomBatches(self.spec, self.hparams.batches_per_epoch, self.hparams.batch_size,
                                          self.hparams.seed + 1_000_000, fresh=True))

    def val_dataloader(self) -> DataLoader:
        sizes = tuple(self.hparams.val_sizes) if self.hparams.val_sizes else None
        return self._loader(RandomBatches(self.spec, self.hparams.val_batches, self._eval_batch_size, self.hparams.seed,
                                          sizes))

    def test_dataloader(self) -> DataLoader:
        sizes = tuple(self.hparams.test_sizes)
        return self._loader(RandomBatches(self.spec, len(sizes), self._eval_batch_size, self.hparams.seed + 7, sizes))
