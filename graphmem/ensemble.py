"""Ensembles: ``graphmem fit --ensemble N`` trains N copies of a recipe with the seeds
``seed, seed + 1, ...`` and records them in a manifest; ``graphmem ensemble`` makes one of runs
already trained (each run a seed of the same recipe, e.g. trained at the same time on several
machines). For molecules, ``graphmem predict`` takes an ensemble as ``--ckpt_path`` (the folder
or its ``ensemble.json``).

    graphmem fit --config recipes/tox21_gat.yaml --ensemble 3   # or the recipe key `ensemble: 3`
    graphmem predict --ckpt_path runs/tox21_gat/lightning_logs/ensemble_0 --smiles CCO --out p.csv
    graphmem ensemble --out runs/babi_10k_ensemble run_s0/.../best.ckpt run_s1/.../best.ckpt

An ensemble is one folder (for ``fit``, beside the recipe's runs: ``<save_dir>/<name>/ensemble_<k>``,
the next free ``k``, or the folder that ``--trainer.logger.init_args.version`` names)::

    ensemble_0/
        ensemble.json        the manifest: data identity (and a molecule set's task names), each
                             member's seed, checkpoint, config (paths relative to this folder) and weight
        test_roc_auc.csv     molecules: test ROC-AUC per task of every member and of the ensemble
        val_roc_auc.csv      the same on the validation set
        test_error.csv       question answering (bAbI): test error per task, the mean and the
        val_error.csv        failed tasks, of every member and of the ensemble; and on validation
        seed_0/ seed_1/ ...  one run folder per member (config.yaml, metrics.csv, checkpoints/)

Every member is trained on the same data and split (the split has its own seed); only the
model's seed differs, or, for an ensemble made of finished runs, also the network (a GAT and a
GATv2, say: each member is built from its own config). Runs of different recipes may share a
seed (the second one's folder is ``seed_<S>b``), as long as their weights differ. The
ensemble's prediction is the weighted mean of the members' probabilities (for a question, the answer is the word of the highest mean probability),
and its spread their weighted standard deviation (``ddof=0``). Every weight is 1 but after a
greedy selection with replacement, where a member's weight is the number of times it was chosen:
the mean and spread of the members counted that many times.
"""

from __future__ import annotations

import json
import os
import shutil
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import yaml

from graphmem.data.fingerprints import add_model_features
from graphmem.errors import GraphmemError
from graphmem.lit.callbacks import DATA_KEY
from graphmem.lit.checkpoint import check_checkpoint
from graphmem.recipe import checkpoint_data, describe_data

if TYPE_CHECKING:
    from graphmem.recipe import GraphmemCLI

MANIFEST = "ensemble.json"
#: the score files of an ensemble's folder, by kind of data and part
SCORE_FILES = {"molecules": {"validation": "val_roc_auc.csv", "test": "test_roc_auc.csv"},
               "qa": {"validation": "val_error.csv", "test": "test_error.csv"}}
