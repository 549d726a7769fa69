"""Ready models assembled from graphmem.nn and graphmem.memory."""

from graphmem.models.molecule import MoleculeGAT, graph_readout

__all__ = ["MoleculeGAT", "graph_readout"]
