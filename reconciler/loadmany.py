"""Load many desired-state files on two cores: the second half (by bytes) in a child.

Why: an MSP's directory of 10,000 small accounts costs little per user but a fixed
amount per file (open, libyaml's parser set-up, the schema's checks, building the
account), all on one core: validating it cost twice what one file with as many users
does, where that one file is parsed in two processes (`halves.py`). Here a forked child
loads the files of the second half of the bytes while this process loads the first, and
sends its accounts back pickled (plain dataclasses: a few milliseconds per thousand).

Why it is exact: the child answers for all of its files or not at all. A file that does
not validate comes back as its diagnostics, which is what loading it here would give; any
other outcome (the fork refused, an unreadable file, a crash, an interrupt) makes the
child send nothing, and this process then loads those files itself, so every error is
raised by the ordinary path exactly as before. The result is in file order either way.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
from collections.abc import Callable

from reconciler.errors import ValidationFailed
from reconciler.halves import usable_cores
from reconciler.model import DesiredAccount

MIN_FILES = 16  # fewer files: the fork and the pickle round trip cost more than they save
MIN_BYTES = 256 * 1024

Loaded = DesiredAccount | ValidationFailed
Load = Callable[[str], DesiredAccount]


def load_files(files: list[str], load: Load) -> list[Loaded]:
    """`load` applied to every file, in order; a file that fails validation gives its
    ValidationFailed in its place. Any other error propagates (from this process)."""
    if len(files) < MIN_FILES or not hasattr(os, "fork") or usable_cores() < 2:
        return [_one(path, load) for path in files]
    sizes = [_size(path) for path in files]
    total = sum(sizes)
    if total < MIN_BYTES:
        return [_one(path, load) for path in files]
    # the first file here before the fork: the child inherits the warm caches (the
    # compiled schema, the imports) instead of building them again
    out = [_one(files[0], load)]
    cut, seen = len(files), sizes[0]
    for index in range(1, len(files)):
        if seen >= total // 2:
            cut = index
            break
        seen += sizes[index]
    theirs = files[cut:]
    child = _fork(theirs, load)
    received = None
    try:
        out.extend(_one(path, load) for path in files[1:cut])
        if child is not None:
            received = _receive(child, len(theirs))
    except BaseException:
        if child is not None:  # an error of ours (or an interrupt): the child's work is moot
            _stop(*child)
            child = None
        raise
    finally:
        if child is not None:
            _reap(child[0])
    if received is None:
        received = [_one(path, load) for path in theirs]
    out.extend(received)
    return out


def _one(path: str, load: Load) -> Loaded:
    try:
        return load(path)
    except ValidationFailed as exc:
        return exc


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # the load reports it


def _fork(files: list[str], load: Load) -> tuple[int, int] | None:
    """(pid, read end of its pipe), or None when no child could be started."""
    try:
        read_fd, write_fd = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:
        os.close(read_fd)
        _child(files, load, write_fd)
    os.close(write_fd)
    return pid, read_fd


def _child(files: list[str], load: Load, write_fd: int) -> None:
    """Load, send [("ok", account) | ("failed", diagnostics)] and exit at once (no
    clean-up: the parent's buffers and handlers are not this process's to run)."""
    status = 0
    try:
        answers: list[tuple[str, object]] = []
        for path in files:
            try:
                answers.append(("ok", load(path)))
            except ValidationFailed as exc:
                answers.append(("failed", exc.diagnostics))
        view = memoryview(pickle.dumps(answers, protocol=pickle.HIGHEST_PROTOCOL))
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:  # noqa: BLE001 - the parent loads these files itself
        status = 1
    finally:
        os._exit(status)


def _receive(child: tuple[int, int], count: int) -> list[Loaded] | None:
    """The child's answers for its `count` files, or None if it gave none."""
    read_fd = child[1]
    chunks = []
    while chunk := os.read(read_fd, 1 << 20):
        chunks.append(chunk)
    os.close(read_fd)
    if not chunks:
        return None
    try:
        answers = pickle.loads(b"".join(chunks))  # noqa: S301 - our own forked child
    except Exception:  # noqa: BLE001 - a torn answer: load the files here instead
        return None
    if not isinstance(answers, list) or len(answers) != count:
        return None
    out: list[Loaded] = []
    for kind, value in answers:
        out.append(value if kind == "ok" else ValidationFailed(value))
    return out


def _stop(pid: int, read_fd: int) -> None:
    """End a child whose answer is no longer wanted, without waiting for its work."""
    with contextlib.suppress(OSError):
        os.close(read_fd)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
