"""Ctrl-C held back while a commit is in flight.

A KeyboardInterrupt can arrive between any two bytecodes. Inside a commit (journal,
rename, audit append, mirror) that could leave a committed change whose audit entries a
cleanup then deleted; so while a commit runs, SIGINT only records that it came, and the
interrupt is raised when the commit is whole (DESIGN §6: state as before or as after,
no audit entry of a committed change lost).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Deferred:
    """Whether a SIGINT arrived while deferred."""

    def __init__(self) -> None:
        self.interrupted = False


@contextmanager
def deferred_interrupts(reraise: bool = True) -> Iterator[Deferred]:
    """Hold SIGINT back for the block; raise KeyboardInterrupt after it if one came (or,
    with `reraise=False`, only report it in the yielded `Deferred`). Outside the main
    thread (where signals cannot be handled) the block simply runs."""
    global _active
    if _active is not None or threading.current_thread() is not threading.main_thread():
        # nested: the outermost deferral holds the signal and decides what happens
        yield _active or Deferred()
        return
    state = _active = Deferred()

    def note(signum: int, frame: FrameType | None) -> None:
        state.interrupted = True

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
        _active = None
    if state.interrupted and reraise:
        raise KeyboardInterrupt


_active: Deferred | None = None
