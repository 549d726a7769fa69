"""Trained models shipped inside the package, so that ``graphmem predict --model tox21 --smiles
CCO`` works on a fresh install, without training and without the data.

Each model is a folder here holding an ensemble (see :mod:`graphmem.ensemble`): its
``ensemble.json``, the members' checkpoints (weights and data identity only, no optimizer
state) and the config that builds them. ``docs/models/<name>.md`` is its model card.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from graphmem.ensemble import MANIFEST
from graphmem.errors import GraphmemError


def available_models() -> list[str]:
    """The names of the shipped models (``tox21``)."""
    return sorted(entry.name for entry in files(__name__).iterdir()
                  if entry.is_dir() and entry.joinpath(MANIFEST).is_file())


def pretrained_model(name: str) -> Path:
    """The folder of shipped model ``name``, for :func:`graphmem.ensemble.load_ensemble`."""
    if name not in available_models():
        raise GraphmemError(f"unknown model {name!r}; the shipped models are: {', '.join(available_models())}")
    # graphmem is installed as files (a wheel unpacks; it is not imported from a zip), so this is a path
    return Path(str(files(__name__).joinpath(name)))
