"""The ``graphmem`` command: Lightning's CLI over graphmem's models and data.

    graphmem fit --config recipes/tox21_gat.yaml          # train (and test, if the recipe says so)
    graphmem test --config recipes/tox21_gat.yaml --ckpt_path path/to/best.ckpt
    graphmem fit --config recipes/tox21_gat.yaml --ckpt_path last   # resume the newest run
    graphmem fit --config recipes/tox21_gat.yaml --ensemble 3       # 3 models, seeds 0-2 (graphmem.ensemble)
    graphmem ensemble --out runs/ens run0/checkpoints/best.ckpt run1/checkpoints/best.ckpt   # of finished runs
    graphmem recipes                                     # list the recipes
    graphmem plot molecule --config recipes/tox21_gat.yaml --ckpt_path best.ckpt --smiles CCO --out a.png
    graphmem predict --config recipes/tox21_gat.yaml --ckpt_path best.ckpt --smiles CCO c1ccccc1 --out p.csv
    graphmem predict --model tox21 --smiles CCO                     # the Tox21 model shipped with graphmem

Every value of a recipe can be overridden on the command line (``--trainer.max_epochs 5``).
Checkpoints also hold the random number generators, so a resumed run ends as an uninterrupted
one would; a ``--ckpt_path`` that is missing, truncated or corrupted is reported before anything
is built.

``graphmem predict`` with ``--smiles`` or ``--smiles_file`` predicts molecules given as SMILES
(see :mod:`graphmem.predict`); without them it is Lightning's ``predict`` on the recipe's data.

Every error in what the user gave (:class:`graphmem.errors.GraphmemError`: data files, recipes,
checkpoints, arguments) ends the command with one line on stderr and exit status 2; a run
stopped by SIGTERM exits with status 143. ``--traceback`` (or ``GRAPHMEM_TRACEBACK=1``) shows
the full traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING

import graphmem
from graphmem.errors import GraphmemError, RunInterrupted
from graphmem.recipe_index import recipe_summaries, with_recipe_paths

if TYPE_CHECKING:
    from graphmem.recipe import GraphmemCLI

TRACEBACK_ENV = "GRAPHMEM_TRACEBACK"
USAGE = f"""usage: graphmem [--version] [--traceback] <command> [options]

graphmem {graphmem.__version__}: graph attention networks and memory networks.

commands:
  fit        train a recipe (graphmem fit --config recipes/tox21_gat.yaml); --ensemble N trains N seeds
  validate   score a checkpoint on the validation set (--ckpt_path required)
  test       score a checkpoint on the test set (--ckpt_path required)
  predict    predict with a checkpoint; with --smiles/--smiles_file, molecules given as SMILES
             (--model tox21: the shipped Tox21 model, no training needed)
  ensemble   make an ensemble of finished runs of one recipe (graphmem ensemble --out FOLDER CKPT CKPT ...)
  recipes    list the recipes
  plot       draw a molecule's attention, an NTM run, or training curves

