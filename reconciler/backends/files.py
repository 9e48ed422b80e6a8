"""Durable files: atomic replacement, all-or-nothing appends, and their OS errors in words.

Why each rule (DESIGN §3.3, §6): a crash at any moment must leave every file as before or
as after, never torn; a planted symlink, FIFO or directory must never redirect or hang a
command; every OS error names the file and says what was kept. The local backend is the
only user today; nothing here knows about accounts.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import cast

from reconciler.durable import fsync_dir, write_all
from reconciler.errors import StateError

OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
OPEN_LOG = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_regular(path: str) -> tuple[bytes, os.stat_result] | None:
    """The bytes of a regular file and its stat, or None if it does not exist.

    O_NONBLOCK and the fstat check: a FIFO or device planted in the state directory
    would otherwise block the command forever in open() or read()."""
    try:
        fd = os.open(path, OPEN_READ)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(os_message(exc, path, "read")) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"{path}: not a regular file ({file_kind(info.st_mode)}); "
                             "refusing to use it as a state file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            raw = fh.read()
    except OSError as exc:
        raise StateError(os_message(exc, path, "read")) from None
    finally:
        if fd >= 0:
            os.close(fd)
    return raw, info


def identity(info: os.stat_result) -> tuple[int, int, int]:
    """What changes whenever a file is replaced (rename gives a new inode)."""
    return info.st_ino, info.st_mtime_ns, info.st_size


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a file"


def atomic_write(path: str, data: bytes) -> tuple[int, int, int]:
    """Write via temp file + fsync + rename + directory fsync; returns the new identity."""
    tmp, identity = write_temporary(path, data, durable=True)
    put_in_place(tmp, path)
    fsync_dir(os.path.dirname(path))
    return identity


def write_temporary(path: str, data: bytes, *, durable: bool = False
                    ) -> tuple[str, tuple[int, int, int]]:
    """`data` in a new temporary file beside `path`: (its name, the identity it will
    have in place). Not in place yet; durable only with durable=True (a batch makes all
    of its temporary files durable with one `sync_filesystem` before renaming any)."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        raise StateError(os_message(exc, path, "write")) from None
    try:
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
            info = os.fstat(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp)
        raise StateError(os_message(exc, path, "write")) from None
    return tmp, (info.st_ino, info.st_mtime_ns, info.st_size)


