"""Account locks of the local backend: an fcntl lock on `locks/<account>.lock`.

Why fcntl (flock): the kernel drops it when its process dies, however it dies, so a
killed apply never blocks the next one and liveness needs no pid guessing; a second
open file description in the same process conflicts too, so the conformance suite can
test contention in one process. The file's content only says who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat

from reconciler.backends.base import LockInfo
from reconciler.backends.files import OPEN_READ, file_kind, os_message
from reconciler.errors import StateError

OPEN_LOCK = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class FileLocks:
    """The lock files of one state directory; remembers the descriptors it holds."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}  # path -> fd

    def try_lock(self, path: str, info: LockInfo) -> bool:
        """Take the lock at `path` without waiting and write `info` into it."""
        while True:
            fd = _open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as exc:
                os.close(fd)
                raise StateError(os_message(exc, path, "lock")) from None
            try:  # the holder we waited for may have unlinked the file: lock the new one
                same = os.lstat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info.to_json()).encode() + b"\n", 0)
            os.fsync(fd)
        except OSError as exc:
            self._release(path, fd)
            raise StateError(os_message(exc, path, "write the lock")) from None
        self._held[path] = fd
        return True

    def unlock(self, path: str) -> None:
        fd = self._held.pop(path, None)
        if fd is not None:
            self._release(path, fd)

    @staticmethod
    def _release(path: str, fd: int) -> None:
        try:
            if os.lstat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
        except OSError:
            pass
        os.close(fd)

    @staticmethod
    def holder(path: str) -> LockInfo | None:
        """What the lock file says (None: no lock file, or not readable as one)."""
        try:
            fd = os.open(path, OPEN_READ)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    return None
                data = json.loads(fh.read(65536) or b"null")
        except (OSError, ValueError):
            return None
        return LockInfo.from_json(data)

    @staticmethod
    def holder_alive(path: str) -> bool:
        """Whether some process holds the OS lock on the file now (probe: try to take it)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # closing drops the probe's own lock
        return False


def _open_lock(path: str) -> int:
    try:
        fd = os.open(path, OPEN_LOCK, 0o600)
    except OSError as exc:
        raise StateError(os_message(exc, path, "lock")) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise StateError(f"{path}: not a regular file ({file_kind(mode)}); refusing to use "
                         "it as a lock file")
    return fd
