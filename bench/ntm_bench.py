"""NTM training steps on the copy task: graphmem's NTM against nn.LSTM, the PyPI ``dnc`` package
and the one-sequence-per-update regime of the reference NTM implementations.

Models, on the copy recipe's shapes (8-bit vectors, memory 128 x 20, a controller of 100
LSTM units, one read and one write head) or, with ``--recipe recall``, the associative recall
recipe's (6-bit items of 3 vectors, memory 128 x 20, a feed-forward controller of 256, four
read and four write heads):

- ``eager``: graphmem's NTM run op by op; at batch 1 this is the regime of the widely used
  reference implementations (one sequence per update), which the issue timed at 60-70 ms per
  length-20 sequence on this machine;
- ``compiled``: the same NTM with its step under ``torch.compile`` (``NTM(compile_step=True)``);
- ``fused``: the same NTM as one C++ loop over the sequence with a hand-written backward through
  time (``NTM(fused=True)``, :mod:`graphmem.memory.fused`);
- ``lstm``: ``torch.nn.LSTM`` of the controller's size and the same output layer, no memory:
  the floor that a memory-less recurrent model of this size costs;
- ``dnc``: the Differentiable Neural Computer of the PyPI package ``dnc`` (a batched PyTorch
  DNC), with an LSTM controller of the same width, the same memory and read heads (a DNC has
  one write head); skipped, with a note, where ``dnc`` is not importable. It is a benchmark
  peer only, not a graphmem dependency: install it in a separate environment
  (``pip install --no-deps dnc``; it needs only torch and numpy at run time).

One training step is: forward over the ``2L + 1`` steps of a batch of copy sequences of
length ``L`` (or the steps of a recall batch), the cost, backward, gradient clipping and an
Adam update. The models alternate in one process, rotating which goes first, so that
background load hits all alike; a time is the median (minimum) of at least ``--repeats``
rounds and ``--min-time`` seconds, and a ratio is the median over rounds of the ratio within
a round. ``--clock cpu`` measures the thread's CPU time instead of wall time (steadier on a
loaded machine; use it with ``--threads 1``). Peak memory is measured in a fresh child
process per model: the high-water mark of the resident set during one step, above the
resident set before it, after a warm-up step on the smallest size (``/proc/self/clear_refs``
resets the mark, so compilation is not counted).

    python bench/ntm_bench.py                                    # batches 1 16 32, length 20
    python bench/ntm_bench.py --recipe recall --batches 32        # 6 items
    python bench/ntm_bench.py --batches 16 --lengths 10 20 --threads 1 --clock cpu
    python bench/ntm_bench.py --batches 16 --memory 8 20 --threads 1 --clock cpu   # what a small memory costs
    python bench/ntm_bench.py --models eager lstm --batches 2 --lengths 2 --repeats 1 --min-time 0 --no-memory
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
from benchutil import describe, run_child, status_mb
from torch import nn

from graphmem.data.algorithmic import associative_recall_batch, copy_batch
from graphmem.lit.sequence import sequence_costs
from graphmem.memory import NTM

MODELS = ("eager", "compiled", "fused", "lstm", "dnc")
#: the recipes' memory, rows x width (``--memory`` sets another, to see what the memory's size costs)
MEMORY = (128, 20)
#: the NTM of each recipe (recipes/ntm_copy.yaml, recipes/ntm_associative_recall.yaml)
RECIPES: dict[str, dict] = {
    "copy": dict(input_size=9, output_size=8, controller="lstm", controller_size=100, read_heads=1, write_heads=1),
    "recall": dict(input_size=8, output_size=6, controller="feedforward", controller_size=256, read_heads=4,
                   write_heads=4),
}
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


class LSTMBaseline(nn.Module):
    """``torch.nn.LSTM`` with the NTM controller's size and an output layer; no memory."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size)
        self.output = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.output(self.lstm(x)[0]), None


