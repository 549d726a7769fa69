"""What the benchmark scripts share: the machine's description and peak memory of a child process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import torch


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (peak memory on CPU needs Linux)")


def run_child(script: str, arguments: list[str]) -> dict[str, float]:
    """Runs ``script`` with ``arguments`` in a new interpreter and returns the JSON it prints last.

    Peak memory needs a fresh process: VmHWM never goes down, and ``ru_maxrss`` would count the
    parent's memory too (inherited through fork before exec).
    """
    result = subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def describe(device: str, *extra: str) -> str:
    """The machine and software versions, for the report; ``extra``: more ``name version`` strings."""
    if device == "cuda":
        hardware = torch.cuda.get_device_name()
    else:
        model = platform.processor() or platform.machine()
        if os.path.exists("/proc/cpuinfo"):
            with open("/proc/cpuinfo") as f:
                names = (line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
                model = next(names, model)
        hardware = f"{model}, {os.cpu_count()} CPU cores"
    software = [f"torch {torch.__version__} ({torch.get_num_threads()} threads)", *extra,
                f"Python {platform.python_version()}"]
    return f"{hardware}; " + ", ".join(software)
