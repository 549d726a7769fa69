"""Layers to import into your own models."""

from graphmem.nn.capsule_layer import CapsuleLayer
from graphmem.nn.capsule_pooling import CapsulePooling
from graphmem.nn.evolving import EvolvingAttention
from graphmem.nn.gat_conv import GATConv
from graphmem.nn.gat_stack import GATStack
from graphmem.nn.gatv2_conv import GATv2Conv
from graphmem.nn.graph_transformer_conv import GraphTransformerConv
from graphmem.nn.hopfield import Hopfield, HopfieldLayer, HopfieldPooling, hopfield_update
from graphmem.nn.multihead_attention import MultiheadAttention
from graphmem.nn.routing import Router, Routing, dynamic_routing, em_routing, squash
from graphmem.nn.seq2seq_attention import Seq2SeqAttention
from graphmem.nn.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "CapsuleLayer",
    "CapsulePooling",
    "EvolvingAttention",
    "GATConv",
    "GATStack",
    "GATv2Conv",
    "GraphTransformerConv",
    "Hopfield",
    "HopfieldLayer",
    "HopfieldPooling",
    "MultiheadAttention",
    "Router",
    "Routing",
    "Seq2SeqAttention",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "dynamic_routing",
    "em_routing",
    "hopfield_update",
    "squash",
]
