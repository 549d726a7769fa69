"""The recipes shipped with graphmem, found without importing torch or Lightning, so that
``graphmem recipes`` and ``graphmem --help`` answer at once."""

from __future__ import annotations

from pathlib import Path

# graphmem/recipes links to the top-level recipes/ in a checkout; a wheel holds the files there
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def recipe_summaries(folder: Path = RECIPES_DIR) -> list[tuple[str, str]]:
    """``(name, first header line)`` of every recipe YAML."""
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        header = next((line.lstrip("# ").strip() for line in path.read_text().splitlines()
                       if line.startswith("#") and line.strip("# ")), "")
        rows.append((path.stem, header))
    return rows


def recipe_path(config: str) -> str:
    """``config`` itself, or the shipped recipe it names when it is a bare recipe name
    (``tox21_gat``) that is no file here, so that ``--config tox21_gat`` works from any folder."""
    named = RECIPES_DIR / f"{config}.yaml"
    if not Path(config).exists() and "/" not in config and named.is_file():
        return str(named)
    return config


def with_recipe_paths(args: list[str]) -> list[str]:
    """``args`` with every ``--config NAME`` / ``--config=NAME`` resolved by :func:`recipe_path`."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        if arg == "--config" and i + 1 < len(resolved):
            resolved[i + 1] = recipe_path(resolved[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + recipe_path(arg.removeprefix("--config="))
    return resolved
