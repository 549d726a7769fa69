"""Checks a checkpoint file before Lightning loads it, so that a truncated, corrupted or wrong
file gives one clear error naming the file instead of a traceback from deep inside torch."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from graphmem.errors import GraphmemError

# ``ckpt_path`` values that Lightning resolves itself rather than reading a file.
LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")
ADVICE = "pass another checkpoint with --ckpt_path (e.g. an earlier epoch's), or train again without it"


class CheckpointError(GraphmemError):
    """A checkpoint file that is missing, empty, truncated, corrupted or not a Lightning checkpoint."""


def _is_file_path(ckpt_path: str | os.PathLike) -> bool:
    text = str(ckpt_path)
    return not (text in LIGHTNING_CKPT_KEYWORDS or text.startswith("registry:") or "://" in text)


def check_checkpoint(ckpt_path: str | os.PathLike | None) -> None:
    """Raises :class:`CheckpointError` naming the file and the problem unless ``ckpt_path`` is a
    readable Lightning checkpoint. ``None``, Lightning's keywords (``"last"``, ``"best"``, ...)
    and remote URLs are left to Lightning.

    Reads the file once: the CRC of every archive member is verified (torch itself would load
    flipped bits in tensor data silently), then the index is unpickled with the tensors
    memory-mapped, not read.
    """
    if ckpt_path is None or not _is_file_path(ckpt_path):
        return
    path = Path(ckpt_path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist; {ADVICE}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path {path} is not a file (a checkpoint is a .ckpt file); "
                              f"{ADVICE}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint file {path} is empty (0 bytes): its saving was interrupted; "
                              f"{ADVICE}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint file {path} ({size} bytes) is truncated or is not a PyTorch "
                              f"checkpoint (no zip archive index found); {ADVICE}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(f"checkpoint file {path} is corrupted ({error}); {ADVICE}") from error
    if bad_member is not None:
        raise CheckpointError(f"checkpoint file {path} is corrupted: the data of {bad_member!r} fails its "
                              f"checksum; {ADVICE}")
    try:
        contents = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error).lower() or "weights only" in str(error).lower():
            return  # readable, but holds objects beyond tensors: Lightning's own loader decides
        raise CheckpointError(f"checkpoint file {path} cannot be read ({error}); {ADVICE}") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint file {path} cannot be read ({type(error).__name__}: "
                              f"{str(error).splitlines()[0]}); {ADVICE}") from error
    if not isinstance(contents, dict) or "state_dict" not in contents:
        found = sorted(map(str, contents))[:8] if isinstance(contents, dict) else type(contents).__name__
        raise CheckpointError(f"{path} is a PyTorch file but not a Lightning checkpoint: it has no "
                              f"'state_dict' (it holds {found}); {ADVICE}")
