"""The backend interface, so a shared backend (PostgreSQL) or a real portal API can be
added without touching the planner or the applier."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from reconciler.errors import InputError
from reconciler.model import CurrentAccount, Mirror

ACCOUNT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")  # \Z: "$" would accept "acme\n"


def check_account_id(account: Any) -> str:
    """Refuse anything that is not an account id before a path is built from it."""
    if not isinstance(account, str) or not ACCOUNT_ID.match(account):
        shown = repr(account) if len(repr(account)) < 80 else repr(account)[:77] + "..."
        raise InputError(f"invalid account id {shown}: expected 1-63 lowercase letters, "
                         "digits or '-', starting with a letter or digit")
    return account


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds an account lock (written into the lock so others can name the holder)."""

    id: str
    who: str
    operation: str
    created: str

    def describe(self) -> str:
        return f"lock {self.id} held by {self.who} for {self.operation} since {self.created}"


class Backend(ABC):
    """Read and write one account's state; every write is atomic."""

    @abstractmethod
    def read_account(self, account: str) -> CurrentAccount:
        """The portal account, or an empty one (lineage None) if it does not exist."""

    @abstractmethod
    def read_mirror(self, account: str) -> Mirror:
        """The MIR mirror, or an empty one."""

    @abstractmethod
    def write_account(self, state: CurrentAccount, expected_serial: int,
                      audit: list[dict[str, Any]] | None = None) -> None:
        """Replace the account if its stored serial still equals `expected_serial`, and
        append `audit` (one entry per applied action) to the audit log.

        The entries are part of the write, not a separate step: once the account is
        replaced they are in the log, or a crash interrupted the append and the next
        `lock` of the account appends them (DESIGN §3: one line per applied action, and
        §6: a crash at any moment loses nothing and tears nothing)."""

    @abstractmethod
    def write_mirror(self, mirror: Mirror) -> None:
        """Replace the MIR mirror."""

    @abstractmethod
    def lock(self, account: str, who: str, operation: str,
             timeout: float) -> AbstractContextManager[LockInfo]:
        """Hold the account's lock for the duration of the `with` block. On entry, it
        finishes what a holder that died left half done (the audit entries of a
        committed `write_account`), so every locked operation starts from whole state."""

    @abstractmethod
    def force_unlock(self, account: str, lock_id: str) -> LockInfo:
        """Remove a lock whose id matches; returns what it said."""

    def terminate_account(self, account: str, tombstone: dict[str, Any]) -> None:
        """Record the termination, then delete the account.

        The tombstone comes first: if it cannot be written, nothing is deleted (the other
        order could delete an account and leave no record of it). A run that died after
        the tombstone, in the middle of the deletion, is finished by terminating again:
        the tombstone of the same lineage is found and not written twice."""
        lineage = tombstone.get("lineage")
        if lineage is None or not any(t.get("lineage") == lineage
                                      for t in self.tombstones(account)):
            self.add_tombstone(tombstone)
        self.delete_account(account)

    @abstractmethod
    def delete_account(self, account: str) -> None:
        """Delete every file of the account (portal, backups, mirror, audit, lock)."""

    @abstractmethod
    def add_tombstone(self, entry: dict[str, Any]) -> None:
        """Record a terminated account (no personal data)."""

    @abstractmethod
    def tombstones(self, account: str) -> list[dict[str, Any]]:
        """Tombstones of an account id, oldest first."""

    @abstractmethod
    def accounts(self) -> Iterator[str]:
        """Ids of the accounts that exist."""
