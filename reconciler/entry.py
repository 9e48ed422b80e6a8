"""The `crctl` entry point: the whole run, imports included, inside one Ctrl-C guard.

A SIGINT can land at any moment of the process's life: while Python is still importing
modules, before the CLI's own handlers are in place, or after the exit status is decided,
while the interpreter shuts down (Python then puts the default handler back, and a
late Ctrl-C would kill the process by signal instead of letting it exit). So every
KeyboardInterrupt that escapes the CLI exits 130 with one line, and once the status is
known SIGINT is blocked: the work is done, the status stands (DESIGN §4: 130 means
nothing was written; a committed apply exits 0).
"""

from __future__ import annotations

import signal
import sys


def main() -> None:
    code: int | str | None = 0
    try:
        from reconciler.cli import main as run

        run()
    except KeyboardInterrupt:
        code = 130
        try:
            sys.stderr.write("Interrupted.\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # the reader went away: the status still says it
            pass
    except SystemExit as exc:
        code = exc.code
    finally:
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    sys.exit(code)
