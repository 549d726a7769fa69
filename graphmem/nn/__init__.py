"""Layers to import into your own models."""

from graphmem.nn.gat_conv import GATConv

__all__ = ["GATConv"]
