"""A Neural Turing Machine that reads a story sentence by sentence and answers a question."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from graphmem.memory import NTM
from graphmem.models.sentence_encoding import SentenceEncoder


class NTMQA(nn.Module):
    r"""Question answering with a Neural Turing Machine (Graves et al. 2014) as the reader.

    Each statement and the question become one vector, :math:`s_i = \sum_j l_j \odot E x_{ij}`
    (position-encoded bag of words, :class:`SentenceEncoder`). The NTM reads the statements
    in order, then the question with a flag set, ``answer_steps`` (:math:`K`) times, and the
    answer is read from its last output:

    .. math::
        y_{1..S+K} = \mathrm{NTM}\big([s_1, 0], \dots, [s_S, 0],
            \underbrace{[q, 1], \dots, [q, 1]}_{K}\big), \qquad \hat a = y_{S+K}.

    With :math:`K > 1` the heads address the memory :math:`K` times after the question is
    known, as a memory network's hops do (one step can only look up one fact).

    Unlike :class:`MemoryNetwork`, which keeps every statement as a memory slot, the NTM must
    decide what to write while it reads. With ``question_context`` it reads the question beside
    every statement, :math:`[s_i, q, 0]` and then :math:`[q, q, 1]`, so it can write what the
    question needs (a dynamic memory network's episodes are conditioned on the question the same
    way); without it, it writes before it knows the question.

    Args:
        vocab_size: word ids ``0 .. vocab_size - 1`` (0 = padding); also the answer classes.
        embedding_dim: size of a sentence vector.
        position_encoding: ``"paper"``/``True``, ``"centred"`` or ``"none"``/``False`` (bag of
            words), see :class:`~graphmem.models.SentenceEncoder`.
        answer_steps: steps on the question before the answer, :math:`K \ge 1`.
        compile_step: compile the NTM's step (see :class:`graphmem.memory.NTM`).
        fused: run the NTM as the fused C++ sequence kernel on CPU (see :class:`graphmem.memory.NTM`).
        dropout: dropout on the statement and question vectors in training (a regulariser for
            the 1k stories, which the reader otherwise fits; the flag is never dropped).
        question_context: feed the question with every statement (the NTM's input is then
            ``2 * embedding_dim + 1`` wide).
        **ntm_options: any argument of :class:`graphmem.memory.NTMCell` (``memory_size``,
            ``memory_width``, ``controller_size``, heads, ...).

    Shapes:
        - input: ``story`` ``(B, S, W)`` word ids (statements oldest first, empty ones all zero,
          at the end), ``question`` ``(B, W)``
        - output: answer logits ``(B, V)``
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 50, position_encoding: bool | str = True,
                 answer_steps: int = 1, compile_step: bool = False, fused: bool = False, dropout: float = 0.0,
                 question_context: bool = False, **ntm_options) -> None:
        super().__init__()
        if answer_steps < 1:
            raise ValueError(f"answer_steps must be at least 1, got {answer_steps}")
        self.vocab_size = vocab_size
        self.answer_steps = answer_steps
        self.encoder = SentenceEncoder(vocab_size, embedding_dim, position_encoding)
        self.dropout = nn.Dropout(dropout)
        self.question_context = question_context
        width = embedding_dim * (2 if question_context else 1) + 1
        self.ntm = NTM(width, vocab_size, compile_step=compile_step, fused=fused, **ntm_options)

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.ntm.reset_parameters()

    def forward(self, story: Tensor, question: Tensor) -> Tensor:
        count = story.ne(0).any(-1).sum(-1)  # (B,) statements per story
        slots = story.size(1)
        # right-align the statements, so that every story ends just before its question;
        # the all-empty columns at the front, common to the batch, are not fed at all
        order = (torch.arange(slots, device=story.device) + count.unsqueeze(-1)) % slots
        story = story.gather(1, order.unsqueeze(-1).expand_as(story))[:, slots - int(count.max().clamp_min(1)):]
        sentences = self.encoder(story)  # (B, S', d)
        asked = self.encoder(question).unsqueeze(1).expand(-1, self.answer_steps, -1)
        steps = self.dropout(torch.cat([sentences, asked], 1))  # (B, S' + K, d)
        if self.question_context:
            # the leading empty steps of a shorter story stay all zero, as without the context
            fed = torch.cat([story.ne(0).any(-1), story.new_ones(story.size(0), self.answer_steps, dtype=torch.bool)], 1)
            context = self.dropout(asked[:, :1].expand(-1, steps.size(1), -1)) * fed.unsqueeze(-1)
            steps = torch.cat([steps, context], -1)  # (B, S' + K, 2d)
        flag = torch.zeros_like(steps[..., :1])
        flag[:, -self.answer_steps:] = 1.0  # marks the question
        steps = torch.cat([steps, flag], -1)
        output, _ = self.ntm(steps.transpose(0, 1))  # time first: (S' + K, B, V)
        return output[-1]
