"""Molecule loading, featurisation, splits and data-file errors."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from ogb.utils import smiles2graph

from graphmem.data import DataFileError, MoleculeDataModule, load_moleculenet, smiles_to_graph
from graphmem.data.download import DATA_ENV
from graphmem.data.molecule import SmilesError, TOX21_TASKS
from graphmem.data.splits import random_split, scaffold, scaffold_split
from graphmem.errors import GraphmemError
from tests.conftest import SMILES, molecule_table, write_tox21


@pytest.mark.parametrize("smiles", ["CC(=O)Oc1ccccc1C(=O)O", "CN1CCC[C@H]1c1cccnc1", "[Na+].[Cl-]", "C"])
def test_featurisation_matches_ogb(smiles):
    ours, ref = smiles_to_graph(smiles), smiles2graph(smiles)
    assert torch.equal(ours.x, torch.from_numpy(ref["node_feat"]))
    assert torch.equal(ours.edge_index, torch.from_numpy(ref["edge_index"]))
    assert torch.equal(ours.edge_attr, torch.from_numpy(ref["edge_feat"]).long())


def test_single_atom_has_no_edges():
    graph = smiles_to_graph("[Cu]")
    assert graph.x.shape == (1, 9) and graph.edge_index.shape == (2, 0) and graph.edge_attr.shape == (0, 3)


@pytest.mark.parametrize("smiles, reason", [("", "empty"), ("   ", "empty"), ("C1CC(", "cannot parse"),
                                            (float("nan"), "empty")])
def test_bad_smiles_raise_named_error(smiles, reason):
    with pytest.raises(SmilesError, match=reason):
        smiles_to_graph(smiles)


def test_loader_skips_and_counts_bad_rows(tmp_path):
    table = molecule_table(30, bad=("C1CC(", "", "xyz"))
    write_tox21(tmp_path, table)
    with pytest.warns(UserWarning, match="3 rows skipped"):
        molecules = load_moleculenet("tox21", tmp_path)
    assert len(molecules) == 30 and len(molecules.skipped) == 3
    assert [s.row for s in molecules.skipped] == [30, 31, 32]
    assert molecules.tasks == TOX21_TASKS
    # labels kept row by row, missing ones as NaN
    expected = torch.tensor(table[list(TOX21_TASKS)].to_numpy(dtype="float32"))
    for graph, row in zip(molecules.graphs, molecules.rows):
        assert torch.equal(torch.isnan(graph.y[0]), torch.isnan(expected[row]))
        assert torch.equal(torch.nan_to_num(graph.y[0], -1), torch.nan_to_num(expected[row], -1))


def test_columns_found_by_name_not_position(tmp_path):
    table = molecule_table(10)
    table.insert(len(table.columns), "mol_id", [f"TOX{i}" for i in range(10)])
    table = table[["mol_id"] + list(reversed(TOX21_TASKS)) + ["smiles"]]
    write_tox21(tmp_path, table)
    molecules = load_moleculenet("tox21", tmp_path)
    reference = molecule_table(10)
    assert molecules.smiles == reference["smiles"].tolist()
    assert torch.equal(torch.nan_to_num(molecules.graphs[3].y[0], -1),
                       torch.nan_to_num(torch.tensor(reference.iloc[3][list(TOX21_TASKS)].to_numpy(float),
                                                     dtype=torch.float32), -1))


def test_missing_file_names_places_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHMEM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("graphmem.data.molecule.MOLECULENET_URL", "http://127.0.0.1:9/")
    from graphmem.data.molecule import MOLECULENET, MoleculeNetSpec

    monkeypatch.setitem(MOLECULENET, "tox21", MoleculeNetSpec("tox21.csv.gz", TOX21_TASKS))
    with pytest.raises(DataFileError) as info:
        load_moleculenet("tox21", tmp_path / "mirror")
    message = str(info.value)
    assert str(tmp_path / "mirror" / "moleculenet" / "tox21.csv.gz") in message
    assert "http://127.0.0.1:9/tox21.csv.gz" in message and DATA_ENV in message
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_truncated_file_is_reported(tmp_path):
    path = write_tox21(tmp_path, molecule_table(200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match="truncated or corrupted"):
        load_moleculenet("tox21", tmp_path)


def test_missing_task_column_is_reported(tmp_path):
    write_tox21(tmp_path, molecule_table(5).drop(columns=["SR-p53"]))
    with pytest.raises(DataFileError, match="SR-p53"):
        load_moleculenet("tox21", tmp_path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown MoleculeNet set"):
        load_moleculenet("nope")


def test_random_split_is_a_seeded_partition():
    a = random_split(100, seed=1)
    assert [len(p) for p in a] == [80, 10, 10]
    assert sorted(a[0] + a[1] + a[2]) == list(range(100))
    assert a == random_split(100, seed=1) and a != random_split(100, seed=2)
    with pytest.raises(ValueError, match="fractions"):
        random_split(10, (0.5, 0.5, 0.5))


def test_scaffold_split_keeps_scaffolds_apart():
    smiles = [SMILES[i % len(SMILES)] for i in range(200)]
    train, valid, test = scaffold_split(smiles)
    assert sorted(train + valid + test) == list(range(200))
    scaffolds = [{scaffold(smiles[i]) for i in part} for part in (train, valid, test)]
    assert not scaffolds[0] & scaffolds[2] and not scaffolds[0] & scaffolds[1] and not scaffolds[1] & scaffolds[2]
    assert len(train) <= 160


def test_scaffold_split_breaks_ties_as_deepchem():
    # DeepChem and OGB sort scaffold groups by (size, first index), largest first: among
    # equal groups the one seen last in the file goes to train first, the earliest ones to test.
    # Six toluene-like benzenes (one scaffold), then four single-molecule scaffolds.
    smiles = ["Cc1ccccc1", "CCc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "Clc1ccccc1", "Fc1ccccc1",
              "C1CCCCC1", "c1ccncc1", "C1CCNCC1", "c1ccoc1"]
    train, valid, test = scaffold_split(smiles, (0.7, 0.2, 0.1))
    assert train == [0, 1, 2, 3, 4, 5, 9]
    assert valid == [8, 7]
    assert test == [6]


# Twelve molecules, three scaffold groups of known size and three singletons:
#   benzene c1ccccc1 at 0, 3, 5, 7, 10; cyclohexane C1CCCCC1 at 1, 6; 2-phenylpyrrolidine
#   c1ccc(C2CCCN2)cc1 at 2 and 9 (the two enantiomers: one scaffold only without chirality);
#   pyridine at 4, piperidine at 8, furan at 11.
HAND_SMILES = ["Cc1ccccc1", "CC1CCCCC1", "c1ccc([C@H]2CCCN2)cc1", "CCc1ccccc1", "c1ccncc1", "Oc1ccccc1",
               "OC1CCCCC1", "Nc1ccccc1", "C1CCNCC1", "c1ccc([C@@H]2CCCN2)cc1", "Clc1ccccc1", "c1ccoc1"]


def test_scaffold_drops_chirality_as_deepchem():
    assert scaffold(HAND_SMILES[2]) == scaffold(HAND_SMILES[9]) == "c1ccc(C2CCCN2)cc1"
    assert scaffold(HAND_SMILES[2], include_chirality=True) != scaffold(HAND_SMILES[9], include_chirality=True)
    assert scaffold("CCO") == ""
    with pytest.raises(ValueError, match="cannot parse"):
        scaffold("C1CC")


def test_scaffold_split_follows_deepchem_rule_by_hand():
    # Fractions 0.5/0.25/0.25 of 12: train_cutoff 6, valid_cutoff (cumulative) 9.
    # Groups in order (size, first index) descending: benzene [0,3,5,7,10], pyrrolidine [2,9]
    # (first index 2 beats cyclohexane's 1), cyclohexane [1,6], then furan [11], piperidine [8],
    # pyridine [4].
    #   benzene: 0+5 <= 6 -> train (5)
    #   pyrrolidine: 5+2 > 6; 5+0+2 = 7 <= 9 -> valid
    #   cyclohexane: 5+2 > 6; 5+2+2 = 9 <= 9 -> valid
    #   furan: 5+1 <= 6 -> train (6)
    #   piperidine: 6+1 > 6; 6+4+1 = 11 > 9 -> test; pyridine likewise -> test
    # The old rule (validation compared with frac_valid * n = 3 alone, scaffolds with chirality)
    # gave 6/3/3: train benzene + furan, valid [1, 6, 9], test [8, 4, 2].
    train, valid, test = scaffold_split(HAND_SMILES, (0.5, 0.25, 0.25))
    assert train == [0, 3, 5, 7, 10, 11]
    assert valid == [2, 9, 1, 6]
    assert test == [8, 4]


def test_scaffold_split_cutoffs_are_not_rounded():
    # train_cutoff 0.8 * 12 = 9.6: benzene (5), pyrrolidine (7), cyclohexane (9) go to train;
    # furan: 10 > 9.6, cumulative 9+0+1 = 10 <= 0.9 * 12 = 10.8 -> valid; piperidine: 9+1+1 = 11
    # > 10.8 -> test (rounding 10.8 to 11 would have put it in validation); pyridine -> test.
    train, valid, test = scaffold_split(HAND_SMILES, (0.8, 0.1, 0.1))
    assert train == [0, 3, 5, 7, 10, 2, 9, 1, 6]
    assert valid == [11]
    assert test == [8, 4]


def test_scaffold_split_rejects_unreadable_smiles():
    with pytest.raises(ValueError, match="cannot parse"):
        scaffold_split(["c1ccccc1", "not a molecule"])


@pytest.mark.skipif(not os.environ.get(DATA_ENV), reason="needs the offline mirror ($GRAPHMEM_DATA)")
@pytest.mark.parametrize("name, sizes", [("bbbp", (1631, 204, 204)), ("clintox", (1182, 148, 148)),
                                         ("sider", (1141, 143, 143))])
def test_scaffold_split_sizes_on_mirror(name, sizes):
    # BBBP 1631/204/204 is DeepChem's ScaffoldSplitter on the same 2039 molecules; the old rule
    # gave 1631/203/205, ClinTox 1182/147/149 and SIDER 1141/142/144.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        molecules = load_moleculenet(name)
    split = scaffold_split(molecules.smiles)
    assert tuple(len(part) for part in split) == sizes
    assert sorted(split[0] + split[1] + split[2]) == list(range(len(molecules)))


def test_datamodule_batches(tox21_root):
    dm = MoleculeDataModule(root=str(tox21_root), batch_size=32)
    dm.setup()  # the skipped rows are counted in the printed summary (test_molecule_training)
    assert len(dm.molecules.skipped) == 2
    assert dm.num_tasks == 12
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 32 and batch.y.shape == (32, 12)
    assert sum(len(dm.splits[s]) for s in ("train", "valid", "test")) == 240


def test_task_count_is_known_before_the_molecules_are_loaded(tox21_root):
    # it sizes a recipe's model when the recipe is built; a set whose tasks only its file names
    # (SIDER) reads the header, or takes task_names (a checkpoint's) without any file
    dm = MoleculeDataModule(root=str(tox21_root))
    assert dm.num_tasks == 12 and dm.molecules is None
    named = MoleculeDataModule("sider", root=str(tox21_root / "nowhere"), task_names=["Eye disorders"])
    assert named.tasks == ("Eye disorders",) and named.num_tasks == 1


def test_task_names_other_than_the_file_s_are_refused(tox21_root):
    with pytest.raises(GraphmemError, match=r"has the tasks \['NR-AR', .*not the task_names \['NR-AR'\]"):
        MoleculeDataModule(root=str(tox21_root), task_names=["NR-AR"]).setup()


@pytest.mark.skipif(not os.environ.get(DATA_ENV), reason="needs the offline mirror ($GRAPHMEM_DATA)")
def test_real_tox21_from_mirror():
    with pytest.warns(UserWarning, match="rows skipped"):
        molecules = load_moleculenet("tox21")
    assert len(molecules) + len(molecules.skipped) == 7831
    assert len(molecules.skipped) < 20
    labels = torch.cat([g.y for g in molecules.graphs])
    assert labels.shape == (len(molecules), 12) and torch.isnan(labels).any()

