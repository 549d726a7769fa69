"""Ensembles of molecule models: ``graphmem fit --ensemble N`` trains N copies of a recipe with
the seeds ``seed, seed + 1, ...`` and records them in a manifest, which ``graphmem predict``
takes as ``--ckpt_path`` (the folder or its ``ensemble.json``).

    graphmem fit --config recipes/tox21_gat.yaml --ensemble 3   # or the recipe key `ensemble: 3`
    graphmem predict --ckpt_path runs/tox21_gat/lightning_logs/ensemble_0 --smiles CCO --out p.csv

An ensemble is one folder beside the recipe's runs (``<save_dir>/<name>/ensemble_<k>``, the next
free ``k``, or the folder that ``--trainer.logger.init_args.version`` names)::

    ensemble_0/
        ensemble.json        the manifest: data identity and task names, each member's seed,
                             checkpoint and config (paths relative to this folder)
        test_roc_auc.csv     test ROC-AUC per task of every member and of the ensemble
        val_roc_auc.csv      the same on the validation set
        seed_0/ seed_1/ ...  one run folder per member (config.yaml, metrics.csv, checkpoints/)

Every member is trained on the same data and split (the split has its own ``split_seed``); only
the model's seed differs. The ensemble's prediction is the mean of the members' probabilities,
and its spread their standard deviation (over the members, ``ddof=0``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import yaml

from graphmem.errors import GraphmemError
from graphmem.lit.callbacks import DATA_KEY
from graphmem.lit.checkpoint import check_checkpoint
from graphmem.recipe import checkpoint_data, describe_data

if TYPE_CHECKING:
    from graphmem.recipe import GraphmemCLI

MANIFEST = "ensemble.json"
SCORES = "test_roc_auc.csv"
VAL_SCORES = "val_roc_auc.csv"
FORMAT = "graphmem-ensemble"
FORMAT_VERSION = 1
# what a shipped checkpoint keeps (see export_ensemble): enough to build, check and describe the model
SHIPPED_CHECKPOINT_KEYS = ("state_dict", DATA_KEY, "epoch", "global_step", "pytorch-lightning_version")


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: its seed, checkpoint file and the config that builds it."""

    seed: int
    checkpoint: Path
    config: Path


@dataclass(frozen=True)
class Ensemble:
    """An ensemble read from its manifest: the members and the data they were all trained on
    (:func:`graphmem.recipe.checkpoint_data`, task names included)."""

    manifest: Path
    members: tuple[Member, ...]
    data: dict[str, Any]

    @property
    def tasks(self) -> list[str]:
        return list(self.data.get("tasks") or [])


def manifest_path(path: str | os.PathLike) -> Path | None:
    """The manifest that ``path`` names (an ensemble folder or its ``ensemble.json``), or
    ``None`` when ``path`` is something else (a checkpoint file, a missing path)."""
    path = Path(path)
    if path.is_dir():
        return path / MANIFEST
    return path if path.suffix == ".json" else None


