"""End-to-end memory network (MemN2N, Sukhbaatar et al. 2015) for question answering."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.attention import attention, check_attention_options, make_score
from graphmem.models.sentence_encoding import SentenceEncoder, unique_sentences

EMPTY_SLOTS = ("mask", "attend")
TYINGS = ("adjacent", "layerwise")


class MemoryNetwork(nn.Module):
    r"""Multi-hop attention over sentence memories, answering a question with one word.

    Every statement :math:`x_i` of the story is stored twice per hop, as a key
    :math:`m^k_i = \sum_j l_j \odot A^k x_{ij} + T^k_A(i)` and a value
    :math:`c^k_i = \sum_j l_j \odot C^k x_{ij} + T^k_C(i)` (:math:`l_j` the position
    encoding, :math:`T(i)` a learned vector per age of the statement, newest = 0). The
    question is :math:`u^1 = \sum_j l_j \odot B q_j`, and each of the :math:`K` hops is one
    pass of the attention core (:func:`graphmem.attention.attention`, dense layout):

    .. math::
        p^k_i = \mathrm{normalize}_i\big(s(m^k_i, u^k)\big), \qquad
        u^{k+1} = u^k + \textstyle\sum_i p^k_i\, c^k_i, \qquad
        \hat a = W u^{K+1},

    with the paper's dot score :math:`s(m, u) = u^\top m` and softmax by default.

    Empty memory slots (all-padding statements) are handled by :attr:`empty_slots`:

    - ``"mask"``: the normalizer runs over the :math:`n` real statements only (weight 0 on the
      empty ones), so each hop reads a convex mix of real statements.
    - ``"attend"``, as the authors' code (MemN2N-babi-matlab, whose memory is always
      ``memory_size`` slots reset to the nil word): the story is padded with empty statements to
      :math:`M` = ``memory_size`` slots, an empty slot's key and value are zero (no
      :math:`T(i)` either), and the normalizer runs over all slots without a mask. With the dot
      score and softmax each empty slot has logit 0,

      .. math::
          p^k_i = \frac{e^{s_i}}{\sum_{j \le n} e^{s_j} + (M - n)} \ (i \le n), \qquad
          p^k_i = \frac{1}{\sum_{j \le n} e^{s_j} + (M - n)} \ (i > n),

      and adds nothing to the read. The empty slots are an "attend to nothing" sink: how much
      of the hop's mass lands on real statements, so the size of the read, says whether any
      statement matches the question, which a yes/no answer can use. Linear start is
      unchanged (a zero key scores 0 with the dot score). The authors' joint runs have
      :math:`M = 50`; their single-task runs use the longest training story as :math:`M`.

    Weights are tied between adjacent hops by default (``tying="adjacent"``): :math:`A^{k+1} = C^k`,
    :math:`B = A^1` and :math:`W^\top = C^K` (so there are :math:`K + 1` embeddings and
    :math:`K + 1` temporal tables). ``tying="layerwise"`` is the paper's other scheme (RNN-like,
    sec. 2.2): one :math:`A` and one :math:`C` (and :math:`T_A`, :math:`T_C`) for every hop, a
    question embedding :math:`B` and an answer matrix :math:`W` of their own, and a learned
    :math:`d \times d` map between hops, :math:`u^{k+1} = H u^k + \sum_i p^k_i c_i`. With
    :attr:`linear_start` set, the hops use the core's ``"none"`` normalizer
    (:math:`p^k_i = s(m^k_i, u^k)`), the paper's "linear start" that avoids poor local minima
    in the first epochs; the training module turns it off after a number of epochs.

    Args:
        vocab_size: word ids ``0 .. vocab_size - 1`` (0 = padding); also the answer classes.
        embedding_dim: ``d``.
        hops: ``K``.
        memory_size: statements per story the temporal encoding tells apart (older ones share
            the last age).
        position_encoding: weight words by position (PE): ``"paper"`` (also ``True``), ``"centred"``
            (the authors' code), ``"none"`` (also ``False``, a bag of words); see
            :func:`~graphmem.models.sentence_encoding.position_encoding`.
        temporal_encoding: add :math:`T(i)` to keys and values.
        noise: random noise (RN): in training, each statement is followed by this many empty
            memories on average, which shifts the ages so that :math:`T` does not overfit.
        score: a name of :data:`graphmem.attention.SCORES` (default ``"dot"``); a score with
            parameters (``scorer``) is shared by all hops, like the tied embeddings.
        normalizer: a name of :data:`graphmem.attention.NORMALIZERS` (default ``"softmax"``).
        empty_slots: ``"mask"`` (default) or ``"attend"`` (the authors' code), see above.
        tying: ``"adjacent"`` (default) or ``"layerwise"``, see above.
        clip_temporal_with_words: per-matrix gradient clipping (:class:`~graphmem.lit.QATask`'s
            ``clip_per_parameter``) clips :math:`T^k` together with the word table of embedding
            :math:`k`, as one matrix, rather than all of :math:`T` as one; see
            :meth:`gradient_groups`.

    Shapes:
        - input: ``story`` ``(B, S, W)`` word ids (statements oldest first, empty ones all zero,
          at the end), ``question`` ``(B, W)``
        - output: answer logits ``(B, V)`` and, with ``return_attention_weights=True``, the attention
          of every hop ``(B, K, S')``: ``S' = S`` with ``"mask"`` (0 on empty slots),
          ``S' = M`` with ``"attend"`` (which needs ``S <= M``; the slots after the story's are the
          padding)
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 50,
        hops: int = 3,
        memory_size: int = 50,
        position_encoding: bool | str = True,
        temporal_encoding: bool = True,
        noise: float = 0.1,
        score: str = "dot",
        normalizer: str = "softmax",
        empty_slots: Literal["mask", "attend"] = "mask",
        clip_temporal_with_words: bool = False,
        tying: Literal["adjacent", "layerwise"] = "adjacent",
    ) -> None:
        super().__init__()
        if hops < 1:
            raise ValueError(f"need at least one hop, got {hops}")
        if empty_slots not in EMPTY_SLOTS:
            raise ValueError(f"unknown empty_slots {empty_slots!r}; choose one of {', '.join(EMPTY_SLOTS)}")
        if tying not in TYINGS:
            raise ValueError(f"unknown tying {tying!r}; choose one of {', '.join(TYINGS)}")
        check_attention_options(score, normalizer)
        self.empty_slots = empty_slots
        self.clip_temporal_with_words = clip_temporal_with_words
        self.score, self.normalizer = score, normalizer
        self.scorer = make_score(score, embedding_dim)
        self.vocab_size = vocab_size
        self.hops = hops
        self.memory_size = memory_size
        self.noise = noise
        self.linear_start = False
        self.tying = tying
        # embedding 0 encodes the question; the memories use embeddings 1.. with layer-wise
        # tying (B, A, C), 0.. with adjacent tying (A^1 = B, ..., C^K): the temporal table t
        # belongs to embedding t + memory_offset
        self.memory_offset = int(tying == "layerwise")
        tables = 3 if tying == "layerwise" else hops + 1
        self.embeddings = nn.ModuleList(SentenceEncoder(vocab_size, embedding_dim, position_encoding)
                                        for _ in range(tables))
        if temporal_encoding:
            self.temporal = nn.Parameter(torch.empty(tables - self.memory_offset, memory_size, embedding_dim))
        else:
            self.register_parameter("temporal", None)
        layerwise = tying == "layerwise"
        self.hop_map = nn.Linear(embedding_dim, embedding_dim, bias=False) if layerwise else None  # H
        self.answer = nn.Linear(embedding_dim, vocab_size, bias=False) if layerwise else None  # W
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for embedding in self.embeddings:
            embedding.reset_parameters()
        if self.temporal is not None:
            nn.init.normal_(self.temporal, std=0.1)
        for linear in (self.hop_map, self.answer):
            if linear is not None:  # N(0, 0.1) as every weight of the authors' code
                nn.init.normal_(linear.weight, std=0.1)
        self.scorer.reset_parameters()

    def gradient_groups(self) -> list[list[Tensor]]:
        r"""The gradients that per-matrix clipping scales together, one list per matrix.

        Each parameter on its own, except with :attr:`clip_temporal_with_words`: then embedding
        :math:`k`'s word table :math:`(V, d)` and :math:`T^k` :math:`(M, d)` (a view of the
        ``temporal`` gradient) are one group, clipped by their joint norm
        :math:`\sqrt{\lVert g_{E^k} \rVert^2 + \lVert g_{T^k} \rVert^2}`. That is the authors' code,
        where the time words are :math:`M` extra rows of each hop's lookup table, so the table
        clipped at norm 40 is :math:`[E^k; T^k]`, and :math:`T` moves no faster, relative to the
        words, than the table's norm allows.
        """
        tables = [e.embedding.weight for e in self.embeddings]
        joint = self.clip_temporal_with_words and self.temporal is not None and self.temporal.grad is not None
        alone = {id(self.temporal), *map(id, tables)} if joint else set()
        groups = [[p.grad] for p in self.parameters() if p.grad is not None and id(p) not in alone]
        if joint:
            offset = self.memory_offset
            groups += [[table.grad, self.temporal.grad[k - offset]] if k >= offset else [table.grad]
                       for k, table in enumerate(tables) if table.grad is not None]
        return groups

    def _ages(self, mask: Tensor) -> Tensor:
        """Age of each statement, ``(B, S)``: 0 for the newest, counting back."""
        count = mask.sum(-1, keepdim=True)
        ages = (count - 1 - torch.arange(mask.size(-1), device=mask.device)).clamp_min(0)
        if self.training and self.noise > 0:
            empty = torch.bernoulli(torch.full(mask.shape, self.noise, device=mask.device)).long() * mask
            # every empty memory inserted after statement i makes i one step older
            ages = ages + empty.flip(-1).cumsum(-1).flip(-1) - empty
        return ages.clamp_max(self.memory_size - 1)

    def _memory(self, table: int, sentences: Tensor, inverse: Tensor, ages: Tensor, mask: Tensor) -> Tensor:
        """The story in embedding ``table`` with its temporal encoding, ``(B, S, d)``; empty slots are zero."""
        # index_select and embedding rather than [...]: their backward is an index_add, not an
        # accumulating index_put (several times slower on CPU)
        memory = self.embeddings[table](sentences).index_select(0, inverse.flatten()).view(*ages.shape, -1)
        if self.temporal is None:
            return memory
        # no age for an empty slot: it stays the zero vector the "attend" sink needs (masked
        # slots get weight 0, so this changes nothing with "mask")
        return memory + F.embedding(ages, self.temporal[table - self.memory_offset]) * mask.unsqueeze(-1)

    def forward(self, story: Tensor, question: Tensor,
                return_attention_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if self.empty_slots == "attend":
            slots = story.size(-2)
            if slots > self.memory_size:
                # more slots would make a larger sink than the authors' M - n
                raise ValueError(f"a story of {slots} slots does not fit memory_size {self.memory_size} with "
                                 f"empty_slots='attend'; keep at most memory_size statements per story "
                                 f"(BabiDataModule memory_size)")
            story = F.pad(story, (0, 0, 0, self.memory_size - slots))  # the authors' fixed memory of M slots
        mask = story.ne(0).any(-1)  # (B, S) statements that exist
        ages = self._ages(mask)
        keep = mask.unsqueeze(-2) if self.empty_slots == "mask" else None  # (B, 1, S)
        u = self.embeddings[0](question).unsqueeze(-2)  # (B, 1, d); B = A^1 with adjacent tying
        # bAbI stories repeat the same few sentences ("Mary moved to the bathroom"): encoding
        # each distinct one once makes the embedding work about 6x smaller on a joint batch
        sentences, inverse = unique_sentences(story.flatten(0, -2), self.vocab_size)
        offset = self.memory_offset
        keys = self._memory(offset, sentences, inverse, ages, mask)
        values = self._memory(offset + 1, sentences, inverse, ages, mask)
        normalizer = "none" if self.linear_start else self.normalizer
        hop_weights = []
        for hop in range(self.hops):
            if hop and self.hop_map is None:  # adjacent: A^{k+1} = C^k, and a new C^{k+1}
                keys, values = values, self._memory(hop + 1, sentences, inverse, ages, mask)
            read, weights, *_ = attention(u, keys, values, self.scorer, normalizer, mask=keep)
            u = (u if self.hop_map is None else self.hop_map(u)) + read
            hop_weights.append(weights.squeeze(-2))
        u = u.squeeze(-2)
        # adjacent: W^T = C^K, the answer scores are dot products with the last value embedding
        logits = u @ self.embeddings[-1].embedding.weight.t() if self.answer is None else self.answer(u)
        if return_attention_weights:
            return logits, torch.stack(hop_weights, 1)
        return logits

    def extra_repr(self) -> str:
        extra = (f"vocab_size={self.vocab_size}, hops={self.hops}, memory_size={self.memory_size}, "
                 f"temporal={self.temporal is not None}, noise={self.noise}")
        if self.score != "dot":
            extra += f", score={self.score!r}"
        if self.normalizer != "softmax":
            extra += f", normalizer={self.normalizer!r}"
        if self.empty_slots != "mask":
            extra += f", empty_slots={self.empty_slots!r}"
        if self.clip_temporal_with_words:
            extra += ", clip_temporal_with_words=True"
        if self.tying != "adjacent":
            extra += f", tying={self.tying!r}"
        return extra
