"""Data: loaders, splits and LightningDataModules for real benchmark data and procedural tasks."""

from graphmem.data.algorithmic import AlgorithmicDataModule, associative_recall_batch, copy_batch, repeat_copy_batch
from graphmem.data.babi import BabiDataModule, BabiExample, BabiFormatError, Vocabulary, load_babi, parse_babi
from graphmem.data.descriptors import DESCRIPTOR_NAMES, add_descriptors, descriptor_table, rdkit_descriptors
from graphmem.data.fingerprints import (FINGERPRINT_SIZE, add_fingerprints, add_model_features, fingerprint_table,
                                        morgan_counts)
from graphmem.data.download import DataFileError, fetch
from graphmem.data.link_datamodule import LinkDataModule
from graphmem.data.molecule import MOLECULENET, MoleculeSet, SmilesError, load_moleculenet, smiles_to_graph
from graphmem.data.molecule_datamodule import MoleculeDataModule
from graphmem.data.held_out import held_out_keys, molecule_keys
from graphmem.data.pretrain_datamodule import MoleculePretrainDataModule
from graphmem.data.neighbor_sampler import UniformNeighborSampler, neighbor_loader
from graphmem.data.node_datamodule import NodeDataModule
from graphmem.data.planetoid import karate_club, load_planetoid
from graphmem.data.splits import make_split, random_split, scaffold_split
from graphmem.data.synthetic import SyntheticGraph

__all__ = [
    "DESCRIPTOR_NAMES",
    "add_descriptors",
    "FINGERPRINT_SIZE",
    "add_fingerprints",
    "add_model_features",
    "fingerprint_table",
    "morgan_counts",
    "descriptor_table",
    "rdkit_descriptors",
    "BabiDataModule",
    "BabiExample",
    "BabiFormatError",
    "Vocabulary",
    "load_babi",
    "parse_babi",
    "AlgorithmicDataModule",
    "associative_recall_batch",
    "copy_batch",
    "repeat_copy_batch",
    "MOLECULENET",
    "DataFileError",
    "LinkDataModule",
    "MoleculeDataModule",
    "MoleculePretrainDataModule",
    "molecule_keys",
    "held_out_keys",
    "MoleculeSet",
    "NodeDataModule",
    "karate_club",
    "load_planetoid",
    "SmilesError",
    "fetch",
    "load_moleculenet",
    "make_split",
    "random_split",
    "scaffold_split",
    "smiles_to_graph",
    "SyntheticGraph",
    "UniformNeighborSampler",
    "neighbor_loader",
]
