"""``graphmem plot``: pictures from a recipe's model, trained (``--ckpt_path``) or fresh.

    graphmem plot molecule --config recipes/tox21_gat.yaml --ckpt_path best.ckpt \\
        --smiles "CC(=O)Oc1ccccc1C(=O)O" --out aspirin.png
    graphmem plot ntm --config recipes/ntm_copy.yaml --ckpt_path best.ckpt --length 10 --out copy.png

Arguments after ``--`` override the recipe as in ``graphmem fit``, so that the model matches the
checkpoint (e.g. ``-- --model.init_args.model.init_args.hidden_channels 16``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule

from graphmem.lit.checkpoint import check_checkpoint
from graphmem.plot.molecule import plot_molecule_attention
from graphmem.plot.ntm import ntm_copy_run

RECIPE_KEYS = ("seed_everything", "trainer", "model", "data", "test_after_fit", "optimizer", "lr_scheduler")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphmem plot", description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    for name, help_text in (("molecule", "a molecule shaded by GAT attention"),
                            ("ntm", "an NTM copy run: inputs, outputs and memory weightings over time")):
        kind = kinds.add_parser(name, help=help_text)
        kind.add_argument("--config", required=True, help="the recipe the model was trained with")
        kind.add_argument("--ckpt_path",
                          help="trained weights (a Lightning checkpoint); fresh weights without")
        kind.add_argument("--out", required=True, help="PNG file to write")
        if name == "molecule":
            kind.add_argument("--smiles", required=True)
            kind.add_argument("--layer", type=int, default=-1, help="which GAT layer (default: the last)")
            kind.add_argument("--relative", action="store_true",
                              help="shade by attention above or below what uniform attention would give")
        else:
            kind.add_argument("--length", type=int, default=10, help="copy sequence length")
            kind.add_argument("--seed", type=int, default=0)
    return parser


def load_model(config: str, ckpt_path: str | None, overrides: list[str]) -> torch.nn.Module:
    """The network inside a recipe's LightningModule, with the checkpoint's weights when given."""
    from graphmem.cli import GraphmemCLI  # the CLI imports this module lazily: no cycle at import time

    check_checkpoint(ckpt_path)
    # the config.yaml that `graphmem fit` saves beside a run also holds the arguments of the fit
    # call itself (ckpt_path, verbose, ...): keep what builds the model
    recipe = {key: value for key, value in yaml.safe_load(Path(config).read_text()).items()
              if key in RECIPE_KEYS}
    cli = GraphmemCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      args=["--config", yaml.safe_dump(recipe), "--trainer.logger", "false", *overrides],
                      run=False)
    if ckpt_path:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
        try:
            cli.model.load_state_dict(state)
        except RuntimeError as error:  # torch lists every mismatched tensor: keep the first lines
            detail = "; ".join(line.strip() for line in str(error).splitlines()[1:4])
            raise ValueError(f"checkpoint {ckpt_path} does not fit the model that {config} builds "
                             f"({detail}); "
                             f"use the config saved with the run (config.yaml beside lightning_logs) or pass "
                             f"the overrides it was trained with after --") from error
    return cli.model.model


def plot_main(args: list[str]) -> Path:
    """Runs ``graphmem plot ...`` with ``args`` (after ``plot``); returns the written file."""
    overrides = args[args.index("--") + 1:] if "--" in args else []
    options = _parser().parse_args(args[:args.index("--")] if "--" in args else args)
    model = load_model(options.config, options.ckpt_path, overrides)
    if options.kind == "molecule":
        if not hasattr(model, "node_states"):
            raise ValueError(f"{options.config} does not build a molecule GAT "
                             f"(its model is {type(model).__name__})")
        path = plot_molecule_attention(model, options.smiles, options.out, layer=options.layer,
                                       relative=options.relative)
    else:
        if not hasattr(model, "cell"):
            raise ValueError(f"{options.config} does not build an NTM (its model is "
                             f"{type(model).__name__})")
        path = ntm_copy_run(model, options.length, options.out, seed=options.seed)
    print(f"wrote {path}")
    return path
