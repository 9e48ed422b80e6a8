"""Account locks of the local backend: `locks/<account>.lock`, an fcntl lock that dies
with its process, held through one descriptor for all the accounts of one `lock()`.

Why fcntl (flock): the kernel drops it when its process dies, however it dies, so a
killed apply never blocks the next one and liveness needs no pid guessing; a second
open file description in the same process conflicts too, so the conformance suite can
test contention in one process.

Why one descriptor: an MSP's `apply accounts/` locks 10,000 accounts at once, and one
open file per account fails with "Too many open files" under a common `ulimit -n 1024`
(DESIGN §7 asks for 10,000 under 256). So a `lock()` creates one *holder* file
(`locks/.holder-<pid>-<random>`), flocks it, writes who holds it, and hard-links it as
each account's `<account>.lock`. A flock belongs to the file (the inode), not the name:
whoever opens `acme.lock` and tries to lock it conflicts with the holder's descriptor,
and reads the holder's record. Taking an account is one link(2) (atomic: it fails if
any lock file exists); a lock file left by a killed holder (its flock is gone) is
unlinked by the next taker under a flock of its own, so exactly one taker wins it. The
record is not fsynced: a lock does not survive a reboot anyway, and an empty or torn
record reads as "held by another process" while the flock decides.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import stat
from contextlib import suppress
from dataclasses import dataclass, field

from reconciler.backends.base import LockInfo
from reconciler.backends.files import OPEN_READ, alive, file_kind, os_message
from reconciler.errors import StateError

OPEN_HOLDER = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_EXISTING = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
HOLDER_PREFIX = ".holder-"


@dataclass
class _Holder:
    """One `lock()`'s flocked file and the account lock files linked to it."""

    lock_id: str
    path: str
    fd: int
    inode: tuple[int, int]
    links: set[str] = field(default_factory=set)


class FileLocks:
    """The lock files of one state directory; remembers the holders it has."""

    def __init__(self) -> None:
        self._holders: dict[str, _Holder] = {}  # lock id -> holder
        self._held: dict[str, _Holder] = {}  # account lock path -> its holder

    def try_lock(self, path: str, info: LockInfo) -> bool:
        """Take the lock at `path` for `info` without waiting."""
        holder = self._holder(os.path.dirname(path), info)
        try:
            while True:
                try:
                    os.link(holder.path, path, follow_symlinks=False)
                    break
                except FileExistsError:
                    if not _remove_if_dead(path):
                        if not holder.links:
                            self._drop(info.id)
                        return False
                except OSError as exc:
                    raise StateError(os_message(exc, path, "lock")) from None
        except StateError:
            if not holder.links:  # nothing is left behind by a refused lock
                self._drop(info.id)
            raise
        holder.links.add(path)
        self._held[path] = holder
        return True

    def unlock(self, path: str) -> None:
        holder = self._held.pop(path, None)
        if holder is None:
            return
        _unlink_if(path, holder.inode)
        holder.links.discard(path)
        if not holder.links:
            self._drop(holder.lock_id)

    def _holder(self, directory: str, info: LockInfo) -> _Holder:
        """The flocked holder file of `info`, created (and written) on first use."""
        known = self._holders.get(info.id)
        if known is not None:
            return known
        _sweep(directory)
        path = os.path.join(directory, f"{HOLDER_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
        try:
            fd = os.open(path, OPEN_HOLDER, 0o600)
        except OSError as exc:
            raise StateError(os_message(exc, path, "lock")) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.pwrite(fd, json.dumps(info.to_json()).encode() + b"\n", 0)
            st = os.fstat(fd)
        except OSError as exc:
            _unlink_if(path, None)
            os.close(fd)
            raise StateError(os_message(exc, path, "write the lock")) from None
        holder = _Holder(info.id, path, fd, (st.st_dev, st.st_ino))
        self._holders[info.id] = holder
        return holder

    def _drop(self, lock_id: str) -> None:
        """Release a holder: its file goes, and closing it drops the flock."""
        holder = self._holders.pop(lock_id, None)
        if holder is not None:
            _unlink_if(holder.path, holder.inode)
            os.close(holder.fd)

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


def _remove_if_dead(path: str) -> bool:
    """Unlink the lock file at `path` if its holder is gone; False while one holds it.
    Also True when the file changed or vanished meanwhile: the caller links again."""
    try:
        fd = os.open(path, OPEN_EXISTING)
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise StateError(os_message(exc, path, "lock")) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise StateError(f"{path}: not a regular file ({file_kind(mode)}); refusing to "
                             "use it as a lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise StateError(os_message(exc, path, "lock")) from None
        st = os.fstat(fd)
        _unlink_if(path, (st.st_dev, st.st_ino))  # under our flock: no one else is here
        return True
    finally:
        os.close(fd)


def _unlink_if(path: str, inode: tuple[int, int] | None) -> None:
    """Unlink `path` if it still is `inode` (None: whatever it is)."""
    with suppress(OSError):
        if inode is not None:
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) != inode:
                return
        os.unlink(path)


def _sweep(directory: str) -> None:
    """Remove holder files of killed processes (their account links were or will be
    taken over one by one; the holder file itself is named by nothing else). A holder of
    a live pid is kept, even before it has its flock."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(HOLDER_PREFIX):
            continue
        pid = name[len(HOLDER_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and alive(int(pid)):
            continue
        path = os.path.join(directory, name)
        with suppress(OSError):
            if not FileLocks.holder_alive(path):
                os.unlink(path)
