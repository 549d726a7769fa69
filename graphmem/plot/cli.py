"""``graphmem plot``: pictures from a recipe's model, trained (``--ckpt_path``) or fresh.

    graphmem plot molecule --config recipes/tox21_gat.yaml --ckpt_path best.ckpt \\
        --smiles "CC(=O)Oc1ccccc1C(=O)O" --out aspirin.png
    graphmem plot ntm --config recipes/ntm_copy.yaml --ckpt_path best.ckpt --length 10 --out copy.png
    graphmem plot ntm --config recipes/ntm_repeat_copy.yaml --ckpt_path best.ckpt --length 5 --repeats 3 --out r.png
    graphmem plot ntm --config recipes/ntm_associative_recall.yaml --ckpt_path best.ckpt --items 6 --out a.png
    graphmem plot curves --log runs/tox21_gat/lightning_logs/version_0/metrics.csv \
        --metrics train_loss val_roc_auc --out curves.png

Arguments after ``--`` override the recipe as in ``graphmem fit``, so that the model matches the
checkpoint (e.g. ``-- --model.init_args.model.init_args.hidden_channels 16``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from graphmem.data.algorithmic import AlgorithmicDataModule
from graphmem.errors import GraphmemError
from graphmem.plot.curves import plot_curves
from graphmem.plot.molecule import plot_molecule_attention
from graphmem.plot.ntm import ntm_copy_run, ntm_task_run
from graphmem.recipe import load_recipe


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a length or count of 0 draws nothing)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _png(text: str) -> str:
    """An argparse type: a ``.png`` file name (the pictures are PNG bytes, whatever the name says)."""
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text!r}: graphmem plot writes PNG images; name the file .png")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphmem plot", description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    for name, help_text in (("molecule", "a molecule shaded by GAT attention"),
                            ("ntm", "an NTM run of the recipe's task: inputs, outputs, memory weightings")):
        kind = kinds.add_parser(name, help=help_text)
        kind.add_argument("--config", required=True, help="the recipe the model was trained with")
        kind.add_argument("--ckpt_path",
                          help="trained weights (a Lightning checkpoint); fresh weights without")
        kind.add_argument("--out", required=True, type=_png, help="PNG file to write")
        if name == "molecule":
            kind.add_argument("--smiles", required=True)
            kind.add_argument("--layer", type=int, default=-1, help="which GAT layer (default: the last)")
            kind.add_argument("--relative", action="store_true",
                              help="shade by attention above or below what uniform attention would give")
        else:
            kind.add_argument("--length", type=_positive, default=10, help="sequence length (copy, repeat copy)")
            kind.add_argument("--repeats", type=_positive, default=3, help="repeat count (repeat copy)")
            kind.add_argument("--items", type=_positive, default=6, help="number of items (associative recall)")
            kind.add_argument("--seed", type=int, default=0)
            kind.add_argument("--head", type=int, default=0, help="which read and write head to draw")
    curves = kinds.add_parser("curves", help="training curves from a run's metrics.csv (no model needed)")
    curves.add_argument("--log", required=True, nargs="+",
                        help="the metrics.csv of a run (CSV logger); several draw one line per run")
    curves.add_argument("--labels", nargs="+", help="the runs' names in the legend (default: the paths)")
    curves.add_argument("--metrics", nargs="+", help="metrics to draw (default: all logged in 2+ epochs)")
    curves.add_argument("--x", choices=("epoch", "step"), default="epoch", help="horizontal axis")
    curves.add_argument("--log-y", action="store_true", help="values on a log scale")
    curves.add_argument("--out", required=True, type=_png, help="PNG file to write")
    return parser


def load_model(config: str, ckpt_path: str | None, overrides: list[str]) -> torch.nn.Module:
    """The network inside a recipe's LightningModule, with the checkpoint's weights when given."""
    return load_recipe(config, ckpt_path, overrides).model.model


def plot_main(args: list[str]) -> Path:
    """Runs ``graphmem plot ...`` with ``args`` (after ``plot``); returns the written file."""
    overrides = args[args.index("--") + 1:] if "--" in args else []
    options = _parser().parse_args(args[:args.index("--")] if "--" in args else args)
    if options.kind == "curves":
        path = plot_curves(options.log, options.out, options.metrics, options.x, options.labels, options.log_y)
        print(f"wrote {path}")
        return path
    recipe = load_recipe(options.config, options.ckpt_path, overrides)
    model, datamodule = recipe.model.model, recipe.datamodule
    if options.kind == "molecule":
        if not hasattr(model, "node_states"):
            raise GraphmemError(f"{options.config} does not build a molecule GAT "
                                f"(its model is {type(model).__name__})")
        layers = len(model.convs)
        if not -layers <= options.layer < layers:
            raise GraphmemError(f"--layer {options.layer}: the model has {layers} GAT layers (0..{layers - 1}, "
                                f"or -1 for the last)")
        path = plot_molecule_attention(model, options.smiles, options.out, layer=options.layer,
                                       relative=options.relative)
    else:
        if not hasattr(model, "cell"):
            raise GraphmemError(f"{options.config} does not build an NTM (its model is "
                                f"{type(model).__name__})")
        if isinstance(datamodule, AlgorithmicDataModule):
            spec = datamodule.spec
            size = {"copy": options.length, "repeat_copy": (options.length, options.repeats),
                    "associative_recall": options.items}[spec.task]
            path = ntm_task_run(model, spec, size, options.out, seed=options.seed, head=options.head)
        else:  # a model trained on other data: draw a copy run
            path = ntm_copy_run(model, options.length, options.out, seed=options.seed, head=options.head)
    print(f"wrote {path}")
    return path
