"""GraphTransformerConv on a real task: node classification on Cora (public Planetoid split).

A 2-layer graph transformer (Shi et al. 2021) in the GAT paper's Cora setup: row-normalised
features, ``--heads`` heads of ``--hidden`` features concatenated (ELU) in the first layer, one
averaged head per class in the second, dropout 0.6 on features and attention, Adam (lr 0.005,
weight decay 5e-4), full batch. Reports the test accuracy at the epoch of best validation
accuracy for each seed, and their mean and standard deviation.

    GRAPHMEM_DATA=/work/shared/data python examples/graph_transformer_cora.py --seeds 0 1 2

Reads ``ind.cora.*`` with :func:`graphmem.data.load_planetoid` (from ``$GRAPHMEM_DATA/planetoid``,
the cache, or a download); nothing is written to the repository.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from node_training import fit_full_batch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.transforms import NormalizeFeatures

from graphmem.data import load_planetoid
from graphmem.nn import GraphTransformerConv


class GraphTransformer(nn.Module):
    """Two :class:`GraphTransformerConv` layers: heads concatenated with ELU, then averaged."""

    def __init__(self, in_channels: int, hidden: int, classes: int, heads: int, dropout: float,
                 root_weight: bool, beta: bool) -> None:
        super().__init__()
        self.dropout = dropout
        self.conv1 = GraphTransformerConv(in_channels, hidden, heads=heads, dropout=dropout,
                                          root_weight=root_weight, beta=beta)
        self.conv2 = GraphTransformerConv(heads * hidden, classes, heads=1, concat=False, dropout=dropout,
                                          root_weight=root_weight, beta=beta)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)


def train(data: Data, seed: int, args: argparse.Namespace) -> tuple[float, float, int]:
    """Returns (best validation accuracy, test accuracy at that epoch, that epoch)."""
    torch.manual_seed(seed)
    model = GraphTransformer(data.num_features, args.hidden, int(data.y.max()) + 1, args.heads, args.dropout,
                             not args.no_root_weight, args.beta)
    return fit_full_batch(model, data, args.epochs, args.lr, args.weight_decay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="folder holding planetoid/ (default: $GRAPHMEM_DATA)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.6)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--no-root-weight", action="store_true", help="drop the skip projection W_1 x_i")
    parser.add_argument("--beta", action="store_true", help="gate the skip connection")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = NormalizeFeatures()(load_planetoid("cora", args.root))
    print(f"Cora: {data.num_nodes} nodes, {data.num_edges} edges, train/val/test "
          f"{int(data.train_mask.sum())}/{int(data.val_mask.sum())}/{int(data.test_mask.sum())}")
    runs, start = [], time.perf_counter()
    for seed in args.seeds:
        run_start = time.perf_counter()
        val, test, epoch = train(data, seed, args)
        runs.append((val, test))
        print(f"seed {seed}: best val {val:.3f} at epoch {epoch}, test {test:.3f} "
              f"({time.perf_counter() - run_start:.1f} s)", flush=True)
    seconds = (time.perf_counter() - start) / len(args.seeds)
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
    val = [r[0] for r in runs]
    test = [r[1] for r in runs]
    print(f"val {statistics.mean(val):.3f} ± {spread(val):.3f}, test {statistics.mean(test):.3f} ± "
          f"{spread(test):.3f} over seeds {args.seeds} ({seconds:.1f} s per run)")


if __name__ == "__main__":
    main()
