"""The embedded default backend: a state directory standing in for the Account Portal
and the MIR portal (DESIGN §3).

Safety properties, each for a reason:
- every file is written to a temporary file in the same directory, fsynced, renamed
  over the old one, and the directory fsynced: a crash leaves the old or the new file,
  never a torn one;
- the portal write is a compare-and-swap: it refuses if the file changed since this
  process read it (its inode changes on every rename), so no write builds on stale state;
- the account lock is an fcntl lock, which dies with its process: a killed apply never
  blocks the next one; the lock file only says who holds it;
- state files are opened with O_NOFOLLOW and directories are checked not to be symlinks,
  so a planted symlink cannot redirect a read or a write; directories are 0700 and files
  0600, as they hold personal data;
- `plan` only reads: nothing here creates a file or directory until a write.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from reconciler.backends.base import Backend, LockInfo, check_account_id
from reconciler.errors import LockedError, StalePlanError, StateError
from reconciler.model import CurrentAccount, Mirror

STATE_FORMAT = 1
USER_KEYS = frozenset(("username", "first_name", "last_name", "email", "extension",
                       "phone_number", "profile", "location", "roles", "call_recording"))
CR_KEYS = frozenset(("product", "activation_date", "prevent_remove", "status"))


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalBackend(Backend):
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        # what this process last read or wrote of each account: (file identity, serial)
        self._seen: dict[str, tuple[tuple[int, int, int] | None, int]] = {}

    # -- paths ----------------------------------------------------------------------
    def _dir(self, kind: str) -> str:
        return os.path.join(self.root, kind)

    def _path(self, kind: str, account: str, suffix: str) -> str:
        return os.path.join(self.root, kind, check_account_id(account) + suffix)

    def portal_path(self, account: str) -> str:
        return self._path("portal", account, ".json")

    def backup_path(self, account: str) -> str:
        return self._path("portal", account, ".json.backup")

    def mirror_path(self, account: str) -> str:
        return self._path("mir", account, ".json")

    def audit_path(self, account: str) -> str:
        return self._path("audit", account, ".jsonl")

    def lock_path(self, account: str) -> str:
        return self._path("locks", account, ".lock")

    @property
    def tombstone_path(self) -> str:
        return os.path.join(self.root, "terminated.jsonl")

    # -- reading ----------------------------------------------------------------------
    def _read_json(self, path: str) -> tuple[Any, tuple[int, int, int]] | None:
        """Parsed JSON and the file's identity, or None if the file does not exist."""
        self._check_dirs(os.path.dirname(path), create=False)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(_os_message(exc, path, "read")) from None
        try:
            info = os.fstat(fd)
            with os.fdopen(fd, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise StateError(_os_message(exc, path, "read")) from None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise StateError(f"{path}: corrupt state file (invalid JSON: {exc}); restore it "
                             "from its .backup or from your last good copy") from None
        return data, (info.st_ino, info.st_mtime_ns, info.st_size)

    def read_account(self, account: str) -> CurrentAccount:
        path = self.portal_path(account)
        found = self._read_json(path)
        if found is None:
            self._seen[account] = (None, 0)
            return CurrentAccount(account=account)
        data, identity = found
        _check_portal(path, account, data)
        self._seen[account] = (identity, data["serial"])
        return CurrentAccount(
            account=account,
            lineage=data["lineage"],
            serial=data["serial"],
            name=data.get("name"),
            next_user_id=data["next_user_id"],
            users=data["users"],
        )

    def read_mirror(self, account: str) -> Mirror:
        path = self.mirror_path(account)
        found = self._read_json(path)
        if found is None:
            return Mirror(account=account)
        data, _ = found
        if not (isinstance(data, dict) and data.get("account") == account
                and isinstance(data.get("users"), dict)
                and {dict}.issuperset(map(type, data["users"].values()))
                and isinstance(data.get("recordings"), list)):
            raise StateError(f"{path}: corrupt MIR mirror file (expected account {account!r}, "
                             "users and recordings)")
        return Mirror(account=account, users=data["users"], recordings=data["recordings"])

    # -- writing ----------------------------------------------------------------------
    def write_account(self, state: CurrentAccount, expected_serial: int) -> None:
        path = self.portal_path(state.account)
        self._check_dirs(os.path.dirname(path), create=True)
        if state.account not in self._seen:
            raise StateError(f"{path}: internal error: written before it was read")
        seen, seen_serial = self._seen[state.account]
        try:
            st = os.lstat(path)
            identity: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            identity = None
        if identity != seen or seen_serial != expected_serial:
            raise StalePlanError(f"account {state.account} changed while this run was "
                                 "working on it (serial moved); plan again")
        doc = {
            "format_version": STATE_FORMAT,
            "account": state.account,
            "name": state.name,
            "lineage": state.lineage,
            "serial": state.serial,
            "next_user_id": state.next_user_id,
            "users": state.users,
        }
        if identity is not None:
            self._backup(path, self.backup_path(state.account))
        self._seen[state.account] = (_atomic_write(path, _dumps(doc)), state.serial)

    def _backup(self, path: str, backup: str) -> None:
        """Keep the previous account file as .backup (a hard link: no copy, atomic)."""
        tmp = f"{backup}.tmp-{os.getpid()}"
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.link(path, tmp, follow_symlinks=False)
            os.replace(tmp, backup)
        except OSError as exc:
            raise StateError(_os_message(exc, backup, "write")) from None

    def write_mirror(self, mirror: Mirror) -> None:
        path = self.mirror_path(mirror.account)
        self._check_dirs(os.path.dirname(path), create=True)
        _atomic_write(path, _dumps({"format_version": STATE_FORMAT, "account": mirror.account,
                                    "users": mirror.users, "recordings": mirror.recordings}))

    def append_audit(self, account: str, entries: list[dict[str, Any]]) -> None:
        if entries:
            path = self.audit_path(account)
            self._check_dirs(os.path.dirname(path), create=True)
            _append(path, "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n"
                                  for e in entries))

    # -- locking ----------------------------------------------------------------------
    @contextmanager
    def lock(self, account: str, who: str, operation: str,
             timeout: float) -> Iterator[LockInfo]:
        path = self.lock_path(account)
        self._check_dirs(os.path.dirname(path), create=True)
        deadline = time.monotonic() + timeout
        fd = self._acquire(path, account, deadline)
        info = LockInfo(id=str(uuid.uuid4()), who=who, operation=operation, created=now_iso())
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_lock_dict(info)).encode() + b"\n", 0)
            os.fsync(fd)
            yield info
        finally:
            try:
                st = os.lstat(path)
                if st.st_ino == os.fstat(fd).st_ino:
                    os.unlink(path)
            except OSError:
                pass
            os.close(fd)

    def _acquire(self, path: str, account: str, deadline: float) -> int:
        delay = 0.01
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                raise StateError(_os_message(exc, path, "lock")) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    holder = self._holder(path)
                    who = holder.describe() if holder else "lock held by another process"
                    hint = (f"; if its holder is gone, run `crctl force-unlock {account} "
                            f"{holder.id}`") if holder else ""
                    raise LockedError(f"account {account} is locked: {who}{hint}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            try:  # the holder we waited for may have unlinked the file: lock the new one
                if os.lstat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _holder(self, path: str) -> LockInfo | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                data = json.loads(fh.read(65536) or b"null")
            return LockInfo(**{k: str(data[k]) for k in ("id", "who", "operation", "created")})
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def force_unlock(self, account: str, lock_id: str) -> LockInfo:
        path = self.lock_path(account)
        self._check_dirs(os.path.dirname(path), create=False)
        holder = self._holder(path)
        if holder is None:
            raise StateError(f"account {account} has no lock to remove")
        if holder.id != lock_id:
            raise StateError(f"lock id {lock_id!r} does not match the lock of account "
                             f"{account} ({holder.describe()})")
        try:
            os.unlink(path)
        except OSError as exc:
            raise StateError(_os_message(exc, path, "remove")) from None
        return holder

    # -- termination --------------------------------------------------------------------
    def delete_account(self, account: str) -> None:
        for path in (self.mirror_path(account), self.audit_path(account),
                     self.backup_path(account), self.portal_path(account)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StateError(_os_message(exc, path, "delete")) from None
        for kind in ("portal", "mir", "audit"):  # leftovers of killed writes
            directory = self._dir(kind)
            if os.path.isdir(directory):
                for name in os.listdir(directory):
                    if name.startswith(f"{account}.") and ".tmp-" in name:
                        os.unlink(os.path.join(directory, name))
        for kind in ("portal", "mir", "audit"):
            _fsync_dir(self._dir(kind))

    def add_tombstone(self, entry: dict[str, Any]) -> None:
        self._check_dirs(self.root, create=True)
        _append(self.tombstone_path, json.dumps(entry, sort_keys=True) + "\n")

    def tombstones(self, account: str) -> list[dict[str, Any]]:
        found = []
        try:
            fd = os.open(self.tombstone_path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(_os_message(exc, self.tombstone_path, "read")) from None
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash: ignore it
                if isinstance(entry, dict) and entry.get("account") == account:
                    found.append(entry)
        return found

    def accounts(self) -> Iterator[str]:
        directory = self._dir("portal")
        if not os.path.isdir(directory):
            return iter(())
        names = sorted(n[:-5] for n in os.listdir(directory) if n.endswith(".json"))
        return iter(names)

    # -- directories --------------------------------------------------------------------
    def _check_dirs(self, directory: str, *, create: bool) -> None:
        """Refuse symlinked state directories; create missing ones (0700) when writing."""
        for path in (self.root, directory):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    return
                try:
                    os.makedirs(path, mode=0o700, exist_ok=True)
                except OSError as exc:
                    raise StateError(_os_message(exc, path, "create")) from None
                continue
            if stat.S_ISLNK(st.st_mode) and path != self.root:
                raise StateError(f"{path}: is a symbolic link; refusing to use it as a "
                                 "state directory")
            if not stat.S_ISDIR(os.stat(path).st_mode):
                raise StateError(f"{path}: is not a directory")


def _lock_dict(info: LockInfo) -> dict[str, str]:
    return {"id": info.id, "who": info.who, "operation": info.operation,
            "created": info.created}


def default_who(actor: str | None) -> str:
    return f"{actor or os.environ.get('USER') or 'unknown'}@{socket.gethostname()}"


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _check_portal(path: str, account: str, data: Any) -> None:
    """Cheap structural check: a damaged file is an error, never an empty account."""
    ok = (
        isinstance(data, dict)
        and data.get("account") == account
        and isinstance(data.get("lineage"), str)
        and type(data.get("serial")) is int
        and type(data.get("next_user_id")) is int
        and isinstance(data.get("users"), dict)
    )
    if ok:
        users = list(data["users"].values())
        ok = {dict}.issuperset(map(type, users)) and all(map(USER_KEYS.issubset, users))
        if ok:
            crs = [u["call_recording"] for u in users if u["call_recording"] is not None]
            ok = {dict}.issuperset(map(type, crs)) and all(map(CR_KEYS.issubset, crs))
    if not ok:
        raise StateError(f"{path}: corrupt account file (expected account {account!r} with "
                         "lineage, serial, next_user_id and users); restore it from its "
                         ".backup")


def _atomic_write(path: str, data: bytes) -> tuple[int, int, int]:
    """Write via temp file + fsync + rename + directory fsync; returns the new identity."""
    directory = os.path.dirname(path)
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise StateError(_os_message(exc, path, "write")) from None
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
            info = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp)
        raise StateError(_os_message(exc, path, "write")) from None
    _fsync_dir(directory)
    return info.st_ino, info.st_mtime_ns, info.st_size


def _append(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(_os_message(exc, path, "append to")) from None


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _os_message(exc: OSError, path: str, verb: str) -> str:
    if exc.errno == errno.ELOOP:
        return f"{path}: is a symbolic link; refusing to follow it"
    if exc.errno == errno.ENOSPC:
        return f"{path}: cannot {verb}: no space left on device; the previous state is intact"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: cannot {verb}: {exc.strerror}; the previous state is intact"
    return f"{path}: cannot {verb}: {exc.strerror or exc}"
