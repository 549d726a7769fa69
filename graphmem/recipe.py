"""Recipes and the Lightning CLI class that builds them: shared by ``graphmem`` (fit, test,
predict), ``graphmem plot`` and ``graphmem predict --smiles``, which all import it from here
(and not from each other).

A checkpoint written by a graphmem run records which data it was trained on (see
:class:`graphmem.lit.DataIdentity`); a recipe whose data differs is refused before anything
runs, so that a BBBP model is never scored or used under the HIV recipe's column names.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden

from graphmem.errors import GraphmemError
from graphmem.lit.callbacks import DATA_KEY, data_identity
from graphmem.lit.checkpoint import check_checkpoint
from graphmem.recipe_index import RECIPES_DIR, recipe_summaries  # noqa: F401 (part of this module's API)

#: the data module's sizes (attribute -> the argument of the task's model it sets): a recipe does
#: not name them, so that its model cannot disagree with its data (see :class:`GraphmemCLI`)
DATA_SIZES = {"num_tasks": "num_tasks", "num_features": "in_channels", "num_classes": "num_classes",
              "vocab_size": "vocab_size", "input_size": "input_size", "output_size": "output_size",
              "descriptor_size": "descriptor_size", "fingerprint_size": "fingerprint_size"}
MOLECULE_DATA = "MoleculeDataModule"
RECIPE_KEYS = ("seed_everything", "trainer", "model", "data", "test_after_fit", "optimizer", "lr_scheduler")
# subcommands that score a model: without a checkpoint they would score random weights
SCORING_SUBCOMMANDS = ("test", "validate")


def tensorboard_available() -> bool:
    """Whether Lightning's TensorBoardLogger can write (it needs tensorboard or tensorboardX)."""
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


def checkpoint_data(ckpt_path: str | os.PathLike | None) -> dict[str, Any] | None:
    """What data the checkpoint's model was trained on, as :class:`graphmem.lit.DataIdentity`
    stored it; ``None`` for no checkpoint, a Lightning keyword, or an older checkpoint."""
    if ckpt_path is None or not Path(ckpt_path).is_file():
        return None
    try:
        return torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=True).get(DATA_KEY)
    except pickle.UnpicklingError:  # holds objects beyond tensors: not written by graphmem's callbacks
        return None


def describe_data(identity: Mapping[str, Any]) -> str:
    """A data identity (see :func:`checkpoint_data`) as words for an error message."""
    return ", ".join(f"{key} {value}" for key, value in identity.items())


def check_data_matches(ckpt_path: str | os.PathLike | None, datamodule: LightningDataModule, config: str) -> None:
    """Raises :class:`GraphmemError` naming both data sets when the checkpoint was trained on
    other data than the recipe ``config`` loads with ``datamodule``."""
    trained = checkpoint_data(ckpt_path)
    if trained is None:
        return
    recipe = data_identity(datamodule)
    trained = {key: trained.get(key) for key in recipe}  # a molecule checkpoint also holds task names
    if trained != recipe:
        raise GraphmemError(f"checkpoint {ckpt_path} was trained on {describe_data(trained)} but {config} "
                            f"loads {describe_data(recipe)}; use the recipe the checkpoint was trained with")


def check_weights_fit(ckpt_path: str | os.PathLike | None, model: torch.nn.Module,
                      config: str) -> dict[str, torch.Tensor] | None:
    """The checkpoint's weights, once they are known to fit ``model`` tensor for tensor; raises
    :class:`GraphmemError` naming the first that do not. ``None`` for no checkpoint, a Lightning
    keyword, or a checkpoint that holds objects beyond tensors (not written by graphmem)."""
    if ckpt_path is None or not Path(ckpt_path).is_file():
        return None
    try:
        state = torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=True)["state_dict"]
    except pickle.UnpicklingError:
        return None
    own = model.state_dict()
    misfits = [f"{name} is {tuple(value.shape)} in the checkpoint, {tuple(own[name].shape)} in the model"
               for name, value in state.items() if name in own and own[name].shape != value.shape]
    misfits += [f"{name} is missing from the checkpoint" for name in own if name not in state]
    misfits += [f"{name} is not in the model" for name in state if name not in own]
    if misfits:
        raise GraphmemError(f"checkpoint {ckpt_path} does not fit the model that {config} builds "
                            f"({'; '.join(misfits[:3])}); the sizes its data knows come from the data (so bAbI "
                            f"checkpoints trained with the earlier vocab_size 180 do not load); for the others "
                            f"use the config saved with the run (config.yaml beside lightning_logs) or the "
                            f"overrides it was trained with (after -- for predict and plot)")
    return state


