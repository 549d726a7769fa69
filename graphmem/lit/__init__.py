"""LightningModules per task kind."""

from graphmem.lit.callbacks import DataIdentity, EpochSummary, JointEarlyStopping, RandomStateCheckpoint
from graphmem.lit.checkpoint import CheckpointError, check_checkpoint
from graphmem.lit.graph import GraphPropertyTask, masked_bce_with_logits
from graphmem.lit.forest import ForestTask
from graphmem.lit.link import LinkPredictionTask
from graphmem.lit.metrics import multitask_roc_auc
from graphmem.lit.node import NodeClassificationTask
from graphmem.lit.pretrain import AttributeMaskingTask, atom_mask, load_encoder
from graphmem.lit.qa import QATask, error_table
from graphmem.lit.sequence import SequenceTask, sequence_costs

__all__ = [
    "AttributeMaskingTask",
    "atom_mask",
    "load_encoder",
    "QATask",
    "error_table",
    "CheckpointError",
    "DataIdentity",
    "EpochSummary",
    "ForestTask",
    "GraphPropertyTask",
    "JointEarlyStopping",
    "LinkPredictionTask",
    "NodeClassificationTask",
    "RandomStateCheckpoint",
    "SequenceTask",
    "check_checkpoint",
    "masked_bce_with_logits",
    "multitask_roc_auc",
    "sequence_costs",
]
