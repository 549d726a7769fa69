"""The one base class of the errors graphmem raises for bad user input (data files, recipes,
checkpoints, command-line arguments), so that the ``graphmem`` command can end any of them
with one short message instead of a traceback."""

from __future__ import annotations


class GraphmemError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it.

    ``exit_code`` is the exit status of the ``graphmem`` command that ends with this error.
    """

    exit_code = 2


class RunInterrupted(GraphmemError):
    """A run stopped by a signal before it finished (a scheduler's or CI's SIGTERM)."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process killed by SIGTERM
