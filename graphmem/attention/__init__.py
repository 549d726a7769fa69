"""graphmem's functional attention core: score -> normalize -> read, dense or sparse.

Knows nothing of graphs as data, memories or training; every layer in :mod:`graphmem.nn`
and :mod:`graphmem.memory` is built from these pieces.
"""

from graphmem.attention.core import AttentionOutput, ReadFn, ScoreFn, attention, normalize
from graphmem.attention.fused import sparse_read_fused
from graphmem.attention.hard import gumbel_softmax, hard_softmax, straight_through
from graphmem.attention.read import (
    FUSED_MIN_MESSAGE_SIZE,
    combine_heads,
    dense_read,
    sparse_read,
    sparse_read_auto,
)
from graphmem.attention.registry import NORMALIZERS, SCORES, check_attention_options, make_score
from graphmem.attention.score import (
    additive_score,
    bilinear_score,
    cosine_score,
    decomposed_additive_score,
    dot_score,
    gatv2_score,
    scaled_dot_score,
)
from graphmem.attention.scorers import (
    AdditiveScore,
    BilinearScore,
    CosineScore,
    DotScore,
    GATScore,
    GATv2Score,
    ScaledDotScore,
    Score,
)
from graphmem.attention.softmax import masked_softmax, segment_max, segment_softmax, segment_sum

__all__ = [
    "FUSED_MIN_MESSAGE_SIZE",
    "NORMALIZERS",
    "SCORES",
    "AdditiveScore",
    "AttentionOutput",
    "BilinearScore",
    "CosineScore",
    "DotScore",
    "GATScore",
    "GATv2Score",
    "ReadFn",
    "ScaledDotScore",
    "Score",
    "ScoreFn",
    "additive_score",
    "attention",
    "bilinear_score",
    "check_attention_options",
    "combine_heads",
    "cosine_score",
    "decomposed_additive_score",
    "dense_read",
    "dot_score",
    "gatv2_score",
    "gumbel_softmax",
    "hard_softmax",
    "make_score",
    "masked_softmax",
    "normalize",
    "scaled_dot_score",
    "segment_max",
    "segment_softmax",
    "segment_sum",
    "sparse_read",
    "sparse_read_auto",
    "sparse_read_fused",
    "straight_through",
]
