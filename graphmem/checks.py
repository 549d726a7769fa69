"""Cheap input checks that turn bad graphs into clear ``ValueError``s before any kernel runs.

Each check costs a pass over its tensor (and, on CUDA, a device sync); switch them off with
``graphmem.checks.set_enabled(False)``, the ``graphmem.checks.disabled()`` context, or the
environment variable ``GRAPHMEM_CHECKS=0``. They are skipped while ``torch.compile`` traces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

_enabled = os.environ.get("GRAPHMEM_CHECKS", "1") != "0"


def enabled() -> bool:
    """Whether checks run now."""
    return _enabled and not torch.compiler.is_compiling()


def set_enabled(value: bool) -> None:
    """Turns the checks on or off for the whole process."""
    global _enabled
    _enabled = bool(value)


@contextmanager
def disabled() -> Iterator[None]:
    """Runs a block without checks."""
    previous = _enabled
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(previous)


def check_features(x: Tensor, name: str = "x", dim: int = 2) -> None:
    """``x`` must be a floating tensor of ``dim`` dimensions with finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    # A finite sum proves every entry finite (one NaN or Inf makes the sum NaN or Inf), so
    # the common case costs one fast pass; a non-finite sum, maybe mere overflow, is checked
    # entry by entry.
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        row = int(bad.reshape(x.size(0), -1).any(-1).nonzero()[0])
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or Inf values (first in row {row})")


def check_edge_index(edge_index: Tensor, num_src: int, num_dst: int | None = None) -> None:
    """``edge_index`` must be an integer ``(2, E)`` tensor with sources in ``[0, num_src)``
    and targets in ``[0, num_dst)``."""
    num_dst = num_src if num_dst is None else num_dst
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.dtype not in (torch.long, torch.int32):
        raise ValueError(f"edge_index must hold integers (torch.long), got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape (2, num_edges), got {tuple(edge_index.shape)}")
    if edge_index.numel() == 0:
        return
    lows, highs = edge_index.aminmax(dim=1)  # one pass for all four bounds
    low = int(lows.min())
    if low < 0:
        raise ValueError(f"edge_index contains a negative node index ({low})")
    for high, (name, limit) in zip(highs.tolist(), (("source", num_src), ("target", num_dst))):
        if high >= limit:
            raise ValueError(
                f"edge_index {name} index {high} is out of range for {limit} nodes "
                f"(valid indices are 0..{limit - 1})"
            )


def check_edge_attr(edge_attr: Tensor, num_edges: int) -> None:
    """``edge_attr`` must have one finite row per edge."""
    if edge_attr.size(0) != num_edges:
        raise ValueError(f"edge_attr has {edge_attr.size(0)} rows but edge_index has {num_edges} edges")
    check_features(edge_attr, "edge_attr", dim=edge_attr.dim())
