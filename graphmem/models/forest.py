"""A random forest on molecule-level features, as a torch module that predicts like any graphmem model."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from torch import Tensor, nn
from torch_geometric.data import Batch

from graphmem.errors import GraphmemError

# probabilities of exactly 0 or 1 (every tree agrees) would give infinite logits
PROBABILITY_EPS = 1e-6


class MoleculeForest(nn.Module):
    r"""One random forest (Breiman 2001) per task on each molecule's RDKit descriptors and Morgan
    count fingerprints, fitted by scikit-learn and evaluated in torch.

    .. math::
        x = [\,d \,\Vert\, f\,], \qquad
        p_t(x) = \frac1K \sum_{k=1}^{K} v_{t,k}\big(\mathrm{leaf}_{t,k}(x)\big), \qquad
        \hat y_t = \log p_t - \log(1 - p_t)

    where tree ``k`` of task ``t`` sends ``x`` left at node ``n`` when
    :math:`x_{\mathrm{feature}(n)} \le \mathrm{threshold}(n)`, and :math:`v` is the
    (class-weighted) fraction of positive training molecules in the leaf it reaches. Each task's
    forest is fitted on the molecules labelled for it (:meth:`fit`, which
    :class:`graphmem.lit.ForestTask` calls on the training set; a task labelled with one class
    only gets trees of one leaf, which predict that class, and a warning), with ``class_weight="balanced"``
    and ``sqrt(F)`` features tried per split. Trees are grown best-first to at most
    ``max_leaf_nodes`` leaves, so every tree fits in ``2 max_leaf_nodes - 1`` nodes and the
    module's buffers have the same shapes before and after fitting: a checkpoint loads into a
    forest that a recipe builds, like any network's weights. :meth:`forward` gives the same
    probabilities as scikit-learn's ``predict_proba`` (to float rounding): thresholds are kept
    in float32 rounded down, which sends every float32 feature the same way as sklearn's float64
    threshold.

    A forest is the model of choice for tabular molecule features (DeepTox, Chemprop's sklearn
    baselines) and errs differently from a graph network, which is what an ensemble of both
    (``graphmem ensemble``) gains from.

    Args:
        num_tasks: outputs (one logit per task).
        descriptor_size: ``D`` descriptors per molecule (``batch.descriptors``,
            :mod:`graphmem.data.descriptors`); 0 for none.
        fingerprint_size: ``B`` fingerprint bins per molecule (``batch.fingerprints``,
            :mod:`graphmem.data.fingerprints`); 0 for none.
        num_trees: trees per task.
        max_leaf_nodes: leaves per tree at most.
        min_samples_leaf: training molecules per leaf at least.

    Shapes:
        - input: a PyG ``Batch`` with ``descriptors`` :math:`(G, D)` and ``fingerprints`` :math:`(G, B)`
        - output: :math:`(G, T)` logits
    """

    def __init__(self, num_tasks: int, descriptor_size: int = 0, fingerprint_size: int = 0, num_trees: int = 500,
                 max_leaf_nodes: int = 256, min_samples_leaf: int = 1) -> None:
        super().__init__()
        if descriptor_size + fingerprint_size == 0:
            raise GraphmemError("a MoleculeForest needs molecule features: load the data with "
                                "MoleculeDataModule(descriptors=True) and/or fingerprints=True")
        if not 2 <= max_leaf_nodes <= 16384 or num_trees < 1 or min_samples_leaf < 1:
            # nodes and features are indexed in int16, which keeps a checkpoint of 500 trees small
            raise GraphmemError(f"a MoleculeForest needs num_trees >= 1, 2 <= max_leaf_nodes <= 16384 and min_samples_leaf "
                                f">= 1; got {num_trees}, {max_leaf_nodes}, {min_samples_leaf}")
        if descriptor_size + fingerprint_size > torch.iinfo(torch.int16).max:
            raise GraphmemError(f"a MoleculeForest takes at most 32767 features; got {descriptor_size + fingerprint_size}")
        self.num_tasks, self.num_trees = num_tasks, num_trees
        self.descriptor_size, self.fingerprint_size = descriptor_size, fingerprint_size
        self.max_leaf_nodes, self.min_samples_leaf = max_leaf_nodes, min_samples_leaf
        nodes = (num_tasks, num_trees, 2 * max_leaf_nodes - 1)
        # a leaf is its own child (left = right = itself), so a walk that reached it stays there
        self.register_buffer("feature", torch.zeros(nodes, dtype=torch.int16))
        self.register_buffer("threshold", torch.zeros(nodes))
        self.register_buffer("left", torch.zeros(nodes, dtype=torch.int16))
        self.register_buffer("right", torch.zeros(nodes, dtype=torch.int16))
        self.register_buffer("value", torch.zeros(nodes))
        self.register_buffer("depth", torch.tensor(-1))  # the deepest leaf; -1: not fitted

    @property
    def fitted(self) -> bool:
        return int(self.depth) >= 0

    def features(self, batch: Batch) -> Tensor:
        """``(G, D + B)``: the batch's descriptors and fingerprints, side by side."""
        parts = []
        for name, size, flag in (("descriptors", self.descriptor_size, "descriptors"),
                                 ("fingerprints", self.fingerprint_size, "fingerprints")):
            if not size:
                continue
            part = getattr(batch, name, None)
            if part is None or part.shape != (batch.num_graphs, size):
                found = "none" if part is None else f"shape {tuple(part.shape)}"
                raise GraphmemError(f"this MoleculeForest takes {size} {name} per molecule (batch.{name}, "
                                    f"({batch.num_graphs}, {size})), got {found}: load the data with "
                                    f"MoleculeDataModule({flag}=True)")
            parts.append(part)
        return torch.cat(parts, -1).float()

    def fit(self, x: Tensor, y: Tensor, seed: int = 0, n_jobs: int = 1) -> None:
        """Fits task ``t``'s forest on the rows of ``x`` ``(N, D + B)`` labelled in ``y[:, t]``
        (``(N, T)``, ``NaN`` for a missing label); ``seed`` seeds the bootstrap and feature draws."""
        if y.shape != (x.shape[0], self.num_tasks):
            raise GraphmemError(f"the forest predicts {self.num_tasks} tasks for {x.shape[0]} molecules; the labels "
                                f"are {tuple(y.shape)}")
        x_np, y_np = x.float().cpu().numpy(), y.cpu().numpy()
        # built on the CPU whatever device the buffers are on (a forest moved to a GPU)
        arrays = {name: np.zeros(tuple(buffer.shape), torch.empty(0, dtype=buffer.dtype).numpy().dtype)
                  for name, buffer in self.named_buffers() if name != "depth"}
        depth = 0
        for task in range(self.num_tasks):
            labelled = ~np.isnan(y_np[:, task])
            if len(np.unique(y_np[labelled, task])) < 2:
                # nothing to split on (a few molecules, fast_dev_run): every tree is one leaf that
                # predicts the labels' mean, and the run goes on
                constant = float(y_np[labelled, task].mean()) if labelled.any() else 0.5
                warnings.warn(f"task {task} has {int(labelled.sum())} labelled training molecules, all of one class "
                              f"or none: its forest predicts {constant:.2f} for every molecule")
                arrays["value"][task, :, 0] = constant
                continue
            forest = RandomForestClassifier(self.num_trees, max_leaf_nodes=self.max_leaf_nodes,
                                            min_samples_leaf=self.min_samples_leaf, class_weight="balanced",
                                            random_state=seed + task, n_jobs=n_jobs)
            forest.fit(x_np[labelled], y_np[labelled, task])
            for k, estimator in enumerate(forest.estimators_):
                depth = max(depth, _pack_tree(estimator.tree_, {name: a[task, k] for name, a in arrays.items()}))
        for name, array in arrays.items():
            getattr(self, name).copy_(torch.from_numpy(array))
        self.depth.fill_(depth)

    def forward(self, batch: Batch) -> Tensor:
        if not self.fitted:
            raise GraphmemError("this MoleculeForest is not fitted: train it with graphmem.lit.ForestTask "
                                "(graphmem fit) or load a checkpoint of a fitted one")
        x = self.features(batch)
        molecules, nodes = x.shape[0], self.feature.shape[-1]
        trees = self.num_tasks * self.num_trees
        # one walk per (molecule, task, tree), as an index into the flattened buffers, from its
        # tree's root; walks that reach a leaf (a node that is its own child) leave the loop, so
        # each step costs the walks still going, not the deepest tree's depth times all of them
        at = (torch.arange(trees, device=x.device) * nodes).repeat(molecules)
        row = torch.arange(molecules, device=x.device).repeat_interleave(trees) * x.shape[1]
        walk = torch.arange(at.numel(), device=x.device)
        leaf = at.clone()
        x_flat = x.reshape(-1)
        for _ in range(int(self.depth) + 1):
            feature = self.feature.view(-1).index_select(0, at).long()
            value = x_flat.index_select(0, row + feature)
            right = value > self.threshold.view(-1).index_select(0, at)
            child = torch.where(right, self.right.view(-1).index_select(0, at), self.left.view(-1).index_select(0, at))
            step = at - at % nodes + child.long()
            done = step == at
            if bool(done.any()):
                leaf[walk[done]] = at[done]
                going = ~done
                at, row, walk = step[going], row[going], walk[going]
            else:
                at = step
            if at.numel() == 0:
                break
        probability = self.value.view(-1).index_select(0, leaf).view(molecules, self.num_tasks, -1).mean(-1)
        probability = probability.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
        return torch.log(probability) - torch.log1p(-probability)


def _pack_tree(tree, out: dict[str, np.ndarray]) -> int:
    """Copies a fitted scikit-learn ``tree`` into the node arrays ``out`` (``feature``,
    ``threshold``, ``left``, ``right``, ``value``, each of one tree's length); returns its depth."""
    count = tree.node_count
    leaf = tree.children_left[:count] == -1
    own = np.arange(count)
    out["left"][:count] = np.where(leaf, own, tree.children_left[:count])
    out["right"][:count] = np.where(leaf, own, tree.children_right[:count])
    out["feature"][:count] = np.where(leaf, 0, tree.feature[:count])
    threshold = np.where(leaf, 0.0, tree.threshold[:count])
    # sklearn compares float32 features with a float64 threshold: the largest float32 not above
    # it sends every float32 feature the same way
    rounded = threshold.astype(np.float32)
    above = rounded.astype(np.float64) > threshold
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    out["threshold"][:count] = rounded
    counts = tree.value[:count, 0, :]  # (class-weighted) class fractions or counts: normalised as sklearn does
    total = counts.sum(1)
    out["value"][:count] = counts[:, 1] / np.where(total > 0, total, 1.0)
    return int(tree.max_depth)
