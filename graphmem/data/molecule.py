"""MoleculeNet property data (Tox21, ClinTox, SIDER, BBBP, BACE, HIV, ToxCast) as PyG graphs.

Molecules are featurised as in OGB (:func:`ogb.utils.features.atom_to_feature_vector`:
9 categorical atom features, 3 categorical bond features, both bond directions), so that
``ogb.graphproppred.mol_encoder.AtomEncoder``/``BondEncoder`` embed them. Missing labels are
``NaN``. SMILES that RDKit cannot read, or that hold no atom, are skipped and reported,
never silently dropped.
"""

from __future__ import annotations

import csv
import gzip
import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from ogb.utils.features import atom_to_feature_vector, bond_to_feature_vector
from rdkit import Chem, RDLogger
from torch_geometric.data import Data

from graphmem.data.download import DataFileError, fetch
from graphmem.errors import GraphmemError

MOLECULENET_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/"


@dataclass(frozen=True)
class MoleculeNetSpec:
    """Where a MoleculeNet set lives and which columns hold what (``tasks=None``: all but SMILES)."""

    filename: str
    tasks: tuple[str, ...] | None
    smiles_column: str = "smiles"

    @property
    def url(self) -> str:
        return MOLECULENET_URL + self.filename


TOX21_TASKS = ("NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD", "NR-PPAR-gamma",
               "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53")

MOLECULENET: dict[str, MoleculeNetSpec] = {
    "tox21": MoleculeNetSpec("tox21.csv.gz", TOX21_TASKS),
    "clintox": MoleculeNetSpec("clintox.csv.gz", ("FDA_APPROVED", "CT_TOX")),
    "sider": MoleculeNetSpec("sider.csv.gz", None),
    "bbbp": MoleculeNetSpec("BBBP.csv", ("p_np",)),
    "bace": MoleculeNetSpec("bace.csv", ("Class",), smiles_column="mol"),
    "hiv": MoleculeNetSpec("HIV.csv", ("HIV_active",)),
    "toxcast": MoleculeNetSpec("toxcast_data.csv.gz", None),
}
ID_COLUMNS = ("mol_id", "num", "name")


class SmilesError(GraphmemError):
    """A SMILES string that cannot become a molecule graph."""


def smiles_to_graph(smiles: str) -> Data:
    """One molecule as a PyG graph with OGB features.

    Returns ``Data(x=(N, 9) long, edge_index=(2, 2B) long, edge_attr=(2B, 3) long, smiles=...)``
    with each bond in both directions. Raises :class:`SmilesError` for an unreadable or empty
    SMILES.
    """
    if not isinstance(smiles, str) or not smiles.strip():
        raise SmilesError("empty SMILES")
    if any(character.isspace() for character in smiles.strip()):
        # RDKit reads what follows the first blank as the molecule's name: "CCO CCC" would be ethanol
        raise SmilesError(f"SMILES {smiles!r} contains whitespace (one SMILES per entry; '.' joins fragments)")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise SmilesError(f"RDKit cannot parse SMILES {smiles!r}")
    if mol.GetNumAtoms() == 0:
        raise SmilesError(f"SMILES {smiles!r} has no atoms")
    x = torch.tensor([atom_to_feature_vector(atom) for atom in mol.GetAtoms()], dtype=torch.long)
    pairs, features = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        feature = bond_to_feature_vector(bond)
        pairs += [(i, j), (j, i)]
        features += [feature, feature]
    edge_index = torch.tensor(pairs, dtype=torch.long).t().reshape(2, -1)
    edge_attr = torch.tensor(features, dtype=torch.long).reshape(-1, 3)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, smiles=smiles)


@dataclass
class SkippedRow:
    """A row of a data file that did not become a graph, and why."""

    row: int
    smiles: str
    reason: str


