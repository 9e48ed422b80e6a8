"""Parse a big desired-state file on two cores: the second half of `users` in a child.

Why: libyaml's event stream is the floor of loading (about 1.5 s for 100,000 users) and
it is single-threaded. A desired-state file is one top-level mapping whose bulk is the
block mapping under `users:`; its second half can be cut out at a user key and parsed
by a forked child while this process parses the rest. The child sends its users back
with `marshal` (plain dicts, lists and strings: tens of milliseconds).

Why it is exact: each part ends with a sentinel key at the users' indentation. When a
cut falls inside a multi-line scalar or flow collection, the sentinel is swallowed or
the part does not parse, and the caller falls back to one ordinary parse of the whole
file. Any diagnostic in either part also falls back, so every refusal and position is
reported by the ordinary path exactly as before. This module never decides validity.

It runs only when this process may use two CPUs or more (`usable_cores`): on one core the
two parses would take turns, and the fork would only add to the time.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import re
import signal
from collections.abc import Callable
from typing import Any

MIN_BYTES = 4 * 1024 * 1024  # below this, a fork costs more than it saves

# `users:` as a top-level key whose value is a block on the following lines.
_USERS = re.compile(rb"^users:[ \t]*(?:#[^\n]*)?\r?\n", re.M)
# The first line that has content (not blank, not a comment): gives the indentation.
_CONTENT = re.compile(rb"^([ ]*)[^ \t\r\n#]", re.M)
# The next top-level line with content (its first character, after the newline): where
# the `users` block ends. Not `^...` with re.M: that tries every position of a 20 MB
# block (0.11 s), this only each newline (0.015 s).
_TOP_LEVEL = re.compile(rb"\n[^ \t\r\n#]")
_SENTINEL_KEY = "\0crctl-split"

Walk = Callable[[bytes], tuple[Any, bool]]  # bytes -> (data, parsed without diagnostics)


def parse_in_halves(raw: bytes, walk: Walk) -> Any | None:
    """Return the file's data parsed in two processes, or None to parse it the usual way."""
    if len(raw) < MIN_BYTES or not hasattr(os, "fork") or usable_cores() < 2:
        return None
    cut = _cut(raw)
    if cut is None:
        return None
    split, end, indent = cut
    sentinel = b" " * indent + b'"\\0crctl-split": ""\n'
    first = raw[:split] + sentinel + raw[end:]
    second = raw[split:end]
    if not second.endswith(b"\n"):
        second += b"\n"
    second += sentinel
    try:
        read_fd, write_fd = os.pipe()
    except OSError:
        return None
    held = hold_interrupts()
    try:
        pid = os.fork()
    except OSError:
        release_interrupts(held)
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the child: parse the second half, send it, leave without cleanup
        os.close(read_fd)
        _child(second, walk, write_fd)
    os.close(write_fd)
    try:
        release_interrupts(held)  # a Ctrl-C meanwhile is raised here, in the parent
        data, clean = walk(first)
        received = _read_all(read_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)  # its half is moot
        raise
    finally:
        os.close(read_fd)
        _reap(pid)
    users = _users_of(data, clean)
    if users is None or not received:
        return None
    try:
        their_users = marshal.loads(received)
    except (ValueError, EOFError, TypeError):
        return None
    if not isinstance(their_users, dict) or users.keys() & their_users.keys():
        return None  # a duplicate user key across the cut: let the usual parse report it
    users.update(their_users)
    return data


def hold_interrupts() -> Any:
    """Hold SIGINT across a fork (the old mask, to give to `release_interrupts`).

    Why: a Ctrl-C landing in a just-forked child would unwind the parent's stack there
    (its "Interrupted." message, its buffered output flushed twice). The child keeps it
    held for its short life and is killed by the parent when its work is moot; the
    parent releases it once the child's pid is where its clean-up can find it."""
    mask = getattr(signal, "pthread_sigmask", None)
    return None if mask is None else mask(signal.SIG_BLOCK, {signal.SIGINT})


def release_interrupts(held: Any) -> None:
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask, not the machine's count.

    Why: under `taskset -c 0` (or a CI runner's cgroup cpuset of one CPU) the child and
    the parent would share one core, so the split only adds the fork, the second parse
    set-up and the marshal round trip to a parse that is no faster. Where the affinity
    mask cannot be read (macOS has no sched_getaffinity), the machine's count is used."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return len(getaffinity(0))
        except OSError:
            pass
    return os.cpu_count() or 1


def _cut(raw: bytes) -> tuple[int, int, int] | None:
    """Find (split offset, end of the users block, users' indentation), or None."""
    head = _USERS.search(raw)
    if head is None:
        return None
    block_start = head.end()
    first = _CONTENT.search(raw, block_start)
    if first is None or not first.group(1):
        return None
    indent = len(first.group(1))
    following = _TOP_LEVEL.search(raw, block_start - 1)  # raw[block_start - 1] is "\n"
    end = following.start() + 1 if following else len(raw)
    if end - block_start < MIN_BYTES // 2:
        return None
    key_line = re.compile(rb"^ {%d}[^ \t\r\n#'\"\-?:{}\[\],&*!|>%%@`]" % indent, re.M)
    split = key_line.search(raw, block_start + (end - block_start) // 2, end)
    if split is None:
        return None
    return split.start(), end, indent


def _users_of(data: Any, clean: bool) -> dict[str, Any] | None:
    """The first part's users without its sentinel, or None if the cut was not clean."""
    if not clean or not isinstance(data, dict):
        return None
    users = data.get("users")
    if not isinstance(users, dict) or not users or next(reversed(users)) != _SENTINEL_KEY:
        return None
    del users[_SENTINEL_KEY]
    return users


def _child(second: bytes, walk: Walk, write_fd: int) -> None:
    """Parse, send the users (nothing if the cut was not clean) and exit at once."""
    status = 0
    try:
        data, clean = walk(second)
        if (clean and isinstance(data, dict) and data
                and next(reversed(data)) == _SENTINEL_KEY):
            del data[_SENTINEL_KEY]
            payload = marshal.dumps(data)
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view):]
    except BaseException:  # noqa: BLE001 - the parent falls back on an empty answer
        status = 1
    finally:
        os._exit(status)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # already reaped
        os.waitpid(pid, 0)
