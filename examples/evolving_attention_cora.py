"""Does evolving attention help a GAT? The same GATStack with and without it on Cora.

Trains the GAT paper's Cora setup (public Planetoid split, row-normalised features, dropout
0.6, Adam lr 0.005, weight decay 5e-4) with every layer at ``--heads`` heads (the last
averages them, so that the attention maps of all layers line up), once plainly and once
with :class:`graphmem.nn.EvolvingAttention` between layers, for a few seeds. Reports the
test accuracy at the epoch of best validation accuracy, mean and standard deviation.

    GRAPHMEM_DATA=/work/shared/data python examples/evolving_attention_cora.py

Reads ``ind.cora.*`` with :func:`graphmem.data.load_planetoid` (from ``$GRAPHMEM_DATA/planetoid``,
the cache, or a download); nothing is written to the repository.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from node_training import fit_full_batch
from torch_geometric.data import Data
from torch_geometric.transforms import NormalizeFeatures

from graphmem.data import load_planetoid
from graphmem.nn import GATStack


def train(data: Data, seed: int, epochs: int, layers: int, heads: int, hidden: int, evolving: bool,
          alpha: float, beta: float) -> tuple[float, float, int]:
    """Returns (best validation accuracy, test accuracy at that epoch, that epoch)."""
    torch.manual_seed(seed)
    model = GATStack(data.num_features, hidden, int(data.y.max()) + 1, num_layers=layers, heads=heads,
                     dropout=0.6, attention_dropout=0.6, evolving=evolving, alpha=alpha, beta=beta)
    return fit_full_batch(model, data, epochs, lr=0.005, weight_decay=5e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="folder holding planetoid/ (default: $GRAPHMEM_DATA)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--variants", nargs="+", choices=["plain", "evolving"], default=["plain", "evolving"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = NormalizeFeatures()(load_planetoid("cora", args.root))
    print(f"Cora: {data.num_nodes} nodes, {data.num_edges} edges, train/val/test "
          f"{int(data.train_mask.sum())}/{int(data.val_mask.sum())}/{int(data.test_mask.sum())}")
    print("| layers | attention | val acc | test acc (at best val) | per seed | s/run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for layers in args.layers:
        for evolving in ("evolving" in v for v in args.variants):
            runs, start = [], time.perf_counter()
            for seed in args.seeds:
                runs.append(train(data, seed, args.epochs, layers, args.heads, args.hidden, evolving,
                                  args.alpha, args.beta))
            seconds = (time.perf_counter() - start) / len(args.seeds)
            val = [r[0] for r in runs]
            test = [r[1] for r in runs]
            spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
            name = f"evolving (alpha={args.alpha}, beta={args.beta})" if evolving else "plain"
            print(f"| {layers} | {name} | {statistics.mean(val):.3f} ± {spread(val):.3f} "
                  f"| {statistics.mean(test):.3f} ± {spread(test):.3f} "
                  f"| {', '.join(f'{t:.3f}' for t in test)} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