@dataclass
class MoleculeSet:
    """Graphs and labels of one MoleculeNet set; ``graphs[i].y`` is ``(1, T)`` with ``NaN`` for missing."""

    name: str
    tasks: tuple[str, ...]
    graphs: list[Data]
    rows: list[int]
    skipped: list[SkippedRow] = field(default_factory=list)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.graphs)

    @property
    def smiles(self) -> list[str]:
        return [g.smiles for g in self.graphs]

    @property
    def missing_labels(self) -> tuple[int, int, int]:
        """``(missing, total, unlabelled)``: ``NaN`` label entries, all entries, and molecules
        with no label at all (kept: they still count as molecules, but add nothing to the loss)."""
        if not self.graphs:
            return 0, 0, 0
        missing = torch.isnan(torch.cat([g.y for g in self.graphs]))
        return int(missing.sum()), missing.numel(), int(missing.all(-1).sum())

    def summary(self) -> str:
        line = f"{self.name}: {len(self.graphs)} molecules, {len(self.tasks)} tasks"
        missing, total, unlabelled = self.missing_labels
        if missing:
            line += f", {missing}/{total} labels missing ({100 * missing / total:.1f}%"
            line += f", {unlabelled} molecules unlabelled)" if unlabelled else ")"
        if self.skipped:
            examples = "; ".join(f"row {s.row}: {s.reason}" for s in self.skipped[:3])
            line += f", {len(self.skipped)} rows skipped ({examples}{'; ...' if len(self.skipped) > 3 else ''})"
        return line


def _check_last_line(path: Path) -> None:
    """Raises :class:`DataFileError` when a plain CSV ends inside a row (a cut-off download):
    pandas would fill the missing fields with ``NaN`` and load the rows before it silently.
    Gzipped files need no such check: their truncation fails decompression."""
    with open(path, "rb") as file:
        header = file.readline()
        file.seek(max(0, file.seek(0, os.SEEK_END) - 65536))
        tail = file.read()
    if not tail or tail.endswith(b"\n"):
        return
    last = tail.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
    fields, expected = next(csv.reader([last]), []), next(csv.reader([header.decode("utf-8", "replace")]), [])
    if len(fields) < len(expected):
        raise DataFileError(f"{path} is truncated: its last line has {len(fields)} of {len(expected)} fields "
                            f"and no line end ({last[:60]!r}); delete it and download it again")


def read_table(path: Path, nrows: int | None = None) -> pd.DataFrame:
    """Reads a (possibly gzipped) CSV (its first ``nrows`` rows when given); a truncated or
    corrupted file gives :class:`DataFileError`."""
    try:
        if nrows is None and not str(path).endswith(".gz"):
            _check_last_line(path)
        return pd.read_csv(path, compression="infer", nrows=nrows)
    except (EOFError, OSError, gzip.BadGzipFile, zlib.error, pd.errors.ParserError, UnicodeDecodeError) as error:
        if isinstance(error, DataFileError):
            raise
        raise DataFileError(
            f"{path} is truncated or corrupted ({type(error).__name__}: {error}); delete it and "
            f"download it again"
        ) from error


def task_labels(table: pd.DataFrame, tasks: Sequence[str], source: str | Path) -> torch.Tensor:
    """The ``(rows, tasks)`` labels, ``NaN`` where blank. Anything but 0, 1 or blank (``2``,
    ``-1``, ``yes``) raises :class:`DataFileError` naming the file, column and row; a task
    column without any label is announced with a warning (its ROC-AUC is undefined)."""
    raw = table[list(tasks)]
    labels = raw.apply(pd.to_numeric, errors="coerce")
    bad = (raw.notna() & labels.isna()) | (labels.notna() & ~labels.isin([0, 1]))
    for task in tasks:
        rows = bad.index[bad[task].to_numpy()]
        if len(rows):
            raise DataFileError(f"{source}: column {task!r} row {rows[0]} holds {raw.at[rows[0], task]}; labels "
                                f"must be 0, 1 or blank (missing) ({len(rows)} such rows)")
    empty = [task for task in tasks if labels[task].isna().all()]
    if empty:
        warnings.warn(f"{source}: task columns {empty} hold no label; their metrics will be undefined",
                      stacklevel=3)
    return torch.tensor(labels.to_numpy(dtype="float32"))


