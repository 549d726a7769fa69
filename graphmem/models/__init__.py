"""Ready models assembled from graphmem.nn and graphmem.memory."""

from graphmem.models.molecule import MoleculeGAT, graph_readout
from graphmem.models.node import GATNodeClassifier

__all__ = ["GATNodeClassifier", "MoleculeGAT", "graph_readout"]

# attention encoder-decoder over token sequences
from graphmem.models.seq2seq import Seq2Seq  # noqa: E402

__all__ += ["Seq2Seq"]
