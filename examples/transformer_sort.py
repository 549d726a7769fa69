"""MultiheadAttention / TransformerEncoder on a real task: sorting tokens as sequence labelling.

A non-causal transformer encoder reads a sequence of 1 to ``--max-length`` symbols (out of
``--symbols``) and predicts, at every position ``p``, the ``p``-th smallest symbol of the
sequence: the sorted sequence, emitted in one pass, without a decoder. Every output depends on
the whole input (the rank of each symbol among all others), so the model has to attend across
the sequence; the padding of shorter sequences is masked (``src_key_padding_mask``).
``--task reverse`` predicts the token at the mirrored position instead.

The same stack is trained plainly and with evolving attention (``TransformerEncoder(
evolving=True)``, Wang et al. 2021: each layer's maps are mixed with the previous layer's and
passed through a 3x3 convolution over the heads) on the same seeds, with fresh batches from
:func:`graphmem.data.sequence_tasks.sequence_task_batch` at every step. Test: a fixed set of
``--test-size`` sequences from a separate seed; token accuracy over the real positions and the
fraction of sequences entirely right.

    python examples/transformer_sort.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphmem.data.sequence_tasks import PAD, sequence_task_batch, vocab_size
from graphmem.nn import TransformerEncoder, TransformerEncoderLayer


class SequenceLabeller(nn.Module):
    """Token and learned position embeddings, a transformer encoder, a per-position classifier."""

    def __init__(self, vocab: int, max_length: int, d_model: int, heads: int, layers: int, feedforward: int,
                 evolving: bool, alpha: float, beta: float, score: str) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, d_model, padding_idx=PAD)
        self.positions = nn.Embedding(max_length, d_model)
        layer = TransformerEncoderLayer(d_model, heads, feedforward, dropout=0.0, batch_first=True,
                                        norm_first=True, score=score)
        self.encoder = TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), evolving=evolving,
                                          alpha=alpha, beta=beta)
        self.out = nn.Linear(d_model, vocab)

    def forward(self, source: Tensor) -> Tensor:
        """``source`` ``(B, L)`` token ids (``PAD`` = padding) to logits ``(B, L, V)``."""
        positions = torch.arange(source.size(1), device=source.device)
        x = self.tokens(source) + self.positions(positions)
        return self.out(self.encoder(x, src_key_padding_mask=source == PAD))


def labels_of(task: str, batch_size: int, max_length: int, symbols: int,
              generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Source ``(B, L)`` and per-position labels ``(B, L)`` (``PAD`` where there is no token)."""
    batch = sequence_task_batch(task, batch_size, 1, max_length, symbols, generator)
    return batch.source, batch.target_in[:, 1:]  # target_in = BOS, answer; the answer is PAD-padded


@torch.no_grad()
def evaluate(model: nn.Module, source: Tensor, labels: Tensor) -> tuple[float, float]:
    """Token accuracy over real positions and the fraction of sequences entirely right."""
    model.eval()
    predicted = model(source).argmax(-1)
    real = labels != PAD
    right = (predicted == labels) | ~real
    return float(right[real].float().mean()), float(right.all(-1).float().mean())


def train(args: argparse.Namespace, seed: int, evolving: bool, test: tuple[Tensor, Tensor]) -> dict:
    torch.manual_seed(seed)
    model = SequenceLabeller(vocab_size(args.symbols), args.max_length, args.d_model, args.heads, args.layers,
                             args.feedforward, evolving, args.alpha, args.beta, args.score)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / args.warmup) * max(0.0, 1 - step / args.steps))
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for step in range(args.steps):
        model.train()
        source, labels = labels_of(args.task, args.batch_size, args.max_length, args.symbols, generator)
        loss = F.cross_entropy(model(source).flatten(0, 1), labels.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if args.log_every and (step + 1) % args.log_every == 0:
            token, sequence = evaluate(model, *test)
            print(f"  step {step + 1}: loss {loss.item():.4f}, test token {token:.4f}, "
                  f"sequence {sequence:.4f}", flush=True)
    seconds = time.perf_counter() - start
    token, sequence = evaluate(model, *test)
    parameters = sum(p.numel() for p in model.parameters())
    return {"token": token, "sequence": sequence, "seconds": seconds, "parameters": parameters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["sort", "reverse"], default="sort")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=["plain", "evolving"],
                        default=["plain", "evolving"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=12)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--feedforward", type=int, default=128)
    parser.add_argument("--score", default="scaled_dot", help="attention score of every layer")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--test-seed", type=int, default=12345)
    parser.add_argument("--log-every", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    test = labels_of(args.task, args.test_size, args.max_length, args.symbols,
                     torch.Generator().manual_seed(args.test_seed))
    print(f"{args.task}: 1-{args.max_length} of {args.symbols} symbols; {args.layers} layers, d_model "
          f"{args.d_model}, {args.heads} heads, {args.steps} steps of {args.batch_size}; "
          f"test {args.test_size}")
    print("| attention | token acc | sequence acc | token acc per seed | s / run |")
    print("| --- | --- | --- | --- | --- |")
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
    for variant in args.variants:
        evolving = variant == "evolving"
        runs = [train(args, seed, evolving, test) for seed in args.seeds]
        token = [r["token"] for r in runs]
        sequence = [r["sequence"] for r in runs]
        name = f"evolving (alpha={args.alpha}, beta={args.beta})" if evolving else "plain"
        print(f"| {name} | {statistics.mean(token):.4f} ± {spread(token):.4f} "
              f"| {statistics.mean(sequence):.4f} ± {spread(sequence):.4f} "
              f"| {', '.join(f'{t:.4f}' for t in token)} "
              f"| {statistics.mean(r['seconds'] for r in runs):.0f} |  ({runs[0]['parameters']} parameters)",
              flush=True)


if __name__ == "__main__":
    main()
