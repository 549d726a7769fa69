"""Ready models assembled from graphmem.nn and graphmem.memory."""

from graphmem.models.forest import MoleculeForest
from graphmem.models.link import GATLinkPredictor
from graphmem.models.molecule import MoleculeGAT, graph_readout
from graphmem.models.node import GATNodeClassifier

__all__ = ["GATLinkPredictor", "GATNodeClassifier", "MoleculeForest", "MoleculeGAT", "graph_readout"]

# attention encoder-decoder over token sequences
from graphmem.models.seq2seq import Seq2Seq  # noqa: E402

__all__ += ["Seq2Seq"]

# question answering over sentence memories (bAbI)
from graphmem.models.memory_network import MemoryNetwork  # noqa: E402
from graphmem.models.ntm_qa import NTMQA  # noqa: E402
from graphmem.models.sentence_encoding import SentenceEncoder, position_encoding  # noqa: E402

__all__ += ["MemoryNetwork", "NTMQA", "SentenceEncoder", "position_encoding"]
