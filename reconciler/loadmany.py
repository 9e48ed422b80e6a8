"""Load many desired-state files on two cores: the second half (by bytes) in a child.

Why: an MSP's directory of 10,000 small accounts costs little per user but a fixed
amount per file (open, libyaml's parser set-up, the schema's checks, building the
account), all on one core: validating it cost twice what one file with as many users
does, where that one file is parsed in two processes (`halves.py`). Here a forked child
loads the files of the second half of the bytes while this process loads the first, and
sends its accounts back (`marshal` for the plain data, `pickle` for the rest).

Why it is exact: the child answers for all of its files or not at all. A file that does
not validate comes back as its diagnostics, which is what loading it here would give; any
other outcome (the fork refused, an unreadable file, a crash, an interrupt) makes the
child send nothing, and this process then loads those files itself, so every error is
raised by the ordinary path exactly as before. The result is in file order either way.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import pickle
import signal
from collections.abc import Callable
from typing import Any

from reconciler.errors import ValidationFailed
from reconciler.halves import hold_interrupts, release_interrupts, usable_cores
from reconciler.model import DesiredAccount, Status, UserRecord

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
    held = hold_interrupts()
    child = _fork(theirs, load)
    received = None
    try:
        release_interrupts(held)  # a Ctrl-C meanwhile is raised here: the child is stopped
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
    """Load, send the answers (`_encode`) and exit at once (no clean-up: the parent's
    buffers and handlers are not this process's to run)."""
    status = 0
    try:
        answers: list[Loaded] = []
        for path in files:
            try:
                answers.append(load(path))
            except ValidationFailed as exc:
                answers.append(exc)
        view = memoryview(_encode(answers))
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:  # noqa: BLE001 - the parent loads these files itself
        status = 1
    finally:
        os._exit(status)


def _encode(answers: list[Loaded]) -> bytes:
    """The answers as bytes. Why not pickle alone: for 5,000 small accounts it costs
    more than a second each way, where `marshal` of the same plain dicts and strings
    costs a tenth of that. What marshal cannot carry (diagnostics, compiled rules) is
    pickled inside, and only for the accounts that have any."""
    rows: list[tuple[object, ...]] = []
    for a in answers:
        if isinstance(a, ValidationFailed):
            rows.append(("failed", pickle.dumps(a.diagnostics)))
            continue
        extra = ((a.warnings, a.rules, a.breaches) if a.warnings or a.rules is not None
                 or a.breaches else None)
        rows.append(("ok", a.account, a.path, a.sha256, a.name, a.max_remove_pct,
                     a.terminate, _plain_users(a.users), a.renamed_from, a.groups, a.time_zone,
                     a.raw_policies, None if extra is None else pickle.dumps(extra)))
    try:
        return b"M" + marshal.dumps(rows)
    except ValueError:  # a value marshal does not know: all of it pickled
        return b"P" + pickle.dumps(answers, protocol=pickle.HIGHEST_PROTOCOL)


def _plain_users(users: dict[str, UserRecord]) -> dict[str, Any]:
    """The users with each CR `status` (an enum, which marshal refuses) as its value."""
    out: dict[str, Any] = {}
    for name, record in users.items():
        cr: Any = record["call_recording"]
        if cr is not None and isinstance(cr.get("status"), Status):
            out[name] = {**record, "call_recording": {**cr, "status": cr["status"].value}}
        else:
            out[name] = record
    return out


def _typed_users(users: dict[str, Any]) -> dict[str, UserRecord]:
    for record in users.values():
        cr = record["call_recording"]
        if cr is not None and "status" in cr:
            cr["status"] = Status(cr["status"])
    return users


def _decode(payload: bytes) -> list[Loaded]:
    if payload[:1] == b"P":
        answers = pickle.loads(payload[1:])  # noqa: S301 - our own forked child
        if not isinstance(answers, list):
            raise ValueError("not a list")
        return answers
    if payload[:1] != b"M":
        raise ValueError("unknown encoding")
    out: list[Loaded] = []
    for row in marshal.loads(payload[1:]):
        if row[0] == "failed":
            out.append(ValidationFailed(pickle.loads(row[1])))  # noqa: S301
            continue
        (_, account, path, sha256, name, max_remove_pct, terminate, users, renamed_from,
         groups, time_zone, raw_policies, extra) = row
        warnings, rules, breaches = (pickle.loads(extra) if extra is not None  # noqa: S301
                                     else ((), None, ()))
        out.append(DesiredAccount(
            account=account, path=path, sha256=sha256, name=name,
            max_remove_pct=max_remove_pct, terminate=terminate, users=_typed_users(users),
            renamed_from=renamed_from, groups=groups, time_zone=time_zone,
            warnings=warnings, rules=rules, raw_policies=raw_policies, breaches=breaches))
    return out


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
        answers = _decode(b"".join(chunks))
    except Exception:  # noqa: BLE001 - a torn answer: load the files here instead
        return None
    return answers if len(answers) == count else None


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
