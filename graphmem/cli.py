"""The ``graphmem`` command: Lightning's CLI over graphmem's models and data.

    graphmem fit --config recipes/tox21_gat.yaml          # train (and test, if the recipe says so)
    graphmem test --config recipes/tox21_gat.yaml --ckpt_path path/to/best.ckpt
    graphmem fit --config recipes/tox21_gat.yaml --ckpt_path path/to/last.ckpt   # resume a run
    graphmem recipes                                     # list the recipes
    graphmem plot molecule --config recipes/tox21_gat.yaml --ckpt_path best.ckpt --smiles CCO --out a.png
    graphmem predict --config recipes/tox21_gat.yaml --ckpt_path best.ckpt --smiles CCO c1ccccc1 --out p.csv

Every value of a recipe can be overridden on the command line (``--trainer.max_epochs 5``).
Checkpoints also hold the random number generators, so a resumed run ends as an uninterrupted
one would; a ``--ckpt_path`` that is missing, truncated or corrupted is reported before anything
is built.

``graphmem predict`` with ``--smiles`` or ``--smiles_file`` predicts molecules given as SMILES
(see :mod:`graphmem.predict`); without them it is Lightning's ``predict`` on the recipe's data.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from graphmem.lit.callbacks import RandomStateCheckpoint
from graphmem.lit.checkpoint import CheckpointError, check_checkpoint

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
RECIPE_KEYS = ("seed_everything", "trainer", "model", "data", "test_after_fit", "optimizer", "lr_scheduler")


def tensorboard_available() -> bool:
    """Whether Lightning's TensorBoardLogger can write (it needs tensorboard or tensorboardX)."""
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


class GraphmemCLI(LightningCLI):
    """LightningCLI plus ``--test_after_fit`` (test the best checkpoint when ``fit`` ends), a
    check of ``--ckpt_path`` before Lightning reads it, and TensorBoard logs beside the recipe's
    CSV logs whenever TensorBoard is installed."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after fit, run test on the best checkpoint (or the last weights)")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI reads the checkpoint's hyperparameters right after parsing: check it first
        subcommand = self.config.get("subcommand")
        if subcommand:
            check_checkpoint(self.config[subcommand].get("ckpt_path"))

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        csv = next((logger for logger in trainer.loggers if isinstance(logger, CSVLogger)), None)
        if csv is not None and tensorboard_available() and not any(
                isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
            # same folder and version, so one run's CSV and TensorBoard files sit together
            trainer.loggers = [*trainer.loggers, TensorBoardLogger(csv.save_dir, name=csv.name, version=csv.version)]
        return trainer

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit"):
            return
        callback = self.trainer.checkpoint_callback
        ckpt = "best" if callback is not None and getattr(callback, "best_model_path", "") else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def recipe_summaries(folder: Path = RECIPES_DIR) -> list[tuple[str, str]]:
    """``(name, first header line)`` of every recipe YAML."""
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        header = next((line.lstrip("# ").strip() for line in path.read_text().splitlines()
                       if line.startswith("#") and line.strip("# ")), "")
        rows.append((path.stem, header))
    return rows


def load_recipe(config: str, ckpt_path: str | None = None, overrides: Sequence[str] = ()) -> GraphmemCLI:
    """The trainer, model and datamodule that a recipe builds, without running anything; the
    model holds the checkpoint's weights when ``ckpt_path`` is given. Logging and config saving
    are off.

    ``config`` may also be the ``config.yaml`` that ``graphmem fit`` saves beside a run;
    ``overrides`` are command-line overrides as in ``graphmem fit``.
    """
    check_checkpoint(ckpt_path)
    # a run's saved config.yaml also holds the arguments of the fit call itself (ckpt_path,
    # verbose, ...): keep what builds the model, data and trainer
    recipe = {key: value for key, value in yaml.safe_load(Path(config).read_text()).items()
              if key in RECIPE_KEYS}
    cli = GraphmemCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      args=["--config", yaml.safe_dump(recipe), "--trainer.logger", "false", *overrides],
                      run=False, save_config_callback=None)  # a loaded recipe writes nothing beside its runs
    if ckpt_path:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
        try:
            cli.model.load_state_dict(state)
        except RuntimeError as error:  # torch lists every mismatched tensor: keep the first lines
            detail = "; ".join(line.strip() for line in str(error).splitlines()[1:4])
            raise ValueError(f"checkpoint {ckpt_path} does not fit the model that {config} builds "
                             f"({detail}); "
                             f"use the config saved with the run (config.yaml beside lightning_logs) or pass "
                             f"the overrides it was trained with after --") from error
    return cli


def main(args: list[str] | None = None) -> GraphmemCLI | None:
    """Runs the command with ``args`` (default: the process's arguments).

    Called with ``args`` (in Python) it returns the finished :class:`GraphmemCLI` (its trainer,
    model and datamodule) and raises :class:`CheckpointError` for a bad checkpoint; from the
    shell it returns ``None`` (exit status 0), and a bad checkpoint ends the command with its
    message and exit status 2.
    """
    from_shell = args is None
    args = sys.argv[1:] if args is None else args
    # Attention weights and Adam's second moments drift into subnormal floats, which x86 CPUs
    # process up to 100x slower (measured: Tox21 epochs took 31 s instead of 7 s).
    torch.set_flush_denormal(True)
    if args[:1] == ["recipes"]:
        for name, header in recipe_summaries():
            print(f"{name:<24} {header}")
        return None
    try:
        if args[:1] == ["plot"]:
            from graphmem.plot.cli import plot_main  # matplotlib and RDKit drawing only when plotting

            plot_main(args[1:])
            return None
        if args[:1] == ["predict"] and any(arg.split("=")[0] in ("--smiles", "--smiles_file") for arg in args):
            from graphmem.predict import predict_main

            predict_main(args[1:])
            return None
        cli = GraphmemCLI(LightningModule, LightningDataModule, subclass_mode_model=True,
                          subclass_mode_data=True, args=None if from_shell else args,
                          save_config_kwargs={"overwrite": True},
                          trainer_defaults={"callbacks": [RandomStateCheckpoint()]})
    except CheckpointError as error:
        if not from_shell:
            raise
        print(f"graphmem: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    # the console script exits with main()'s value: None is success (a returned object would be
    # printed and exit with status 1)
    return None if from_shell else cli


if __name__ == "__main__":
    main()