`graphmem <command> --help` describes a command's options.
"""


#: library messages that say nothing about the user's run: a deprecation inside Lightning's own
#: code, a note on an IterableDataset that graphmem's loaders size correctly, LightningCLI's
#: caution when given arguments while the process has its own (graphmem hands it each recipe
#: that predict loads and each member that fit --ensemble trains), the note that a fit has no
#: optimizer (a forest, graphmem.lit.ForestTask, has none by design), an advertisement
LIBRARY_NOISE: tuple[str, ...] = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Your `IterableDataset` has `__len__` defined",
    r"LightningCLI's args parameter is intended to run from within Python",
    r"`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer",
)
ADVERTISEMENT = "💡 Tip:"


def _not_an_advertisement(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(ADVERTISEMENT)


def quiet_library_noise() -> None:
    """Hides :data:`LIBRARY_NOISE` warnings and Lightning's logger advertisement from the command's output."""
    for message in LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _not_an_advertisement not in logger.filters:
            logger.addFilter(_not_an_advertisement)


def _run(args: list[str], from_shell: bool) -> GraphmemCLI | None:
    if args[:1] == ["recipes"]:
        for name, header in recipe_summaries():
            print(f"{name:<24} {header}")
        return None
    # torch and Lightning load only below: `graphmem recipes` and `--help` answer without them
    quiet_library_noise()
    if args[:1] == ["plot"]:
        from graphmem.plot.cli import plot_main  # matplotlib and RDKit drawing only when plotting

        plot_main(args[1:])
        return None
    if args[:1] == ["predict"] and any(
            arg.split("=")[0] in ("--smiles", "--smiles_file", "--model", "-h", "--help") for arg in args):
        from graphmem.predict import predict_main

        predict_main(args[1:])
        return None
    if args[:1] == ["ensemble"]:
        from graphmem.ensemble import ensemble_main

        ensemble_main(args[1:])
        return None
    if args[:1] == ["fit"]:
        from graphmem.ensemble import ensemble_fit, ensemble_size

        if ensemble_size(args[1:])[0] not in (None, "1"):
            ensemble_fit(args[1:])
            return None
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from graphmem.lit.callbacks import DataIdentity, RandomStateCheckpoint
    from graphmem.recipe import GraphmemCLI

    try:
        cli = GraphmemCLI(LightningModule, LightningDataModule, subclass_mode_model=True,
                          subclass_mode_data=True, args=None if from_shell else args,
                          # graphmem refuses a log folder of another run itself (GraphmemCLI.before_fit);
                          # without a logger, every run saves its config in the same root folder
                          save_config_kwargs={"overwrite": True},
                          trainer_defaults={"callbacks": [RandomStateCheckpoint(), DataIdentity()]})
    except SIGTERMException as error:  # a SystemExit with status 0: the scheduler must see a failure
        raise RunInterrupted("the run was stopped by SIGTERM before it finished; its last checkpoint (if any) "
                             "resumes it with --ckpt_path last") from error
    return cli


def _user_error(error: BaseException) -> GraphmemError | None:
    """The :class:`GraphmemError` that ``error`` is or was caused by: jsonargparse reports an
    error raised while it builds the recipe's classes as a ValueError of its own, caused by it."""
    while error is not None and not isinstance(error, GraphmemError):
        error = error.__cause__
    return error


def main(args: list[str] | None = None) -> GraphmemCLI | None:
    """Runs the command with ``args`` (default: the process's arguments).

    Called with ``args`` (in Python) it returns the finished :class:`GraphmemCLI` (its trainer,
    model and datamodule), or ``None`` for ``recipes``, ``plot``, ``predict --smiles`` and
    ``fit --ensemble`` and ``ensemble`` (whose manifest, ``ensemble.json``, says what they made), and
    raises :class:`GraphmemError` for bad input. From the shell it returns ``None`` (exit status
    0), and bad input ends the command with its message on stderr and the error's exit status
    (2; 143 for SIGTERM).
    """
    from_shell = args is None
    args = list(sys.argv[1:] if args is None else args)
    show_traceback = "--traceback" in args or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    args = [arg for arg in args if arg != "--traceback"]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return None
    if args[0] == "--version":
        print(f"graphmem {graphmem.__version__}")
        return None
    args = with_recipe_paths(args)
    if from_shell:
        sys.argv = [sys.argv[0], *args]  # LightningCLI parses sys.argv itself
    if args[0] != "recipes":
        import torch

        # Attention weights and Adam's second moments drift into subnormal floats, which x86 CPUs
        # process up to 100x slower (measured: Tox21 epochs took 31 s instead of 7 s).
        torch.set_flush_denormal(True)
    try:
        cli = _run(args, from_shell)
    except ValueError as error:
        user_error = _user_error(error)
        if user_error is None or not from_shell or show_traceback:
            raise
        print(f"graphmem: error: {user_error}", file=sys.stderr)
        raise SystemExit(user_error.exit_code) from error
    # the console script exits with main()'s value: None is success (a returned object would be
    # printed and exit with status 1)
    return None if from_shell else cli


if __name__ == "__main__":
    main()
