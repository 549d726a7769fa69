"""Training curves from a CSV logger's metrics.csv, and `graphmem plot curves`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphmem.cli import main
from graphmem.plot import curves_figure, read_metrics
from tests.test_plot import _assert_png

# as Lightning's CSVLogger writes it: per-step train_loss (two steps an epoch), per-epoch
# validation rows, one final test row; empty cells where a row did not log a metric
METRICS_CSV = """epoch,step,test_roc_auc,train_loss,val_loss,val_roc_auc
0,0,,0.9,,
0,1,,0.7,,
0,1,,,0.8,0.6
1,2,,0.6,,
1,3,,0.4,,
1,3,,,0.5,0.7
2,4,,0.3,,
2,5,,0.2,,
2,5,,,0.45,0.75
2,5,0.72,,,
"""


@pytest.fixture
def metrics_csv(tmp_path: Path) -> Path:
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    return path


def _plotted(figure) -> dict[str, np.ndarray]:
    return {ax.get_title(loc="left"): ax.lines[0].get_xydata() for ax in figure.axes if ax.get_visible()}


def test_curves_against_epoch_average_each_epochs_values(metrics_csv):
    plotted = _plotted(curves_figure(read_metrics(metrics_csv)))
    assert list(plotted) == ["train_loss", "val_loss", "val_roc_auc"]  # the single test score is no curve
    np.testing.assert_allclose(plotted["train_loss"], [[0, 0.8], [1, 0.5], [2, 0.25]])
    np.testing.assert_allclose(plotted["val_loss"], [[0, 0.8], [1, 0.5], [2, 0.45]])
    np.testing.assert_allclose(plotted["val_roc_auc"], [[0, 0.6], [1, 0.7], [2, 0.75]])


def test_curves_against_step_keep_every_value(metrics_csv):
    plotted = _plotted(curves_figure(read_metrics(metrics_csv), ["train_loss", "test_roc_auc"], x="step"))
    np.testing.assert_allclose(plotted["train_loss"], [[0, 0.9], [1, 0.7], [2, 0.6], [3, 0.4], [4, 0.3], [5, 0.2]])
    np.testing.assert_allclose(plotted["test_roc_auc"], [[5, 0.72]])


def test_plot_curves_verb_writes_png(metrics_csv, tmp_path, capsys):
    out = tmp_path / "sub" / "curves.png"
    main(["plot", "curves", "--log", str(metrics_csv), "--metrics", "train_loss", "val_roc_auc", "--out", str(out)])
    _assert_png(out)
    assert f"wrote {out}" in capsys.readouterr().out


def test_several_runs_one_line_each_with_labels(metrics_csv, tmp_path):
    other = tmp_path / "seed1.csv"
    other.write_text(METRICS_CSV.replace("0.45", "0.25"))
    figure = curves_figure({"seed 0": read_metrics(metrics_csv), "seed 1": read_metrics(other)}, ["val_loss"],
                           log_y=True)
    (ax,) = [ax for ax in figure.axes if ax.get_visible()]
    assert [line.get_label() for line in ax.lines] == ["seed 0", "seed 1"] and ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[1].get_xydata(), [[0, 0.8], [1, 0.5], [2, 0.25]])
    out = tmp_path / "two.png"
    main(["plot", "curves", "--log", str(metrics_csv), str(other), "--labels", "a", "b", "--log-y", "--out", str(out)])
    _assert_png(out)
    with pytest.raises(ValueError, match="1 labels for 2 logs"):
        main(["plot", "curves", "--log", str(metrics_csv), str(other), "--labels", "a", "--out", str(tmp_path / "x.png")])


def test_curves_bad_input(metrics_csv, tmp_path):
    table = read_metrics(metrics_csv)
    with pytest.raises(ValueError, match="no metric 'val_acc' in the log"):
        curves_figure(table, ["train_loss", "val_acc"])
    with pytest.raises(ValueError, match="x must be one of"):
        curves_figure(table, ["train_loss"], x="time")
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        read_metrics(tmp_path / "missing.csv")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"not a Lightning metrics.csv: it has no \['epoch', 'step'\]"):
        read_metrics(other)
    with pytest.raises(ValueError, match="no metric logged in two or more epochs"):
        curves_figure(table[table["epoch"] == 2])
