"""The embedded default backend: a state directory standing in for the Account Portal
and the MIR portal (DESIGN §3).

Safety properties, each for a reason:
- every file is written to a temporary file in the same directory, fsynced, renamed
  over the old one, and the directory fsynced: a crash leaves the old or the new file,
  never a torn one;
- the portal write is a compare-and-swap: it refuses if the file changed since this
  process read it (its inode changes on every rename), so no write builds on stale state;
- the audit entries of a portal write go through a write-ahead journal
  (`audit/<a>.pending`, written before the portal file is committed): a crash after the
  commit never loses them, and a crash inside the append never leaves a torn line for
  good: the next locked operation finishes the append (see `_recover`);
- appends (audit log, tombstones) loop until every byte is written, and repair a torn
  last line left by a crash before they add to the file: the files stay valid JSONL;
- the account lock is an fcntl lock, which dies with its process: a killed apply never
  blocks the next one; the lock file only says who holds it;
- state files are opened with O_NOFOLLOW|O_NONBLOCK and must be regular files, and
  directories are checked not to be symlinks, so a planted symlink cannot redirect a read
  or a write and a planted FIFO cannot hang a command; directories are 0700 and files
  0600, as they hold personal data;
- a damaged account file (wrong shape or value types) is an error naming the file, the
  user and the field, never an empty account or a crash further down;
- `plan` only reads: nothing here creates a file or directory until a write.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from itertools import chain, compress, repeat
from operator import eq, gt, itemgetter
from typing import Any

from reconciler.backends.base import Backend, LockInfo, check_account_id
from reconciler.errors import LockedError, StalePlanError, StateError
from reconciler.model import (
    PRODUCTS,
    CurrentAccount,
    Mirror,
    Profile,
    Role,
    Status,
    is_iso_date,
)

STATE_FORMAT = 1
USER_KEYS = frozenset(("username", "first_name", "last_name", "email", "extension",
                       "phone_number", "profile", "location", "roles", "call_recording"))
CR_KEYS = frozenset(("product", "activation_date", "prevent_remove", "status"))
OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
OPEN_LOG = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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

    def pending_path(self, account: str) -> str:
        """The audit journal: entries of a portal write whose append is not known done."""
        return self._path("audit", account, ".pending")

    def lock_path(self, account: str) -> str:
        return self._path("locks", account, ".lock")

    @property
    def tombstone_path(self) -> str:
        return os.path.join(self.root, "terminated.jsonl")

    # -- reading ----------------------------------------------------------------------
    def _read_bytes(self, path: str) -> tuple[bytes, os.stat_result] | None:
        """The bytes of a regular state file and its stat, or None if it does not exist.

        O_NONBLOCK and the fstat check: a FIFO or device planted in the state directory
        would otherwise block the command forever in open() or read()."""
        self._check_dirs(os.path.dirname(path), create=False)
        try:
            fd = os.open(path, OPEN_READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(_os_message(exc, path, "read")) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StateError(f"{path}: not a regular file ({_file_kind(info.st_mode)}); "
                                 "refusing to use it as a state file")
            os.set_blocking(fd, True)
            with os.fdopen(fd, "rb") as fh:
                fd = -1
                raw = fh.read()
        except OSError as exc:
            raise StateError(_os_message(exc, path, "read")) from None
        finally:
            if fd >= 0:
                os.close(fd)
        return raw, info

    def _read_json(self, path: str) -> tuple[Any, tuple[int, int, int]] | None:
        """Parsed JSON and the file's identity, or None if the file does not exist."""
        found = self._read_bytes(path)
        if found is None:
            return None
        raw, info = found
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
    def write_account(self, state: CurrentAccount, expected_serial: int,
                      audit: list[dict[str, Any]] | None = None) -> None:
        """Compare-and-swap the account file; its audit entries go through the journal.

        Order, each step for a crash at any moment: the journal (audit/<a>.pending, the
        entries and the serial/lineage they belong to) is written atomically before the
        portal file is committed; then the entries are appended to the log and the journal
        is deleted. If the commit fails, the journal is deleted with it; if the process
        dies after the commit, the next locked operation finds the journal and the portal
        at its serial and finishes the append (`_recover`)."""
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
        lines = [_audit_line(e) for e in audit or ()]
        pending = self.pending_path(state.account)
        if lines:
            log = self.audit_path(state.account)
            self._check_dirs(os.path.dirname(log), create=True)
            journal = {"format_version": STATE_FORMAT, "account": state.account,
                       "lineage": state.lineage, "serial": state.serial,
                       "audit_offset": _clean_log_end(log), "lines": lines}
            _atomic_write(pending, _dumps(journal))
        try:
            written = _atomic_write(path, _dumps(doc))
        except BaseException:
            if lines:  # not committed: the entries belong to nothing
                with suppress(OSError):
                    os.unlink(pending)
                _fsync_dir(os.path.dirname(pending))
            raise
        self._seen[state.account] = (written, state.serial)
        if lines:
            self._finish_journal(state, "".join(line + "\n" for line in lines))

    def _finish_journal(self, state: CurrentAccount, text: str) -> None:
        """Append the committed write's entries, then drop the journal."""
        log, pending = self.audit_path(state.account), self.pending_path(state.account)
        try:
            _append(log, text)
        except StateError as exc:
            raise StateError(f"{exc}; account {state.account} was updated (serial "
                             f"{state.serial}) and its audit entries are kept in {pending}: "
                             "the next apply or sync appends them") from None
        _remove(pending)

    def _recover(self, account: str) -> None:
        """Finish what a crashed writer left (called under the lock, before any read).

        A journal whose lineage and serial are the portal's belongs to a committed write:
        the entries not yet in the log are appended (the log's bytes from the journal's
        offset show how far the crashed append got; a torn last entry is cut and written
        again in full). Any other journal belongs to a write that never committed: dropped.
        """
        pending = self.pending_path(account)
        found = self._read_json(pending)
        if found is None:
            return
        journal = found[0]
        if not (isinstance(journal, dict) and journal.get("account") == account
                and type(journal.get("serial")) is int
                and type(journal.get("audit_offset")) is int
                and isinstance(journal.get("lines"), list)
                and {str}.issuperset(map(type, journal["lines"]))):
            raise StateError(f"{pending}: corrupt audit journal; if the audit log "
                             f"{self.audit_path(account)} already holds its entries, delete it")
        portal = self._read_json(self.portal_path(account))
        committed = (portal is not None and isinstance(portal[0], dict)
                     and portal[0].get("lineage") == journal.get("lineage")
                     and portal[0].get("serial") == journal["serial"])
        if committed:
            log = self.audit_path(account)
            data = "".join(line + "\n" for line in journal["lines"]).encode("utf-8")
            rest = _unwritten(log, data, journal["audit_offset"])
            if rest:
                _append(log, rest.decode("utf-8"))
        _remove(pending)

    def _backup(self, path: str, backup: str) -> None:
        """Keep the previous account file as .backup (a hard link: no copy, atomic).

        If .backup already is that file (a previous write refreshed it, then failed or
        was killed before its commit), there is nothing to do: rename(2) of two links to
        one inode does nothing and would leave the temporary link behind."""
        try:
            current, old = os.lstat(path), os.lstat(backup)
            if (current.st_ino, current.st_dev) == (old.st_ino, old.st_dev):
                return
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StateError(_os_message(exc, backup, "write")) from None
        tmp = f"{backup}.tmp-{os.getpid()}"
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.link(path, tmp, follow_symlinks=False)
            os.replace(tmp, backup)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise StateError(_os_message(exc, backup, "write")) from None

    def write_mirror(self, mirror: Mirror) -> None:
        path = self.mirror_path(mirror.account)
        self._check_dirs(os.path.dirname(path), create=True)
        _atomic_write(path, _dumps({"format_version": STATE_FORMAT, "account": mirror.account,
                                    "users": mirror.users, "recordings": mirror.recordings}))

    # -- locking ----------------------------------------------------------------------
    @contextmanager
    def lock(self, account: str, who: str, operation: str,
             timeout: float) -> Iterator[LockInfo]:
        """Hold the lock; on entry, finish or drop what a crashed holder left behind."""
        path = self.lock_path(account)
        self._check_dirs(os.path.dirname(path), create=True)
        deadline = time.monotonic() + timeout
        fd = self._acquire(path, account, deadline)
        info = LockInfo(id=str(uuid.uuid4()), who=who, operation=operation, created=now_iso())
        try:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(_lock_dict(info)).encode() + b"\n", 0)
                os.fsync(fd)
            except OSError as exc:
                raise StateError(_os_message(exc, path, "write the lock")) from None
            self._recover(account)
            self._remove_leftovers(account)
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
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                             | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StateError(_os_message(exc, path, "lock")) from None
            try:
                mode = os.fstat(fd).st_mode
                if not stat.S_ISREG(mode):
                    raise StateError(f"{path}: not a regular file ({_file_kind(mode)}); "
                                     "refusing to use it as a lock file")
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
            except BaseException as exc:
                os.close(fd)
                if isinstance(exc, OSError):
                    raise StateError(_os_message(exc, path, "lock")) from None
                raise
            try:  # the holder we waited for may have unlinked the file: lock the new one
                if os.lstat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _holder(self, path: str) -> LockInfo | None:
        try:
            fd = os.open(path, OPEN_READ)
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    return None
                data = json.loads(fh.read(65536) or b"null")
            return LockInfo(**{k: str(data[k]) for k in ("id", "who", "operation", "created")})
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def _remove_leftovers(self, account: str) -> None:
        """Delete temporary files of this account left by killed writers (under the lock,
        so no live writer of this account has any; files of a live process are kept)."""
        for kind in ("portal", "mir", "audit"):
            directory = self._dir(kind)
            self._check_dirs(directory, create=False)
            for name in _listdir(directory):
                if name.startswith(f"{account}.") and ".tmp-" in name:
                    pid = name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
                    if not (pid.isdigit() and _alive(int(pid))):
                        with suppress(OSError):
                            os.unlink(os.path.join(directory, name))

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
    def terminate_account(self, account: str, tombstone: dict[str, Any]) -> None:
        """Check every directory the deletion goes through before the tombstone is written,
        so a refusal (a planted symlink) leaves neither a tombstone nor a half deletion."""
        for kind in ("portal", "mir", "audit"):
            self._check_dirs(self._dir(kind), create=False)
        super().terminate_account(account, tombstone)

    def delete_account(self, account: str) -> None:
        kinds = ("portal", "mir", "audit")
        for kind in kinds:  # never delete through a planted symlink
            self._check_dirs(self._dir(kind), create=False)
        for path in (self.mirror_path(account), self.audit_path(account),
                     self.pending_path(account), self.backup_path(account),
                     self.portal_path(account)):
            _remove(path)
        for kind in kinds:  # leftovers of killed writes
            directory = self._dir(kind)
            for name in _listdir(directory):
                if name.startswith(f"{account}.") and ".tmp-" in name:
                    _remove(os.path.join(directory, name))
        for kind in kinds:
            _fsync_dir(self._dir(kind))

    def add_tombstone(self, entry: dict[str, Any]) -> None:
        self._check_dirs(self.root, create=True)
        _append(self.tombstone_path, json.dumps(entry, sort_keys=True) + "\n")

    def tombstones(self, account: str) -> list[dict[str, Any]]:
        """Only a torn last line (no newline: a crash mid-append) is ignored; any other line
        that is not a tombstone is an error: skipping it could hide a terminated id."""
        path = self.tombstone_path
        found = self._read_bytes(path)
        if found is None:
            return []
        lines = found[0].split(b"\n")
        lines.pop()  # after the last newline: b"", or a line torn by a crash
        out = []
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                entry = None
            if not (isinstance(entry, dict) and isinstance(entry.get("account"), str)):
                raise StateError(f"{path}: line {number} is not a tombstone (expected a JSON "
                                 "object with an account); the file is damaged, restore it")
            if entry["account"] == account:
                out.append(entry)
        return out

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