def put_in_place(tmp: str, path: str) -> None:
    """Rename a temporary file over `path` (atomic); on failure it is deleted."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp)
        raise StateError(os_message(exc, path, "write")) from None


def _syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2) (Linux), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast(Callable[[int], int], function)


SYNCFS = _syncfs()


def can_sync_filesystem() -> bool:
    return SYNCFS is not None


def one_file_system(root: str, directories: list[str]) -> bool:
    """Whether every directory (or, where it is not made yet, the nearest ancestor that
    is, up to `root`) is on `root`'s file system: a syncfs of root flushes only that one,
    so a state whose audit/ or mir/ is another mount is written with fsyncs instead."""
    try:
        device = os.stat(root).st_dev
    except OSError:
        return False
    for directory in directories:
        path = directory
        while True:
            try:
                if os.stat(path).st_dev != device:
                    return False
                break
            except FileNotFoundError:
                parent = os.path.dirname(path)
                if parent == path or len(path) <= len(root):
                    break
                path = parent
            except OSError:
                return False
    return True


def sync_filesystem(directory: str) -> None:
    """Make everything written so far on `directory`'s file system durable: file data,
    creations and renames alike (syncfs(2): one call where a batch of accounts would need
    nine fsyncs each). Callers check `can_sync_filesystem()` first."""
    if SYNCFS is None:
        raise StateError(f"{directory}: cannot flush the file system on this platform")
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StateError(os_message(exc, directory, "flush")) from None
    try:
        if SYNCFS(fd) != 0:
            import ctypes

            code = ctypes.get_errno()
            raise StateError(os_message(OSError(code, os.strerror(code)), directory,
                                        "flush"))
    finally:
        os.close(fd)



@contextmanager
def open_log(path: str, *, create: bool) -> Iterator[tuple[int, int] | None]:
    """An append-only JSONL file opened for update: (fd, size), or None if it does not
    exist and `create` is off. Refuses anything but a regular file (a planted FIFO would
    block, a directory would not be a log); every OS error names the file."""
    try:
        fd = os.open(path, OPEN_LOG | (os.O_CREAT if create else 0), 0o600)
    except OSError as exc:
        if create or not isinstance(exc, FileNotFoundError):
            raise StateError(os_message(exc, path, "append to")) from None
        fd = -1
    if fd < 0:
        yield None
        return
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"{path}: not a regular file ({file_kind(info.st_mode)}); "
                             "refusing to append to it")
        yield fd, info.st_size
    except OSError as exc:
        raise StateError(os_message(exc, path, "append to")) from None
    finally:
        os.close(fd)


def append(path: str, text: str | bytes, *, durable: bool = True) -> None:
    """Append whole lines to a JSONL file, all or nothing (bytes: UTF-8 already, written
    as they are; the audit log's lines are encoded once for its journal and for here).

    A torn last line (a crash mid-append) is repaired first (`repair_tail`), so the new
    lines never continue a broken one; a failed write is cut back off, so a full disk
    leaves the file as it was."""
    with open_log(path, create=True) as opened:
        fd, size = opened  # type: ignore[misc]  # never None with create=True
        start = repair_tail(fd, size)
        try:
            write_all(fd, text if isinstance(text, bytes) else text.encode("utf-8"))
            if durable:
                os.fsync(fd)
        except OSError:
            with suppress(OSError):
                os.ftruncate(fd, start)
            raise


def repair_tail(fd: int, size: int) -> int:
    """Make the file end at a line boundary; returns its new size.

    The bytes after the last newline are a line torn by a crash: cut off (the journal
    re-supplies an audit entry; a terminated account's tombstone is written again by the
    re-run termination) — unless they parse as JSON, i.e. a complete line that only lacks
    its newline (edited by hand): completed with one, as it loses nothing."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    start = line_start(fd, size)
    try:
        json.loads(os.pread(fd, size - start, start))
    except (ValueError, RecursionError):
        os.ftruncate(fd, start)
        return start
    write_all(fd, b"\n")
    return size + 1


def line_start(fd: int, size: int) -> int:
    """Offset just after the last newline of the file (0 if it has none)."""
    end = size
    while end > 0:
        begin = max(0, end - 65536)
        found = os.pread(fd, end - begin, begin).rfind(b"\n")
        if found >= 0:
            return begin + found + 1
        end = begin
    return 0


def clean_log_end(path: str) -> int:
    """Repair the log's tail now and return its size: where the next append starts (the
    journal records it, so a recovery knows which bytes the crashed append wrote)."""
    with open_log(path, create=False) as opened:
        return 0 if opened is None else repair_tail(*opened)


def unwritten(path: str, data: bytes, offset: int) -> bytes:
    """What of `data` (whole lines meant to start at `offset`) the log lacks.

    The log's bytes from `offset` on are normally a prefix of `data` (the crashed append
    got that far): its complete lines are kept, a torn last one is cut, the rest returned.
    If they are not (the log was rotated or edited since), everything is returned: an
    entry twice is better than an entry lost."""
    with open_log(path, create=False) as opened:
        if opened is None:
            return data
        fd, size = opened
        if not offset <= size <= offset + len(data):
            return data
        tail = os.pread(fd, size - offset, offset)
        if not data.startswith(tail):
            return data
        done = tail.rfind(b"\n") + 1
        if offset + done < size:
            os.ftruncate(fd, offset + done)
        return data[done:]


def remove(path: str, *, durable: bool = True) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(os_message(exc, path, "delete")) from None
    if durable:
        fsync_dir(os.path.dirname(path))


def listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateError(os_message(exc, directory, "list")) from None


def alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True



def os_message(exc: OSError, path: str, verb: str) -> str:
    # an append that fails is cut back off (append): the file is as it was
    kept = "the file is unchanged" if verb == "append to" else "the previous state is intact"
    if exc.errno == errno.ELOOP:
        return f"{path}: is a symbolic link; refusing to follow it"
    if exc.errno == errno.ENOSPC:
        return f"{path}: cannot {verb}: no space left on device; {kept}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: cannot {verb}: {exc.strerror}; {kept}"
    return f"{path}: cannot {verb}: {exc.strerror or exc}"

