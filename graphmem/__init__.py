"""graphmem: graph attention networks and memory-augmented networks on one attention core."""

import os

# OGB asks PyPI for newer releases at import time; keep imports offline and quiet.
os.environ.setdefault("OUTDATED_IGNORE", "1")

__version__ = "0.1.0"
