"""The `crctl` entry point: imports the CLI inside the Ctrl-C guard, so an interrupt while
Python is still loading modules exits 130 like any other, without a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from reconciler.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    run()
