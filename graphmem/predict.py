"""``graphmem predict`` for molecules: per-task probabilities of SMILES from a trained checkpoint.

    graphmem predict --config recipes/tox21_gat.yaml --ckpt_path best.ckpt --smiles CCO c1ccccc1 --out preds.csv
    graphmem predict --config recipes/tox21_gat.yaml --ckpt_path best.ckpt \\
        --smiles_file molecules.csv --smiles_column smiles --out preds.csv

    graphmem predict --ckpt_path runs/tox21_gat/lightning_logs/ensemble_0 --smiles CCO --out preds.csv
    graphmem predict --model tox21 --smiles CCO          # the shipped model (graphmem.pretrained)

The output has one row per input, in input order: ``index`` (the input's position, from 0),
``smiles``, one probability column per task (named as in the data set), and ``error``, which
holds why a SMILES could not be read (its probabilities are then empty). For an ensemble
(``graphmem fit --ensemble N``; ``--ckpt_path`` its folder or ``ensemble.json``, or a shipped
``--model``) the task columns hold the mean probability of the members and ``<task>_std``
columns their standard deviation; each member is built from its own saved config unless
``--config`` is given. Without ``--out`` the table goes to standard output (and the summary
line to standard error). Arguments after ``--`` override the recipe as in ``graphmem fit`` (so
that the model matches the checkpoint). The forward pass is Lightning's ``predict`` loop over
the task's ``predict_step``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from lightning.pytorch import LightningModule, Trainer
from torch_geometric.loader import DataLoader

from graphmem.data.fingerprints import add_model_features
from graphmem.data.molecule import smiles_to_graphs
from graphmem.ensemble import Ensemble, ensemble_table, load_ensemble, manifest_path
from graphmem.errors import GraphmemError
from graphmem.pretrained import available_models, pretrained_model
from graphmem.recipe import checkpoint_data, load_recipe


def predict_smiles(task: LightningModule, trainer: Trainer, smiles: Sequence[str], task_names: Sequence[str],
                   batch_size: int = 128) -> pd.DataFrame:
    """Probabilities of every task for every SMILES, as ``graphmem predict`` writes them.

    ``task.predict_step`` must return ``(G, T)`` probabilities with ``T = len(task_names)``
    (as :class:`graphmem.lit.GraphPropertyTask` does). Unreadable SMILES get a row with empty
    probabilities and the reason in ``error``.
    """
    graphs, rows, skipped = smiles_to_graphs(smiles)
    add_model_features(task.model, graphs, cache=False)
    table = pd.DataFrame({"index": range(len(smiles)), "smiles": list(smiles)})
    probabilities = torch.full((len(smiles), len(task_names)), float("nan"))
    if graphs:
        predicted = torch.cat(trainer.predict(task, DataLoader(graphs, batch_size=batch_size)))
        if predicted.shape[1] != len(task_names):
            raise GraphmemError(f"the model predicts {predicted.shape[1]} tasks but the data set has "
                                f"{len(task_names)} ({', '.join(task_names)})")
        probabilities[rows] = predicted.float()
    for column, name in enumerate(task_names):
        table[name] = probabilities[:, column].numpy()
    table["error"] = ""
    table.loc[[s.row for s in skipped], "error"] = [s.reason for s in skipped]
    return table


def read_smiles_file(path: str | Path, column: str = "smiles") -> list[str]:
    """The SMILES column of a CSV file, every row kept (an empty cell becomes ``""``)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise GraphmemError(f"{path} is empty: --smiles_file needs a CSV with a {column!r} column") from error
    if column not in table.columns:
        raise GraphmemError(f"{path} has no {column!r} column (columns: {list(table.columns)}); "
                            f"name the SMILES column with --smiles_column")
    if table.empty:
        raise GraphmemError(f"{path} has a {column!r} column but no rows: there is nothing to predict")
    return table[column].tolist()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphmem predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="the recipe the model was trained with (needed for a checkpoint file; "
                                         "an ensemble's members use their saved configs without it)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--ckpt_path", help="the trained weights: a Lightning checkpoint, or an ensemble's "
                                           "folder or ensemble.json (graphmem fit --ensemble N)")
    model.add_argument("--model", help=f"a model shipped with graphmem: {', '.join(available_models())}")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--smiles", nargs="+", help="SMILES strings")
    source.add_argument("--smiles_file", help="a CSV file with a column of SMILES")
    parser.add_argument("--smiles_column", default="smiles", help="the SMILES column of --smiles_file")
    parser.add_argument("--out", help="CSV file to write (a new file, unless --overwrite); "
                                      "without it, the table goes to standard output")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def check_out(out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuses an ``--out`` that would lose a file or fail after all the prediction work: an
    input file, an existing file (unless ``overwrite``), a folder, or a path under a file."""
    if any(out.resolve() == path.resolve() for path in inputs):
        raise GraphmemError(f"--out {out} is an input file; write the predictions to another file")
    if out.is_dir():
        raise GraphmemError(f"--out {out} is a folder; name a CSV file, e.g. {out / 'predictions.csv'}")
    blocking = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise GraphmemError(f"--out {out} lies under {blocking}, which is a file, not a folder")
    if out.exists() and not overwrite:
        raise GraphmemError(f"--out {out} exists; pass --overwrite to replace it, or name another file")


def _models(options: argparse.Namespace) -> tuple[list[tuple[str, str]], Ensemble | None]:
    """``(config, checkpoint)`` of every model to run, and the ensemble they form (if any)."""
    if options.model is not None:
        ensemble = load_ensemble(pretrained_model(options.model))
    elif manifest_path(options.ckpt_path) is not None:
        ensemble = load_ensemble(options.ckpt_path)
    else:
        if options.config is None:
            raise GraphmemError("--config is required with a checkpoint file: the recipe it was trained with "
                                "(or the config.yaml saved beside its run)")
        return [(options.config, options.ckpt_path)], None
    return [(options.config or str(m.config), str(m.checkpoint)) for m in ensemble.members], ensemble


def predict_main(args: list[str]) -> pd.DataFrame:
    """Runs ``graphmem predict ...`` with ``args`` (after ``predict``); returns the written table.

    The task names come from the checkpoint (graphmem stores them there), else from the data
    set's file header.
    """
    from graphmem.data import MoleculeDataModule
    from graphmem.data.molecule import moleculenet_tasks

    overrides = args[args.index("--") + 1:] if "--" in args else []
    options = _parser().parse_args(args[:args.index("--")] if "--" in args else args)
    out = Path(options.out) if options.out is not None else None
    if out is not None:
        inputs = [options.config, options.ckpt_path, options.smiles_file]
        check_out(out, [Path(path) for path in inputs if path is not None], options.overwrite)
    smiles = options.smiles or read_smiles_file(options.smiles_file, options.smiles_column)
    models, ensemble = _models(options)
    tables = []
    for config, ckpt_path in models:
        cli = load_recipe(config, ckpt_path, ["--trainer.enable_progress_bar", "false", *overrides])
        if not isinstance(cli.datamodule, MoleculeDataModule):
            raise GraphmemError(f"{config} does not train on molecules (its data is "
                                f"{type(cli.datamodule).__name__}); --smiles needs a molecule recipe")
        data = cli.datamodule.hparams
        tasks = (checkpoint_data(ckpt_path) or {}).get("tasks") or moleculenet_tasks(data.dataset, data.root)
        tables.append(predict_smiles(cli.model, cli.trainer, smiles, tasks, data.batch_size))
    table = tables[0] if ensemble is None else ensemble_table(
        tables, ensemble.tasks, [member.weight for member in ensemble.members])
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
    else:
        table.to_csv(sys.stdout, index=False)
    bad = table.index[table["error"] != ""].tolist()
    summary = f"predicted {len(table) - len(bad)} molecules, {len(bad)} unparseable"
    models_used = f" with {len(models)} models (mean and std)" if ensemble is not None else ""
    print(summary + (f" (index {', '.join(map(str, bad))})" if bad else "") + models_used
          + (f"; wrote {out}" if out is not None else ""), file=sys.stdout if out is not None else sys.stderr)
    return table
