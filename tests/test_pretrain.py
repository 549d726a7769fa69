"""Attribute-masking pretraining: the mask, what the masked atoms hide, the held-out molecules of the
corpus, and fine-tuning that starts from the pretrained encoder."""

from __future__ import annotations

import gzip
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

from graphmem.cli import main
from graphmem.data import (MoleculeDataModule, MoleculePretrainDataModule, make_split, molecule_keys, scaffold_split,
                           smiles_to_graph)
from graphmem.errors import GraphmemError
from graphmem.lit import AttributeMaskingTask, GraphPropertyTask, atom_mask, load_encoder
from graphmem.models import MoleculeGAT
from graphmem.models.molecule import ENCODER
from graphmem.recipe import RECIPES_DIR
from tests.conftest import SMILES, molecule_table, write_tox21


def _batch(smiles: list[str]) -> Batch:
    return Batch.from_data_list([smiles_to_graph(s) for s in smiles])


def _network(**kwargs) -> MoleculeGAT:
    return MoleculeGAT(num_tasks=12, **{"hidden_channels": 16, "heads": 2, "num_layers": 3, **kwargs})


def test_atom_mask_picks_a_rounded_share_of_each_molecule_at_least_one():
    # 2, 7, 20 and 1 atoms: round(0.15 n) is 0, 1, 3, 0, and at least one is masked
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor([2, 7, 20, 1]))
    mask = atom_mask(batch, 0.15, torch.Generator().manual_seed(0))
    assert torch.bincount(batch[mask], minlength=4).tolist() == [1, 1, 3, 1]
    again = atom_mask(batch, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    picks = {tuple(atom_mask(batch, 0.15, torch.Generator().manual_seed(seed)).nonzero().flatten().tolist())
             for seed in range(20)}
    assert len(picks) > 10  # at random, not the first atoms of each molecule


def test_atom_mask_is_uniform_within_a_molecule():
    batch = torch.zeros(5, dtype=torch.long)
    counts = sum(atom_mask(batch, 0.2, torch.Generator().manual_seed(seed)).long() for seed in range(2000))
    assert counts.sum() == 2000
    assert torch.allclose(counts.float() / 2000, torch.full((5,), 0.2), atol=0.03)


def test_the_masked_atoms_hide_what_they_are():
    torch.manual_seed(0)
    task = AttributeMaskingTask(_network(virtual_node=True)).eval()
    batch = _batch(["CC(=O)Oc1ccccc1C(=O)O", "c1ccncc1"])
    mask = torch.zeros(batch.num_nodes, dtype=torch.bool)
    mask[[0, 4, 13]] = True
    logits = task(batch, mask)
    changed = batch.clone()
    changed.x[mask] = torch.tensor([16, 0, 1, 4, 0, 0, 0, 1, 1])  # another element, charge and ring: hidden
    assert torch.allclose(task(changed, mask), logits)
    unmasked = batch.clone()
    unmasked.x[5] = torch.tensor([16, 0, 1, 4, 0, 0, 0, 1, 1])  # a visible atom's change is seen
    assert not torch.allclose(task(unmasked, mask), logits)


def test_the_loss_is_cross_entropy_of_the_masked_elements_by_hand():
    torch.manual_seed(0)
    task = AttributeMaskingTask(_network()).eval()
    with torch.no_grad():
        task.mask_token.normal_()
    batch = _batch(["CCN(CC)CC", "Clc1ccccc1"])
    mask = atom_mask(batch.batch, 0.3, torch.Generator().manual_seed(1))
    network = task.model
    h = network.atom_encoder(batch.x)
    h[mask] = task.mask_token
    for conv, bond_encoder, norm in zip(network.convs, network.bond_encoders, network.norms):
        h = h + F.elu(norm(conv(h, batch.edge_index, bond_encoder(batch.edge_attr))))
    expected = F.cross_entropy(task.classifier(h[mask]), batch.x[mask, 0])
    assert torch.allclose(F.cross_entropy(task(batch, mask), batch.x[mask, 0]), expected, atol=1e-6)
    assert task.classifier.out_features == 119


def test_pretraining_learns_elements_from_their_neighbours():
    torch.manual_seed(0)
    graphs = [smiles_to_graph(s) for s in SMILES * 8]
    task = AttributeMaskingTask(_network(), mask_rate=0.3, lr=3e-3)
    optimizer = task.configure_optimizers()
    batch = Batch.from_data_list(graphs)
    task.eval()
    with torch.no_grad():
        before = F.cross_entropy(task(batch, mask := atom_mask(batch.batch, 0.3, torch.Generator().manual_seed(0))),
                                 batch.x[mask, 0])
    task.train()
    for _ in range(200):
        optimizer.zero_grad()
        F.cross_entropy(task(batch, m := atom_mask(batch.batch, 0.3)), batch.x[m, 0]).backward()
        optimizer.step()
    task.eval()
    with torch.no_grad():
        logits = task(batch, mask)
    target = batch.x[mask, 0]
    carbon_share = float((target == 5).float().mean())  # element index 5 is carbon: the majority guess
    assert F.cross_entropy(logits, target) < 0.5 * before
    assert float((logits.argmax(-1) == target).float().mean()) > carbon_share + 0.05


def _pretrained_checkpoint(tmp_path: Path, network: MoleculeGAT) -> Path:
    task = AttributeMaskingTask(network)
    path = tmp_path / "pretrained.ckpt"
    torch.save({"state_dict": task.state_dict()}, path)
    return path


def test_load_encoder_copies_the_encoder_and_leaves_the_head(tmp_path: Path):
    torch.manual_seed(0)
    source = _network(virtual_node=True)
    for parameter in source.parameters():
        parameter.data.normal_()
    source.norms[0].running_mean.fill_(3.0)
    target = _network(virtual_node=True)
    head = {key: value.clone() for key, value in target.state_dict().items() if key.startswith("head.")}
    copied = load_encoder(target, _pretrained_checkpoint(tmp_path, source))
    state, pretrained = target.state_dict(), source.state_dict()
    encoder = [key for key in state if not key.startswith("head.")]
    assert copied == len(encoder)
    for key in encoder:
        assert torch.equal(state[key], pretrained[key]), key
    for key, value in head.items():
        assert torch.equal(state[key], value), key


def test_load_encoder_refuses_another_architecture_naming_the_tensor(tmp_path: Path):
    path = _pretrained_checkpoint(tmp_path, _network(hidden_channels=32))
    with pytest.raises(GraphmemError, match=r"atom_encoder.atom_embedding_list.0.weight is \(119, 32\) there, "
                                            r"\(119, 16\) here; pretrain with the same hidden_channels"):
        load_encoder(_network(), path)
    plain = _pretrained_checkpoint(tmp_path, _network())
    with pytest.raises(GraphmemError, match="virtual_mlps.0.0.bias is missing there.*same num_layers, score and "
                                            "virtual_node"):
        load_encoder(_network(virtual_node=True), plain)


def test_load_encoder_refuses_a_checkpoint_without_an_encoder_and_a_missing_file(tmp_path: Path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.cell.weight": torch.zeros(2)}}, other)
    with pytest.raises(GraphmemError, match="holds no molecule encoder"):
        load_encoder(_network(), other)
    with pytest.raises(GraphmemError, match="does not exist"):
        load_encoder(_network(), tmp_path / "missing.ckpt")


def _write(root: Path, filename: str, table: pd.DataFrame) -> None:
    path = root / "moleculenet" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if filename.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            table.to_csv(f, index=False)
    else:
        table.to_csv(path, index=False)


def test_the_corpus_leaves_out_the_downstream_held_out_molecules_and_their_stereoisomers(tmp_path: Path):
    write_tox21(tmp_path, molecule_table(len(SMILES)))  # SMILES, once each
    _, valid, test = scaffold_split(SMILES)
    held_out = [SMILES[i] for i in [*valid, *test]]
    train = [SMILES[i] for i in range(len(SMILES)) if i not in {*valid, *test}]
    assert "CN1CCC[C@H]1c1cccnc1" in held_out  # nicotine: its other enantiomer is left out too
    new = ["CCCCO", "c1ccc2[nH]ccc2c1"]
    # a held-out molecule, a stereoisomer of one, a train molecule of Tox21, two new ones, an unreadable row
    bbbp = pd.DataFrame({"smiles": [held_out[0], "CN1CCC[C@@H]1c1cccnc1", train[0], *new, "C1CC("],
                         "p_np": [1, 0, 1, 0, 1, 0]})
    _write(tmp_path, "BBBP.csv", bbbp)
    data = MoleculePretrainDataModule(datasets=["tox21", "bbbp"], root=str(tmp_path), val_fraction=0.2)
    data.setup()
    corpus = [graph.smiles for part in ("train", "valid") for graph in data.splits[part]]
    assert sorted(corpus) == sorted(train + new)
    assert data.counts == {"molecules": len(train) + 2, "skipped": 1, "duplicates": 1, "excluded": len(held_out) + 2}
    assert len(data.splits["valid"]) == round(0.2 * (len(train) + 2))
    assert data.num_tasks == 12
    assert "y" not in data.splits["train"][0]


def test_a_supervised_set_leaves_out_the_downstream_held_out_molecules_before_its_split(tmp_path: Path):
    write_tox21(tmp_path, molecule_table(len(SMILES)))
    _, valid, test = scaffold_split(SMILES)
    held_out = {SMILES[i] for i in [*valid, *test]}
    train = [SMILES[i] for i in range(len(SMILES)) if SMILES[i] not in held_out]
    # ten new molecules keep the random split's parts non-empty; nicotine's other enantiomer is left out too
    new = ["C" * n + "O" for n in range(1, 11)]
    smiles = [*sorted(held_out), "CN1CCC[C@@H]1c1cccnc1", *train, *new]
    _write(tmp_path, "BBBP.csv", pd.DataFrame({"smiles": smiles, "p_np": [i % 2 for i in range(len(smiles))]}))
    data = MoleculeDataModule(dataset="bbbp", split="random", root=str(tmp_path), exclude="tox21")
    data.setup()
    kept = [graph.smiles for part in ("train", "valid", "test") for graph in data.splits[part]]
    assert sorted(kept) == sorted(train + new)
    assert data.excluded == len(held_out) + 1
    assert [len(data.splits[part]) for part in ("train", "valid", "test")] == [
        len(part) for part in make_split("random", train + new, (0.8, 0.1, 0.1), 0)]
    # without exclude every row is there
    everything = MoleculeDataModule(dataset="bbbp", split="random", root=str(tmp_path))
    everything.setup()
    assert sum(len(part) for part in everything.splits.values()) == len(smiles)
    with pytest.raises(GraphmemError, match="unknown MoleculeNet set 'zinc' to exclude"):
        MoleculeDataModule(dataset="bbbp", exclude="zinc")


def test_the_corpus_refuses_unknown_sets_and_a_bad_val_fraction():
    with pytest.raises(GraphmemError, match=r"unknown MoleculeNet set\(s\) \['zinc'\]"):
        MoleculePretrainDataModule(datasets=["zinc"])
    with pytest.raises(GraphmemError, match="val_fraction must be between 0 and 1"):
        MoleculePretrainDataModule(val_fraction=1.0)


def test_pretrain_then_fine_tune_through_the_recipes(tmp_path: Path):
    table = molecule_table(240)
    write_tox21(tmp_path, table)
    small = ["--model.init_args.model.init_args.hidden_channels", "16", "--trainer.max_epochs", "1",
             "--trainer.enable_progress_bar", "false"]
    pretrain = main(["fit", "--config", str(RECIPES_DIR / "molecule_pretrain.yaml"), "--data.init_args.datasets",
                     "[tox21]", "--data.init_args.root", str(tmp_path), "--data.init_args.batch_size", "32", *small,
                     "--trainer.default_root_dir", str(tmp_path / "pre"),
                     "--trainer.logger.init_args.save_dir", str(tmp_path / "pre")])
    checkpoint = next((tmp_path / "pre").rglob("*.ckpt"))
    assert {"val_loss", "val_accuracy"} <= set(pretrain.trainer.callback_metrics)
    fine = main(["fit", "--config", str(RECIPES_DIR / "tox21_gat_scaffold.yaml"), "--data.init_args.root",
                 str(tmp_path), *small, "--trainer.limit_train_batches", "0", "--test_after_fit", "false",
                 "--model.init_args.model.init_args.virtual_node", "true",
                 "--model.init_args.pretrained", str(checkpoint),
                 "--trainer.default_root_dir", str(tmp_path / "fine"),
                 "--trainer.logger.init_args.save_dir", str(tmp_path / "fine")])
    pretrained = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in fine.model.state_dict().items():
        if key.split(".")[1] in ENCODER:
            assert torch.equal(value, pretrained[key]), key


def test_a_resumed_fine_tuning_takes_its_checkpoint_not_the_pretrained_file(tmp_path: Path):
    write_tox21(tmp_path, molecule_table(240))
    pretrained = _pretrained_checkpoint(tmp_path, _network(num_layers=4))
    args = ["fit", "--config", str(RECIPES_DIR / "tox21_gat_scaffold.yaml"), "--data.init_args.root", str(tmp_path),
            "--model.init_args.model.init_args.hidden_channels", "16", "--model.init_args.model.init_args.heads", "2",
            "--model.init_args.pretrained", str(pretrained), "--trainer.limit_train_batches", "2",
            "--test_after_fit", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger.init_args.save_dir", str(tmp_path / "run")]
    first = main([*args, "--trainer.max_epochs", "1"])
    trained = {key: value.clone() for key, value in first.model.state_dict().items()}
    pretrained.unlink()  # resuming needs only the run's own checkpoint
    resumed = main([*args, "--trainer.max_epochs", "1", "--ckpt_path", "last"])
    assert resumed.trainer.current_epoch == 1
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, trained[key]), key  # max_epochs reached: restored, not trained, not re-loaded


def test_fine_tuning_refuses_a_pretrained_run_of_another_architecture(tmp_path: Path):
    write_tox21(tmp_path, molecule_table(240))
    path = _pretrained_checkpoint(tmp_path, _network(hidden_channels=32, num_layers=4))
    task = GraphPropertyTask(MoleculeGAT(num_tasks=12, hidden_channels=16, heads=2, num_layers=4),
                             pretrained=str(path))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    with pytest.raises(GraphmemError, match="pretrain with the same hidden_channels"):
        trainer.fit(task, MoleculeDataModule(root=str(tmp_path), split="scaffold"))


def test_supervised_transfer_then_fine_tune_through_the_recipes(tmp_path: Path):
    table = molecule_table(240)
    write_tox21(tmp_path, table)
    # a ToxCast-shaped file of other width: 3 assays on the same molecules and ten more
    smiles = [*SMILES, *("C" * n + "N" for n in range(1, 11))] * 4
    toxcast = pd.DataFrame({"smiles": smiles, **{f"assay_{k}": [(i + k) % 2 for i in range(len(smiles))]
                                                 for k in range(3)}})
    _write(tmp_path, "toxcast_data.csv.gz", toxcast)
    small = ["--model.init_args.model.init_args.hidden_channels", "16", "--trainer.max_epochs", "1",
             "--trainer.enable_progress_bar", "false", "--data.init_args.root", str(tmp_path)]
    transfer = main(["fit", "--config", str(RECIPES_DIR / "toxcast_transfer.yaml"), *small,
                     "--test_after_fit", "false", "--trainer.default_root_dir", str(tmp_path / "pre"),
                     "--trainer.logger.init_args.save_dir", str(tmp_path / "pre")])
    assert transfer.datamodule.excluded > 0 and transfer.model.model.head[-1].out_features == 3
    checkpoint = next((tmp_path / "pre").rglob("*.ckpt"))
    fine = main(["fit", "--config", str(RECIPES_DIR / "tox21_gat_scaffold.yaml"), *small,
                 "--trainer.limit_train_batches", "0", "--test_after_fit", "false",
                 "--model.init_args.model.init_args.virtual_node", "true", "--model.init_args.pretrained", str(checkpoint),
                 "--trainer.default_root_dir", str(tmp_path / "fine"), "--trainer.logger.init_args.save_dir", str(tmp_path / "fine")])
    pretrained = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in fine.model.state_dict().items():
        if key.split(".")[1] in ENCODER:
            assert torch.equal(value, pretrained[key]), key
    assert fine.model.model.head[-1].out_features == 12  # the head is Tox21's own, not ToxCast's
