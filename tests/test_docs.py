"""The documentation site builds offline in strict mode, and its Python examples run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# pages whose ```python blocks run as they stand, in order, in one namespace per page
RUNNABLE_PAGES = ("getting-started.md", "tutorials/custom-model.md", "tutorials/ntm-copy.md")


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs packages are not installed: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="mkdocs-material is not installed")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # a banner about MkDocs 2.0, not a problem of ours
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, check=False, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for page in ("index.html", "tutorials/tox21-attention/index.html", "api/nn/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "nn" / "index.html").read_text()
    assert 'id="graphmem.nn.GATConv"' in api  # the reference is generated from the docstrings
    assert (site / "img" / "ntm_copy_length8.png").stat().st_size > 10_000


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    blocks = python_blocks(ROOT / "docs" / page)
    assert blocks
    namespace: dict = {"__name__": f"docs_{Path(page).stem}"}
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), namespace)  # noqa: S102 - our own documentation