def smiles_to_graphs(smiles: Sequence[str]) -> tuple[list[Data], list[int], list[SkippedRow]]:
    """Featurises each SMILES with :func:`smiles_to_graph`.

    Returns the graphs, the position of each in ``smiles``, and the positions that failed with
    the reason (RDKit's own console messages are silenced; the reasons are kept here).
    """
    graphs, rows, skipped = [], [], []
    RDLogger.DisableLog("rdApp.*")
    try:
        for row, text in enumerate(smiles):
            try:
                graphs.append(smiles_to_graph(text))
            except SmilesError as error:
                skipped.append(SkippedRow(row, str(text), str(error)))
                continue
            rows.append(row)
    finally:
        RDLogger.EnableLog("rdApp.*")
    return graphs, rows, skipped


def task_columns(spec: MoleculeNetSpec, columns: Sequence[str]) -> tuple[str, ...]:
    """The label columns of a table with ``columns``: the spec's tasks, else every column but
    the SMILES and identifiers."""
    return spec.tasks or tuple(c for c in columns if c != spec.smiles_column and c not in ID_COLUMNS)


def molecules_from_table(table: pd.DataFrame, name: str, spec: MoleculeNetSpec, path: Path | None = None) -> MoleculeSet:
    """Featurises every row of a MoleculeNet table; unreadable molecules are skipped and counted."""
    if spec.smiles_column not in table.columns:
        raise DataFileError(f"{path or name}: no {spec.smiles_column!r} column (columns: {list(table.columns)})")
    tasks = task_columns(spec, table.columns)
    missing = [t for t in tasks if t not in table.columns]
    if missing:
        raise DataFileError(f"{path or name}: task columns {missing} are missing (columns: {list(table.columns)})")
    labels = task_labels(table, tasks, path or name)
    graphs, rows, skipped = smiles_to_graphs(table[spec.smiles_column].tolist())
    for graph, row in zip(graphs, rows):
        graph.y = labels[row].unsqueeze(0)
    return MoleculeSet(name, tuple(tasks), graphs, rows, skipped, path)


def moleculenet_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """The local file of MoleculeNet set ``name``, downloaded when it is nowhere local."""
    key = name.lower()
    if key not in MOLECULENET:
        raise GraphmemError(f"unknown MoleculeNet set {name!r}; choose one of {sorted(MOLECULENET)}")
    spec = MOLECULENET[key]
    return fetch(f"moleculenet/{spec.filename}", spec.url, root)


def moleculenet_tasks(name: str, root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The task names of MoleculeNet set ``name``, in the order of the model's outputs.

    Sets whose tasks :data:`MOLECULENET` does not list (SIDER, ToxCast) take them from the
    file's header, which is read (and downloaded if need be) for that.
    """
    spec = MOLECULENET.get(name.lower())
    if spec is not None and spec.tasks:
        return spec.tasks
    path = moleculenet_path(name, root)  # also rejects an unknown name
    return task_columns(MOLECULENET[name.lower()], read_table(path, nrows=0).columns)


def load_moleculenet(name: str, root: str | os.PathLike | None = None) -> MoleculeSet:
    """Loads MoleculeNet set ``name`` (see :data:`MOLECULENET`), from the mirror, the cache, or the web.

    Skipped rows are in ``.skipped`` and announced with a warning.
    """
    key = name.lower()
    path = moleculenet_path(key, root)
    molecules = molecules_from_table(read_table(path), key, MOLECULENET[key], path)
    if molecules.skipped:
        warnings.warn(molecules.summary(), stacklevel=2)
    return molecules
