"""Layers to import into your own models."""

from graphmem.nn.gat_conv import GATConv
from graphmem.nn.evolving import EvolvingAttention
from graphmem.nn.gat_stack import GATStack
from graphmem.nn.graph_transformer_conv import GraphTransformerConv
from graphmem.nn.hopfield import Hopfield, HopfieldLayer, HopfieldPooling, hopfield_update
from graphmem.nn.multihead_attention import MultiheadAttention
from graphmem.nn.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = ["GATConv"]
__all__ += [
    "EvolvingAttention",
    "GATStack",
    "GraphTransformerConv",
    "Hopfield",
    "HopfieldLayer",
    "HopfieldPooling",
    "MultiheadAttention",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "hopfield_update",
]

# capsule routing as attention (Sabour et al. 2017; Hinton et al. 2018)
from graphmem.nn.capsule_layer import CapsuleLayer  # noqa: E402
from graphmem.nn.capsule_pooling import CapsulePooling  # noqa: E402
from graphmem.nn.routing import Router, Routing, dynamic_routing, em_routing, squash  # noqa: E402

# encoder-decoder attention (Bahdanau et al. 2015; Luong et al. 2015)
from graphmem.nn.seq2seq_attention import SEQ2SEQ_SCORES, Seq2SeqAttention  # noqa: E402

__all__ += ["CapsuleLayer", "CapsulePooling", "Router", "Routing", "dynamic_routing", "em_routing", "squash"]
__all__ += ["SEQ2SEQ_SCORES", "Seq2SeqAttention"]