def load_ensemble(path: str | os.PathLike) -> Ensemble:
    """Reads the ensemble at ``path`` (a folder or its manifest) and checks every member: its
    checkpoint is readable and was trained on the manifest's data and tasks."""
    manifest = manifest_path(path)
    if manifest is None or not manifest.is_file():
        raise GraphmemError(f"{path} holds no {MANIFEST}: pass an ensemble folder that "
                            f"`graphmem fit --ensemble N` wrote, its {MANIFEST}, or a checkpoint file")
    try:
        record = json.loads(manifest.read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"its format is {record.get('format')!r}, not {FORMAT!r}")
        folder = manifest.parent
        members = tuple(Member(int(m["seed"]), folder / m["checkpoint"], folder / m["config"])
                        for m in record["members"])
        data = dict(record["data"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise GraphmemError(f"{manifest} is not a graphmem ensemble manifest ({error})") from error
    if not members:
        raise GraphmemError(f"{manifest} lists no members")
    for member in members:
        check_checkpoint(member.checkpoint)
        trained = checkpoint_data(member.checkpoint)
        if trained != data:
            raise GraphmemError(f"ensemble {manifest}: member {member.checkpoint} was trained on "
                                f"{describe_data(trained or {'data': 'unknown'})} but the ensemble is of "
                                f"{describe_data(data)}; every member must be trained on the same data "
                                f"and tasks")
    return Ensemble(manifest, members, data)


def write_manifest(folder: Path, members: Sequence[Member], data: dict[str, Any]) -> Path:
    """Writes ``folder/ensemble.json`` for ``members`` (which must lie under ``folder``); an
    existing manifest is never replaced."""
    record = {"format": FORMAT, "version": FORMAT_VERSION, "data": data,
              "members": [{"seed": m.seed, "checkpoint": m.checkpoint.relative_to(folder).as_posix(),
                           "config": m.config.relative_to(folder).as_posix()} for m in members]}
    manifest = folder / MANIFEST
    try:
        with manifest.open("x") as file:  # "x": fails rather than overwrite another ensemble's manifest
            json.dump(record, file, indent=2)
            file.write("\n")
    except FileExistsError as error:
        raise GraphmemError(f"{manifest} exists: another ensemble was written there; it is kept") from error
    return manifest


def export_ensemble(source: str | os.PathLike, destination: str | os.PathLike) -> Ensemble:
    """Copies the ensemble at ``source`` into the new folder ``destination`` for shipping (as
    :mod:`graphmem.pretrained` does): each member's checkpoint keeps its weights and data
    identity only (no optimizer state, callbacks or loop state: a third of the size), and its
    config keeps what builds the model and the data, without the run's paths (the trainer's
    folders, the data root). The scores file comes along. An existing, non-empty
    ``destination`` is refused."""
    ensemble = load_ensemble(source)
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise GraphmemError(f"{destination} already holds files; export the ensemble into a new folder")
    destination.mkdir(parents=True, exist_ok=True)
    members = []
    for member in ensemble.members:
        checkpoint = torch.load(member.checkpoint, map_location="cpu", weights_only=True)
        kept = {key: checkpoint[key] for key in SHIPPED_CHECKPOINT_KEYS if key in checkpoint}
        name = f"seed_{member.seed}"
        shipped = Member(member.seed, destination / f"{name}.ckpt", destination / f"{name}.yaml")
        torch.save(kept, shipped.checkpoint)
        config = {key: value for key, value in yaml.safe_load(member.config.read_text()).items()
                  if key in ("seed_everything", "model", "data")}
        # predicting needs no data (the task names are in the checkpoint): no path of this machine
        config["data"]["init_args"]["root"] = None
        shipped.config.write_text(yaml.safe_dump(config, sort_keys=False))
        members.append(shipped)
    for name in (SCORES, VAL_SCORES):
        if (ensemble.manifest.parent / name).is_file():
            shutil.copyfile(ensemble.manifest.parent / name, destination / name)
    return load_ensemble(write_manifest(destination, members, ensemble.data))


def ensemble_table(tables: Sequence[pd.DataFrame], tasks: Sequence[str]) -> pd.DataFrame:
    """One table from the members' prediction tables (:func:`graphmem.predict.predict_smiles`,
    same inputs in the same order): ``index``, ``smiles``, the mean probability per task (named
    as the task), its standard deviation over the members (``<task>_std``, ``ddof=0``), ``error``."""
    tasks = list(tasks)
    probabilities = np.stack([table[tasks].to_numpy(dtype=float) for table in tables])
    combined = tables[0][["index", "smiles"]].copy()
    combined[tasks] = probabilities.mean(axis=0)
    combined[[f"{task}_std" for task in tasks]] = probabilities.std(axis=0)
    combined["error"] = tables[0]["error"]
    return combined


def ensemble_size(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """The ensemble size that ``fit``'s ``args`` ask for, and ``args`` without ``--ensemble``.

    As jsonargparse reads them, the last word wins: ``--ensemble N`` (or ``--ensemble=N``) on
    the command line, or the ``ensemble: N`` key of a ``--config`` file given after it. ``None``
    when neither is there (one model). A config file that cannot be read is left to the parser,
    which names the problem."""
    rest, size = [], None
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--ensemble":
            size, index = (args[index + 1] if index + 1 < len(args) else ""), index + 2
            continue
        if arg.startswith("--ensemble="):
            size = arg.removeprefix("--ensemble=")
        else:
            rest.append(arg)
            config = args[index + 1] if arg == "--config" and index + 1 < len(args) else (
                arg.removeprefix("--config=") if arg.startswith("--config=") else None)
            size = _config_ensemble(config, size)
        index += 1
    return size, rest


def _config_ensemble(config: str | None, size: str | None) -> str | None:
    """``ensemble`` of the recipe file ``config``, else ``size``."""
    if config is None:
        return size
    try:
        recipe = yaml.safe_load(Path(config).read_text())
    except (OSError, yaml.YAMLError):
        return size
    return str(recipe["ensemble"]) if isinstance(recipe, dict) and "ensemble" in recipe else size


def _ensemble_folder(cli: GraphmemCLI) -> tuple[Path, Path]:
    """(the logger's root folder ``<save_dir>/<name>``, the new ensemble's folder under it)."""
    logger = cli.trainer.logger
    config = cli.config.trainer.logger
    if logger is None or not getattr(logger, "root_dir", None) or not hasattr(config, "init_args"):
        raise GraphmemError("--ensemble puts its members' runs beside the recipe's: the recipe needs a logger "
                            "with a folder (trainer.logger: lightning.pytorch.loggers.CSVLogger)")
    root = Path(logger.root_dir)
    version = config.init_args.get("version")
    if version is None:
        taken = [int(p.name.removeprefix("ensemble_")) for p in root.glob("ensemble_*")
                 if p.name.removeprefix("ensemble_").isdigit()]
        version = f"ensemble_{max(taken, default=-1) + 1}"
    folder = root / str(version)
    if folder.exists() and any(folder.iterdir()):
        raise GraphmemError(f"{folder} already holds files (another ensemble or run); choose a new "
                            f"--trainer.logger.init_args.version")
    return root, folder


def ensemble_fit(args: list[str]) -> Ensemble:
    """Runs ``graphmem fit ... --ensemble N`` (``args`` after ``fit``): trains the members one
    after the other, scores each and their mean on the test set, prints and writes the scores,
    then writes the manifest (so that a manifest always means a finished ensemble)."""
    from lightning.pytorch import LightningDataModule, LightningModule

    from graphmem.cli import main
    from graphmem.data import MoleculeDataModule
    from graphmem.lit.graph import GraphPropertyTask
    from graphmem.recipe import GraphmemCLI

    requested, rest = ensemble_size(args)
    if requested is None or not requested.isdigit() or int(requested) < 2:
        raise GraphmemError(f"an ensemble has at least 2 models (--ensemble or the recipe's ensemble key; got "
                            f"{requested!r}); with ensemble 1, fit trains one model")
    size = int(requested)
    if any(arg.split("=")[0] == "--ckpt_path" for arg in rest):
        raise GraphmemError("--ensemble trains new models and cannot resume one (--ckpt_path); resume a member "
                            "with graphmem fit --config <member>/config.yaml --ckpt_path <its checkpoint>")
    # the recipe as fit would build it, to learn its seed, logger folder and kind before training
    recipe = GraphmemCLI(LightningModule, LightningDataModule, subclass_mode_model=True,
                         subclass_mode_data=True, args=rest, run=False, save_config_callback=None)
    if not isinstance(recipe.datamodule, MoleculeDataModule) or not isinstance(recipe.model, GraphPropertyTask):
        raise GraphmemError(f"--ensemble trains molecule recipes (a GraphPropertyTask on a "
                            f"MoleculeDataModule); this recipe builds {type(recipe.model).__name__} on "
                            f"{type(recipe.datamodule).__name__}")
    seed = recipe.config.get("seed_everything")
    if isinstance(seed, bool) or seed is None:
        raise GraphmemError("--ensemble seeds its members seed, seed + 1, ...: set --seed_everything to "
                            "a number")
    root, folder = _ensemble_folder(recipe)
    members = []
    for seed_i in range(seed, seed + size):
        version = (folder / f"seed_{seed_i}").relative_to(root).as_posix()
        run = main(["fit", *rest, "--ensemble", "1", "--seed_everything", str(seed_i),
                    "--trainer.logger.init_args.version", version])
        best = run.trainer.checkpoint_callback.best_model_path if run.trainer.checkpoint_callback else ""
        if not best:
            raise GraphmemError(f"member seed {seed_i} saved no checkpoint; --ensemble needs the recipe's "
                                f"ModelCheckpoint (trainer.enable_checkpointing)")
        members.append(Member(seed_i, Path(best), Path(run.trainer.log_dir) / "config.yaml"))
    data = checkpoint_data(members[0].checkpoint)
    _score(run, members, folder)
    manifest = write_manifest(folder, members, data)
    print(f"ensemble of {size} models (seeds {seed}-{seed + size - 1}): {manifest}")
    return load_ensemble(manifest)


def _score(run: GraphmemCLI, members: Sequence[Member], folder: Path) -> None:
    """Validation and test ROC-AUC of each member's best checkpoint and of the mean of their
    probabilities: printed as tables and written to ``folder/val_roc_auc.csv`` and
    ``folder/test_roc_auc.csv`` (validation is what chooses between an ensemble and one model).
    ``run`` is the last member's fit; the members differ in their seed only, so its model takes
    every member's weights (and one copy of the data is kept, not one per member)."""
    from graphmem.lit.graph import roc_auc_table
    from graphmem.lit.metrics import multitask_roc_auc

    datamodule = run.datamodule
    datamodule.setup("test")
    loaders = {"validation": datamodule.val_dataloader(), "test": datamodule.test_dataloader()}
    files = {"validation": VAL_SCORES, "test": SCORES}
    probabilities: dict[str, list[torch.Tensor]] = {part: [] for part in loaders}
    for member in members:
        state = torch.load(member.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        run.model.load_state_dict(state)
        for part, loader in loaders.items():
            probabilities[part].append(torch.cat(run.trainer.predict(run.model, dataloaders=loader)).float())
    tasks = list(datamodule.molecules.tasks)
    for part, loader in loaders.items():
        labels = torch.cat([batch.y for batch in loader])
        scored = {f"seed {m.seed}": multitask_roc_auc(labels, p) for m, p in zip(members, probabilities[part])}
        scored["ensemble"] = multitask_roc_auc(labels, torch.stack(probabilities[part]).mean(dim=0))
        print(roc_auc_table(tasks, {name: (per_task, mean) for name, (mean, per_task) in scored.items()}, part))
        scores = pd.DataFrame({name: [*per_task, mean] for name, (mean, per_task) in scored.items()},
                              index=pd.Index([*tasks, "mean"], name="task"))
        scores.to_csv(folder / files[part], mode="x")  # the folder was empty when the ensemble began