#: how ``graphmem ensemble`` chooses its members among the runs it is given
SELECTIONS = ("all", "greedy", "greedy_with_replacement", "cross_validated")
#: the selections that ``cross_validated`` chooses between, the simplest first (it wins a tie)
CROSS_VALIDATED = SELECTIONS[:3]
SELECTION_FILE = "selection.csv"
CROSS_VALIDATION_FILE = "cross_validation.csv"
FORMAT = "graphmem-ensemble"
FORMAT_VERSION = 2  # 2: members' weight and tag (version 1 manifests read as weight 1, no tag)
# what a shipped checkpoint keeps (see export_ensemble): enough to build, check and describe the model
SHIPPED_CHECKPOINT_KEYS = ("state_dict", DATA_KEY, "epoch", "global_step", "pytorch-lightning_version")


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: its seed, checkpoint file and the config that builds it; its
    weight in the ensemble's mean; and a tag (``"b"``, ``"c"``, ...) that tells it from another
    member of the same seed (a run of another recipe)."""

    seed: int
    checkpoint: Path
    config: Path
    weight: int = 1
    tag: str = ""

    @property
    def name(self) -> str:
        """The member's folder (or file) name in an ensemble, ``seed_<S><tag>``."""
        return f"seed_{self.seed}{self.tag}"

    @property
    def label(self) -> str:
        """The member's name in tables, ``seed <S><tag>``."""
        return f"seed {self.seed}{self.tag}"


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
        if record.get("version", 1) > FORMAT_VERSION:
            raise ValueError(f"it is version {record['version']}, newer than this graphmem reads "
                             f"({FORMAT_VERSION}); upgrade graphmem")
        folder = manifest.parent
        members = tuple(Member(int(m["seed"]), folder / m["checkpoint"], folder / m["config"],
                               int(m.get("weight", 1)), str(m.get("tag", ""))) for m in record["members"])
        if any(member.weight < 1 for member in members):
            raise ValueError("a member's weight is below 1")
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
                           "config": m.config.relative_to(folder).as_posix(), "weight": m.weight,
                           "tag": m.tag} for m in members]}
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
    folders, the data root). The score files (and the selection's steps) come along. An existing, non-empty
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
        shipped = Member(member.seed, destination / f"{member.name}.ckpt", destination / f"{member.name}.yaml",
                         member.weight, member.tag)
        torch.save(kept, shipped.checkpoint)
        config = {key: value for key, value in yaml.safe_load(member.config.read_text()).items()
                  if key in ("seed_everything", "model", "data")}
        # predicting needs no data (the task names are in the checkpoint): no path of this machine
        config["data"]["init_args"]["root"] = None
        shipped.config.write_text(yaml.safe_dump(config, sort_keys=False))
        members.append(shipped)
    for name in (*(name for files in SCORE_FILES.values() for name in files.values()), SELECTION_FILE,
                 CROSS_VALIDATION_FILE):
        if (ensemble.manifest.parent / name).is_file():
            shutil.copyfile(ensemble.manifest.parent / name, destination / name)
    return load_ensemble(write_manifest(destination, members, ensemble.data))


def ensemble_table(tables: Sequence[pd.DataFrame], tasks: Sequence[str],
                   weights: Sequence[int] | None = None) -> pd.DataFrame:
    """One table from the members' prediction tables (:func:`graphmem.predict.predict_smiles`,
    same inputs in the same order): ``index``, ``smiles``, the mean probability per task (named
    as the task), its standard deviation over the members (``<task>_std``, ``ddof=0``), ``error``.
    With ``weights`` (one per member), the weighted mean and standard deviation
    :math:`\bar p = \sum_m w_m p_m / \sum_m w_m`, :math:`s^2 = \sum_m w_m (p_m - \bar p)^2 / \sum_m w_m`."""
    tasks = list(tasks)
    probabilities = np.stack([table[tasks].to_numpy(dtype=float) for table in tables])
    mean = np.average(probabilities, axis=0, weights=weights)
    combined = tables[0][["index", "smiles"]].copy()
    combined[tasks] = mean
    combined[[f"{task}_std" for task in tasks]] = np.sqrt(np.average((probabilities - mean) ** 2, axis=0,
                                                                     weights=weights))
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
    _check_kind(recipe, "--ensemble trains")
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
    _score(run, members, folder, members[-1].config)
    manifest = write_manifest(folder, members, data)
    print(f"ensemble of {size} models (seeds {seed}-{seed + size - 1}): {manifest}")
    return load_ensemble(manifest)


def _check_kind(recipe: GraphmemCLI, what: str) -> None:
    """Refuses a recipe whose models an ensemble cannot score: a molecule set's (a
    GraphPropertyTask on a MoleculeDataModule) and bAbI's (a QATask on a BabiDataModule) can."""
    from graphmem.data import BabiDataModule, MoleculeDataModule
    from graphmem.lit.graph import GraphPropertyTask
    from graphmem.lit.qa import QATask

    kinds = ((GraphPropertyTask, MoleculeDataModule), (QATask, BabiDataModule))
    if not any(isinstance(recipe.model, task) and isinstance(recipe.datamodule, data) for task, data in kinds):
        raise GraphmemError(f"{what} molecule recipes (a GraphPropertyTask on a MoleculeDataModule) and "
                            f"question-answering ones (a QATask on a BabiDataModule); this recipe builds "
                            f"{type(recipe.model).__name__} on {type(recipe.datamodule).__name__}")


def assemble_ensemble(checkpoints: Sequence[str | os.PathLike], out: str | os.PathLike,
                      select: str = "all") -> Ensemble:
    """Makes the new folder ``out`` an ensemble of finished runs, one checkpoint of each (what
    ``graphmem ensemble`` runs): copies each run's checkpoint, ``config.yaml`` and
    ``metrics.csv`` into ``out/seed_<S>``, scores the members and their mean as ``fit
    --ensemble`` does, then writes the manifest. Each checkpoint must lie in its run's
    ``checkpoints/`` folder beside the run's ``config.yaml`` (as ``graphmem fit`` saves them);
    the runs must be of the same data; their networks may differ (a GAT and a GATv2, another
    depth), each member is then built from its own config. Runs may share a seed (the second one
    is ``out/seed_<S>b``) but not their weights (the same recipe and seed again).

    ``select="greedy"`` keeps only the runs that :func:`greedy_selection` chooses on the
    validation set (the others are not copied) and writes the selection's steps into
    ``out/selection.csv``; ``"greedy_with_replacement"`` too, each kept run weighted by the number
    of times it was chosen; ``"all"`` keeps every run; ``"cross_validated"`` applies whichever of
    the three :func:`cross_validated_selection` finds best on held-out halves of validation, its
    table in ``out/cross_validation.csv``."""
    from graphmem.recipe import load_recipe

    if select not in SELECTIONS:
        raise GraphmemError(f"--select {select!r} is not a selection; choose one of {', '.join(SELECTIONS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GraphmemError(f"--out {out} already exists and is not an empty folder; name a new folder")
    if len(checkpoints) < 2:
        raise GraphmemError(f"an ensemble has at least 2 models; got {len(checkpoints)} checkpoint(s)")
    runs = []
    for checkpoint in map(Path, checkpoints):
        check_checkpoint(checkpoint)
        config = checkpoint.parent.parent / "config.yaml"
        if checkpoint.parent.name != "checkpoints" or not config.is_file():
            raise GraphmemError(f"{checkpoint} is not in a run's checkpoints/ folder beside its config.yaml (as "
                                f"graphmem fit saves them); the ensemble needs each member's config")
        recipe = yaml.safe_load(config.read_text())
        runs.append((recipe.get("seed_everything"), checkpoint, config, recipe))
    seeds = [seed for seed, *_ in runs]
    if any(isinstance(seed, bool) or not isinstance(seed, int) for seed in seeds):
        raise GraphmemError(f"the members' seeds (seed_everything of their config.yaml) are {seeds}: an ensemble's "
                            f"members are runs with numeric seeds")
    _refuse_twins([(seed, checkpoint) for seed, checkpoint, *_ in runs])
    data = [checkpoint_data(checkpoint) or {"data": "unknown"} for _, checkpoint, *_ in runs]
    if any(identity != data[0] for identity in data):
        raise GraphmemError(f"the members were trained on different data ({'; '.join(map(describe_data, data))}); "
                            f"an ensemble's members share their data and split")
    run_config = runs[0][2]  # the config that builds ``run``'s network, before the runs are put in seed order
    run = load_recipe(str(run_config), str(runs[0][1]), ["--trainer.enable_progress_bar", "false"])
    _check_kind(run, "an ensemble is made of")
    runs.sort(key=lambda run: run[0])  # stable: runs that share a seed keep the order they were given in
    candidates, earlier = [], Counter()
    for seed, checkpoint, config, _ in runs:
        candidates.append(Member(seed, checkpoint, config, tag=_tag(earlier[seed])))
        earlier[seed] += 1
    loaders = _loaders(run)
    probabilities = _member_probabilities(run, candidates, loaders, run_config)
    chosen = list(range(len(candidates)))
    out.mkdir(parents=True, exist_ok=True)
    if select != "all":
        score = _row_scorer(run, loaders["validation"])
        validation = probabilities["validation"]
        if select == "cross_validated":
            method, table, chosen, path = cross_validated_selection(validation, score)
            table.to_csv(out / CROSS_VALIDATION_FILE, mode="x")
            print(f"cross-validated selection: on held-out halves of validation (mean of {len(table.columns) - 2} "
                  f"folds) {method.replace('_', ' ')} scores best:\n{table[['held_out', 'std']].to_string()}")
        else:
            method = select
            chosen, path = select_members(select, validation, score, torch.arange(len(validation[0])))
        if method != "all":
            steps = pd.DataFrame({"added": [candidates[i].label for i in chosen], "validation": path,
                                  "run": [str(candidates[i].checkpoint) for i in chosen]},
                                 index=pd.RangeIndex(1, len(chosen) + 1, name="size"))
            steps.to_csv(out / SELECTION_FILE, mode="x")
            print(f"{method.replace('_', ' ')} selection on validation ({len(set(chosen))} of {len(candidates)} "
                  f"runs, {len(chosen)} steps):\n{steps.drop(columns='run').to_string()}")
    weights = Counter(chosen)
    members = []
    for index in sorted(weights):  # members in seed order, as without selection
        candidate = candidates[index]
        folder = out / candidate.name
        (folder / "checkpoints").mkdir(parents=True)
        member = Member(candidate.seed, folder / "checkpoints" / candidate.checkpoint.name, folder / "config.yaml",
                        weights[index], candidate.tag)
        shutil.copyfile(candidate.checkpoint, member.checkpoint)
        shutil.copyfile(candidate.config, member.config)
        if (candidate.config.parent / "metrics.csv").is_file():
            shutil.copyfile(candidate.config.parent / "metrics.csv", folder / "metrics.csv")
        members.append(member)
    kept = {part: [p[i] for i in sorted(weights)] for part, p in probabilities.items()}
    _write_scores(run, members, loaders, kept, out)
    manifest = write_manifest(out, members, data[0])
    described = ", ".join(m.label.removeprefix("seed ") + (f" (weight {m.weight})" if m.weight > 1 else "")
                          for m in members)
    print(f"ensemble of {len(members)} models (seeds {described}): {manifest}")
    return load_ensemble(manifest)


def greedy_selection(probabilities: Sequence[torch.Tensor], score: Callable[[torch.Tensor], float],
                     replacement: bool = False) -> tuple[list[int], list[float]]:
    """Forward selection of ensemble members (Caruana et al., "Ensemble selection from libraries
    of models", ICML 2004): begin with the candidate of the best ``score`` alone; at each step
    add the candidate whose addition gives the best score of the members' mean probability; stop
    when no addition improves it (ties keep the smaller ensemble).

    Without ``replacement`` a candidate is added once at most. With it (the paper's section 2.1),
    a candidate may be added again, so that after ``k`` steps the prediction is
    :math:`\frac1k \sum_m c_m p_m`, the mean weighted by how many times ``c_m`` each was added.

    ``probabilities``: one tensor per candidate, all of one shape (the validation set's
    predictions); ``score``: higher is better. Returns the indices added at each step (with
    replacement an index may recur) and the score after each step."""
    if not probabilities:
        raise GraphmemError("greedy selection needs at least one candidate")
    chosen: list[int] = []
    path: list[float] = []
    total = torch.zeros_like(probabilities[0])
    # the score rises at every step and takes finitely many values, so selection with replacement ends too
    while replacement or len(chosen) < len(probabilities):
        trials = {i: score((total + p) / (len(chosen) + 1)) for i, p in enumerate(probabilities)
                  if replacement or i not in chosen}
        best = max(trials, key=lambda i: (trials[i], -i))  # the first candidate among equals
        if path and trials[best] <= path[-1]:
            break
        chosen.append(best)
        path.append(trials[best])
        total = total + probabilities[best]
    return chosen, path


def _row_scorer(run: GraphmemCLI, loader: Any) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """The score that selects members, higher is better, of the probabilities of ``loader``'s
    rows ``rows`` (an index tensor): the mean ROC-AUC over the tasks for molecules, minus the mean
    error per task for question answering."""
    from graphmem.data import BabiDataModule
    from graphmem.lit.metrics import multitask_roc_auc
    from graphmem.lit.qa import per_task_error

    batches = list(loader)
    if isinstance(run.datamodule, BabiDataModule):
        answers, tasks = torch.cat([batch[2] for batch in batches]), torch.cat([batch[3] for batch in batches])

        def qa_score(probability: torch.Tensor, rows: torch.Tensor) -> float:
            errors = per_task_error(probability.argmax(-1), answers[rows], tasks[rows])
            return -sum(errors.values()) / len(errors)

        return qa_score
    labels = torch.cat([batch.y for batch in batches])
    return lambda probability, rows: multitask_roc_auc(labels[rows], probability)[0]


def select_members(method: str, probabilities: Sequence[torch.Tensor],
                   score: Callable[[torch.Tensor, torch.Tensor], float],
                   rows: torch.Tensor) -> tuple[list[int], list[float]]:
    """The candidates that selection ``method`` (one of :data:`CROSS_VALIDATED`) chooses on the
    validation rows ``rows``, an index repeated for each time it was chosen, and the score after
    each step (``"all"``: every candidate, one step). ``probabilities``: one tensor per candidate
    over all validation rows; ``score(probability of rows, rows)``: higher is better."""
    if method == "all":
        everyone = list(range(len(probabilities)))
        return everyone, [score(_mean(probabilities, everyone, rows), rows)]
    if method not in CROSS_VALIDATED:
        raise GraphmemError(f"{method!r} is not a selection of members; choose one of {', '.join(CROSS_VALIDATED)}")
    return greedy_selection([p[rows] for p in probabilities], lambda p: score(p, rows),
                            replacement=method == "greedy_with_replacement")


def validation_folds(size: int, repeats: int = 5, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``repeats`` random halvings of ``size`` validation rows, each as two folds
    ``(rows to select on, held-out rows)``, the one the other's mirror: ``2 * repeats`` folds."""
    generator = torch.Generator().manual_seed(seed)
    folds = []
    for _ in range(repeats):
        order = torch.randperm(size, generator=generator)
        first, second = order[:size // 2].sort().values, order[size // 2:].sort().values
        folds += [(first, second), (second, first)]
    return folds


def cross_validated_selection(probabilities: Sequence[torch.Tensor],
                              score: Callable[[torch.Tensor, torch.Tensor], float], repeats: int = 5,
                              seed: int = 0) -> tuple[str, pd.DataFrame, list[int], list[float]]:
    """Chooses between the selections :data:`CROSS_VALIDATED` on validation alone: each selects
    members on one half of the validation rows and is scored on the other half
    (:func:`validation_folds`); the selection of the best mean held-out score (the simplest of
    equals) then selects on all of validation. A greedy selection's own validation score is
    optimistic, the more so the more runs it chooses from, since it is the score it maximised;
    the held-out halves tell whether its choice carries to molecules it did not choose on.

    Returns the selection's name, the table of held-out scores (a row per selection: the mean
    ``held_out``, its ``std`` and one column per fold), and what :func:`select_members` returns
    for it on all rows."""
    folds = validation_folds(len(probabilities[0]), repeats, seed)
    held_out = {method: [] for method in CROSS_VALIDATED}
    for fit, test in folds:
        for method in CROSS_VALIDATED:
            chosen, _ = select_members(method, probabilities, score, fit)
            held_out[method].append(score(_mean(probabilities, chosen, test), test))
    table = pd.DataFrame(held_out, index=pd.RangeIndex(1, len(folds) + 1, name="fold")).T
    table.insert(0, "std", table.std(axis=1, ddof=0))
    table.insert(0, "held_out", table.drop(columns="std").mean(axis=1))
    table.index.name = "selection"
    best = max(CROSS_VALIDATED, key=lambda method: (table.loc[method, "held_out"], -CROSS_VALIDATED.index(method)))
    return (best, table, *select_members(best, probabilities, score, torch.arange(len(probabilities[0]))))


def _mean(probabilities: Sequence[torch.Tensor], chosen: Sequence[int], rows: torch.Tensor) -> torch.Tensor:
    """The mean probability on ``rows`` of the candidates ``chosen``, each as many times as it is listed."""
    return torch.stack([probabilities[i][rows] for i in chosen]).mean(dim=0)


def ensemble_main(args: Sequence[str]) -> Ensemble:
    """``graphmem ensemble --out FOLDER CHECKPOINT CHECKPOINT ...`` (``args`` after ``ensemble``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="graphmem ensemble",
                                     description="make an ensemble of finished runs of one recipe (different seeds): "
                                                 "copy them into a new folder, score the members and their mean "
                                                 "probability on validation and test, write the manifest")
    parser.add_argument("--out", required=True, help="the new folder of the ensemble")
    parser.add_argument("--select", choices=SELECTIONS, default="all",
                        help="all: every run is a member; greedy: forward selection on the validation set "
                             "(Caruana et al. 2004), the steps written into selection.csv; greedy_with_replacement: "
                             "the same, a run may be chosen again (its weight: how many times); cross_validated: "
                             "whichever of the three scores best on held-out halves of validation "
                             "(cross_validation.csv)")
    parser.add_argument("checkpoints", nargs="+", help="one checkpoint of each run (in its checkpoints/ folder)")
    options = parser.parse_args(list(args))
    return assemble_ensemble(options.checkpoints, options.out, options.select)


def _refuse_twins(runs: Sequence[tuple[int, Path]]) -> None:
    """Refuses two of ``runs`` (seed, checkpoint) that hold the same weights: the same recipe and
    seed train the same weights again (training is deterministic), one model twice. Only the
    checkpoints of a seed that several runs share are read, each once."""
    shared = {seed for seed, count in Counter(seed for seed, _ in runs).items() if count > 1}
    seen: list[tuple[int, Path, dict[str, torch.Tensor]]] = []
    for seed, checkpoint in runs:
        if seed not in shared:
            continue
        weights = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        twin = next((other for other_seed, other, theirs in seen if other_seed == seed and _equal(weights, theirs)),
                    None)
        if twin is not None:
            raise GraphmemError(f"{checkpoint} and {twin} hold the same weights (seed {seed}): an ensemble's "
                                f"members are different models, runs of another seed or another recipe")
        seen.append((seed, checkpoint, weights))


def _equal(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same tensors under the same names."""
    return first.keys() == second.keys() and all(
        first[name].shape == second[name].shape and torch.equal(first[name], second[name]) for name in first)


def _tag(earlier: int) -> str:
    """The tag of a member after ``earlier`` members of its seed: none, then ``b``, ``c``, ... ``z``,
    then the count (``_26``, ...)."""
    return "" if earlier == 0 else string.ascii_lowercase[earlier] if earlier < 26 else f"_{earlier}"


def _network(config: Path) -> str:
    """The network a run's ``config.yaml`` builds (``model.init_args.model``), as comparable text."""
    return json.dumps(yaml.safe_load(config.read_text())["model"]["init_args"].get("model"), sort_keys=True)


def _member_probabilities(run: GraphmemCLI, members: Sequence[Member], loaders: dict[str, Any],
                          run_config: Path) -> dict[str, list[torch.Tensor]]:
    """Each member's predicted probabilities on each of ``loaders``, by part. Members of one
    network share one model, which takes their weights in turn: ``run``'s for the network of
    ``run_config`` (the config ``run`` was built from); a member of another network gets a
    model built from its own config. One copy of the data serves them all."""
    from graphmem.recipe import load_recipe

    models: dict[str, Any] = {_network(run_config): run.model}
    probabilities: dict[str, list[torch.Tensor]] = {part: [] for part in loaders}
    for member in members:
        network = _network(member.config)
        if network not in models:
            models[network] = load_recipe(str(member.config), str(member.checkpoint),
                                          ["--trainer.enable_progress_bar", "false"]).model
        model = models[network]
        molecules = getattr(run.datamodule, "molecules", None)
        if molecules is not None:  # a forest beside a GAT reads fingerprints the GAT's recipe does not load
            add_model_features(model.model, molecules.graphs)
        checkpoint = torch.load(member.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["state_dict"])
        model.on_load_checkpoint(checkpoint)  # what the checkpoint holds beside the weights
        for part, loader in loaders.items():
            probabilities[part].append(torch.cat(run.trainer.predict(model, dataloaders=loader)).float())
    return probabilities


def _score(run: GraphmemCLI, members: Sequence[Member], folder: Path, run_config: Path) -> None:
    """Scores each member's checkpoint and the mean of their probabilities on the validation and
    test sets (validation is what chooses between an ensemble and one model): printed as tables
    and written into ``folder`` (:data:`SCORE_FILES`), as ROC-AUC per task for molecules
    (``val_roc_auc.csv``, ``test_roc_auc.csv``) and as error per task for question answering
    (``val_error.csv``, ``test_error.csv``). ``run`` is a recipe built for the members' data
    (the last member's fit, or :func:`graphmem.recipe.load_recipe`) from ``run_config``."""
    loaders = _loaders(run)
    _write_scores(run, members, loaders, _member_probabilities(run, members, loaders, run_config), folder)


def _loaders(run: GraphmemCLI) -> dict[str, Any]:
    """The validation and test loaders of ``run``'s data, by part."""
    run.datamodule.setup("test")
    return {"validation": run.datamodule.val_dataloader(), "test": run.datamodule.test_dataloader()}


def _write_scores(run: GraphmemCLI, members: Sequence[Member], loaders: dict[str, Any],
                  probabilities: dict[str, list[torch.Tensor]], folder: Path) -> None:
    """Prints and writes (:data:`SCORE_FILES`) the scores of each member's ``probabilities``
    and of their mean, by part."""
    from graphmem.data import BabiDataModule

    kind = "qa" if isinstance(run.datamodule, BabiDataModule) else "molecules"
    for part, loader in loaders.items():
        models = {m.label: p for m, p in zip(members, probabilities[part])}
        weights = torch.tensor([float(m.weight) for m in members]).view(-1, *[1] * probabilities[part][0].dim())
        models["ensemble"] = (torch.stack(probabilities[part]) * weights).sum(dim=0) / weights.sum()
        table, scores = (_qa_scores if kind == "qa" else _molecule_scores)(run, loader, models, part)
        print(table)
        scores.to_csv(folder / SCORE_FILES[kind][part], mode="x")  # the folder was empty when the ensemble began


def _molecule_scores(run: GraphmemCLI, loader: Any, models: dict[str, torch.Tensor],
                     part: str) -> tuple[str, pd.DataFrame]:
    """(the printed table, the scores file) of ROC-AUC per task and its mean, one column per model."""
    from graphmem.lit.graph import roc_auc_table
    from graphmem.lit.metrics import multitask_roc_auc

    tasks = list(run.datamodule.molecules.tasks)
    labels = torch.cat([batch.y for batch in loader])
    scored = {name: multitask_roc_auc(labels, p) for name, p in models.items()}
    table = roc_auc_table(tasks, {name: (per_task, mean) for name, (mean, per_task) in scored.items()}, part)
    scores = pd.DataFrame({name: [*per_task, mean] for name, (mean, per_task) in scored.items()},
                          index=pd.Index([*tasks, "mean"], name="task"))
    return table, scores


def _qa_scores(run: GraphmemCLI, loader: Any, models: dict[str, torch.Tensor],
               part: str) -> tuple[str, pd.DataFrame]:
    """(the printed table, the scores file) of the error per task (the answer is the most
    probable word), its mean and the failed tasks, one column per model."""
    from graphmem.lit.qa import compare_error_table, per_task_error

    answers = torch.cat([batch[2] for batch in loader])
    tasks = torch.cat([batch[3] for batch in loader])
    errors = {name: per_task_error(p.argmax(-1), answers, tasks) for name, p in models.items()}
    threshold = run.model.hparams.failure_threshold
    table = compare_error_table(errors, threshold, part)
    rows = [f"qa{task}" for task in next(iter(errors.values()))]
    scores = pd.DataFrame({name: [*(round(e, 4) for e in per_task.values()),
                                  round(sum(per_task.values()) / len(per_task), 4),
                                  sum(e > threshold for e in per_task.values())]
                           for name, per_task in errors.items()},
                          index=pd.Index([*rows, "mean", "failed"], name="task"), dtype=object)
    return table, scores
