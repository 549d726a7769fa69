"""A GRU encoder-decoder with attention over the encoder outputs (Bahdanau 2015, Luong 2015)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from graphmem.nn.seq2seq_attention import Seq2SeqAttention


class Encoded(NamedTuple):
    """What the decoder reads: the encoder's memory, its projected keys, the source mask and the
    decoder's initial state."""

    memory: Tensor  # (B, L, H)
    keys: Tensor  # (B, L, ·) key side of the score, computed once per source
    mask: Tensor  # (B, L), True at real tokens
    state: Tensor  # (B, H)


class Seq2Seq(nn.Module):
    r"""Token sequence to token sequence: a bidirectional GRU encoder writes a memory, a GRU
    decoder reads it with :class:`~graphmem.nn.Seq2SeqAttention` at every step.

    .. math::
        h_j &= [\overrightarrow{h}_j ; \overleftarrow{h}_j]
            \quad \text{(bidirectional GRU over the source embeddings)}\\
        s_0 &= \tanh(W_b [\overrightarrow{h}_L ; \overleftarrow{h}_1]), \quad \tilde h_0 = 0\\
        s_t &= \mathrm{GRU}([E y_{t-1} ; \tilde h_{t-1}],\, s_{t-1})\\
        c_t, \alpha_t &= \mathrm{Attention}(s_t, \{h_j\}, m)\\
        \tilde h_t &= \tanh(W_c [s_t ; c_t]), \quad
        p(y_t \mid y_{<t}, x) = \mathrm{softmax}(W_o \tilde h_t)

    This is Luong et al.'s global attention with input feeding (the previous attentional
    state :math:`\tilde h_{t-1}` enters the next step, so the decoder knows where it looked);
    the score may be Bahdanau's additive one or Luong's dot / general (bilinear) one, and the
    normalizer soft or hard. Padding in the source is masked out of the attention and packed
    away in the encoder.

    Args:
        vocab_size: tokens in the (shared) source and target vocabulary, specials included.
        embedding_dim: token embedding size.
        hidden_dim: decoder state size :math:`H` (even: each encoder direction has
            :math:`H / 2`, so encoder outputs and decoder states have the same size, as the
            dot score needs).
        score: attention score (see :class:`~graphmem.nn.Seq2SeqAttention`).
        normalizer: attention normalizer.
        dropout: dropout before the output layer.
        pad_index, bos_index, eos_index: special tokens (those of
            :mod:`graphmem.data.sequence_tasks` by default).
        tau: Gumbel temperature for the Gumbel normalizers.

    Shapes:
        - input: ``source`` :math:`(B, L)`, ``target_in`` :math:`(B, T)` (teacher forcing:
          ``BOS`` then the target without its last token)
        - output: logits :math:`(B, T, V)` and attention weights :math:`(B, T, L)`
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 32, hidden_dim: int = 64,
                 score: str = "additive", normalizer: str = "softmax", dropout: float = 0.0,
                 pad_index: int = 0, bos_index: int = 1, eos_index: int = 2, tau: float = 1.0) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (two encoder directions), got {hidden_dim}")
        self.vocab_size, self.embedding_dim, self.hidden_dim = vocab_size, embedding_dim, hidden_dim
        self.pad_index, self.bos_index, self.eos_index = pad_index, bos_index, eos_index
        self.source_embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_index)
        self.target_embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_index)
        self.encoder = nn.GRU(embedding_dim, hidden_dim // 2, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(hidden_dim, hidden_dim)
        self.decoder = nn.GRUCell(embedding_dim + hidden_dim, hidden_dim)
        self.attention = Seq2SeqAttention(hidden_dim, hidden_dim, score, normalizer, tau=tau)
        self.combine = nn.Linear(2 * hidden_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, vocab_size)

    def reset_parameters(self) -> None:
        for module in self.children():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def encode(self, source: Tensor) -> Encoded:
        """Runs the encoder over the unpadded part of each source sequence."""
        mask = source != self.pad_index
        lengths = mask.sum(1)
        if bool((lengths == 0).any()):
            raise ValueError("every source sequence needs at least one non-padding token")
        packed = pack_padded_sequence(self.source_embedding(source), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, last = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=source.size(1))
        state = torch.tanh(self.bridge(torch.cat([last[0], last[1]], -1)))
        return Encoded(memory, self.attention.project_keys(memory), mask, state)

    def step(self, token: Tensor, state: Tensor, feed: Tensor,
             encoded: Encoded) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One decoder step from the previous token ``(B,)``: logits ``(B, V)``, the new state and
        attentional state ``(B, H)``, and the attention weights ``(B, L)``."""
        state = self.decoder(torch.cat([self.target_embedding(token), feed], -1), state)
        context, weights = self.attention(state, encoded.memory, mask=encoded.mask,
                                          projected_keys=encoded.keys)
        feed = torch.tanh(self.combine(torch.cat([state, context], -1)))
        return self.output(self.dropout(feed)), state, feed, weights

    def forward(self, source: Tensor, target_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits ``(B, T, V)`` and attention weights ``(B, T, L)``."""
        encoded = self.encode(source)
        state, feed = encoded.state, encoded.state.new_zeros(encoded.state.shape)
        logits, weights = [], []
        for t in range(target_in.size(1)):
            step_logits, state, feed, step_weights = self.step(target_in[:, t], state, feed, encoded)
            logits.append(step_logits)
            weights.append(step_weights)
        return torch.stack(logits, 1), torch.stack(weights, 1)

    @torch.no_grad()
    def generate(self, source: Tensor, max_length: int) -> tuple[Tensor, Tensor]:
        """Greedy decoding: tokens ``(B, T)`` with ``T <= max_length`` (padding after ``EOS``) and
        the attention weights ``(B, T, L)``."""
        encoded = self.encode(source)
        state, feed = encoded.state, encoded.state.new_zeros(encoded.state.shape)
        token = source.new_full((source.size(0),), self.bos_index)
        finished = torch.zeros_like(token, dtype=torch.bool)
        tokens, weights = [], []
        for _ in range(max_length):
            logits, state, feed, step_weights = self.step(token, state, feed, encoded)
            token = logits.argmax(-1).masked_fill(finished, self.pad_index)
            tokens.append(token)
            weights.append(step_weights)
            finished = finished | (token == self.eos_index)
            if bool(finished.all()):
                break
        return torch.stack(tokens, 1), torch.stack(weights, 1)

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, embedding_dim={self.embedding_dim}, "
                f"hidden_dim={self.hidden_dim}")