# One encoder for every audit line: json.dumps would build a new one per call, which is a
# third of the cost when a new account adds 100,000 users (same output as json.dumps).
_audit_line = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


# -- the account file's shape ------------------------------------------------------------

PROFILES = frozenset(p.value for p in Profile)
ROLES = frozenset(r.value for r in Role)
STATUSES = frozenset(s.value for s in Status)
STR_FIELDS = ("username", "first_name", "last_name", "email", "extension")
OPTIONAL_FIELDS = ("phone_number", "location")
FIELD_ORDER = (*STR_FIELDS, "profile", *OPTIONAL_FIELDS, "roles", "call_recording")
_FIELDS = itemgetter(*FIELD_ORDER)
_AT_PROFILE = FIELD_ORDER.index("profile")
_AT_OPTIONAL = tuple(FIELD_ORDER.index(f) for f in OPTIONAL_FIELDS)
_AT_ROLES = FIELD_ORDER.index("roles")
_AT_CR = FIELD_ORDER.index("call_recording")
_CR_VALUES = itemgetter("product", "activation_date", "prevent_remove", "status")
_STR_OR_NONE = frozenset((str, type(None)))
_STR = frozenset((str,))
# the types each field of FIELD_ORDER may have, and those of _CR_VALUES
FIELD_TYPES = (*[_STR] * len(STR_FIELDS), _STR, *[_STR_OR_NONE] * len(OPTIONAL_FIELDS),
               frozenset((list,)), frozenset((dict, type(None))))
