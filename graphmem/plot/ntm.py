"""An NTM run drawn over time: inputs, targets, outputs, and where each head wrote and read."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from graphmem.data.algorithmic import Size, TaskSpec
from graphmem.memory import NTMHistory
from graphmem.errors import GraphmemError


def accessed_rows(*weightings: Tensor, threshold: float = 0.01, margin: int = 2) -> Tensor:
    """The memory rows, in order, of the shortest circular window that holds every row any of the
    ``(T, N)`` weightings gives more than ``threshold`` at some step, widened by ``margin``.

    A trained head touches a few neighbouring rows of many, possibly across the wrap from row
    ``N - 1`` to row 0 (shifts are circular): the window then runs e.g. ``126, 127, 0, 1, ...``.
    """
    touched = (torch.stack([w.amax(0) for w in weightings]).amax(0) > threshold).nonzero().view(-1)
    num_rows = weightings[0].size(-1)
    if touched.numel() == 0:
        return torch.arange(num_rows)
    # the window starts after the widest circular gap between touched rows
    following = torch.cat([touched[1:], touched[:1] + num_rows])
    widest = int(torch.argmax(following - touched))
    first = int(following[widest]) % num_rows
    length = int((touched[widest] - first) % num_rows) + 1
    length = min(length + 2 * margin, num_rows)
    return (first - margin + torch.arange(length)) % num_rows if length < num_rows else torch.arange(num_rows)


def plot_ntm_run(inputs: Tensor, targets: Tensor, outputs: Tensor, history: NTMHistory,
                 path: str | os.PathLike, example: int = 0, head: int = 0, title: str = "",
                 crop: bool = True) -> Path:
    """Five heat maps against time for one sequence of a time-first batch: the input bits, the
    target, the output probabilities (``sigmoid(outputs)``), and the write and read weightings
    of ``head`` over the memory rows. Written to ``path`` as PNG (Agg, no display needed).

    Args:
        inputs: ``(T, B, I)``; targets ``(T, B, O)``; outputs ``(T, B, O)`` logits.
        history: the :class:`~graphmem.memory.NTMHistory` of the same run
            (``NTM(..., return_history=True)``), weightings ``(T, B, K, N)``.
        example: which sequence of the batch.
        head: which read and write head.
        crop: show only the memory rows the heads use (:func:`accessed_rows`), labelled with
            their real indices.
    """
    if history.write_weights.size(2) <= head or history.read_weights.size(2) <= head:
        raise GraphmemError(f"head {head} does not exist: the run has {history.read_weights.size(2)} read and "
                            f"{history.write_weights.size(2)} write heads")
    writes = history.write_weights[:, example, head].detach().float().cpu()
    reads = history.read_weights[:, example, head].detach().float().cpu()
    rows = accessed_rows(writes, reads) if crop else torch.arange(reads.size(1))
    panels = [
        ("input", inputs[:, example], "channel", None),
        ("target", targets[:, example], "bit", None),
        ("output (probability)", torch.sigmoid(outputs[:, example]), "bit", None),
        (f"write weighting (head {head})", writes[:, rows], "memory row", rows),
        (f"read weighting (head {head})", reads[:, rows], "memory row", rows),
    ]
    figure = Figure(figsize=(8, 9), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, height_ratios=[1, 1, 1, 1.6, 1.6])
    for ax, (name, values, ylabel, row_labels) in zip(axes, panels):
        image = ax.imshow(values.detach().float().cpu().T, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                          interpolation="nearest")
        if row_labels is not None:  # label the shown rows with their real indices
            ticks = torch.linspace(0, len(row_labels) - 1, min(len(row_labels), 6)).round().long()
            ax.set_yticks(ticks.tolist(), [str(int(row_labels[t])) for t in ticks])
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel(ylabel, fontsize=8)
        figure.colorbar(image, ax=ax, pad=0.01, fraction=0.03)
    axes[-1].set_xlabel("time step")
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _describe(spec: TaskSpec, size: Size) -> str:
    if spec.task == "associative_recall":
        return f"NTM associative recall, {size} items"
    if isinstance(size, (tuple, list)):
        return f"NTM repeat copy, length {size[0]}, {size[1]} repeats"
    return f"NTM {spec.task.replace('_', ' ')}, length {size}"


def ntm_task_run(model: nn.Module, spec: TaskSpec, size: Size, path: str | os.PathLike, seed: int = 0,
                 head: int = 0) -> Path:
    """Runs ``model`` (a time-first :class:`~graphmem.memory.NTM`) on one sequence of the task
    ``spec`` at ``size`` (a length, an item count, or a ``(length, repeats)`` pair, as in
    :class:`~graphmem.data.AlgorithmicDataModule`'s ``test_sizes``) and draws it with
    :func:`plot_ntm_run`."""
    inputs, targets, _ = spec.batch(size, 1, torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs, _, history = model(inputs, return_history=True)
    finally:
        model.train(was_training)
    return plot_ntm_run(inputs, targets, outputs, history, path, head=head, title=_describe(spec, size))


def ntm_copy_run(model: nn.Module, length: int, path: str | os.PathLike, width: int | None = None,
                 seed: int = 0, head: int = 0) -> Path:
    """Runs ``model`` (a time-first :class:`~graphmem.memory.NTM`) on one copy sequence of
    ``length`` random vectors and draws it with :func:`plot_ntm_run`."""
    width = width if width is not None else model.cell.input_size - 1  # copy inputs: bits + delimiter
    return ntm_task_run(model, TaskSpec("copy", width=width), length, path, seed, head)
