"""Training curves from the ``metrics.csv`` that Lightning's CSVLogger writes for a run."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from graphmem.data.download import DataFileError
from graphmem.errors import GraphmemError

AXES = ("epoch", "step")


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """A run's ``metrics.csv``: one row per logging call, ``epoch`` and ``step`` columns, and a
    column per metric that is empty where the call did not log it."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"no metrics file {path}; the CSV logger writes "
                            f"runs/<recipe>/lightning_logs/version_N/metrics.csv")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError as error:
        raise GraphmemError(f"{path} is empty: the run logged nothing yet") from error
    missing = [axis for axis in AXES if axis not in table.columns]
    if missing:
        raise GraphmemError(f"{path} is not a Lightning metrics.csv: it has no {missing} column "
                            f"(columns: {list(table.columns)})")
    return table


def curve_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics that make a curve: those logged in two or more epochs (not e.g. a final test score)."""
    return [name for name in table.columns
            if name not in AXES and table.loc[table[name].notna(), "epoch"].nunique() > 1]


def metric_curve(table: pd.DataFrame, metric: str, x: str = "epoch") -> tuple[np.ndarray, np.ndarray]:
    """The points ``(x, value)`` of one metric.

    Against ``step`` every logged value is a point; against ``epoch`` the values an epoch logged
    several times (a per-step ``train_loss``) are averaged into one point.
    """
    if x not in AXES:
        raise GraphmemError(f"x must be one of {AXES}, got {x!r}")
    if metric not in table.columns or metric in AXES:
        raise GraphmemError(f"no metric {metric!r} in the log; it has {[c for c in table.columns if c not in AXES]}")
    rows = table[[x, metric]].dropna()
    if rows.empty:
        raise GraphmemError(f"metric {metric!r} has no logged value")
    if x == "epoch":
        rows = rows.groupby("epoch", as_index=False)[metric].mean()
    return rows[x].to_numpy(), rows[metric].to_numpy()


def curves_figure(runs: pd.DataFrame | Mapping[str, pd.DataFrame], metrics: Sequence[str] | None = None,
                  x: str = "epoch", log_y: bool = False) -> Figure:
    """One panel per metric (default: :func:`curve_metrics` of the first run), each the metric
    against ``x``; ``runs`` is one run's table or several by label (e.g. seeds), drawn as one
    line each with a legend; ``log_y`` draws the values on a log scale (costs that fall to ~0)."""
    runs = {"": runs} if isinstance(runs, pd.DataFrame) else dict(runs)
    if not runs:
        raise GraphmemError("no run to plot")
    metrics = list(metrics) if metrics else curve_metrics(next(iter(runs.values())))
    if not metrics:
        raise GraphmemError("the log has no metric logged in two or more epochs; name the metrics to plot")
    # every name is checked in every run before anything is drawn
    curves = {label: [metric_curve(table, name, x) for name in metrics] for label, table in runs.items()}
    columns = min(len(metrics), 3)
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(4 * columns, 3 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for index, (ax, name) in enumerate(zip(axes, metrics)):
        for label, run in curves.items():
            xs, values = run[index]
            ax.plot(xs, values, marker="o" if len(xs) < 30 else None, markersize=3, label=label or None)
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_xlabel(x)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=8)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    return figure


def plot_curves(metrics_csv: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
                metrics: Sequence[str] | None = None, x: str = "epoch", labels: Sequence[str] | None = None,
                log_y: bool = False) -> Path:
    """Writes the training curves of one or several runs' ``metrics.csv`` (see :func:`curves_figure`)
    to PNG ``out``; ``labels`` name the runs in the legend (default: the files' paths)."""
    paths = [metrics_csv] if isinstance(metrics_csv, (str, os.PathLike)) else list(metrics_csv)
    labels = list(labels) if labels else [str(path) for path in paths]
    if len(labels) != len(paths):
        raise GraphmemError(f"{len(labels)} labels for {len(paths)} logs; give one label per --log file")
    tables = {label: read_metrics(path) for label, path in zip(labels, paths)}
    figure = curves_figure(tables, metrics, x, log_y)  # a legend only for several runs
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
