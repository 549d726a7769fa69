"""NTM training steps on the copy task: the reference regime against graphmem's batched paths.

No NTM is installable from a package index, so the peer is the regime of the widely used
reference implementations: one sequence per update, every step run eagerly op by op. It is
graphmem's own cell run that way (``eager``, batch 1), which the issue timed against the
reference at 60-70 ms per length-20 sequence on this machine. Against it run:

- ``eager`` at larger batches: the same cell, many sequences per update;
- ``compiled``: the cell under ``torch.compile`` (``NTM(compile_step=True)``);
- ``lstm``: ``torch.nn.LSTM`` of the controller's size and the same output layer, no memory:
  the floor that a memory-less recurrent model of this size costs.

One training step is: forward over the ``2L + 1`` steps of a batch of copy sequences of
length ``L``, the cost, backward, gradient clipping and an Adam update. Time is the median
(minimum) of at least ``--repeats`` steps and ``--min-time`` seconds, the three models
alternating in one process so that background load hits all alike. Peak memory is measured in
a fresh child process per row: the high-water mark of the resident set during one step, above
the resident set before it, after a warm-up step on length-1 sequences (``/proc/self/clear_refs``
resets the mark, so compilation is not counted).

    python bench/ntm_bench.py                                    # batches 1 16 64, lengths 10 20 50
    python bench/ntm_bench.py --batches 16 --lengths 20 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
from benchutil import describe, run_child, status_mb
from torch import nn

from graphmem.data.algorithmic import copy_batch
from graphmem.lit.sequence import sequence_costs
from graphmem.memory import NTM

MODELS = ("eager", "compiled", "lstm")
WIDTH = 8


class LSTMBaseline(nn.Module):
    """``torch.nn.LSTM`` with the NTM controller's size and an output layer; no memory."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 100) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size)
        self.output = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.output(self.lstm(x)[0]), None


def build(kind: str) -> nn.Module:
    """The copy recipe's NTM (memory 128 x 20, LSTM controller of 100, one read and one write head)."""
    torch.manual_seed(0)
    if kind == "lstm":
        return LSTMBaseline(WIDTH + 1, WIDTH)
    return NTM(input_size=WIDTH + 1, output_size=WIDTH, memory_size=128, memory_width=20, controller="lstm",
               controller_size=100, read_heads=1, write_heads=1, shift_range=1, compile_step=kind == "compiled")


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[tuple], None]:
    def run(batch: tuple) -> None:
        inputs, targets, mask = batch
        bits, _ = sequence_costs(model(inputs)[0], targets, mask)
        optimizer.zero_grad(set_to_none=True)
        bits.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
    return run


def steppers(kinds: tuple[str, ...]) -> dict[str, Callable[[tuple], None]]:
    out = {}
    for kind in kinds:
        model = build(kind)
        out[kind] = training_step(model, torch.optim.Adam(model.parameters(), lr=3e-3))
    return out


def time_row(steps: dict[str, Callable[[tuple], None]], batch: tuple, repeats: int,
             min_time: float) -> dict[str, list[float]]:
    """Seconds per training step of each model, rotating which goes first."""
    for run in steps.values():  # warm-up: compilation, allocator
        run(batch)
    kinds = list(steps)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    start_all = time.perf_counter()
    r = 0
    while r < repeats or (time.perf_counter() - start_all < min_time and r < 500):
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            start = time.perf_counter()
            steps[kind](batch)
            times[kind].append(time.perf_counter() - start)
        r += 1
    return times


def memory_child(kind: str, batch_size: int, length: int) -> dict[str, float]:
    """In this (fresh) process: resident memory added by one training step of length ``length``.

    A warm-up step on length-1 sequences of the same batch size comes first: it compiles the
    step (the compiled cell does not depend on the length) and touches the optimizer's state,
    while leaving the allocator few freed blocks to hide the long step's activations in.
    """
    run = steppers((kind,))[kind]
    generator = torch.Generator().manual_seed(0)
    run(copy_batch(1, batch_size, WIDTH, generator))
    batch = copy_batch(length, batch_size, WIDTH, generator)
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident set
        f.write("5")
    before = status_mb("VmRSS")
    run(batch)
    return {"step_mb": status_mb("VmHWM") - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--lengths", type=int, nargs="+", default=[10, 20, 50], help="copy lengths L")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--no-time", action="store_true", help="measure only memory")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "BATCH", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Adam's moments drift into subnormal floats, which x86 CPUs process up to 100x slower
    torch.set_flush_denormal(True)
    if args.child:
        print(json.dumps(memory_child(args.child[0], int(args.child[1]), int(args.child[2]))))
        return

    print(f"# NTM copy-task training step, cpu: {describe('cpu')}")
    print(f"# load average before: {os.getloadavg()}")
    print("# ms per step: median (minimum); per sequence: median / batch; speed-up: per sequence, "
          "against eager at batch 1 (the reference regime) of the same length; MB: resident memory "
          "added by one step")
    print("| L | steps | batch | eager ms/step | compiled ms/step | lstm ms/step | eager ms/seq "
          "| compiled ms/seq | speed-up eager | speed-up compiled | eager MB | compiled MB | lstm MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    steps = {} if args.no_time else steppers(MODELS)
    for length in args.lengths:
        reference = None
        for batch_size in sorted(args.batches):
            batch = copy_batch(length, batch_size, WIDTH, torch.Generator().manual_seed(0))
            times = ({kind: [float("nan")] for kind in MODELS} if args.no_time
                     else time_row(steps, batch, args.repeats, args.min_time))
            ms = {kind: 1000 * statistics.median(t) for kind, t in times.items()}
            best = {kind: 1000 * min(t) for kind, t in times.items()}
            per_seq = {kind: ms[kind] / batch_size for kind in MODELS}
            if reference is None:
                reference = per_seq["eager"] if batch_size == 1 else None
            speedup = [f"{reference / per_seq[k]:.1f}x" if reference else "-" for k in ("eager", "compiled")]
            row = [length, 2 * length + 1, batch_size,
                   *(f"{ms[k]:.1f} ({best[k]:.1f})" for k in MODELS),
                   f"{per_seq['eager']:.2f}", f"{per_seq['compiled']:.2f}", *speedup]
            if args.no_memory:
                row += ["-"] * 3
            else:
                threads = ["--threads", str(args.threads)] if args.threads else []
                row += [f"{run_child(__file__, ['--child', k, str(batch_size), str(length), *threads])['step_mb']:.1f}"
                        for k in MODELS]
            print("| " + " | ".join(str(v) for v in row) + " |", flush=True)
    print(f"# load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
