"""Finding data files: an offline mirror first, then a download cache, then the canonical URL.

Where graphmem looks, in order:

1. the folder named by ``GRAPHMEM_DATA`` (an offline mirror; may be read-only), or the
   ``root`` argument of a loader, which takes its place;
2. the download cache, ``GRAPHMEM_CACHE`` or ``./datasets``;
3. the canonical public URL, downloaded into the cache.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from graphmem.errors import GraphmemError

DATA_ENV = "GRAPHMEM_DATA"
CACHE_ENV = "GRAPHMEM_CACHE"


class DataFileError(GraphmemError, FileNotFoundError):
    """A data file is missing, could not be downloaded, or is truncated or corrupted."""


def cache_dir() -> Path:
    """Where downloads land: ``$GRAPHMEM_CACHE`` or ``./datasets``."""
    return Path(os.environ.get(CACHE_ENV) or "datasets")


def search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for a data file, in order."""
    first = root if root is not None else os.environ.get(DATA_ENV)
    dirs = [Path(first)] if first else []
    return dirs + [cache_dir()]


def fetch(relative_path: str, url: str, root: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """Returns the local path of ``relative_path`` (e.g. ``"moleculenet/tox21.csv.gz"``).

    Looks in :func:`search_dirs`; when the file is in none, downloads ``url`` into the cache
    (atomically: a failed download leaves no partial file). Raises :class:`DataFileError`
    naming every place it looked and how to get the file when that fails too.
    """
    dirs = search_dirs(root)
    for folder in dirs:
        candidate = folder / relative_path
        if candidate.is_file():
            return candidate
    target = cache_dir() / relative_path
    partial = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
        partial.replace(target)
    except (OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        looked = ", ".join(str(folder / relative_path) for folder in dirs)
        raise DataFileError(
            f"data file {relative_path!r} not found (looked in: {looked}) and downloading "
            f"{url} failed ({error}). Download it from {url} and put it at {target}, or set "
            f"{DATA_ENV} to a folder that holds {relative_path}."
        ) from error
    return target