def _newest_checkpoint(folder: Path) -> Path | None:
    checkpoints = sorted(folder.rglob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    return checkpoints[-1] if checkpoints else None


class GraphmemCLI(LightningCLI):
    """LightningCLI plus ``--test_after_fit`` (test the best checkpoint when ``fit`` ends), a
    check of ``--ckpt_path`` before Lightning reads it, and TensorBoard logs beside the recipe's
    CSV logs whenever TensorBoard is installed.

    The sizes of the task's model (``model.init_args.model.init_args.<argument>``) are those of
    the data module, linked on instantiation (:data:`DATA_SIZES`): a molecule set's task count
    sets ``num_tasks``, a graph's feature and class counts ``in_channels`` and ``num_classes``,
    the bAbI vocabulary ``vocab_size``, an algorithmic task's widths ``input_size`` and
    ``output_size``. A size that the data module or the model does not have is left alone; one
    that a recipe or the command line gives anyway is replaced by the data's.

    It also refuses what would give a wrong answer or lose a file: ``test`` without a
    checkpoint, a checkpoint of other data than the recipe's, and a run forced into the log
    folder of another run. ``fit --ckpt_path last`` resumes the newest checkpoint of the
    recipe's runs, logging on into that run's folder.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after fit, run test on the best checkpoint (or the last weights)")
        # read before the parser by graphmem.cli (fit --ensemble N); here so that recipes may set it
        parser.add_argument("--ensemble", type=int, default=1,
                            help="fit trains this many models, seeds seed, seed + 1, ... (molecule and bAbI recipes; "
                                 "graphmem.ensemble)")
        for size, argument in DATA_SIZES.items():
            parser.link_arguments(f"data.{size}", f"model.init_args.model.init_args.{argument}",
                                  apply_on="instantiate")

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any],
                     subparser_kwargs: dict[str, Any]) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if add_subcommands:
            # graphmem prints the test results itself, in order (see test); `--verbose true` adds
            # Lightning's table, which lists every metric alphabetically (test_roc_auc/0, /1, /10, ...)
            self.parser.set_defaults({"test.verbose": False})

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI reads the checkpoint's hyperparameters right after parsing: check it first
        self.resumed_log: tuple[Path, pd.DataFrame | None] | None = None
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        if subcommand in SCORING_SUBCOMMANDS and config.get("ckpt_path") is None:
            raise GraphmemError(f"graphmem {subcommand} scores a trained model: pass its checkpoint with "
                                f"--ckpt_path (a .ckpt file of a run, e.g. under "
                                f"{config.trainer.default_root_dir or '.'}/lightning_logs)")
        if subcommand == "fit" and config.get("ckpt_path") == "last":
            self._resolve_last(config)
        check_checkpoint(config.get("ckpt_path"))

    def _resolve_last(self, config) -> None:
        """Turns ``--ckpt_path last`` into the newest checkpoint of the recipe's runs (Lightning
        only knows the checkpoints of the current run, which has none yet), and points the logger
        at that run's version folder so that the resumed run's log continues the earlier one."""
        logger = config.trainer.logger
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and init_args.get("save_dir"):
            folder = Path(init_args.save_dir) / (init_args.get("name") or "lightning_logs")
        else:
            folder = Path(config.trainer.default_root_dir or ".")
        checkpoint = _newest_checkpoint(folder) if folder.is_dir() else None
        if checkpoint is None:
            raise GraphmemError(f"--ckpt_path last: there is no checkpoint under {folder} to resume; "
                                f"train without --ckpt_path first, or pass a checkpoint file")
        config.ckpt_path = str(checkpoint)
        run = checkpoint.parent.parent
        if init_args is None or checkpoint.parent.name != "checkpoints" or not run.name.startswith("version_"):
            return
        init_args.version = run.name
        # CSVLogger deletes an existing metrics.csv: keep the epochs the checkpoint holds, and put
        # them back in front of the resumed epochs when fit ends (see after_fit)
        metrics = run / "metrics.csv"
        earlier = None
        if metrics.is_file():
            epoch = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True)["epoch"]
            earlier = pd.read_csv(metrics)
            earlier = earlier[earlier["epoch"] <= epoch] if "epoch" in earlier else earlier
        self.resumed_log = (run, earlier)

    def after_instantiate_classes(self) -> None:
        """Warns of every model size that the recipe or the command line gave and the data's replaced."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        network = getattr(self.model, "model", None)
        defaults = inspect.signature(type(network)).parameters if network is not None else {}
        for size, argument in DATA_SIZES.items():
            given = config.get(f"model.init_args.model.init_args.{argument}")
            known = getattr(self.datamodule, size, None)
            # jsonargparse fills in a default the recipe did not give (descriptor_size 0)
            unset = argument in defaults and given == defaults[argument].default
            if given is not None and known is not None and given != known and not unset:
                rank_zero_warn(f"the model's {argument} is the data's {size}, {known}, not the {given} "
                               f"given: graphmem sets it from the data")

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        csv = next((logger for logger in trainer.loggers if isinstance(logger, CSVLogger)), None)
        if csv is not None and tensorboard_available() and not any(
                isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
            # same folder and version, so one run's CSV and TensorBoard files sit together
            trainer.loggers = [*trainer.loggers, TensorBoardLogger(csv.save_dir, name=csv.name, version=csv.version)]
        return trainer

    def _check_data(self) -> None:
        """Refuses a ``--ckpt_path`` of other data than the recipe's, or whose weights do not fit its model."""
        configs = self.config[self.subcommand].get("config") or ["the recipe"]
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        check_data_matches(ckpt_path, self.datamodule, str(configs[0]))
        check_weights_fit(ckpt_path, self.model, str(configs[0]))

    def before_fit(self) -> None:
        self._check_data()
        # fast_dev_run swaps the logger for a dummy one without a folder
        log_dir = Path(self.trainer.log_dir) if self.trainer.logger is not None and self.trainer.log_dir else None
        resumed = self.resumed_log[0] if self.resumed_log else None
        if log_dir is not None and log_dir != resumed and any(
                (log_dir / name).exists() for name in ("config.yaml", "metrics.csv")):
            # Lightning would delete that run's metrics.csv and graphmem's config saving overwrites
            raise GraphmemError(f"{log_dir} already holds another run (config.yaml or metrics.csv); choose a "
                                f"new --trainer.logger.init_args.version, or resume it with --ckpt_path last")

    def before_test(self) -> None:
        self._check_data()

    def before_validate(self) -> None:
        self._check_data()

    def before_predict(self) -> None:
        self._check_data()
        if not is_overridden("predict_dataloader", self.datamodule, LightningDataModule):
            raise GraphmemError(f"{type(self.datamodule).__name__} has no prediction data of its own; for "
                                f"molecules, pass them with --smiles or --smiles_file (and --out)")

    def test(self, **kwargs: Any) -> list[dict[str, float]]:
        """``Trainer.test`` (what ``graphmem test`` and ``--test_after_fit`` run), ending with one line
        of the overall test metrics in the order the task logged them; the task prints its
        per-task or per-size metrics (``test_roc_auc/NR-AR``, ...) before, as a table in the data's
        order."""
        results = self.trainer.test(**kwargs)
        overall = [f"{name} {value:.4f}" for outputs in results for name, value in outputs.items() if "/" not in name]
        if overall:
            rank_zero_info("test: " + ", ".join(overall))
        return results

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        if self.config[self.subcommand].get("test_after_fit"):
            self.test(model=self.model, datamodule=self.datamodule, ckpt_path="best" if best else None, verbose=False)
        if best:
            rank_zero_info(f"best checkpoint: {best}")
        if self.resumed_log and self.resumed_log[1] is not None:
            metrics = self.resumed_log[0] / "metrics.csv"
            resumed = pd.read_csv(metrics) if metrics.is_file() else None
            pd.concat([self.resumed_log[1], resumed]).to_csv(metrics, index=False)


def _give_checkpoint_tasks(recipe: dict[str, Any], ckpt_path: str | None) -> None:
    """Gives a molecule recipe's data module the task names its checkpoint records, which size
    the model (see :data:`DATA_SIZES`), so that SIDER's and ToxCast's, named only in the data
    file, need no file to predict or plot with."""
    trained = checkpoint_data(ckpt_path) or {}
    data = recipe.get("data")
    if (trained.get("data") == MOLECULE_DATA and trained.get("tasks") and isinstance(data, dict)
            and str(data.get("class_path", "")).endswith(MOLECULE_DATA)):
        data.setdefault("init_args", {})["task_names"] = list(trained["tasks"])


def load_recipe(config: str, ckpt_path: str | None = None, overrides: Sequence[str] = ()) -> GraphmemCLI:
    """The trainer, model and datamodule that a recipe builds, without running anything; the
    model holds the checkpoint's weights when ``ckpt_path`` is given. Logging and config saving
    are off.

    ``config`` may also be the ``config.yaml`` that ``graphmem fit`` saves beside a run;
    ``overrides`` are command-line overrides as in ``graphmem fit``. A checkpoint trained on
    other data than the recipe's is refused (:class:`GraphmemError`).
    """
    check_checkpoint(ckpt_path)
    path = Path(config)
    if not path.is_file():
        raise GraphmemError(f"recipe {config} does not exist; `graphmem recipes` lists the recipes")
    # a run's saved config.yaml also holds the arguments of the fit call itself (ckpt_path,
    # verbose, ...): keep what builds the model, data and trainer
    recipe = {key: value for key, value in yaml.safe_load(path.read_text()).items() if key in RECIPE_KEYS}
    _give_checkpoint_tasks(recipe, ckpt_path)
    cli = GraphmemCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      args=["--config", yaml.safe_dump(recipe), "--trainer.logger", "false", *overrides],
                      run=False, save_config_callback=None)  # a loaded recipe writes nothing beside its runs
    if ckpt_path:
        check_data_matches(ckpt_path, cli.datamodule, config)
        state = check_weights_fit(ckpt_path, cli.model, config)
        if state is None:
            raise GraphmemError(f"checkpoint {ckpt_path} holds objects beyond tensors, which graphmem does not "
                                f"unpickle; pass a checkpoint that a graphmem run wrote")
        cli.model.load_state_dict(state)
        # what the task keeps beside the weights (a memory network's linear start)
        cli.model.on_load_checkpoint(torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=True))
    return cli
