"""Sentences as vectors: the position-encoded bag of words of end-to-end memory networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


POSITION_ENCODINGS: tuple[str, ...] = ("paper", "centred", "none")


def position_encoding(words: Tensor, dim: int, kind: str = "paper") -> Tensor:
    r"""Position weights of end-to-end memory networks, one row per word.

    ``"paper"``, Sukhbaatar et al. (2015), section 4.1, for word :math:`j = 1..J` of a sentence of
    :math:`J` words (padding excluded) and dimension :math:`k = 1..d`:

    .. math::
        l_{kj} = (1 - j/J) - (k/d)(1 - 2j/J)

    ``"centred"``, the form in the authors' code (MemN2N-babi-matlab) behind the published
    results, with :math:`J` the padded sentence width ``W``, the same for every sentence:

    .. math::
        l_{kj} = 1 + 4\,(k - (d+1)/2)\,(j - (J+1)/2) / (d J)

    Its weights stay near 1 (the paper's fall to 0 at the first word's low dimensions), so a
    sentence vector keeps the scale of a bag of words. Either way word order changes the
    sentence vector, which a plain bag of words cannot see ("Mary gave John the apple" vs
    "John gave Mary the apple").

    ``words`` ``(..., W)`` word ids, 0 = padding, words packed at the front; returns
    ``(..., W, d)`` weights, zero at padded positions.
    """
    present = words.ne(0)
    j = torch.arange(1, words.size(-1) + 1, device=words.device, dtype=torch.float32).view(-1, 1)
    k = torch.arange(1, dim + 1, device=words.device, dtype=torch.float32)
    if kind == "centred":
        width = words.size(-1)
        weights = 1 + 4 * (k - (dim + 1) / 2) * (j - (width + 1) / 2) / (dim * width)
    elif kind == "paper":
        length = present.sum(-1, keepdim=True).clamp_min(1).unsqueeze(-1).to(torch.float32)  # J, (..., 1, 1)
        weights = (1 - j / length) - (k / dim) * (1 - 2 * j / length)
    else:
        raise ValueError(f"position encoding {kind!r} has no weights; choose one of {POSITION_ENCODINGS[:2]}")
    return weights * present.unsqueeze(-1)


def unique_sentences(words: Tensor, vocab_size: int) -> tuple[Tensor, Tensor]:
    """The distinct rows of ``words`` ``(N, W)`` (ids below ``vocab_size``) and, for each row, the
    index of its distinct row: ``unique[inverse] == words``. Shapes ``(U, W)`` and ``(N,)``.

    Faster than ``torch.unique(words, dim=0)``, which compares rows element by element: a
    few words at a time are packed into one integer key (base ``vocab_size``, below 2**62
    together with the ids found so far), and a 1-D ``unique`` folds them into the key.
    """
    count, width = words.size(0), words.size(1)
    room = 62 - math.log2(max(count, 2))
    chunk = max(1, int(room // math.log2(max(vocab_size, 2))))
    inverse = words.new_zeros(count)
    for start in range(0, width, chunk):
        digits = words[:, start:start + chunk]
        powers = vocab_size ** torch.arange(digits.size(1) - 1, -1, -1, device=words.device)
        key = inverse * vocab_size ** digits.size(1) + (digits * powers).sum(-1)
        _, inverse = torch.unique(key, return_inverse=True)
    unique = words.new_zeros(int(inverse.max()) + 1 if count else 0, width)
    unique[inverse] = words  # duplicates write identical rows
    return unique, inverse


class SentenceEncoder(nn.Module):
    r"""Embeds each word and sums a sentence's words, optionally weighted by position.

    .. math::
        m = \sum_j l_j \odot E x_j

    with :math:`l_j` from :func:`position_encoding` or :math:`l_j = 1` (bag of words).

    Args:
        vocab_size: word ids ``0 .. vocab_size - 1``; id 0 is padding and embeds to zero.
        dim: ``d``, the embedding size.
        position: the position encoding (PE): ``"paper"`` (also ``True``), ``"centred"`` (the
            authors' code), or ``"none"`` (also ``False``: a plain sum, BoW).

    Shapes:
        - input: ``(..., W)`` word ids
        - output: ``(..., d)``
    """

    def __init__(self, vocab_size: int, dim: int, position: bool | str = True) -> None:
        super().__init__()
        position = {True: "paper", False: "none"}.get(position, position)
        if position not in POSITION_ENCODINGS:
            raise ValueError(f"unknown position encoding {position!r}; choose one of {POSITION_ENCODINGS}")
        self.position = position
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # N(0, 0.1) as in the MemN2N paper; the padding row stays zero
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, words: Tensor) -> Tensor:
        embedded = self.embedding(words)
        if self.position != "none":
            embedded = embedded * position_encoding(words, embedded.size(-1), self.position).to(embedded.dtype)
        return embedded.sum(-2)

    def extra_repr(self) -> str:
        return f"{self.embedding.num_embeddings}, {self.embedding.embedding_dim}, position={self.position!r}"
