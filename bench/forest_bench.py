"""Forest prediction: scikit-learn's ``predict_proba`` against graphmem.models.MoleculeForest on the same trees.

One forest per task is fitted once with scikit-learn on random count features shaped like
Tox21's (217 descriptors and 2,048 fingerprint bins, about 20 bins of 64 set per molecule);
MoleculeForest takes those very trees (``fit`` with the same seed, so the same draws). Both then
predict the same batches; time is the median (and the minimum) of several runs, the two
alternating in one process. The outputs are checked to agree before anything is timed.

    python bench/forest_bench.py                       # 2 tasks x 500 trees, batches of 128 and 1024
    python bench/forest_bench.py --tasks 12 --threads 1 --batches 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import sklearn
import torch
from benchutil import describe
from sklearn.ensemble import RandomForestClassifier
from torch_geometric.data import Batch, Data

from graphmem.models import MoleculeForest

DESCRIPTORS, FINGERPRINTS = 217, 2048


def data(molecules: int, tasks: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(molecules, DESCRIPTORS)),
                        rng.poisson(0.3, size=(molecules, FINGERPRINTS)) * (rng.random((molecules, FINGERPRINTS)) < 0.03)],
                       1).astype(np.float32)
    y = (x[:, :tasks] + 0.5 * x[:, DESCRIPTORS:DESCRIPTORS + tasks] + rng.normal(size=(molecules, tasks)) > 1)
    return x, y.astype(np.float32)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--leaves", type=int, default=256)
    parser.add_argument("--train", type=int, default=6000, help="training molecules")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    x, y = data(args.train, args.tasks)
    forest = MoleculeForest(args.tasks, DESCRIPTORS, FINGERPRINTS, args.trees, args.leaves)
    forest.fit(torch.from_numpy(x), torch.from_numpy(y), seed=0, n_jobs=threads)
    peers = [RandomForestClassifier(args.trees, max_leaf_nodes=args.leaves, class_weight="balanced", random_state=task,
                                    n_jobs=threads).fit(x, y[:, task]) for task in range(args.tasks)]
    print(describe("cpu", f"scikit-learn {sklearn.__version__}", f"{args.tasks} tasks x {args.trees} trees of <= {args.leaves} leaves"))
    print("| batch | sklearn predict_proba (s, median / min) | MoleculeForest (s, median / min) | ratio (graphmem / sklearn) |")
    print("| ---: | ---: | ---: | ---: |")
    for size in args.batches:
        test, _ = data(size, args.tasks, seed=1)
        batch = Batch.from_data_list([Data(descriptors=torch.from_numpy(row[None, :DESCRIPTORS]),
                                           fingerprints=torch.from_numpy(row[None, DESCRIPTORS:]), num_nodes=1)
                                      for row in test])

        def peer() -> np.ndarray:
            return np.stack([model.predict_proba(test)[:, 1] for model in peers], 1)

        def ours() -> torch.Tensor:
            with torch.no_grad():
                return torch.sigmoid(forest(batch))

        expected = np.clip(peer(), 1e-6, 1 - 1e-6)
        assert np.allclose(ours().numpy(), expected, atol=1e-5), "the two forests disagree"
        theirs, mine = [], []
        for _ in range(args.repeats):  # alternating, so that background load hits both alike
            theirs += timed(peer, 1)
            mine += timed(ours, 1)
        t, m = statistics.median(theirs), statistics.median(mine)
        print(f"| {size} | {t:.3f} / {min(theirs):.3f} | {m:.3f} / {min(mine):.3f} | {m / t:.2f} |")


if __name__ == "__main__":
    main()
