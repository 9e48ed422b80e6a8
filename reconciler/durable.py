"""The two low-level steps of every durable write, shared by the state backends' files and
the files crctl writes for users (`import --out`): write every byte, then make a rename
in a directory survive a crash."""

from __future__ import annotations

import errno
import os


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out: a short write (disk filling up) is not success."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def fsync_dir(directory: str) -> None:
    """Make a rename in `directory` durable; a directory that cannot be opened or synced
    is no error (the file itself is complete either way)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
