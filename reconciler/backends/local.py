"""The embedded default backend: a state directory standing in for the Account Portal
and the MIR portal (DESIGN §3.3). It implements the contract of `base.py`; durable file
writing is in `files.py`, the stored documents' shape in `statefile.py`, locks in
`filelock.py`.

Safety properties, each for a reason:
- every file is replaced atomically (`files.atomic_write`): a crash leaves the old or the
  new file, never a torn one;
- the account write is a compare-and-swap on lineage and serial; the file identity (its
  inode changes on every rename) is the fast path that spares re-reading a file this
  process read or wrote itself;
- the audit entries and the new MIR mirror of a write are staged before the account file
  (the commit point): the entries in a journal (`audit/<a>.pending`), the mirror as
  `mir/<a>.json.next`. After the commit they are put in place; a crash after the commit
  is finished by the next locked command (`recover`), one before it is dropped;
- Ctrl-C is held back for the whole write (`deferred_interrupts`), so no cleanup can
  delete the journal of a committed change;
- state files are opened with O_NOFOLLOW|O_NONBLOCK and must be regular files, and
  directories are checked not to be symlinks; directories are 0700 and files 0600;
- `plan` only reads: nothing here creates a file or directory until a write.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from reconciler.backends import files
from reconciler.backends.base import (
    AccountSummary,
    AccountWrite,
    AuditFilter,
    Backend,
    Change,
    LockInfo,
    Version,
    check_account_id,
    stamp_audit,
    versions_from_audit,
)
from reconciler.backends.filelock import FileLocks
from reconciler.backends.statefile import (
    account_document,
    audit_line,
    decode_account,
    decode_mirror,
    dumps,
    mirror_document,
)
from reconciler.errors import LockedError, StalePlanError, StateError
from reconciler.interrupts import deferred_interrupts
from reconciler.model import CurrentAccount, Mirror
from reconciler.render.common import some_of

KINDS = ("portal", "mir", "audit")


JOURNAL_FORMAT = 2  # a header line, then the log lines as they will be appended


def journal_bytes(account: str, lineage: str | None, serial: int, audit_offset: int,
                  lines: bytes, mirror: bool) -> bytes:
    """The audit journal of one write: what is pending, and nothing more.

    One JSON header line (the account, the lineage and serial the entries belong to, the
    log offset they start at, how many bytes follow, whether a mirror is staged), then the
    new log lines byte for byte as the append writes them. Why not a JSON document with
    the lines inside (format 1): each line would be serialised a second time as a JSON
    string, every quote escaped, at 100,000 added users 70 MB more to encode and then to
    decode at recovery; here recovery compares and appends the very bytes."""
    header = dumps({"format_version": JOURNAL_FORMAT, "account": account,
                    "lineage": lineage, "serial": serial, "audit_offset": audit_offset,
                    "audit_bytes": len(lines), "mirror": mirror})
    return b"".join((header, b"\n", lines))


def read_journal(account: str, raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    """A journal's header and its log lines (None: not a whole journal of `account`).

    Reads format 2 (journal_bytes) and format 1, a single JSON document whose `lines`
    are the entries as strings, which a crctl before it may have left behind."""
    head, newline, lines = raw.partition(b"\n")
    try:
        header = json.loads(head)
    except (ValueError, RecursionError):
        return None
    if not (isinstance(header, dict) and header.get("account") == account
            and type(header.get("serial")) is int
            and type(header.get("audit_offset")) is int):
        return None
    if header.get("format_version") == JOURNAL_FORMAT:
        if not newline or header.get("audit_bytes") != len(lines) \
                or (lines and not lines.endswith(b"\n")):
            return None
        return header, lines
    old = header.get("lines")
    if newline or not isinstance(old, list) or not {str}.issuperset(map(type, old)):
        return None
    return header, "".join(line + "\n" for line in old).encode("utf-8")


@dataclass(slots=True)
class _Staged:
    """One account of a batch write (`LocalBackend.write_accounts`) on its way in."""

    account: str
    path: str
    state: CurrentAccount
    lines: bytes
    mirror: bool
    mirror_tmp: str = ""
    pending_tmp: str = ""
    account_tmp: str = ""
    identity: tuple[int, int, int] = (0, 0, 0)
    staged: str = ""  # where the mirror is staged (mir/<a>.json.next)
    pending: str = ""  # the journal (audit/<a>.pending)
    placed: bool = False  # the journal and staged mirror are in place (step 2)

    @property
    def journal(self) -> bool:
        return bool(self.lines) or self.mirror


class LocalBackend(Backend):
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        # what this process last read or wrote of each account: (file identity, lineage,
        # serial) — the compare-and-swap's fast path
        self._seen: dict[str, tuple[tuple[int, int, int], str | None, int]] = {}
        self._locks = FileLocks()
        # directory -> (its mtime, temporary files by account): see _temporary_files
        self._temporaries: dict[str, tuple[int, dict[str, list[str]]]] = {}
        self._dirs_ok: set[str] = set()  # state directories checked (_check_dirs)

    @property
    def location(self) -> str:
        return self.root

    def exists(self) -> bool:
        return os.path.isdir(self._dir("portal")) or os.path.exists(self.tombstone_path)

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

    def staged_mirror_path(self, account: str) -> str:
        """The new MIR mirror of a write, put in place once the account file commits."""
        return self._path("mir", account, ".json.next")

    def audit_path(self, account: str) -> str:
        return self._path("audit", account, ".jsonl")

    def pending_path(self, account: str) -> str:
        """The audit journal: entries of a write whose append is not known done."""
        return self._path("audit", account, ".pending")

    def lock_path(self, account: str) -> str:
        return self._path("locks", account, ".lock")

    @property
    def tombstone_path(self) -> str:
        return os.path.join(self.root, "terminated.jsonl")

    # -- reading ----------------------------------------------------------------------
    def _read_bytes(self, path: str) -> tuple[bytes, os.stat_result] | None:
        self._check_dirs(os.path.dirname(path), create=False)
        return files.read_regular(path)

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
                             "from your last good copy") from None
        return data, files.identity(info)

    def read_account(self, account: str, serial: int | None = None) -> CurrentAccount:
        path = self.portal_path(account)
        found = self._read_json(path)
        if found is None:
            if serial not in (None, 0):
                raise StateError(f"account {account} does not exist in {self.root}")
            return CurrentAccount(account=account)
        data, identity = found
        state = decode_account(path, account, data)
        if serial is not None and serial != state.serial:
            return self._read_backup(account, serial, state.serial)
        self._seen[account] = (identity, state.lineage, state.serial)
        return state

    def _read_backup(self, account: str, serial: int, current: int) -> CurrentAccount:
        path = self.backup_path(account)
        found = self._read_json(path)
        if found is not None:
            state = decode_account(path, account, found[0])
            if state.serial == serial:
                return state
        kept = f"{current}" + (f" and {found[0].get('serial')}" if found and
                               isinstance(found[0], dict) else "")
        raise StateError(f"account {account}: serial {serial} is not kept by the local "
                         f"state (it keeps the current version and the one before: serial "
                         f"{kept}); a PostgreSQL state keeps every version")

    def read_mirror(self, account: str) -> Mirror:
        path = self.mirror_path(account)
        found = self._read_json(path)
        if found is None:
            return Mirror(account=account)
        return decode_mirror(path, account, found[0])

    def history(self, account: str) -> list[Version]:
        versions = {v.serial: v for v in versions_from_audit(self.audit(account))}
        for path in (self.backup_path(account), self.portal_path(account)):
            found = self._read_json(path)
            if found is None or not isinstance(found[0], dict):
                continue
            data = found[0]
            serial = data.get("serial")
            if type(serial) is not int:
                continue
            found_change = data.get("change")
            change: dict[str, Any] = found_change if isinstance(found_change, dict) else {}
            known = versions.get(serial)
            versions[serial] = Version(
                serial=serial, time=change.get("time") or (known.time if known else None),
                actor=change.get("actor") or (known.actor if known else None),
                operation=change.get("operation") or (known.operation if known else None),
                counts=known.counts if known else {}, readable=True)
        return [versions[s] for s in sorted(versions)]

    def audit(self, account: str, filters: AuditFilter | None = None
              ) -> Iterator[dict[str, Any]]:
        path = self.audit_path(account)
        found = self._read_bytes(path)
        if found is None:
            return
        lines = found[0].split(b"\n")
        lines.pop()  # after the last newline: b"", or a line torn by a crash
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                entry = None
            if not isinstance(entry, dict):
                raise StateError(f"{path}: line {number} is not an audit entry (expected a "
                                 "JSON object); the file is damaged")
            if filters is None or filters.matches(entry):
                yield entry

    def accounts(self) -> list[AccountSummary]:
        out = []
        for account in self._account_ids():
            found = self._read_json(self.portal_path(account))
            if found is None:
                continue
            state = decode_account(self.portal_path(account), account, found[0])
            change = found[0].get("change")
            out.append(AccountSummary(
                account=account, users=len(state.users),
                cr_users=sum(1 for u in state.users.values() if u["call_recording"]),
                serial=state.serial,
                last_change=change.get("time") if isinstance(change, dict) else None,
                name=state.name))
        return out

    def account_ids(self) -> list[str]:
        return self._account_ids()

    def _account_ids(self) -> list[str]:
        directory = self._dir("portal")
        self._check_dirs(directory, create=False)
        ids = []
        for name in files.listdir(directory):
            stem = name[:-5] if name.endswith(".json") else None
            with suppress(Exception):
                if stem is not None and check_account_id(stem):
                    ids.append(stem)
        return sorted(ids)

    # -- writing ----------------------------------------------------------------------
    def write_account(self, state: CurrentAccount, expected_lineage: str | None,
                      expected_serial: int, audit: list[dict[str, Any]] | None = None,
                      mirror: Mirror | None = None, change: Change | None = None) -> None:
        """Compare-and-swap the account file; audit entries and mirror staged before it.

        Order, each step for a crash at any moment: the new mirror is written as
        `mir/<a>.json.next` and the journal (the entries, the lineage and serial they
        belong to) as `audit/<a>.pending`, both before the account file is replaced (the
        commit point); then the entries are appended to the log, the mirror renamed into
        place and the journal deleted. If the commit fails, both are deleted; if the
        process dies after it, the next locked command finishes them (`recover`)."""
        with deferred_interrupts():
            self._write_account(state, expected_lineage, expected_serial, audit, mirror,
                                change)

    def _write_account(self, state: CurrentAccount, expected_lineage: str | None,
                       expected_serial: int, audit: list[dict[str, Any]] | None,
                       mirror: Mirror | None, change: Change | None) -> None:
        account = state.account
        path = self.portal_path(account)
        self._check_dirs(os.path.dirname(path), create=True)
        identity = self._compare(account, path, expected_lineage, expected_serial)
        if identity is not None:
            self._backup(path, self.backup_path(account))
        # the new log lines, serialised once: the same bytes go to the journal and the log
        entries = stamp_audit(audit or [], state.serial, change)
        lines = "".join([audit_line(e) + "\n" for e in entries]).encode("utf-8")
        pending, staged = self.pending_path(account), self.staged_mirror_path(account)
        if mirror is not None:
            self._check_dirs(os.path.dirname(staged), create=True)
            files.atomic_write(staged, dumps(mirror_document(mirror)))
        journal = bool(lines) or mirror is not None
        if journal:
            log = self.audit_path(account)
            self._check_dirs(os.path.dirname(log), create=True)
            files.atomic_write(pending, journal_bytes(
                account, state.lineage, state.serial, files.clean_log_end(log), lines,
                mirror is not None))
        doc = account_document(state, change.to_json() if change else None)
        try:
            written = files.atomic_write(path, dumps(doc))
        except BaseException:
            if journal and not self._committed(path, state):
                for leftover in (pending, staged):
                    with suppress(OSError):
                        os.unlink(leftover)
                files.fsync_dir(os.path.dirname(pending))
            raise
        self._seen[account] = (written, state.lineage, state.serial)
        if journal:
            self._finish(account, state.serial, lines, mirror is not None)

    def write_accounts(self, writes: list[AccountWrite],
                       on_commit: Callable[[int], None]) -> None:
        """Several accounts' writes with four syncs of the file system in all, where
        one by one each would take nine fsyncs (an MSP's directory of 10,000 accounts:
        90,000). The order of what becomes durable is each account's order in
        `write_account`, phase by phase over the batch:

        1. every account's new files (journal, staged mirror, account file) are written
           to temporary files, after the compare-and-swap check; sync;
        2. the journals and staged mirrors are renamed into place; sync;
        3. the account files are renamed into place: the commit point of each; sync;
           `on_commit` for each;
        4. the audit entries are appended and the mirrors put in place; sync; the
           journals are deleted (a journal left by a crash here is finished, idempotently,
           by `recover`).

        A failure before an account's commit leaves it and those after it as they were
        (their temporary and staged files deleted) while those before it are committed
        and finished, and its error is raised: what the writes one by one leave."""
        distinct = len({w.state.account for w in writes}) == len(writes)
        if (len(writes) < 2 or not distinct or not files.can_sync_filesystem()
                or not files.one_file_system(self.root, self._write_dirs())):
            super().write_accounts(writes, on_commit)
            return
        with deferred_interrupts():
            self._write_batch(writes, on_commit)

    def _write_dirs(self) -> list[str]:
        """The directories a write puts files in (the same for every account)."""
        return [self._dir(kind) for kind in KINDS]

    def _write_batch(self, writes: list[AccountWrite],
                     on_commit: Callable[[int], None]) -> None:
        error: BaseException | None = None
        batch: list[_Staged] = []
        try:
            for w in writes:  # 1. temporary files, after the compare-and-swap check
                try:
                    batch.append(self._stage(w))
                except (StateError, StalePlanError) as exc:
                    error = exc
                    break
            if batch:
                files.sync_filesystem(self.root)
        except BaseException:
            self._unstage(batch)
            raise
        try:
            for index, item in enumerate(batch):  # 2. the journals and staged mirrors
                item.placed = True
                try:
                    if item.mirror_tmp:
                        files.put_in_place(item.mirror_tmp, item.staged)
                    if item.pending_tmp:
                        files.put_in_place(item.pending_tmp, item.pending)
                except StateError as exc:
                    self._unstage(batch[index:])
                    del batch[index:]
                    error = exc
                    break
            if batch:
                files.sync_filesystem(self.root)
        except BaseException:
            self._unstage(batch)
            raise
        committed = 0
        for index, item in enumerate(batch):  # 3. the commit points
            try:
                files.put_in_place(item.account_tmp, item.path)
            except StateError as exc:
                self._unstage(batch[index:])
                error = exc
                break
            self._seen[item.account] = (item.identity, item.state.lineage,
                                        item.state.serial)
            committed += 1
        del batch[committed:]
        if not batch:
            if error is not None:
                raise error
            return
        try:
            files.sync_filesystem(self.root)
        except StateError as exc:  # in place, but perhaps not on the disk
            for index in range(committed):
                on_commit(index)
            raise StateError(
                f"{exc}; accounts {some_of([i.account for i in batch])} were written but "
                "may not survive a power failure; their audit entries and MIR mirrors are "
                "kept in their journals: the next apply or sync finishes them") from None
        for index in range(committed):
            on_commit(index)
        finished = 0
        for item in batch:  # 4. the log and the mirror after each commit
            try:
                if item.lines:
                    files.append(self.audit_path(item.account), item.lines, durable=False)
                if item.mirror:
                    os.replace(self.staged_mirror_path(item.account),
                               self.mirror_path(item.account))
            except (StateError, OSError) as exc:
                reason = (exc if isinstance(exc, StateError) else StateError(
                    files.os_message(exc, self.mirror_path(item.account), "write")))
                kept = batch[finished:]
                if len(kept) == 1:
                    error = StateError(
                        f"{reason}; account {item.account} was updated (serial "
                        f"{item.state.serial}) and its audit entries and MIR mirror are "
                        f"kept in {item.pending}: the next apply or sync finishes them")
                else:
                    error = StateError(
                        f"{reason}; accounts {some_of([i.account for i in kept])} were "
                        "updated and their audit entries and MIR mirrors are kept in their "
                        f"journals ({item.pending}, ...): the next apply or sync finishes "
                        "them")
                break
            finished += 1
        files.sync_filesystem(self.root)
        for item in batch[:finished]:
            if item.journal:
                files.remove(item.pending, durable=False)
        if error is not None:
            raise error

    def _stage(self, w: AccountWrite) -> _Staged:
        """Step 1 of a batch for one account: its files as temporary files."""
        state = w.state
        account = state.account
        path = self.portal_path(account)
        self._check_dirs(os.path.dirname(path), create=True)
        identity = self._compare(account, path, w.expected_lineage, w.expected_serial)
        if identity is not None:
            self._backup(path, self.backup_path(account))
        entries = stamp_audit(w.audit or [], state.serial, w.change)
        lines = "".join([audit_line(e) + "\n" for e in entries]).encode("utf-8")
        item = _Staged(account, path, state, lines, w.mirror is not None,
                       staged=self.staged_mirror_path(account),
                       pending=self.pending_path(account))
        try:
            if w.mirror is not None:
                self._check_dirs(os.path.dirname(item.staged), create=True)
                item.mirror_tmp = files.write_temporary(
                    item.staged, dumps(mirror_document(w.mirror)))[0]
            if item.journal:
                log = self.audit_path(account)
                self._check_dirs(os.path.dirname(log), create=True)
                item.pending_tmp = files.write_temporary(
                    item.pending,
                    journal_bytes(account, state.lineage, state.serial,
                                  files.clean_log_end(log), lines, item.mirror))[0]
            doc = account_document(state, w.change.to_json() if w.change else None)
            item.account_tmp, item.identity = files.write_temporary(path, dumps(doc))
        except BaseException:
            self._unstage([item])
            raise
        return item

    def _unstage(self, batch: list[_Staged]) -> None:
        """Delete what a batch wrote for accounts that will not be committed."""
        for item in batch:
            leftovers = [item.mirror_tmp, item.pending_tmp, item.account_tmp]
            if item.placed:
                leftovers += [item.staged, item.pending]
            for leftover in leftovers:
                if leftover:
                    with suppress(OSError):
                        os.unlink(leftover)

    def _compare(self, account: str, path: str, lineage: str | None,
                 serial: int) -> tuple[int, int, int] | None:
        """The compare-and-swap's check; returns the current file's identity (None: no
        file). Fast path: the file is the one this process last read or wrote."""
        try:
            identity: tuple[int, int, int] | None = files.identity(os.lstat(path))
        except FileNotFoundError:
            identity = None
        except OSError as exc:
            raise StateError(files.os_message(exc, path, "read")) from None
        seen = self._seen.get(account)
        if identity is None:
            have: tuple[str | None, int] = (None, 0)
        elif seen is not None and seen[0] == identity:
            have = (seen[1], seen[2])
        else:
            current = self.read_account(account)
            have = (current.lineage, current.serial)
            identity = self._seen[account][0]
        if have != (lineage, serial):
            then = f"lineage {lineage or '(none)'}, serial {serial}"
            now = (f"lineage {have[0]}, serial {have[1]}" if have[0] is not None
                   else "the account does not exist")
            raise StalePlanError(f"account {account} changed while this run was working on "
                                 f"it (expected {then}; the state has {now}); plan again")
        return identity

    def _committed(self, path: str, state: CurrentAccount) -> bool:
        """Whether the account file on disk is already `state`'s (the rename happened)."""
        try:
            found = self._read_json(path)
        except StateError:
            return False
        return (found is not None and isinstance(found[0], dict)
                and found[0].get("lineage") == state.lineage
                and found[0].get("serial") == state.serial)

    def _finish(self, account: str, serial: int, lines: bytes, mirror: bool) -> None:
        """After the commit: append the entries, put the mirror in place, drop the
        journal."""
        log, pending = self.audit_path(account), self.pending_path(account)
        try:
            if lines:
                files.append(log, lines)
            if mirror:
                self._place_mirror(account)
        except StateError as exc:
            raise StateError(f"{exc}; account {account} was updated (serial {serial}) and "
                             f"its audit entries and MIR mirror are kept in {pending}: the "
                             "next apply or sync finishes them") from None
        files.remove(pending)

    def _place_mirror(self, account: str) -> None:
        staged, path = self.staged_mirror_path(account), self.mirror_path(account)
        try:
            os.replace(staged, path)
        except FileNotFoundError:
            return  # placed already (a recovery after a crash right after the rename)
        except OSError as exc:
            raise StateError(files.os_message(exc, path, "write")) from None
        files.fsync_dir(os.path.dirname(path))

    def recover(self, account: str) -> None:
        """Finish what a crashed writer left (called under the lock, before any read).

        A journal whose lineage and serial are the account file's belongs to a committed
        write: the entries not yet in the log are appended (the log's bytes from the
        journal's offset show how far the crashed append got; a torn last entry is cut
        and written again in full) and the staged mirror is put in place. Any other
        journal belongs to a write that never committed: dropped, with its mirror."""
        pending = self.pending_path(account)
        found = self._read_bytes(pending)
        if found is not None:
            parsed = read_journal(account, found[0])
            if parsed is None:
                raise StateError(f"{pending}: corrupt audit journal; if the audit log "
                                 f"{self.audit_path(account)} already holds its entries, "
                                 "delete it")
            journal, data = parsed
            portal = self._read_json(self.portal_path(account))
            committed = (portal is not None and isinstance(portal[0], dict)
                         and portal[0].get("lineage") == journal.get("lineage")
                         and portal[0].get("serial") == journal["serial"])
            with deferred_interrupts():
                if committed:
                    log = self.audit_path(account)
                    rest = files.unwritten(log, data, journal["audit_offset"])
                    if rest:
                        files.append(log, rest)
                    if journal.get("mirror"):
                        self._place_mirror(account)
                else:
                    with suppress(OSError):
                        os.unlink(self.staged_mirror_path(account))
                files.remove(pending)
        elif os.path.lexists(self.staged_mirror_path(account)):
            files.remove(self.staged_mirror_path(account))  # staged, never journalled
        self._remove_leftovers(account)

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
            raise StateError(files.os_message(exc, backup, "write")) from None
        tmp = f"{backup}.tmp-{os.getpid()}"
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.link(path, tmp, follow_symlinks=False)
            os.replace(tmp, backup)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise StateError(files.os_message(exc, backup, "write")) from None

    def write_mirror(self, mirror: Mirror) -> None:
        path = self.mirror_path(mirror.account)
        self._check_dirs(os.path.dirname(path), create=True)
        with deferred_interrupts():
            files.atomic_write(path, dumps(mirror_document(mirror)))

    # -- locking ----------------------------------------------------------------------
    def try_lock(self, account: str, info: LockInfo) -> bool:
        path = self.lock_path(account)
        self._check_dirs(os.path.dirname(path), create=True)
        return self._locks.try_lock(path, info)

    def unlock(self, account: str, info: LockInfo) -> None:
        self._locks.unlock(self.lock_path(account))

    def holder(self, account: str) -> LockInfo | None:
        path = self.lock_path(account)
        self._check_dirs(os.path.dirname(path), create=False)
        return self._locks.holder(path)

    def _remove_leftovers(self, account: str) -> None:
        """Delete temporary files of this account left by killed writers (under the lock,
        so no live writer of this account has any; files of a live process are kept)."""
        for kind in KINDS:
            directory = self._dir(kind)
            self._check_dirs(directory, create=False)
            for name in self._temporary_files(directory).get(account, ()):
                pid = name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
                if not (pid.isdigit() and files.alive(int(pid))):
                    with suppress(OSError):
                        os.unlink(os.path.join(directory, name))

    def _temporary_files(self, directory: str) -> dict[str, list[str]]:
        """The directory's temporary files by account, listed again only when the
        directory changed: locking 10,000 accounts would otherwise list each directory
        10,000 times (quadratic). A file missed by a coarse timestamp is only left for
        the next locked command to delete."""
        try:
            changed = os.stat(directory).st_mtime_ns
        except OSError:
            return {}
        cached = self._temporaries.get(directory)
        if cached is not None and cached[0] == changed:
            return cached[1]
        index: dict[str, list[str]] = {}
        for name in files.listdir(directory):
            if ".tmp-" in name:
                index.setdefault(name.split(".", 1)[0], []).append(name)
        self._temporaries[directory] = (changed, index)
        return index

    def force_unlock(self, account: str, lock_id: str, force: bool = False) -> LockInfo:
        path = self.lock_path(account)
        self._check_dirs(os.path.dirname(path), create=False)
        holder = self._locks.holder(path)
        if holder is None:
            raise StateError(f"account {account} has no lock to remove")
        if holder.id != lock_id:
            raise StateError(f"lock id {lock_id!r} does not match the lock of account "
                             f"{account} ({holder.describe()})")
        if self._locks.holder_alive(path) and not force:
            raise LockedError(f"account {account}: refusing to remove a lock whose holder is "
                              f"alive ({holder.describe()}); wait for it to finish, or stop "
                              "that process; --force removes the lock anyway (the state's "
                              "compare-and-swap still refuses a stale write)")
        files.remove(path)
        return holder

    # -- termination --------------------------------------------------------------------
    def terminate(self, account: str, tombstone: dict[str, Any]) -> None:
        """Tombstone first, then the deletion. Every directory the deletion goes through
        is checked before the tombstone is written, so a refusal (a planted symlink)
        leaves neither a tombstone nor a half deletion. A run that died after the
        tombstone is finished by terminating again (the tombstone of the same lineage is
        found and not written twice)."""
        for kind in KINDS:
            self._check_dirs(self._dir(kind), create=False)
        with deferred_interrupts():
            if tombstone.get("lineage") is None:
                self._check_dirs(self.root, create=True)
                files.append(self.tombstone_path, json.dumps(tombstone, sort_keys=True) + "\n")
            else:
                self.add_tombstone({**tombstone, "account": account})
            self._delete(account)

    def _delete(self, account: str) -> None:
        for path in (self.mirror_path(account), self.staged_mirror_path(account),
                     self.audit_path(account), self.pending_path(account),
                     self.backup_path(account), self.portal_path(account)):
            files.remove(path)
        for kind in KINDS:  # leftovers of killed writes
            directory = self._dir(kind)
            for name in files.listdir(directory):
                if name.startswith(f"{account}.") and ".tmp-" in name:
                    files.remove(os.path.join(directory, name))
        for kind in KINDS:
            files.fsync_dir(self._dir(kind))

    def tombstones(self, account: str | None = None) -> list[dict[str, Any]]:
        """Only a torn last line (no newline: a crash mid-append) is ignored; any other line
        that is not a tombstone is an error: skipping it could hide a terminated id."""
        path = self.tombstone_path
        found = self._read_bytes(path)
        if found is None:
            return []
        lines = found[0].split(b"\n")
        lines.pop()
        out = []
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                entry = None
            if not (isinstance(entry, dict) and isinstance(entry.get("account"), str)):
                raise StateError(f"{path}: line {number} is not a tombstone (expected a JSON "
                                 "object with an account); the file is damaged, restore it")
            if account is None or entry["account"] == account:
                out.append(entry)
        return out

    def add_tombstone(self, entry: dict[str, Any]) -> None:
        account = check_account_id(entry.get("account"))
        if any(t.get("lineage") == entry.get("lineage") for t in self.tombstones(account)):
            return
        self._check_dirs(self.root, create=True)
        files.append(self.tombstone_path, json.dumps(entry, sort_keys=True) + "\n")

    # -- creation and copies ------------------------------------------------------------
    def init(self) -> None:
        for kind in (*KINDS, "locks"):
            self._check_dirs(self._dir(kind), create=True)

    def restore(self, account: str, versions: list[tuple[CurrentAccount, Change]],
                audit: list[dict[str, Any]], mirror: Mirror) -> None:
        """The local state keeps the current version and the one before (as .backup);
        the audit log and mirror are written first, the account file last (the commit
        point: a crash before it leaves no account, and a re-run overwrites the rest)."""
        path = self.portal_path(account)
        self._check_dirs(os.path.dirname(path), create=True)
        if os.path.lexists(path):
            raise StateError(f"account {account} already exists in {self.root}")
        if not versions:
            raise StateError(f"account {account}: nothing to restore")
        with deferred_interrupts():
            for kind in ("mir", "audit"):
                self._check_dirs(self._dir(kind), create=True)
            files.atomic_write(self.audit_path(account), "".join(
                audit_line(e) + "\n" for e in audit).encode("utf-8"))
            files.atomic_write(self.mirror_path(account), dumps(mirror_document(mirror)))
            if len(versions) > 1:
                older, change = versions[-2]
                files.atomic_write(self.backup_path(account),
                                   dumps(account_document(older, change.to_json())))
            state, change = versions[-1]
            written = files.atomic_write(path, dumps(account_document(state,
                                                                      change.to_json())))
        self._seen[account] = (written, state.lineage, state.serial)

    # -- directories --------------------------------------------------------------------
    def _check_dirs(self, directory: str, *, create: bool) -> None:
        """Refuse symlinked state directories; create missing ones (0700) when writing.
        A directory found good is not checked again by this process (a plan of 10,000
        accounts would otherwise lstat and stat two directories per file read)."""
        if directory in self._dirs_ok:
            return
        for path in (self.root, directory):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    return
                try:
                    os.makedirs(path, mode=0o700, exist_ok=True)
                except OSError as exc:
                    raise StateError(files.os_message(exc, path, "create")) from None
                continue
            if stat.S_ISLNK(st.st_mode) and path != self.root:
                raise StateError(f"{path}: is a symbolic link; refusing to use it as a "
                                 "state directory")
            if not stat.S_ISDIR(os.stat(path).st_mode):
                raise StateError(f"{path}: is not a directory")
        if os.path.isdir(directory):
            self._dirs_ok.add(directory)
