"""The backend contract (DESIGN §3.2): what every place that keeps crctl's state must do.

Two backends honour it: `LocalBackend` (a directory, the embedded default) and the
PostgreSQL backend. Nothing outside `reconciler/backends/` knows which one it has: the
workflows get a `Backend` from `open_backend(location)` and use only what is here. One
conformance suite (`tests/backends/`) checks every backend against this text.

The contract, method by method:

- `read_account(account, serial=None)` / `read_mirror(account)`: the account (lineage,
  serial, users by stable id) and the MIR mirror. An absent account reads as empty
  (lineage None, serial 0); an absent mirror as empty. `serial=N` reads an older version
  where the backend keeps it (PostgreSQL: every version; local: the current one and its
  backup), else `StateError` saying which versions exist. Damaged stored data is a
  `StateError` naming where it is, never an empty account.

- `write_account(state, expected_lineage, expected_serial, audit, mirror, change)`: a
  compare-and-swap. It commits only if the stored lineage *and* serial still equal the
  expected ones (an account terminated and re-created under a new lineage at the same
  serial is a different account); otherwise `StalePlanError` (exit 3) and nothing is
  written. The audit entries (each gets the new `serial` and the change's `operation`)
  and the new MIR mirror (when not None) are part of the same write: after a crash at any
  moment, either all of it is there or none of it. The local backend journals the audit
  entries and the mirror before its commit point and finishes them on the next locked
  command (`recover`); PostgreSQL commits them in one transaction. `change` describes
  the write for `history` (run id, time, actor, operation).

- `write_accounts(writes, on_commit)`: several `write_account`s (`AccountWrite`) in
  order, with the same guarantee for each account; `on_commit(index)` is called once an
  account's write is committed (durable). If one fails, the accounts before it are
  committed and it and those after it are not, and its error is raised: exactly what the
  writes one by one would leave. A backend may commit them together (the local backend
  flushes a batch with four syncs of the file system instead of nine fsyncs per
  account; PostgreSQL commits one transaction per batch, a savepoint per account); the
  default writes them one by one. A crash or a lost connection may leave accounts of the
  batch not committed whose `on_commit` was not called yet, never one half-written.

- `write_mirror(mirror)`: replace the MIR mirror alone (a repair by `sync` when the
  portal is already right).

- Locks: `lock(accounts, who, operation, timeout, on_wait)` (implemented once, here)
  holds the locks of several accounts, taken in sorted order so two runs never wait on
  each other in a cycle. The retry loop lives here, not in the backends (as Terraform's
  statemgr does): a backend implements only `try_lock`, `unlock` and `holder`. Rules:
    * the holder's identity (`LockInfo`: id, who = actor@host, operation, pid, host, CI
      job URL when known, since) is readable by any other process (`holder`);
    * a lock dies with its holder (process, or database session): a killed apply never
      blocks the next one;
    * while waiting, `on_wait(account, holder)` is called once per account (the CLI
      prints `Waiting for the lock of account acme (held by ...)`); past the timeout,
      `LockedError` (exit 4) naming the holder;
    * on entry, `recover(account)` finishes what a dead holder left half done, so every
      locked command starts from whole state.

- `force_unlock(account, lock_id, force)`: removes a lock whose holder is gone and
  returns what it said. While the holder is alive it refuses (`LockedError`, exit 4,
  naming the holder) unless `force`, which removes the lock anyway (PostgreSQL: ends the
  holder's session). A lock id that does not match is a `StateError`. The
  compare-and-swap still protects the state.

- `history(account)`: the versions, oldest first (`Version`: serial, time, actor,
  operation, action counts, and whether `read_account(serial=N)` can still read it).

- `audit(account, filters)`: the audit entries, oldest first, filtered (`AuditFilter`);
  `accounts()`: an `AccountSummary` per account (ids sorted); `tombstones(account)`.

- `terminate(account, tombstone)`: writes the tombstone first (if it cannot be written,
  nothing is deleted), then deletes *every* trace of the account: current state, every
  older version, MIR mirror and recordings, audit entries, journal, locks' records.
  Nothing of the account's personal data stays readable. Re-running it after a crash
  finishes the deletion without a second tombstone.

- `location` names the state for humans (never with a password); `exists()` says
  whether anything was ever written there (plan's `(empty: nothing applied here yet)`).

- `init()` creates or migrates the state (idempotent, safe to run concurrently);
  `ddl()` is the SQL of a database backend (None for a directory).

- `restore(account, versions, audit, mirror)` writes an account this state does not
  hold (`StateError` if it does), with its versions oldest first (each with its
  `Change`), its audit entries exactly as given (serials kept) and its MIR mirror with
  every recording, as one write; `add_tombstone(entry)` records a terminated account.
  Both exist for `crctl migrate-state`.

- Errors: every failure is a crctl error (`StateError` exit 1, `StalePlanError` 3,
  `LockedError` 4); no backend exception (OSError, a driver's) reaches the user.
"""

from __future__ import annotations

