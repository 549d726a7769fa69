"""GATConv forward + backward: torch_geometric.nn.GATConv against graphmem.nn.GATConv (or,
with ``--layer transformer``, TransformerConv against graphmem.nn.GraphTransformerConv; with
``--layer gatv2``, GATv2Conv against graphmem.nn.GATv2Conv).

Both layers get the same weights (``load_state_dict``), the same random graph and the same
loss, ``sum(out * c)``. Time is the median (and the minimum, the run least disturbed by other
processes) of several forward + backward runs, the two layers alternating in one process so
that background load hits both alike. Peak memory is
measured for each layer in a fresh child process running one forward + backward (CPU: the
child's peak resident set, ``VmHWM``, in total and above the resident set just before
the step; CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before).

    python bench/gat_bench.py                          # every size on CPU
    python bench/gat_bench.py --sizes cora 1m --repeats 9 --threads 1
    python bench/gat_bench.py --device cuda
    python bench/gat_bench.py --layer transformer
    python bench/gat_bench.py --layer gatv2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass

import torch
import torch_geometric
import torch_geometric.nn as pygnn
from benchutil import describe, run_child, status_mb

from graphmem.nn import GATConv, GATv2Conv, GraphTransformerConv


@dataclass(frozen=True)
class Config:
    """One benchmark graph: random edges between ``nodes`` nodes, ``features`` inputs."""

    name: str
    nodes: int
    edges: int
    features: int
    heads: int
    channels: int


CONFIGS = {
    "cora": Config("cora-sized", 2708, 10556, 1433, 8, 8),
    "10k": Config("10k edges", 500, 10_000, 128, 8, 16),
    "100k": Config("100k edges", 5_000, 100_000, 128, 8, 16),
    "1m": Config("1M edges", 50_000, 1_000_000, 128, 8, 16),
}
IMPLS = ("pyg", "graphmem")
# --layer: (PyG's layer, graphmem's), built with the same arguments.
LAYERS = {"gat": (pygnn.GATConv, GATConv), "transformer": (pygnn.TransformerConv, GraphTransformerConv),
          "gatv2": (pygnn.GATv2Conv, GATv2Conv)}


def build(config: Config, device: str, layer: str = "gat", seed: int = 0):
    """The graph, the loss weights and both ``layer`` layers with identical parameters."""
    torch.manual_seed(seed)
    x = torch.randn(config.nodes, config.features, device=device)
    edge_index = torch.randint(0, config.nodes, (2, config.edges), device=device)
    c = torch.randn(config.nodes, config.heads * config.channels, device=device)
    ref_cls, ours_cls = LAYERS[layer]
    ref = ref_cls(config.features, config.channels, heads=config.heads).to(device)
    ours = ours_cls(config.features, config.channels, heads=config.heads).to(device)
    ours.load_state_dict(ref.state_dict())
    return x, edge_index, c, {"pyg": ref, "graphmem": ours}


def step(module: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor, c: torch.Tensor) -> None:
    """One forward + backward; gradients are dropped, not accumulated."""
    module.zero_grad(set_to_none=True)
    (module(x, edge_index) * c).sum().backward()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_both(config: Config, device: str, layer: str, repeats: int,
              min_time: float) -> dict[str, list[float]]:
    """Seconds per forward + backward of each layer, alternating which goes first.

    At least ``repeats`` runs each, more until ``min_time`` seconds have passed (small graphs
    take milliseconds, and a median of a few is at the mercy of background load).
    """
    x, edge_index, c, modules = build(config, device, layer)
    for module in modules.values():  # warm-up: allocator, lazy init, kernels
        step(module, x, edge_index, c)
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    start_all = time.perf_counter()
    r = 0
    while r < repeats or (time.perf_counter() - start_all < min_time and r < 1000):
        r += 1
        for impl in (IMPLS if r % 2 == 0 else IMPLS[::-1]):
            _sync(device)
            start = time.perf_counter()
            step(modules[impl], x, edge_index, c)
            _sync(device)
            times[impl].append(time.perf_counter() - start)
    return times


def measure_memory_child(impl: str, key: str, device: str, layer: str) -> dict[str, float]:
    """In this (fresh) process: peak memory of one forward + backward of ``impl``."""
    x, edge_index, c, modules = build(CONFIGS[key], device, layer)
    module = modules[impl]
    del modules  # the other layer's parameters do not count
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        step(module, x, edge_index, c)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
        return {"peak_mb": peak, "step_mb": peak - before}
    before = status_mb("VmRSS")
    step(module, x, edge_index, c)
    # VmHWM, the high-water mark of this process image; ru_maxrss would also count the
    # parent's memory, inherited through fork before exec.
    peak = status_mb("VmHWM")
    return {"peak_mb": peak, "step_mb": peak - before}


def measure_memory(impl: str, key: str, device: str, layer: str, threads: int | None) -> dict[str, float]:
    """Runs :func:`measure_memory_child` in a new interpreter and returns its result."""
    arguments = ["--child", impl, key, "--device", device, "--layer", layer]
    arguments += ["--threads", str(threads)] if threads else []
    return run_child(__file__, arguments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--layer", choices=list(LAYERS), default="gat",
                        help="gat: GATConv; transformer: TransformerConv vs GraphTransformerConv; gatv2: GATv2Conv")
    parser.add_argument("--repeats", type=int, default=7, help="least timed runs per layer (median reported)")
    parser.add_argument("--min-time", type=float, default=3.0,
                        help="keep repeating until this many seconds have passed per graph")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")

    if args.child:
        print(json.dumps(measure_memory_child(args.child[0], args.child[1], args.device, args.layer)))
        return

    machine = describe(args.device, f"torch_geometric {torch_geometric.__version__}")
    names = " vs ".join(cls.__name__ for cls in LAYERS[args.layer])
    print(f"# {names} forward + backward, {args.device}: {machine}")
    print(f"# load average before: {os.getloadavg()}")
    memory_note = "peak RSS of a fresh process" if args.device == "cpu" else "peak CUDA allocation"
    print(f"# time: median (minimum) of >= {args.repeats} runs (>= {args.min_time:g} s per graph); "
          f"memory: {memory_note} (total / during the step)")
    print("| graph | nodes | edges | features | heads x ch | PyG ms | graphmem ms | speed-up "
          "| PyG peak MB | graphmem peak MB | memory ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in args.sizes:
        config = CONFIGS[key]
        times = time_both(config, args.device, args.layer, args.repeats, args.min_time)
        ms = {impl: 1000 * statistics.median(t) for impl, t in times.items()}
        best = {impl: 1000 * min(t) for impl, t in times.items()}
        row = [config.name, config.nodes, config.edges, config.features,
               f"{config.heads} x {config.channels}",
               f"{ms['pyg']:.1f} ({best['pyg']:.1f})", f"{ms['graphmem']:.1f} ({best['graphmem']:.1f})",
               f"{ms['pyg'] / ms['graphmem']:.2f}x ({best['pyg'] / best['graphmem']:.2f}x)"]
        if args.no_memory:
            row += ["-", "-", "-"]
        else:
            mem = {impl: measure_memory(impl, key, args.device, args.layer, args.threads) for impl in IMPLS}
            row += [f"{mem[i]['peak_mb']:.0f} / {mem[i]['step_mb']:.0f}" for i in IMPLS]
            row.append(f"{mem['graphmem']['peak_mb'] / mem['pyg']['peak_mb']:.2f} / "
                       f"{mem['graphmem']['step_mb'] / max(mem['pyg']['step_mb'], 1e-9):.2f}")
        print("| " + " | ".join(str(v) for v in row) + " |", flush=True)
        quartiles = {impl: [round(1000 * q, 1) for q in statistics.quantiles(t, n=4)]
                     for impl, t in times.items()}
        print(f"#   {key}: {len(times['pyg'])} runs each; quartiles ms  pyg {quartiles['pyg']}"
              f"  graphmem {quartiles['graphmem']}", flush=True)
    print(f"# load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
