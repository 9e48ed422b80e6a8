"""Writing a file the user asked for (`import --out`): all or nothing, private, no symlinks.

Why each rule (DESIGN §4, import): the file holds personal data (names, emails, phone
numbers), so it is created 0600 whatever the umask; it usually lands in a git checkout
that a teammate or a script may have prepared, so a symlink at the target is refused
rather than written through (it could point at any file the user can write); an existing
file is only replaced with `--force`, because an imported file often replaces a
hand-edited one; and a failed write (a full disk, a file size limit, a vanished
directory) must leave the previous file byte-identical and no temporary file behind —
hence a temporary file in the same directory, fsync, then one rename (or a hard link
when overwriting is not allowed, so a file that appears meanwhile is never clobbered).

This is not the state backend's writer (backends/files.py): nothing outside backends/
may use backend internals, and the errors here are about the user's file (exit 1).
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from contextlib import suppress

from reconciler.durable import fsync_dir, write_all
from reconciler.errors import InputError
from reconciler.loader import printable

# Hard links are not supported everywhere (vfat, some network file systems): there the
# no-clobber check falls back to the lstat made just before the rename.
NO_LINK = frozenset((errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK))


def write_private(path: str, text: str, *, force: bool = False) -> None:
    """Write `text` (UTF-8) to `path` atomically with mode 0600.

    Creates missing parent directories (0700: what they will hold is private). Refuses,
    with exit 1 and a message naming the file, a symlink or anything but a regular file
    at `path`, and an existing file unless `force`."""
    shown = printable(path)
    if not os.path.basename(path):
        raise InputError(f"{shown}: names a directory; give a file name such as "
                         f"{shown.rstrip('/')}/acme.yaml")
    existed = _check_target(path, shown, force)
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{shown}: cannot create its directory "
                         f"{printable(directory)}: {exc.strerror}; nothing was written") \
            from None
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}-"
                                  f"{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        raise InputError(_failed(shown, exc, existed)) from None
    placed = False
    try:
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode is reduced by the umask, never raised
            write_all(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        _put_in_place(tmp, path, shown, force)
        placed = True
    except OSError as exc:
        raise InputError(_failed(shown, exc, existed)) from None
    finally:
        if not placed:  # also on Ctrl-C: no temporary file is left behind
            with suppress(OSError):
                os.unlink(tmp)
    fsync_dir(directory)


def _check_target(path: str, shown: str, force: bool) -> bool:
    """Whether a regular file is at `path` already; refuses everything else there."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False  # a parent is a file: creating the directory says so
    except OSError as exc:
        raise InputError(f"{shown}: cannot check the file: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise InputError(f"{shown}: is a symbolic link; refusing to write through it "
                         "(remove it, or choose another file)")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{shown}: exists and is not a regular file; refusing to replace it")
    if not force:
        raise InputError(f"{shown}: already exists; pass --force to overwrite it")
    return True


def _put_in_place(tmp: str, path: str, shown: str, force: bool) -> None:
    """Rename over `path` (force), or hard-link so that a file created since the check is
    never replaced (rename would silently clobber it)."""
    if force:
        os.replace(tmp, path)  # replaces a symlink planted since the check, never its target
        return
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise InputError(f"{shown}: already exists; pass --force to overwrite it") from None
    except OSError as exc:
        if exc.errno not in NO_LINK:
            raise
        _check_target(path, shown, force=False)
        os.replace(tmp, path)
        return
    with suppress(OSError):  # the file is in place: a leftover name is no failure
        os.unlink(tmp)




def _failed(shown: str, exc: OSError, existed: bool) -> str:
    kept = "the previous file is unchanged" if existed else "nothing was written"
    reason = "no space left on device" if exc.errno == errno.ENOSPC else \
        (exc.strerror or str(exc))
    return f"{shown}: cannot write: {reason}; {kept}"
