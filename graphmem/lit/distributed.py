"""Evaluation outputs of a multi-process run, gathered from every rank with each example once.

Under DDP Lightning gives each evaluation loader a :class:`~torch.utils.data.DistributedSampler`,
which pads the dataset with repeats of its first examples until every rank has the same number.
A metric that is not a mean over batches (ROC-AUC) must be computed on the gathered outputs, and
on those the repeats would count twice. The padded positions are known: the sampler lays out
``total_size = num_samples * num_replicas`` positions, the last ``total_size - len(dataset)`` of
which are repeats, and rank ``r`` reads positions ``r, r + R, r + 2R, ...``. So a rank's last
example is a repeat exactly when ``r + (num_samples - 1) * R >= len(dataset)`` (fewer than ``R``
positions are padded, so no rank holds two).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DistributedSampler


def distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def padding_repeats(dataloader: Any, num_seen: int) -> int:
    """How many of this rank's last ``num_seen`` examples are the sampler's padding repeats (0 or 1).

    0 unless ``dataloader`` samples with a padding :class:`DistributedSampler` and this rank saw
    all its examples (with ``limit_*_batches`` the padded tail is never reached).
    """
    sampler = getattr(dataloader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):
        batch_sampler = getattr(dataloader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last or num_seen != sampler.num_samples:
        return 0
    last_position = sampler.rank + (sampler.num_samples - 1) * sampler.num_replicas
    return int(last_position >= len(sampler.dataset))


def gather_rows(tensors: tuple[Tensor, ...], dataloader: Any = None) -> tuple[Tensor, ...]:
    """Concatenates per-example rows (dim 0) from every rank, dropping the sampler's padding repeats.

    All ``tensors`` hold one row per example this rank evaluated, in the sampler's order. In a
    single process they come back unchanged.
    """
    if not distributed():
        return tensors
    repeats = padding_repeats(dataloader, tensors[0].size(0))
    local = [t[: t.size(0) - repeats].cpu() for t in tensors]
    everything: list = [None] * dist.get_world_size()
    dist.all_gather_object(everything, local)
    return tuple(torch.cat([part[i] for part in everything]) for i in range(len(tensors)))