CR_TYPES = (_STR, _STR_OR_NONE, frozenset((bool,)), _STR)
USER_ID = re.compile(r"u([0-9]+)\Z")


def _check_portal(path: str, account: str, data: Any) -> None:
    """A damaged file is an error naming the file, the user and the field, never an empty
    account or a TypeError further down (sorting usernames, Product(value), ...).

    It runs on every read of up to 100,000 users, so the common case is one C-level pass
    per column (itemgetter, map(type), set membership; no Python loop per user, no
    JSON Schema); only a file found damaged is walked user by user to name the problem.
    """
    problem = _top_problem(account, data)
    if problem is None and not _users_ok(data["users"], data["next_user_id"]):
        problem = _user_problem(data["users"], data["next_user_id"])
    if problem is not None:
        raise StateError(f"{path}: corrupt account file: {problem}; restore it from its "
                         ".backup or from your last good copy")


def _top_problem(account: str, data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"expected a JSON object, got {_shown(data)}"
    checks = (
        (data.get("account") == account, f"account is {_shown(data.get('account'))}, "
                                         f"expected {account!r}"),
        (isinstance(data.get("lineage"), str) and data["lineage"] != "",
         f"lineage must be a non-empty string, got {_shown(data.get('lineage'))}"),
        (type(data.get("serial")) is int and data["serial"] >= 0,
         f"serial must be a whole number, got {_shown(data.get('serial'))}"),
        (type(data.get("next_user_id")) is int and data["next_user_id"] >= 1,
         f"next_user_id must be a positive whole number, got "
         f"{_shown(data.get('next_user_id'))}"),
        (type(data.get("name")) in _STR_OR_NONE,
         f"name must be a string, got {_shown(data.get('name'))}"),
        (isinstance(data.get("users"), dict),
         f"users must be an object keyed by user id, got {_shown(data.get('users'))}"),
    )
    return next((why for ok, why in checks if not ok), None)


def _users_ok(users: dict[str, Any], next_id: int) -> bool:
    """The fast check (see _check_portal): True if every user record is well formed.

    One itemgetter pass pulls the ten fields of every user into a flat list (KeyError: a
    missing field; TypeError: a user that is not an object). The types of each user's
    fields, grouped into one tuple per user by zip, collapse into a set of a handful of
    distinct signatures, checked once each; strided slices of the flat list are the
    columns whose values must be in a set (profile, roles, the CR service's)."""
    count = len(FIELD_ORDER)
    try:
        flat = list(chain.from_iterable(map(_FIELDS, users.values())))
        signatures = set(zip(*[map(type, flat)] * count, strict=True))
        if not all(map(_fits, signatures, repeat(FIELD_TYPES))):
            return False
        services = flat[_AT_CR::count]
        present = list(filter(None, services))  # drops None, and {}: counted below
        if not (PROFILES.issuperset(flat[_AT_PROFILE::count])
                and ROLES.issuperset(chain.from_iterable(flat[_AT_ROLES::count]))
                and len(present) + services.count(None) == len(services)):
            return False
        values = list(chain.from_iterable(map(_CR_VALUES, present)))
        signatures = set(zip(*[map(type, values)] * 4, strict=True))
        if not all(map(_fits, signatures, repeat(CR_TYPES))):
            return False
        dates = set(values[1::4])
        dates.discard(None)
        if not (PRODUCTS.issuperset(values[0::4]) and STATUSES.issuperset(values[3::4])
                and all(map(is_iso_date, dates))):
            return False
    except (KeyError, TypeError):  # a missing key; an unhashable value in a set check
        return False
    return not any(True for _ in _reused_ids(users, next_id))


def _fits(types: tuple[type, ...], allowed: tuple[frozenset[type], ...]) -> bool:
    return all(map(frozenset.__contains__, allowed, types))


def _reused_ids(users: Iterable[str], next_id: int) -> Iterator[str]:
    """User ids `u<n>` with n >= next_id: an added user would get (overwrite) them.

    Such an id is longer than f"u{next_id}", or as long and not sorting before it; the
    lengths are compared in C (map, compress), and the few keys left are parsed."""
    limit = f"u{next_id}"
    keys = list(users)
    lengths = list(map(len, keys))
    longest = max(lengths, default=0)
    if longest < len(limit):
        return
    candidates = chain(
        filter(limit.__le__, compress(keys, map(eq, lengths, repeat(len(limit))))),
        compress(keys, map(gt, lengths, repeat(len(limit)))) if longest > len(limit) else ())
    for uid in candidates:
        match = USER_ID.match(uid)
        if match and int(match.group(1)) >= next_id:
            yield uid


def _user_problem(users: dict[str, Any], next_id: int) -> str:
    """The first damaged user and field, in words (the slow path: only for a bad file)."""
    for uid, user in users.items():
        if not isinstance(user, dict):
            return f"user {uid}: expected an object, got {_shown(user)}"
        name = user.get("username")
        who = f"user {uid} ({name})" if isinstance(name, str) else f"user {uid}"
        missing = sorted(USER_KEYS - user.keys())
        if missing:
            return f"{who}: missing field {', '.join(missing)}"
        for field in STR_FIELDS:
            if type(user[field]) is not str:
                return f"{who}: {field} must be a string, got {_shown(user[field])}"
        for field in OPTIONAL_FIELDS:
            if type(user[field]) not in _STR_OR_NONE:
                return f"{who}: {field} must be a string or null, got {_shown(user[field])}"
        if not _member(user["profile"], PROFILES):
            return f"{who}: profile must be one of {', '.join(sorted(PROFILES))}, got " \
                   f"{_shown(user['profile'])}"
        roles = user["roles"]
        if type(roles) is not list or not all(_member(r, ROLES) for r in roles):
            return f"{who}: roles must be a list of {', '.join(sorted(ROLES))}, got " \
                   f"{_shown(roles)}"
        problem = _service_problem(user["call_recording"])
        if problem:
            return f"{who}: call_recording{problem}"
    for uid in _reused_ids(users, next_id):
        return (f"next_user_id is {next_id} but user id {uid} exists: the next added users "
                "would overwrite existing ones")
    return "unexpected content in users"


def _service_problem(cr: Any) -> str | None:
    if cr is None:
        return None
    if type(cr) is not dict:
        return f" must be an object or null, got {_shown(cr)}"
    missing = sorted(CR_KEYS - cr.keys())
    if missing:
        return f": missing field {', '.join(missing)}"
    if not _member(cr["product"], PRODUCTS):
        return f".product must be one of {', '.join(sorted(PRODUCTS))}, got " \
               f"{_shown(cr['product'])}"
    if not _member(cr["status"], STATUSES):
        return f".status must be one of {', '.join(sorted(STATUSES))}, got " \
               f"{_shown(cr['status'])}"
    if type(cr["prevent_remove"]) is not bool:
        return f".prevent_remove must be true or false, got {_shown(cr['prevent_remove'])}"
    when = cr["activation_date"]
    if when is not None and not (type(when) is str and is_iso_date(when)):
        return f".activation_date must be an ISO date (YYYY-MM-DD) or null, got {_shown(when)}"
    return None


def _member(value: Any, allowed: frozenset[str]) -> bool:
    return type(value) is str and value in allowed


def _shown(value: Any) -> str:
    """A short description of a JSON value for an error message (never the whole file)."""
    if isinstance(value, dict):
        return f"an object of {len(value)} key{'' if len(value) == 1 else 's'}"
    if isinstance(value, list) and not (
            len(value) <= 5 and {str, int, float, bool, type(None)}.issuperset(map(type, value))):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a file"


# -- files ---------------------------------------------------------------------------------

def _atomic_write(path: str, data: bytes) -> tuple[int, int, int]:
    """Write via temp file + fsync + rename + directory fsync; returns the new identity."""
    directory = os.path.dirname(path)
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        raise StateError(_os_message(exc, path, "write")) from None
    try:
        try:
            _write_all(fd, data)
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


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out: a short write (disk filling up) is not success."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


@contextmanager
def _open_log(path: str, *, create: bool) -> Iterator[tuple[int, int] | None]:
    """An append-only JSONL file opened for update: (fd, size), or None if it does not
    exist and `create` is off. Refuses anything but a regular file (a planted FIFO would
    block, a directory would not be a log); every OS error names the file."""
    try:
        fd = os.open(path, OPEN_LOG | (os.O_CREAT if create else 0), 0o600)
    except OSError as exc:
        if create or not isinstance(exc, FileNotFoundError):
            raise StateError(_os_message(exc, path, "append to")) from None
        fd = -1
    if fd < 0:
        yield None
        return
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"{path}: not a regular file ({_file_kind(info.st_mode)}); "
                             "refusing to append to it")
        yield fd, info.st_size
    except OSError as exc:
        raise StateError(_os_message(exc, path, "append to")) from None
    finally:
        os.close(fd)


