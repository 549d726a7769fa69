"""Evaluation metrics with the conventions of OGB's molecule evaluator."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score
from torch import Tensor


class UndefinedMetricError(ValueError):
    """A metric that the examples cannot define (ROC-AUC of labels of one class only)."""


def multitask_roc_auc(y_true: Tensor, y_score: Tensor) -> tuple[float, list[float]]:
    """Mean ROC-AUC over tasks, ignoring missing (``NaN``) labels.

    As in ``ogb.graphproppred.Evaluator``, a task whose labelled examples are all of one class
    has no ROC-AUC and is left out of the mean (its entry in the per-task list is ``nan``).
    Raises :class:`UndefinedMetricError` (a ``ValueError``) when no task has both classes.
    """
    truth, score = y_true.detach().cpu().numpy(), y_score.detach().float().cpu().numpy()
    per_task = []
    for task in range(truth.shape[1]):
        labelled = ~np.isnan(truth[:, task])
        labels = truth[labelled, task]
        if labels.size == 0 or labels.min() == labels.max():
            per_task.append(float("nan"))
            continue
        per_task.append(float(roc_auc_score(labels, score[labelled, task])))
    valid = [v for v in per_task if not np.isnan(v)]
    if not valid:
        raise UndefinedMetricError("no task has both positive and negative labels; ROC-AUC is undefined")
    return float(np.mean(valid)), per_task
