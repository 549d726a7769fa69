"""``graphmem predict`` for molecules: per-task probabilities of SMILES from a trained checkpoint.

    graphmem predict --config recipes/tox21_gat.yaml --ckpt_path best.ckpt --smiles CCO c1ccccc1 --out preds.csv
    graphmem predict --config recipes/tox21_gat.yaml --ckpt_path best.ckpt \\
        --smiles_file molecules.csv --smiles_column smiles --out preds.csv

The output has one row per input, in input order: ``index`` (the input's position, from 0),
``smiles``, one probability column per task (named as in the data set), and ``error``, which
holds why a SMILES could not be read (its probabilities are then empty). Arguments after
``--`` override the recipe as in ``graphmem fit`` (so that the model matches the checkpoint).
The forward pass is Lightning's ``predict`` loop over the task's ``predict_step``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from lightning.pytorch import LightningModule, Trainer
from torch_geometric.loader import DataLoader

from graphmem.data.molecule import smiles_to_graphs
from graphmem.errors import GraphmemError
from graphmem.recipe import checkpoint_data, load_recipe


def predict_smiles(task: LightningModule, trainer: Trainer, smiles: Sequence[str], task_names: Sequence[str],
                   batch_size: int = 128) -> pd.DataFrame:
    """Probabilities of every task for every SMILES, as ``graphmem predict`` writes them.

    ``task.predict_step`` must return ``(G, T)`` probabilities with ``T = len(task_names)``
    (as :class:`graphmem.lit.GraphPropertyTask` does). Unreadable SMILES get a row with empty
    probabilities and the reason in ``error``.
    """
    graphs, rows, skipped = smiles_to_graphs(smiles)
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
    parser.add_argument("--config", required=True, help="the recipe the model was trained with")
    parser.add_argument("--ckpt_path", required=True, help="the trained weights (a Lightning checkpoint)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--smiles", nargs="+", help="SMILES strings")
    source.add_argument("--smiles_file", help="a CSV file with a column of SMILES")
    parser.add_argument("--smiles_column", default="smiles", help="the SMILES column of --smiles_file")
    parser.add_argument("--out", required=True, help="CSV file to write (a new file, unless --overwrite)")
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


def predict_main(args: list[str]) -> pd.DataFrame:
    """Runs ``graphmem predict ...`` with ``args`` (after ``predict``); returns the written table.

    The task names come from the checkpoint (graphmem stores them there), else from the data
    set's file header.
    """
    from graphmem.data import MoleculeDataModule
    from graphmem.data.molecule import moleculenet_tasks

    overrides = args[args.index("--") + 1:] if "--" in args else []
    options = _parser().parse_args(args[:args.index("--")] if "--" in args else args)
    out = Path(options.out)
    check_out(out, [Path(options.config), Path(options.ckpt_path),
                    *([Path(options.smiles_file)] if options.smiles_file else [])], options.overwrite)
    smiles = options.smiles or read_smiles_file(options.smiles_file, options.smiles_column)
    cli = load_recipe(options.config, options.ckpt_path, ["--trainer.enable_progress_bar", "false", *overrides])
    if not isinstance(cli.datamodule, MoleculeDataModule):
        raise GraphmemError(f"{options.config} does not train on molecules (its data is "
                            f"{type(cli.datamodule).__name__}); --smiles needs a molecule recipe")
    data = cli.datamodule.hparams
    tasks = (checkpoint_data(options.ckpt_path) or {}).get("tasks") or moleculenet_tasks(data.dataset, data.root)
    table = predict_smiles(cli.model, cli.trainer, smiles, tasks, data.batch_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    bad = table.index[table["error"] != ""].tolist()
    summary = f"predicted {len(table) - len(bad)} molecules, {len(bad)} unparseable"
    print(summary + (f" (index {', '.join(map(str, bad))})" if bad else "") + f"; wrote {out}")
    return table
