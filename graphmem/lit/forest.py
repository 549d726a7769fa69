"""LightningModule that fits a :class:`graphmem.models.MoleculeForest` in one pass over the training set."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch_geometric.data import Batch

from graphmem.errors import GraphmemError
from graphmem.lit.graph import GraphPropertyTask
from graphmem.models.forest import MoleculeForest


class ForestTask(GraphPropertyTask):
    """Fits a :class:`~graphmem.models.MoleculeForest` on the training molecules, then validates,
    tests and predicts as :class:`GraphPropertyTask` does (same metrics, names, tables and
    checkpoints), so ``graphmem fit``, ``test``, ``predict`` and ``ensemble`` take a forest like
    any network.

    There is no gradient step: the training epoch collects every batch's features and labels, and
    its last batch fits the forest on all of them, seeded from torch's generator (so
    ``seed_everything`` gives another forest per seed, and the same one again). The fit happens
    once; a recipe runs one epoch (``max_epochs: 1``), and further epochs leave the forest as it
    is. scikit-learn fits on ``torch.get_num_threads()`` threads. One process only: under a
    multi-device strategy each process would see part of the training set.
    """

    def __init__(self, model: MoleculeForest) -> None:
        super().__init__(model)
        self.automatic_optimization = False
        self._rows: list[tuple[Tensor, Tensor]] = []

    def setup(self, stage: str) -> None:
        if not isinstance(self.model, MoleculeForest):
            raise GraphmemError(f"ForestTask fits a graphmem.models.MoleculeForest, not a {type(self.model).__name__}; "
                                f"train networks with graphmem.lit.GraphPropertyTask")
        if stage == "fit" and self.trainer.world_size > 1:
            raise GraphmemError(f"a forest is fitted in one process; this run has {self.trainer.world_size} "
                                f"(--trainer.devices 1 --trainer.strategy auto)")

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if self.model.fitted:
            return
        self._rows.append((self.model.features(batch).cpu(), batch.y.cpu()))
        if batch_idx + 1 == self.trainer.num_training_batches:
            x, y = torch.cat([x for x, _ in self._rows]), torch.cat([y for _, y in self._rows])
            self._rows = []
            seed = int(torch.randint(0, 2**31 - 1 - self.model.num_tasks, ()))
            self.model.fit(x, y, seed=seed, n_jobs=torch.get_num_threads())
            # the fit is the run's one training step: counted as Lightning counts an optimizer's
            # (global_step 1), since ModelCheckpoint saves nothing while global_step is 0
            steps = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
            steps.increment_ready()
            steps.increment_completed()
            rank_zero_info(f"forest: {self.model.num_tasks} tasks x {self.model.num_trees} trees fitted on "
                           f"{len(x)} molecules, {x.shape[1]} features; deepest leaf {int(self.model.depth)}")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if self.model.fitted:  # Lightning's sanity check validates before anything is fitted
            super().validation_step(batch, batch_idx)

    def configure_optimizers(self) -> None:
        return None
