"""Smoke test of bench/ntm_bench.py: tiny batches, no compilation, no timing asserts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ntm_bench_prints_a_table():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ntm_bench.py"), "--models", "eager", "fused", "lstm", "dnc",
         "--batches", "1", "2", "--lengths", "1", "--repeats", "1", "--min-time", "0", "--no-memory",
         "--threads", "1", "--memory", "8", "4"],
        capture_output=True, text=True, env=env, timeout=300, check=True)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 2, result.stdout
    assert "memory 8 x 4" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.startswith("| L |"))
    assert "eager ms/step" in header and "fused ms/step" in header and "fused / lstm" in header
    # the peer either ran or was skipped with a note saying why
    assert "dnc ms/step" in header or "dnc is not importable" in result.stdout.replace("`", "")