import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from reconciler.errors import InputError, LockedError
from reconciler.model import CurrentAccount, Mirror
from reconciler.runtime import ci_job_url, host_name, new_id, now_iso

ACCOUNT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")  # \Z: "$" would accept "acme\n"


def check_account_id(account: Any) -> str:
    """Refuse anything that is not an account id before a path or key is built from it."""
    if not isinstance(account, str) or not ACCOUNT_ID.match(account):
        shown = repr(account) if len(repr(account)) < 80 else repr(account)[:77] + "..."
        raise InputError(f"invalid account id {shown}: expected 1-63 lowercase letters, "
                         "digits or '-', starting with a letter or digit")
    return account


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds an account lock: stored with the lock so that others can name the holder
    (not the waiter, as Terraform's pg backend does)."""

    id: str
    who: str
    operation: str
    created: str
    pid: int = 0
    host: str = ""
    ci_job_url: str | None = None

    def describe(self) -> str:
        where = f" (pid {self.pid} on {self.host})" if self.pid and self.host else ""
        job = f", CI job {self.ci_job_url}" if self.ci_job_url else ""
        return (f"lock {self.id} held by {self.who}{where} for {self.operation} since "
                f"{self.created}{job}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> LockInfo | None:
        """A holder record read from storage, or None if it is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(id=str(data["id"]), who=str(data["who"]),
                       operation=str(data["operation"]), created=str(data["created"]),
                       pid=int(data.get("pid") or 0), host=str(data.get("host") or ""),
                       ci_job_url=(str(data["ci_job_url"]) if data.get("ci_job_url")
                                   else None))
        except (KeyError, TypeError, ValueError):
            return None


def new_lock_info(who: str, operation: str) -> LockInfo:
    return LockInfo(id=new_id(), who=who, operation=operation, created=now_iso(),
                    pid=os.getpid(), host=host_name(), ci_job_url=ci_job_url())


@dataclass(frozen=True, slots=True)
class Change:
    """What a write is, for `history`: which run (the key that resolves a lost commit
    acknowledgement), when, by whom, and the command."""

    run_id: str
    time: str
    actor: str
    operation: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def new_change(actor: str, operation: str) -> Change:
    return Change(run_id=new_id(), time=now_iso(), actor=actor, operation=operation)


@dataclass(frozen=True, slots=True)
class Version:
    """One version of an account (`crctl history`)."""

    serial: int
    time: str | None
    actor: str | None
    operation: str | None
    counts: dict[str, int]
    readable: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """One line of `crctl accounts`."""

    account: str
    users: int
    cr_users: int
    serial: int
    last_change: str | None
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """`crctl audit` filters; empty ones match everything. Dates compare with the entry's
    UTC time (`--until 2026-12-01` includes that whole day)."""

    user: str | None = None
    since: str | None = None
    until: str | None = None
    actions: frozenset[str] = field(default_factory=frozenset)

    def matches(self, entry: dict[str, Any]) -> bool:
        stamp = str(entry.get("time") or "")
        return ((self.user is None or entry.get("user") == self.user)
                and (self.since is None or stamp[:10] >= self.since)
                and (self.until is None or stamp[:10] <= self.until)
                and (not self.actions or entry.get("action") in self.actions))


def stamp_audit(audit: list[dict[str, Any]], serial: int,
                change: Change | None) -> list[dict[str, Any]]:
    """The entries as stored: each names the serial it produced and the command."""
    extra: dict[str, Any] = {"serial": serial}
    if change is not None:
        extra["operation"] = change.operation
    return [{**entry, **extra} for entry in audit]


def versions_from_audit(entries: Iterator[dict[str, Any]]) -> list[Version]:
    """Versions (serial, first entry's time and actor, operation, counts per action) as
    the audit log tells them: a backend that keeps no per-version metadata of its own
    rebuilds history from it."""
    found: dict[int, dict[str, Any]] = {}
    for entry in entries:
        serial = entry.get("serial")
        if type(serial) is not int:
            continue
        slot = found.setdefault(serial, {"time": entry.get("time"),
                                         "actor": entry.get("actor"),
                                         "operation": entry.get("operation"), "counts": {}})
        action = str(entry.get("action"))
        slot["counts"][action] = slot["counts"].get(action, 0) + 1
    return [Version(serial=s, time=v["time"], actor=v["actor"], operation=v["operation"],
                    counts=v["counts"], readable=False) for s, v in sorted(found.items())]


OnWait = Callable[[str, LockInfo | None], None]


@dataclass(frozen=True, slots=True)
class AccountWrite:
    """One `write_account` call of a batch (`write_accounts`)."""

    state: CurrentAccount
    expected_lineage: str | None
    expected_serial: int
    audit: list[dict[str, Any]] = field(default_factory=list)
    mirror: Mirror | None = None
    change: Change | None = None


class Backend(ABC):
    """Where the state lives; see the module docstring for the whole contract."""

    # -- naming ------------------------------------------------------------------------
    @property
    @abstractmethod
    def location(self) -> str:
        """The state's name for humans (an absolute directory, a URL without password)."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether anything was ever written to this state."""

    # -- reading -----------------------------------------------------------------------
    @abstractmethod
    def read_account(self, account: str, serial: int | None = None) -> CurrentAccount:
        """The account (or version `serial`); empty (lineage None) if it does not exist."""

    @abstractmethod
    def read_mirror(self, account: str) -> Mirror:
        """The MIR mirror, or an empty one."""

    @abstractmethod
    def history(self, account: str) -> list[Version]:
        """The account's versions, oldest first."""

    @abstractmethod
    def audit(self, account: str, filters: AuditFilter | None = None
              ) -> Iterator[dict[str, Any]]:
        """The audit entries, oldest first."""

    @abstractmethod
    def accounts(self) -> list[AccountSummary]:
        """Every account, sorted by id."""

    def account_ids(self) -> list[str]:
        """Every account's id, sorted: what `accounts` lists, without reading the accounts
        (a plan of a few files in a state of thousands of accounts asks for this)."""
        return [a.account for a in self.accounts()]

    @abstractmethod
    def tombstones(self, account: str | None = None) -> list[dict[str, Any]]:
        """Tombstones of an account id (None: of every account), oldest first."""

    # -- writing -----------------------------------------------------------------------
    @abstractmethod
    def write_account(self, state: CurrentAccount, expected_lineage: str | None,
                      expected_serial: int, audit: list[dict[str, Any]] | None = None,
                      mirror: Mirror | None = None, change: Change | None = None) -> None:
        """Compare-and-swap on lineage and serial; audit and mirror in the same write."""

    def write_accounts(self, writes: list[AccountWrite],
                       on_commit: Callable[[int], None]) -> None:
        """Several compare-and-swaps in order; on_commit(i) after each commit."""
        for index, w in enumerate(writes):
            self.write_account(w.state, w.expected_lineage, w.expected_serial, w.audit,
                               w.mirror, w.change)
            on_commit(index)

    @abstractmethod
    def write_mirror(self, mirror: Mirror) -> None:
        """Replace the MIR mirror."""

    @abstractmethod
    def terminate(self, account: str, tombstone: dict[str, Any]) -> None:
        """Tombstone first, then every trace of the account deleted."""

    @abstractmethod
    def init(self) -> None:
        """Create or migrate the state."""

    def ddl(self) -> str | None:
        """The SQL that creates this state and its roles' GRANTs (None: not a database)."""
        return None

    @abstractmethod
    def restore(self, account: str, versions: list[tuple[CurrentAccount, Change]],
                audit: list[dict[str, Any]], mirror: Mirror) -> None:
        """Write a copied account (migrate-state); refuses one that exists."""

    @abstractmethod
    def add_tombstone(self, entry: dict[str, Any]) -> None:
        """Record a terminated account (migrate-state), once per lineage."""

    # -- locking: the primitives a backend implements -----------------------------------
    @abstractmethod
    def try_lock(self, account: str, info: LockInfo) -> bool:
        """Take the account's lock for `info` without waiting; False if someone has it."""

    @abstractmethod
    def unlock(self, account: str, info: LockInfo) -> None:
        """Release a lock this process took with `info`."""

    @abstractmethod
    def holder(self, account: str) -> LockInfo | None:
        """Who holds the account's lock now (None: nobody, or unknown)."""

    @abstractmethod
    def recover(self, account: str) -> None:
        """Under the lock: finish what a dead holder left half done."""

    @abstractmethod
    def force_unlock(self, account: str, lock_id: str, force: bool = False) -> LockInfo:
        """Remove a dead holder's lock (a live one only with `force`)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections and files (nothing to do for a directory)."""

    # -- locking: the protocol, implemented once -----------------------------------------
    @contextmanager
    def lock(self, accounts: list[str], who: str, operation: str, timeout: float,
             on_wait: OnWait | None = None) -> Iterator[LockInfo]:
        """Hold the locks of `accounts` (sorted) for the `with` block."""
        info = new_lock_info(who, operation)
        deadline = time.monotonic() + timeout
        taken: list[str] = []
        try:
            for account in sorted(set(accounts)):
                self._wait_for(account, info, deadline, on_wait)
                taken.append(account)
                self.recover(account)
            yield info
        finally:
            for account in reversed(taken):
                self.unlock(account, info)

    def _wait_for(self, account: str, info: LockInfo, deadline: float,
                  on_wait: OnWait | None) -> None:
        delay, told = 0.01, False
        while not self.try_lock(account, info):
            holder = self.holder(account)
            if time.monotonic() >= deadline:
                raise LockedError(locked_message(account, holder))
            if not told and on_wait is not None:
                on_wait(account, holder)
                told = True
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.2)


def locked_message(account: str, holder: LockInfo | None) -> str:
    """Exit 4's message: the holder, and what to do. Never suggests force-unlock for a
    lock whose holder is alive (that is how two applies once ran at once)."""
    who = holder.describe() if holder else "lock held by another process"
    return (f"account {account} is locked: {who}; wait for it to finish and retry "
            "(--lock-timeout waits longer)")