class DNCPeer(nn.Module):
    """The PyPI ``dnc`` package's DNC with the NTM's controller width, memory and read heads.

    Its controller is always an LSTM and it has one write head. Its output layer maps back to
    the input width (the delimiter channels included), so the first ``output_size`` channels
    are the prediction. Every call starts from a fresh memory (``reset_experience``), as an
    NTM call does.
    """

    def __init__(self, input_size: int, output_size: int, hidden_size: int, read_heads: int,
                 memory: tuple[int, int] = MEMORY) -> None:
        super().__init__()
        from dnc import DNC  # a benchmark peer, imported only when asked for

        self.output_size = output_size
        self.dnc = DNC(input_size=input_size, hidden_size=hidden_size, rnn_type="lstm", num_layers=1,
                       num_hidden_layers=1, nr_cells=memory[0], cell_size=memory[1], read_heads=read_heads,
                       batch_first=False, gpu_id=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.dnc(x, (None, None, None), reset_experience=True)[0][..., :self.output_size], None


def available(kinds: tuple[str, ...]) -> tuple[str, ...]:
    """``kinds`` without ``dnc`` where the package is not installed (with a note saying so)."""
    if "dnc" in kinds and importlib.util.find_spec("dnc") is None:
        print("# dnc: the PyPI package `dnc` is not importable here, so the DNC peer is skipped "
              "(pip install --no-deps dnc in a separate environment)")
        return tuple(kind for kind in kinds if kind != "dnc")
    return kinds


def build(kind: str, recipe: str, memory: tuple[int, int] = MEMORY) -> nn.Module:
    """The recipe's NTM (memory ``memory``, the recipes' 128 x 20 by default), or a peer of its
    controller's width."""
    torch.manual_seed(0)
    options = RECIPES[recipe]
    sizes = options["input_size"], options["output_size"], options["controller_size"]
    if kind == "lstm":
        return LSTMBaseline(*sizes)
    if kind == "dnc":
        return DNCPeer(*sizes, options["read_heads"], memory)
    return NTM(memory_size=memory[0], memory_width=memory[1], shift_range=1, compile_step=kind == "compiled",
               fused=kind == "fused", **options)


def make_batch(recipe: str, size: int, batch_size: int, generator: torch.Generator) -> tuple:
    """Copy sequences of length ``size`` or associative recall over ``size`` items (the recipes' widths)."""
    if recipe == "copy":
        return copy_batch(size, batch_size, RECIPES["copy"]["output_size"], generator)
    return associative_recall_batch(size, batch_size, RECIPES["recall"]["output_size"], generator=generator)


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[tuple], None]:
    def run(batch: tuple) -> None:
        inputs, targets, mask = batch
        bits, _ = sequence_costs(model(inputs)[0], targets, mask)
        optimizer.zero_grad(set_to_none=True)
        bits.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
    return run


def steppers(kinds: tuple[str, ...], recipe: str,
             memory: tuple[int, int] = MEMORY) -> dict[str, Callable[[tuple], None]]:
    out = {}
    for kind in kinds:
        model = build(kind, recipe, memory)
        out[kind] = training_step(model, torch.optim.Adam(model.parameters(), lr=3e-3))
    return out