def _append(path: str, text: str) -> None:
    """Append whole lines to a JSONL file, all or nothing.

    A torn last line (a crash mid-append) is repaired first (`_repair_tail`), so the new
    lines never continue a broken one; a failed write is cut back off, so a full disk
    leaves the file as it was."""
    with _open_log(path, create=True) as opened:
        fd, size = opened  # type: ignore[misc]  # never None with create=True
        start = _repair_tail(fd, size)
        try:
            _write_all(fd, text.encode("utf-8"))
            os.fsync(fd)
        except OSError:
            with suppress(OSError):
                os.ftruncate(fd, start)
            raise


def _repair_tail(fd: int, size: int) -> int:
    """Make the file end at a line boundary; returns its new size.

    The bytes after the last newline are a line torn by a crash: cut off (the journal
    re-supplies an audit entry; a terminated account's tombstone is written again by the
    re-run termination) — unless they parse as JSON, i.e. a complete line that only lacks
    its newline (edited by hand): completed with one, as it loses nothing."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    start = _line_start(fd, size)
    try:
        json.loads(os.pread(fd, size - start, start))
    except (ValueError, RecursionError):
        os.ftruncate(fd, start)
        return start
    _write_all(fd, b"\n")
    return size + 1


def _line_start(fd: int, size: int) -> int:
    """Offset just after the last newline of the file (0 if it has none)."""
    end = size
    while end > 0:
        begin = max(0, end - 65536)
        found = os.pread(fd, end - begin, begin).rfind(b"\n")
        if found >= 0:
            return begin + found + 1
        end = begin
    return 0


def _clean_log_end(path: str) -> int:
    """Repair the log's tail now and return its size: where the next append starts (the
    journal records it, so a recovery knows which bytes the crashed append wrote)."""
    with _open_log(path, create=False) as opened:
        return 0 if opened is None else _repair_tail(*opened)


def _unwritten(path: str, data: bytes, offset: int) -> bytes:
    """What of `data` (whole lines meant to start at `offset`) the log lacks.

    The log's bytes from `offset` on are normally a prefix of `data` (the crashed append
    got that far): its complete lines are kept, a torn last one is cut, the rest returned.
    If they are not (the log was rotated or edited since), everything is returned: an
    entry twice is better than an entry lost."""
    with _open_log(path, create=False) as opened:
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


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(_os_message(exc, path, "delete")) from None
    _fsync_dir(os.path.dirname(path))


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateError(_os_message(exc, directory, "list")) from None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


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
    # an append that fails is cut back off (_append): the file is as it was
    kept = "the file is unchanged" if verb == "append to" else "the previous state is intact"
    if exc.errno == errno.ELOOP:
        return f"{path}: is a symbolic link; refusing to follow it"
    if exc.errno == errno.ENOSPC:
        return f"{path}: cannot {verb}: no space left on device; {kept}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: cannot {verb}: {exc.strerror}; {kept}"
    return f"{path}: cannot {verb}: {exc.strerror or exc}"
