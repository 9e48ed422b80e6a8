"""The PostgreSQL backend: state shared by CI runners, teams and MSPs (DESIGN §3.4).

It implements the contract of `base.py` over the tables of `pgschema.py`. Beyond what
Terraform's pg backend does, each for a reason:
- a write is one transaction: the compare-and-swap (`SELECT ... FOR UPDATE` of the
  account row, lineage and serial compared), the changed user rows only, the version
  row, the audit rows and the MIR mirror's changed rows; the account's settings (recording
  groups, time zone) and the mirror's groups, one JSON value each, only when changed; a
  commit whose acknowledgement was lost is resolved by the run id (unique in
  `versions`), never applied twice;
- every version stays reconstructable (`user_versions` rows are closed, not replaced;
  `versions.settings` holds the settings where they changed);
- an older schema is migrated by the first write (or `crctl init`), never by a read: a
  reading role reads it as it is (no groups, no time zone before version 2);
- a lock is a row everyone can read (the holder, not the waiter) whose liveness is a
  session advisory lock of the holder's dedicated connection: a killed holder's session
  ends and its lock is free at once; a hung one loses it after `lock_lease` seconds
  without a heartbeat. One advisory lock per run, not per account, so a run can lock
  10,000 accounts under default settings (the advisory locks share the lock table);
- the schema is created or migrated in one transaction under a transaction-level
  advisory lock, so concurrent first runs are safe; reading commands never create it
  (a reader role suffices) and read a missing schema as an empty state;
- termination commits the tombstone first, then deletes the account's rows from every
  table in one transaction, then vacuums those tables;
- every driver error becomes a crctl error; no message carries a password.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from reconciler.backends import pgschema
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
)
from reconciler.backends.statefile import decode_account, decode_mirror, shown
from reconciler.errors import CrctlError, InputError, LockedError, StalePlanError, StateError
from reconciler.model import GROUP_FIELDS, CurrentAccount, Mirror
from reconciler.runtime import new_id

try:
    import psycopg
    from psycopg import sql as _sql  # noqa: F401  (imported to fail early if incomplete)
except ImportError:  # pragma: no cover - exercised by a test without the extra
    psycopg = None  # type: ignore[assignment]

LOCK_LEASE = 60.0
SCHEMA_LOCK_KEY = 0x63726374  # 'crct': the transaction-level lock of schema migrations
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')  # a key that JSON must escape


def display_url(url: str) -> str:
    """The URL without its password (for every message and header)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}"
    query = urllib.parse.urlencode([(k, "***" if k == "password" else v) for k, v in
                                    urllib.parse.parse_qsl(parts.query)], safe="/")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class PostgresBackend(Backend):
    def __init__(self, url: str, schema: str = "crctl", lock_lease: float = LOCK_LEASE):
        if psycopg is None:
            raise InputError("a postgresql:// state needs the PostgreSQL driver: "
                             "pip install 'crctl[postgresql]'")
        if not pgschema.SCHEMA_NAME.match(schema):
            raise InputError(f"pg_schema {schema!r}: expected a lowercase SQL name "
                             "(letters, digits, _)")
        self.url = url
        self.schema = schema
        self.s = pgschema.quoted(schema)
        self.lock_lease = lock_lease
        self._conn: Any = None
        self._lock_conn: Any = None
        self._lock_mutex = threading.Lock()
        self._held: dict[str, LockInfo] = {}
        self._session_key: int | None = None
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready: bool | None = None  # schema present (None: not checked yet)
        self._version = 0  # the schema's version, once _ready
        # what this handle last read of each account: (lineage, serial, users, settings)
        # and (mirror_serial, mirror users, recording ids, mirror groups): the writes'
        # diff base
        self._seen: dict[str, tuple[str | None, int, dict[str, Any], dict[str, Any]]] = {}
        self._seen_mirror: dict[str, tuple[int, dict[str, Any], set[str],
                                           dict[str, Any]]] = {}

    # -- naming -------------------------------------------------------------------------
    @property
    def location(self) -> str:
        return display_url(self.url)

    def exists(self) -> bool:
        if not self._schema_present():
            return False
        row = self._one(f"SELECT EXISTS (SELECT 1 FROM {self.s}.accounts) OR "
                        f"EXISTS (SELECT 1 FROM {self.s}.tombstones)")
        return bool(row and row[0])

    # -- connections ----------------------------------------------------------------------
    def _connect(self, autocommit: bool) -> Any:
        params: dict[str, Any]
        params = psycopg.conninfo.conninfo_to_dict(self.url) if self.url.strip() not in (
            "postgresql://", "postgres://") else {}
        params.setdefault("connect_timeout", "10")
        params.setdefault("application_name", "crctl")
        try:
            return psycopg.connect(psycopg.conninfo.make_conninfo(**params),
                                   autocommit=autocommit)
        except psycopg.Error as exc:
            raise StateError(f"cannot connect to PostgreSQL ({self._where(params)}): "
                             f"{_reason(exc)}") from None

    @staticmethod
    def _where(params: dict[str, Any]) -> str:
        import os

        host = params.get("host") or os.environ.get("PGHOST") or "localhost (socket)"
        port = params.get("port") or os.environ.get("PGPORT") or "5432"
        db = (params.get("dbname") or os.environ.get("PGDATABASE")
              or params.get("user") or os.environ.get("PGUSER") or "(default)")
        return f"host {host}, port {port}, database {db}"

    def _db(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect(autocommit=False)
        return self._conn

    def close(self) -> None:
        self._stop_heartbeat()
        for conn in (self._conn, self._lock_conn):
            if conn is not None and not conn.closed:
                with suppress(psycopg.Error):
                    conn.close()
        self._conn = self._lock_conn = None

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Driver errors as crctl errors (exit 1), with the server's reason."""
        try:
            yield
        except psycopg.Error as exc:
            self._rollback()
            raise self._failure(exc, doing) from None

    def _failure(self, exc: psycopg.Error, doing: str) -> StateError:
        """The crctl error for a driver error while `doing`, with the server's reason."""
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return StateError(f"PostgreSQL state {self.location}: permission denied while "
                              f"{doing} ({_reason(exc)}); a reading role can plan, show "
                              "and list, a writing role is needed to apply")
        return StateError(f"PostgreSQL state {self.location}: {doing} failed: "
                          f"{_reason(exc)}")

    def _rollback(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.rollback()
            except psycopg.Error:
                self._conn = None

    def _one(self, query: str, args: tuple[Any, ...] = ()) -> Any:
        with self._errors("reading"):
            conn = self._db()
            try:
                return conn.execute(query, args).fetchone()
            finally:
                conn.rollback()  # reads end their transaction: no idle-in-transaction

    def _all(self, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._errors("reading"):
            conn = self._db()
            try:
                return conn.execute(query, args).fetchall()
            finally:
                conn.rollback()

    # -- the schema ----------------------------------------------------------------------
    def _schema_present(self) -> bool:
        if self._ready:
            return True
        with self._errors("reading the schema version"):
            conn = self._db()
            try:
                found = conn.execute("SELECT to_regclass(%s)",
                                     (f"{self.s}.schema_version",)).fetchone()[0]
                if found is None:
                    return False
                version = conn.execute(
                    f"SELECT max(version) FROM {self.s}.schema_version").fetchone()[0]
            finally:
                conn.rollback()
        self._check_version(version)
        self._ready = version is not None
        self._version = version or 0
        return self._ready

    def _check_version(self, version: int | None) -> None:
        if version is not None and version > pgschema.SCHEMA_VERSION:
            raise StateError(f"PostgreSQL state {self.location}: its schema {self.schema} is "
                             f"version {version}, newer than this crctl's "
                             f"({pgschema.SCHEMA_VERSION}); upgrade crctl")

    def init(self) -> None:
        self.migrate()

    def migrate(self) -> int:
        """Create or migrate the schema (idempotent, safe to run concurrently): one
        transaction under a transaction-level advisory lock. Returns the version."""
        with self._errors("creating the schema"):
            conn = self._db()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                             (SCHEMA_LOCK_KEY, self.schema))
                present = conn.execute("SELECT to_regclass(%s)",
                                       (f"{self.s}.schema_version",)).fetchone()[0]
                version = 0
                if present is not None:
                    version = conn.execute(f"SELECT coalesce(max(version), 0) FROM "
                                           f"{self.s}.schema_version").fetchone()[0]
                self._check_version(version)
                for step in sorted(pgschema.MIGRATIONS):
                    if step > version:
                        self._migration_step(conn, version, step)
                if version < pgschema.SCHEMA_VERSION:  # one row per migration run
                    conn.execute(f"INSERT INTO {self.s}.schema_version (version) "
                                 "VALUES (%s)", (pgschema.SCHEMA_VERSION,))
            self._ready, self._version = True, pgschema.SCHEMA_VERSION
        return pgschema.SCHEMA_VERSION

    def _migration_step(self, conn: Any, version: int, step: int) -> None:
        try:
            conn.execute(pgschema.MIGRATIONS[step].format(s=self.s))
        except psycopg.errors.InsufficientPrivilege as exc:
            if not version:
                raise  # creating the schema: the general permission message
            raise StateError(
                f"PostgreSQL state {self.location}: schema {self.schema} is version "
                f"{version} and this crctl needs version {pgschema.SCHEMA_VERSION}; "
                f"migrating it needs the owner of its tables ({_reason(exc)}): run "
                "`crctl init` as the owner once, then retry") from None

    def _ensure(self) -> None:
        """Before a write: the schema exists at this crctl's version (an older one is
        migrated; reads work on it as it is, so a reading role needs no migration)."""
        if not self._schema_present() or self._version < pgschema.SCHEMA_VERSION:
            self.migrate()

    def _column(self, name: str, since: int) -> str:
        """A column added by schema version `since`, as text, or NULL while the schema
        is older (a reader on a database not migrated yet reads it as absent)."""
        return f"{name}::text" if self._version >= since else "NULL::text"

    # -- reading -------------------------------------------------------------------------
    def read_account(self, account: str, serial: int | None = None) -> CurrentAccount:
        check_account_id(account)
        where = f"{self.location} account {account}"
        if not self._schema_present():
            if serial not in (None, 0):
                raise StateError(f"account {account} does not exist in {self.location}")
            return CurrentAccount(account=account)
        with self._errors("reading the account"):
            conn = self._db()
            try:
                head = conn.execute(
                    f"SELECT lineage, serial, name, next_user_id, "
                    f"{self._column('settings', 2)} FROM {self.s}.accounts "
                    "WHERE account = %s", (account,)).fetchone()
                if head is None:
                    if serial not in (None, 0):
                        raise StateError(f"account {account} does not exist in "
                                         f"{self.location}")
                    self._seen[account] = (None, 0, {}, _settings_doc({}, None))
                    return CurrentAccount(account=account)
                if serial is None or serial == head[1]:
                    users = _object(conn, f"SELECT user_id, record::text FROM {self.s}."
                                    "user_versions WHERE account = %s AND serial_to IS NULL",
                                    (account,))
                    lineage, number, name, next_id, settings = head
                else:
                    # the version's settings: the latest written at or below its serial
                    older = (f"(SELECT o.settings::text FROM {self.s}.versions o WHERE "
                             "o.account = v.account AND o.serial <= v.serial AND o.settings "
                             "IS NOT NULL ORDER BY o.serial DESC LIMIT 1)"
                             if self._version >= 2 else "NULL::text")
                    version = conn.execute(
                        f"SELECT lineage, serial, name, next_user_id, {older} FROM "
                        f"{self.s}.versions v WHERE account = %s AND serial = %s",
                        (account, serial)).fetchone()
                    if version is None:
                        raise StateError(f"account {account}: no version with serial "
                                         f"{serial} (see `crctl history {account}`)")
                    users = _object(
                        conn, f"SELECT user_id, record::text FROM {self.s}.user_versions "
                        "WHERE account = %s AND serial_from <= %s AND (serial_to IS NULL OR "
                        "serial_to > %s)", (account, serial, serial))
                    lineage, number, name, next_id, settings = version
            finally:
                conn.rollback()
        groups, time_zone = _decode_settings(where, settings)
        state = decode_account(where, account, {
            "account": account, "lineage": lineage, "serial": number, "name": name,
            "next_user_id": next_id, "users": users, "recording_groups": groups,
            "recording_settings": {"time_zone": time_zone}})
        if serial is None or serial == head[1]:
            self._seen[account] = (state.lineage, state.serial, state.users,
                                   _settings_doc(state.groups, state.time_zone))
        return state

    def read_mirror(self, account: str) -> Mirror:
        check_account_id(account)
        if not self._schema_present():
            return Mirror(account=account)
        with self._errors("reading the MIR mirror"):
            conn = self._db()
            try:
                head = conn.execute(f"SELECT mirror_serial, {self._column('mir_groups', 2)} "
                                    f"FROM {self.s}.accounts WHERE account = %s",
                                    (account,)).fetchone()
                users = _object(conn, f"SELECT user_id, entry::text FROM {self.s}.mir_users "
                                "WHERE account = %s", (account,))
                recordings = _array(conn, f"SELECT data::text FROM {self.s}.recordings WHERE "
                                    "account = %s ORDER BY id", (account,))
            finally:
                conn.rollback()
        where = f"{self.location} MIR mirror of {account}"
        mirror = decode_mirror(where, account, {
            "account": account, "users": users, "recordings": recordings,
            "groups": _decode_groups(where, json.loads(head[1]) if head and head[1]
                                     else None)})
        if head is not None:
            self._seen_mirror[account] = (head[0], mirror.users,
                                          {str(r.get("id")) for r in mirror.recordings
                                           if isinstance(r, dict)}, mirror.groups)
        return mirror

    def history(self, account: str) -> list[Version]:
        check_account_id(account)
        if not self._schema_present():
            return []
        rows = self._all(f"SELECT serial, time, actor, operation, counts::text FROM "
                         f"{self.s}.versions WHERE account = %s ORDER BY serial", (account,))
        return [Version(serial=r[0], time=r[1], actor=r[2], operation=r[3],
                        counts=json.loads(r[4]), readable=True) for r in rows]

    def audit(self, account: str, filters: AuditFilter | None = None
              ) -> Iterator[dict[str, Any]]:
        check_account_id(account)
        if not self._schema_present():
            return iter(())
        query = f"SELECT entry::text FROM {self.s}.audit WHERE account = %s"
        args: list[Any] = [account]
        f = filters or AuditFilter()
        if f.user is not None:
            query += " AND username = %s"
            args.append(f.user)
        if f.since is not None:
            query += " AND left(time, 10) >= %s"
            args.append(f.since)
        if f.until is not None:
            query += " AND left(time, 10) <= %s"
            args.append(f.until)
        if f.actions:
            query += " AND action = ANY(%s)"
            args.append(sorted(f.actions))
        rows = self._all(query + " ORDER BY seq", tuple(args))
        return (json.loads(r[0]) for r in rows)

    def accounts(self) -> list[AccountSummary]:
        if not self._schema_present():
            return []
        rows = self._all(
            f"SELECT a.account, a.serial, "
            f"to_char(a.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
            f"count(u.user_id), count(u.user_id) FILTER (WHERE u.record->'call_recording' "
            f"<> 'null'::jsonb), a.name FROM {self.s}.accounts a LEFT JOIN "
            f"{self.s}.user_versions u ON u.account = a.account AND u.serial_to IS NULL "
            f"GROUP BY a.account, a.serial, a.updated_at, a.name ORDER BY a.account")
        return [AccountSummary(account=r[0], users=r[3], cr_users=r[4], serial=r[1],
                               last_change=r[2], name=r[5]) for r in rows]

    def account_ids(self) -> list[str]:
        if not self._schema_present():
            return []
        # sorted here: the database's collation may not sort ids as the other backends do
        return sorted(r[0] for r in self._all(f"SELECT account FROM {self.s}.accounts"))

    def tombstones(self, account: str | None = None) -> list[dict[str, Any]]:
        if not self._schema_present():
            return []
        if account is None:
            rows = self._all(f"SELECT entry::text FROM {self.s}.tombstones "
                             "ORDER BY terminated_at, account, lineage")
        else:
            rows = self._all(f"SELECT entry::text FROM {self.s}.tombstones WHERE account = "
                             "%s ORDER BY terminated_at, lineage", (check_account_id(account),))
        return [json.loads(r[0]) for r in rows]

    def add_tombstone(self, entry: dict[str, Any]) -> None:
        account = check_account_id(entry.get("account"))
        self._ensure()
        with self._errors("writing the tombstone"):
            conn = self._db()
            with conn.transaction():
                conn.execute(f"INSERT INTO {self.s}.tombstones (account, lineage, "
                             "terminated_at, entry) VALUES (%s, %s, %s, %s::jsonb) "
                             "ON CONFLICT (account, lineage) DO NOTHING",
                             (account, str(entry.get("lineage")), entry.get("terminated_at"),
                              _encode(entry)))

    def ddl(self) -> str | None:
        return pgschema.print_sql(self.schema)

    def restore(self, account: str, versions: list[tuple[CurrentAccount, Change]],
                audit: list[dict[str, Any]], mirror: Mirror) -> None:
        """One transaction: each version written in order (so every one stays
        reconstructable), then the audit entries as they are, then the mirror."""
        check_account_id(account)
        if not versions:
            raise StateError(f"account {account}: nothing to restore")
        self._ensure()
        with self._errors("copying the account"):
            conn = self._db()
            with conn.transaction():
                exists = conn.execute(f"SELECT 1 FROM {self.s}.accounts WHERE account = %s",
                                      (account,)).fetchone()
                if exists:
                    raise StateError(f"account {account} already exists in {self.location}")
                previous: tuple[str | None, int] = (None, 0)
                self._seen[account] = (None, 0, {}, _settings_doc({}, None))
                for state, change in versions:
                    self._write(conn, state, previous[0], previous[1], [], None, change)
                    self._remember(state)
                    previous = (state.lineage, state.serial)
                if audit:
                    self._copy_audit(conn, account, audit)
                self._write_mirror_rows(conn, mirror, ({}, set(), {}))
                conn.execute(f"UPDATE {self.s}.accounts SET mirror_serial = 1 WHERE "
                             "account = %s", (account,))
        self._seen_mirror.pop(account, None)

    # -- writing -------------------------------------------------------------------------
    def write_account(self, state: CurrentAccount, expected_lineage: str | None,
                      expected_serial: int, audit: list[dict[str, Any]] | None = None,
                      mirror: Mirror | None = None, change: Change | None = None) -> None:
        check_account_id(state.account)
        self._ensure()
        change = change or Change(run_id=new_id(), time="", actor="", operation="write")
        entries = stamp_audit(audit or [], state.serial, change)
        try:
            with self._errors("writing the account"):
                conn = self._db()
                with conn.transaction():
                    self._write(conn, state, expected_lineage, expected_serial, entries,
                                mirror, change)
        except StateError:
            if self._committed(change.run_id):  # the acknowledgement was lost, not the commit
                self._after_write(state, mirror)
                return
            raise
        self._after_write(state, mirror)

    def write_accounts(self, writes: list[AccountWrite],
                       on_commit: Callable[[int], None]) -> None:
        """One transaction for the batch, a savepoint per account: one commit (one WAL
        flush, one acknowledgement) where one by one every account takes its own. An
        account refused (stale) or failing rolls back to its savepoint; the accounts
        before it are committed with the batch, and its error is raised. A connection
        lost before the commit leaves the whole batch as it was."""
        if len(writes) < 2:
            super().write_accounts(writes, on_commit)
            return
        for w in writes:
            check_account_id(w.state.account)
        self._ensure()
        changes = [w.change or Change(run_id=new_id(), time="", actor="", operation="write")
                   for w in writes]
        done: list[AccountWrite] = []
        error: CrctlError | None = None
        try:
            with self._errors("writing the accounts"):
                conn = self._db()
                with conn.transaction():
                    for w, change in zip(writes, changes, strict=True):
                        entries = stamp_audit(w.audit or [], w.state.serial, change)
                        try:
                            with conn.transaction():  # a savepoint
                                self._write(conn, w.state, w.expected_lineage,
                                            w.expected_serial, entries, w.mirror, change)
                        except StalePlanError as exc:
                            error = exc
                            break
                        except psycopg.Error as exc:
                            error = self._failure(exc, f"writing account {w.state.account}")
                            break
                        done.append(w)
        except StateError:
            # the acknowledgement of the commit lost, not the commit itself?
            if not done or not self._committed(changes[0].run_id):
                raise
        for index, w in enumerate(done):
            self._after_write(w.state, w.mirror)
            on_commit(index)
        if error is not None:
            raise error

    def _after_write(self, state: CurrentAccount, mirror: Mirror | None) -> None:
        self._remember(state)
        if mirror is not None:
            self._seen_mirror.pop(state.account, None)

    def _remember(self, state: CurrentAccount) -> None:
        """`state` is what the store now holds: the next write's diff base."""
        self._seen[state.account] = (state.lineage, state.serial, state.users,
                                     _settings_doc(state.groups, state.time_zone))

    def _committed(self, run_id: str) -> bool:
        """Whether a write of this run is in the state (asked on a fresh connection)."""
        self._conn = None
        try:
            row = self._one(f"SELECT 1 FROM {self.s}.versions WHERE run_id = %s", (run_id,))
        except StateError:
            return False
        return row is not None

    def _write(self, conn: Any, state: CurrentAccount, expected_lineage: str | None,
               expected_serial: int, entries: list[dict[str, Any]], mirror: Mirror | None,
               change: Change) -> None:
        account, s = state.account, self.s
        head = conn.execute(f"SELECT lineage, serial, mirror_serial FROM {s}.accounts WHERE "
                            "account = %s FOR UPDATE", (account,)).fetchone()
        have = (head[0], head[1]) if head else (None, 0)
        if have != (expected_lineage, expected_serial):
            raise _stale(account, expected_lineage, expected_serial, have)
        # the settings, encoded once, when they differ from the stored ones (None: kept)
        doc = _settings_doc(state.groups, state.time_zone)
        settings = None if head is not None and self._settings_at(
            conn, account, have) == doc else _encode(doc)
        if head is None:
            created = conn.execute(
                f"INSERT INTO {s}.accounts (account, lineage, serial, name, next_user_id, "
                "settings) VALUES (%s, %s, %s, %s, %s, %s::jsonb) "
                "ON CONFLICT (account) DO NOTHING",
                (account, state.lineage, state.serial, state.name, state.next_user_id,
                 settings))
            if created.rowcount != 1:  # created by another run since this one looked
                raise _stale(account, expected_lineage, expected_serial, ("(new)", 0))
            mirror_serial = 0
        else:
            mirror_serial = head[2]
        old = self._users_at(conn, account, have)
        new = state.users
        changed = [uid for uid, record in new.items() if old.get(uid) != record]
        closing = [uid for uid in changed if uid in old] + [uid for uid in old if uid not in new]
        if closing:
            conn.execute(f"UPDATE {s}.user_versions SET serial_to = %s WHERE account = %s "
                         "AND serial_to IS NULL AND user_id = ANY(%s)",
                         (state.serial, account, closing))
        if changed:
            with conn.cursor().copy(f"COPY {s}.user_versions (account, user_id, serial_from, "
                                    "record) FROM STDIN") as copy:
                for uid in changed:
                    copy.write_row((account, uid, state.serial, _encode(new[uid])))
        counts: dict[str, int] = {}
        for entry in entries:
            kind = str(entry.get("action"))
            counts[kind] = counts.get(kind, 0) + 1
        if mirror is not None:
            mirror_serial += 1
            self._write_mirror_rows(conn, mirror, self._mirror_at(conn, account,
                                                                   head[2] if head else 0))
        conn.execute(f"UPDATE {s}.accounts SET lineage = %s, serial = %s, name = %s, "
                     "next_user_id = %s, mirror_serial = %s, updated_at = now(), "
                     "settings = coalesce(%s::jsonb, settings) WHERE account = %s",
                     (state.lineage, state.serial, state.name, state.next_user_id,
                      mirror_serial, settings, account))
        conn.execute(f"INSERT INTO {s}.versions (account, serial, lineage, name, next_user_id, "
                     "run_id, time, actor, operation, counts, settings) VALUES "
                     "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)",
                     (account, state.serial, state.lineage, state.name, state.next_user_id,
                      change.run_id, change.time, change.actor, change.operation,
                      _encode(counts), settings))
        if entries:
            self._copy_audit(conn, account, entries)

    def _copy_audit(self, conn: Any, account: str, entries: list[dict[str, Any]]) -> None:
        with conn.cursor().copy(f"COPY {self.s}.audit (account, serial, time, actor, "
                                "operation, action, username, user_id, entry) FROM STDIN"
                                ) as copy:
            for entry in entries:
                serial = entry.get("serial")
                copy.write_row((account, serial if type(serial) is int else None,
                                entry.get("time"), entry.get("actor"), entry.get("operation"),
                                entry.get("action"), entry.get("user"), entry.get("user_id"),
                                _encode(entry)))

    def _users_at(self, conn: Any, account: str, have: tuple[str | None, int]
                  ) -> dict[str, Any]:
        """The stored current users: what this handle read, if the compare-and-swap just
        proved it current (any change moves the serial); else read in the transaction."""
        if have[0] is None:
            return {}
        seen = self._seen.get(account)
        if seen is not None and (seen[0], seen[1]) == have:
            return seen[2]
        return _object(conn, f"SELECT user_id, record::text FROM {self.s}.user_versions "
                       "WHERE account = %s AND serial_to IS NULL", (account,))

    def _settings_at(self, conn: Any, account: str, have: tuple[str | None, int]
                     ) -> dict[str, Any]:
        """The stored settings (as `_settings_doc` builds them), as `_users_at`."""
        seen = self._seen.get(account)
        if seen is not None and (seen[0], seen[1]) == have:
            return seen[3]
        row = conn.execute(f"SELECT settings::text FROM {self.s}.accounts WHERE account = %s",
                           (account,)).fetchone()
        return _settings_doc(*_decode_settings(f"{self.location} account {account}",
                                               row[0] if row else None))

    def _mirror_at(self, conn: Any, account: str, mirror_serial: int
                   ) -> tuple[dict[str, Any], set[str], dict[str, Any]]:
        seen = self._seen_mirror.get(account)
        if seen is not None and seen[0] == mirror_serial:
            return seen[1], seen[2], seen[3]
        users = _object(conn, f"SELECT user_id, entry::text FROM {self.s}.mir_users WHERE "
                        "account = %s", (account,))
        ids = conn.execute(f"SELECT id FROM {self.s}.recordings WHERE account = %s",
                           (account,)).fetchall()
        row = conn.execute(f"SELECT mir_groups::text FROM {self.s}.accounts WHERE "
                           "account = %s", (account,)).fetchone()
        groups = _decode_groups(f"{self.location} MIR mirror of {account}",
                                json.loads(row[0]) if row and row[0] else None)
        return users, {r[0] for r in ids}, groups

    def _write_mirror_rows(self, conn: Any, mirror: Mirror,
                           stored: tuple[dict[str, Any], set[str], dict[str, Any]]) -> None:
        """Rows in proportion to the change. Recordings are made by phones, never deleted
        by a write: only recordings the stored mirror lacks are added (a migration). The
        groups are one value of the account's row, written when they changed."""
        account, s = mirror.account, self.s
        old, recording_ids, old_groups = stored
        if mirror.groups != old_groups:
            conn.execute(f"UPDATE {s}.accounts SET mir_groups = %s::jsonb WHERE account = %s",
                         (_encode(mirror.groups), account))
        changed = [uid for uid, entry in mirror.users.items() if old.get(uid) != entry]
        gone = [uid for uid in old if uid not in mirror.users]
        if changed or gone:
            conn.execute(f"DELETE FROM {s}.mir_users WHERE account = %s AND user_id = ANY(%s)",
                         (account, changed + gone))
        if changed:
            with conn.cursor().copy(f"COPY {s}.mir_users (account, user_id, entry) FROM "
                                    "STDIN") as copy:
                for uid in changed:
                    copy.write_row((account, uid, _encode(mirror.users[uid])))
        new_recordings = [r for r in mirror.recordings
                          if isinstance(r, dict) and str(r.get("id")) not in recording_ids]
        for recording in new_recordings:
            conn.execute(f"INSERT INTO {s}.recordings (account, id, user_id, data) VALUES "
                         "(%s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING",
                         (account, str(recording.get("id")), recording.get("user_id"),
                          _encode(recording)))

    def write_mirror(self, mirror: Mirror) -> None:
        account = check_account_id(mirror.account)
        self._ensure()
        with self._errors("writing the MIR mirror"):
            conn = self._db()
            with conn.transaction():
                head = conn.execute(f"SELECT mirror_serial FROM {self.s}.accounts WHERE "
                                    "account = %s FOR UPDATE", (account,)).fetchone()
                if head is None:
                    raise StateError(f"account {account} does not exist in {self.location}")
                self._write_mirror_rows(conn, mirror, self._mirror_at(conn, account, head[0]))
                conn.execute(f"UPDATE {self.s}.accounts SET mirror_serial = mirror_serial + 1 "
                             "WHERE account = %s", (account,))
        self._seen_mirror.pop(account, None)

    # -- termination ---------------------------------------------------------------------
    def terminate(self, account: str, tombstone: dict[str, Any]) -> None:
        check_account_id(account)
        self._ensure()
        with self._errors("terminating the account"):
            conn = self._db()
            with conn.transaction():  # 1. the tombstone, committed on its own
                conn.execute(f"INSERT INTO {self.s}.tombstones (account, lineage, "
                             "terminated_at, entry) VALUES (%s, %s, %s, %s::jsonb) "
                             "ON CONFLICT (account, lineage) DO NOTHING",
                             (account, str(tombstone.get("lineage")),
                              tombstone.get("terminated_at"), _encode(tombstone)))
            with conn.transaction():  # 2. every row of the account, in one transaction
                for table in pgschema.ACCOUNT_TABLES:
                    conn.execute(f"DELETE FROM {self.s}.{table} WHERE account = %s",
                                 (account,))
        self._seen.pop(account, None)
        self._seen_mirror.pop(account, None)
        self._vacuum()

    def _vacuum(self) -> None:
        """3. VACUUM the tables, so the deleted rows do not linger in their pages (needs
        the tables' owner; a writer role that is not gets a warning, not a failure: the
        rows are deleted and unreadable either way)."""
        conn = self._connect(autocommit=True)
        try:
            for table in pgschema.ACCOUNT_TABLES:
                conn.execute(f"VACUUM {self.s}.{table}")
        except psycopg.Error as exc:
            import sys

            print(f"Warning: VACUUM after the termination failed ({_reason(exc)}); run "
                  f"VACUUM on schema {self.schema} as its owner", file=sys.stderr)
        finally:
            conn.close()

    # -- locks ---------------------------------------------------------------------------
    def _locker(self) -> Any:
        """The dedicated lock connection (autocommit); its session holds this run's
        advisory lock, which is what makes the lock rows live."""
        if self._lock_conn is None or self._lock_conn.closed:
            self._ensure()
            self._lock_conn = self._connect(autocommit=True)
            self._session_key = None
        return self._lock_conn

    def try_lock(self, account: str, info: LockInfo) -> bool:
        check_account_id(account)
        with self._lock_mutex, self._errors("taking the lock"):
            conn = self._locker()
            key = _key(info.id)
            if self._session_key != key:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                self._session_key = key
            with conn.transaction():
                row = conn.execute(
                    f"SELECT lock_id, session_key, heartbeat < now() - make_interval(secs => "
                    f"%s) FROM {self.s}.locks WHERE account = %s FOR UPDATE",
                    (self.lock_lease, account)).fetchone()
                if row is not None:
                    if row[0] == info.id:
                        return True
                    if not (row[2] or self._session_gone(conn, row[1])):
                        return False
                    conn.execute(f"DELETE FROM {self.s}.locks WHERE account = %s", (account,))
                taken = conn.execute(
                    f"INSERT INTO {self.s}.locks (account, lock_id, who, operation, pid, host, "
                    "ci_job_url, since, session_key, backend_pid) VALUES (%s, %s, %s, %s, %s, "
                    "%s, %s, %s, %s, pg_backend_pid()) ON CONFLICT (account) DO NOTHING",
                    (account, info.id, info.who, info.operation, info.pid, info.host,
                     info.ci_job_url, info.created, key))
                if taken.rowcount != 1:
                    return False
            self._held[account] = info
        self._start_heartbeat(info)
        return True

    @staticmethod
    def _session_gone(conn: Any, key: int) -> bool:
        """Whether the session holding advisory lock `key` has ended (we can take it)."""
        if conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            return True
        return False

    def unlock(self, account: str, info: LockInfo) -> None:
        with self._lock_mutex:
            self._held.pop(account, None)
            last = not self._held
        try:
            with self._lock_mutex, self._errors("releasing the lock"):
                conn = self._lock_conn
                if conn is None or conn.closed:
                    return  # the session that made the row live is gone: the lock is free
                try:
                    conn.execute(f"DELETE FROM {self.s}.locks WHERE account = %s AND "
                                 "lock_id = %s", (account, info.id))
                except psycopg.OperationalError:
                    # The connection died (server restarted, session terminated): with it
                    # the advisory lock, so the row is dead and the next taker replaces
                    # it. Raising here would hide the error that ended the run.
                    conn.close()
        finally:
            if last:
                self._stop_heartbeat()
                with self._lock_mutex:
                    if self._lock_conn is not None and not self._lock_conn.closed:
                        self._lock_conn.close()  # ends the session: its advisory lock too
                    self._lock_conn, self._session_key = None, None

    def _start_heartbeat(self, info: LockInfo) -> None:
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(max(self.lock_lease / 4, 0.05)):
                try:
                    with self._lock_mutex:
                        if self._lock_conn is None or self._lock_conn.closed:
                            return
                        self._lock_conn.execute(
                            f"UPDATE {self.s}.locks SET heartbeat = now() WHERE lock_id = %s",
                            (info.id,))
                except psycopg.Error:
                    return

        self._heartbeat = threading.Thread(target=beat, name="crctl-lock-heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        thread, self._heartbeat = self._heartbeat, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _lock_row(self, account: str) -> Any:
        if not self._schema_present():
            return None
        return self._one(
            f"SELECT lock_id, who, operation, pid, host, ci_job_url, since, session_key, "
            f"backend_pid, heartbeat < now() - make_interval(secs => %s) FROM {self.s}.locks "
            "WHERE account = %s", (self.lock_lease, account))

    def holder(self, account: str) -> LockInfo | None:
        check_account_id(account)
        row = self._lock_row(account)
        if row is None:
            return None
        return LockInfo(id=row[0], who=row[1], operation=row[2], created=row[6],
                        pid=row[3] or 0, host=row[4] or "", ci_job_url=row[5])

    def recover(self, account: str) -> None:
        """Nothing to finish: every write is one transaction."""

    def force_unlock(self, account: str, lock_id: str, force: bool = False) -> LockInfo:
        check_account_id(account)
        row = self._lock_row(account)
        if row is None:
            raise StateError(f"account {account} has no lock to remove")
        holder = LockInfo(id=row[0], who=row[1], operation=row[2], created=row[6],
                          pid=row[3] or 0, host=row[4] or "", ci_job_url=row[5])
        if row[0] != lock_id:
            raise StateError(f"lock id {lock_id!r} does not match the lock of account "
                             f"{account} ({holder.describe()})")
        with self._errors("removing the lock"):
            conn = self._connect(autocommit=True)
            try:
                alive = not row[9] and not self._session_gone(conn, row[7])
                if alive and not force:
                    raise LockedError(
                        f"account {account}: refusing to remove a lock whose holder is alive "
                        f"({holder.describe()}); wait for it to finish; --force ends the "
                        "holder's database session")
                if alive:
                    conn.execute("SELECT pg_terminate_backend(%s)", (row[8],))
                conn.execute(f"DELETE FROM {self.s}.locks WHERE account = %s AND lock_id = %s",
                             (account, lock_id))
            finally:
                conn.close()
        return holder


def _object(conn: Any, query: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """Rows of (key, JSON text) as one dict, decoded by a single json.loads: at 100,000
    users this is several times faster than the server building a jsonb_object_agg
    (which sorts and re-encodes every key). Keys keep jsonb's order (length, then
    bytes), so a state reads the same whichever way it was stored."""
    rows = conn.execute(query, args).fetchall()
    rows.sort(key=_jsonb_order)
    if _NEEDS_ESCAPE.search("".join([r[0] for r in rows])):
        return json.loads("{" + ",".join([_encode(k) + ":" + v for k, v in rows]) + "}")
    return json.loads("{" + ",".join(['"' + k + '":' + v for k, v in rows]) + "}")


def _jsonb_order(row: tuple[str, str]) -> tuple[int, str]:
    return len(row[0]), row[0]


def _settings_doc(groups: dict[str, Any], time_zone: str | None) -> dict[str, Any]:
    """What `accounts.settings` and `versions.settings` hold (the local account file's
    `recording_groups` and `recording_settings.time_zone`)."""
    return {"recording_groups": groups, "time_zone": time_zone}


def _decode_settings(where: str, text: str | None) -> tuple[dict[str, Any], str | None]:
    """Stored settings as (groups, time_zone); NULL or {} (a version-1 schema, or a row
    migrated from one) is no groups and no time zone."""
    settings = json.loads(text) if text is not None else {}
    if not isinstance(settings, dict):
        raise StateError(f"{where}: corrupt settings: expected a JSON object, got "
                         f"{shown(settings)}")
    time_zone = settings.get("time_zone")
    if type(time_zone) not in (str, type(None)):
        raise StateError(f"{where}: corrupt settings: time_zone must be a string or null, "
                         f"got {shown(time_zone)}")
    return _decode_groups(where, settings.get("recording_groups")), time_zone


def _decode_groups(where: str, groups: Any) -> dict[str, Any]:
    """Recording groups as stored (decoded JSON): {name: {managers, members}}; NULL is
    none."""
    if groups is None:
        return {}
    if not (isinstance(groups, dict) and all(
            isinstance(g, dict) and all(isinstance(g.get(f), list) for f in GROUP_FIELDS)
            for g in groups.values())):
        raise StateError(f"{where}: corrupt recording groups: expected an object of "
                         "groups, each with managers and members lists")
    return groups


def _array(conn: Any, query: str, args: tuple[Any, ...]) -> list[Any]:
    """Rows of one JSON text column as one list (one json.loads)."""
    rows = conn.execute(query, args).fetchall()
    return json.loads("[" + ",".join([r[0] for r in rows]) + "]")


def _key(lock_id: str) -> int:
    """A lock id as a signed 64-bit advisory lock key."""
    value = int(re.sub(r"[^0-9a-f]", "", lock_id.lower())[:16] or "0", 16)
    return value - (1 << 64) if value >= (1 << 63) else value


def _stale(account: str, lineage: str | None, serial: int,
           have: tuple[str | None, int]) -> StalePlanError:
    then = f"lineage {lineage or '(none)'}, serial {serial}"
    now = (f"lineage {have[0]}, serial {have[1]}" if have[0] is not None
           else "the account does not exist")
    return StalePlanError(f"account {account} changed while this run was working on it "
                          f"(expected {then}; the state has {now}); plan again")


def _reason(exc: Exception) -> str:
    """The server's or libpq's reason, one line, never a password."""
    text = " ".join(str(exc).split())
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text)