def time_row(steps: dict[str, Callable[[tuple], None]], batch: tuple, repeats: int, min_time: float,
             clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per training step of each model, one list entry per round, rotating which goes first."""
    for run in steps.values():  # warm-up: compilation, allocator
        run(batch)
    kinds = list(steps)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    start_all = time.perf_counter()
    r = 0
    while r < repeats or (time.perf_counter() - start_all < min_time and r < 500):
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            start = clock()
            steps[kind](batch)
            times[kind].append(clock() - start)
        r += 1
    return times


def ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> str:
    """Median over rounds of ``numerator`` / ``denominator`` time, or ``-`` if either is missing."""
    if numerator not in times or denominator not in times:
        return "-"
    return f"{statistics.median(a / b for a, b in zip(times[numerator], times[denominator])):.1f}x"


def memory_child(kind: str, batch_size: int, size: int, recipe: str,
                 memory: tuple[int, int] = MEMORY) -> dict[str, float]:
    """In this (fresh) process: resident memory added by one training step on ``size``.

    A warm-up step on the smallest size (length 1, or 2 items) of the same batch size comes
    first: it compiles the step (the compiled cell does not depend on the length) and touches
    the optimizer's state, while leaving the allocator few freed blocks to hide the long
    step's activations in.
    """
    run = steppers((kind,), recipe, memory)[kind]
    generator = torch.Generator().manual_seed(0)
    run(make_batch(recipe, 1 if recipe == "copy" else 2, batch_size, generator))
    batch = make_batch(recipe, size, batch_size, generator)
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident set
        f.write("5")
    before = status_mb("VmRSS")
    run(batch)
    return {"step_mb": status_mb("VmHWM") - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--recipe", choices=list(RECIPES), default="copy",
                        help="the NTM and data of recipes/ntm_copy.yaml or recipes/ntm_associative_recall.yaml")
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="copy lengths L or recall item counts (default: 20 or 6, the longest trained)")
    parser.add_argument("--memory", type=int, nargs=2, default=list(MEMORY), metavar=("ROWS", "WIDTH"),
                        help="the NTM's (and DNC's) memory, N x M (default: the recipes' 128 x 20)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=3.0)
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--no-time", action="store_true", help="measure only memory")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "BATCH", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Adam's moments drift into subnormal floats, which x86 CPUs process up to 100x slower
    torch.set_flush_denormal(True)
    memory = tuple(args.memory)
    if args.child:
        kind, batch_size, size = args.child
        print(json.dumps(memory_child(kind, int(batch_size), int(size), args.recipe, memory)))
        return
    lengths = args.lengths or [20 if args.recipe == "copy" else 6]

    kinds = available(tuple(args.models))
    extra = [f"dnc {importlib.metadata.version('dnc')}"] if "dnc" in kinds else []
    print(f"# NTM {args.recipe}-task training step, {RECIPES[args.recipe]}, "
          f"memory {memory[0]} x {memory[1]}, "
          f"cpu: {describe('cpu', *extra)}; clock: {args.clock}")
    print(f"# load average before: {os.getloadavg()}")
    print("# ms per step: median (minimum); per sequence: median / batch; ratios: median over rounds of "
          "the ratio within a round; speed-up: per sequence, against eager at batch 1 (the reference "
          "regime) of the same length; MB: resident memory added by one step")
    header = ["L" if args.recipe == "copy" else "items", "steps", "batch", *(f"{k} ms/step" for k in kinds), *(f"{k} ms/seq" for k in kinds),
              "compiled / lstm", "fused / lstm", "dnc / eager", "dnc / compiled", "dnc / fused", "speed-up eager",
              "speed-up compiled", "speed-up fused", *(f"{k} MB" for k in kinds)]
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---:" for _ in header) + " |")
    steps = {} if args.no_time else steppers(kinds, args.recipe, memory)
    for length in lengths:
        reference = None
        for batch_size in sorted(args.batches):
            batch = make_batch(args.recipe, length, batch_size, torch.Generator().manual_seed(0))
            times = ({kind: [float("nan")] for kind in kinds} if args.no_time
                     else time_row(steps, batch, args.repeats, args.min_time, CLOCKS[args.clock]))
            ms = {kind: 1000 * statistics.median(t) for kind, t in times.items()}
            best = {kind: 1000 * min(t) for kind, t in times.items()}
            per_seq = {kind: ms[kind] / batch_size for kind in kinds}
            if reference is None and "eager" in kinds:
                reference = per_seq["eager"] if batch_size == 1 else None
            speedup = [f"{reference / per_seq[k]:.1f}x" if reference and k in kinds else "-"
                       for k in ("eager", "compiled", "fused")]
            row = [length, batch[0].size(0), batch_size, *(f"{ms[k]:.1f} ({best[k]:.1f})" for k in kinds),
                   *(f"{per_seq[k]:.2f}" for k in kinds), ratio(times, "compiled", "lstm"), ratio(times, "fused", "lstm"),
                   ratio(times, "dnc", "eager"), ratio(times, "dnc", "compiled"), ratio(times, "dnc", "fused"),
                   *speedup]
            if args.no_memory:
                row += ["-"] * len(kinds)
            else:
                child_args = (["--recipe", args.recipe, "--memory", *map(str, memory)]
                              + (["--threads", str(args.threads)] if args.threads else []))
                row += [f"{run_child(__file__, ['--child', k, str(batch_size), str(length), *child_args])['step_mb']:.1f}"
                        for k in kinds]
            print("| " + " | ".join(str(v) for v in row) + " |", flush=True)
    print(f"# load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
