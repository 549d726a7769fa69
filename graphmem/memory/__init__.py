"""Memory-augmented networks on the attention core: the Neural Turing Machine."""

from graphmem.memory.addressing import address, circular_shift, content_weights, interpolate, sharpen
from graphmem.memory.controller import FeedForwardController, LSTMController
from graphmem.memory.heads import Head, ReadHeads, WriteHeads
from graphmem.memory.memory import read, write
from graphmem.memory.ntm import NTM, NTMCell, NTMHistory, NTMState

__all__ = [
    "NTM",
    "FeedForwardController",
    "Head",
    "LSTMController",
    "NTMCell",
    "NTMHistory",
    "NTMState",
    "ReadHeads",
    "WriteHeads",
    "address",
    "circular_shift",
    "content_weights",
    "interpolate",
    "read",
    "sharpen",
    "write",
]
