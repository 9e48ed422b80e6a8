"""`crctl migrate-state --to LOCATION` (DESIGN §3.5): copy every account, with the history
the source keeps, its MIR mirror and recordings, its audit log, and every tombstone, from
one backend to another; verify the copy; leave the source untouched.

Only the backend contract is used, so it works in either direction (local ⇄ PostgreSQL,
or between two of a kind). The accounts of both states are locked for the copy, so no
apply changes the source under it and none writes the target before it is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.backends.base import Backend, Change
from reconciler.errors import StateError
from reconciler.model import CurrentAccount
from reconciler.runtime import default_who, new_id, now_iso


@dataclass
class MigrationReport:
    accounts: list[str] = field(default_factory=list)
    versions: int = 0
    audit_entries: int = 0
    recordings: int = 0
    tombstones: int = 0

    def to_json(self) -> dict[str, object]:
        return {"accounts": self.accounts, "versions": self.versions,
                "audit_entries": self.audit_entries, "recordings": self.recordings,
                "tombstones": self.tombstones, "verified": True}


def migrate(source: Backend, target: Backend, actor: str | None,
            lock_timeout: float) -> MigrationReport:
    if source.location == target.location:
        raise StateError(f"--to names the current state ({source.location})")
    ids = [a.account for a in source.accounts()]
    clash = [a.account for a in target.accounts() if a.account in set(ids)]
    if clash:
        raise StateError(f"the target {target.location} already holds account"
                         f"{'s' if len(clash) > 1 else ''} {', '.join(clash)}; nothing was "
                         "copied")
    report = MigrationReport()
    who = default_who(actor)
    target.init()
    with source.lock(ids, who, "migrate-state", lock_timeout), \
            target.lock(ids, who, "migrate-state", lock_timeout):
        for account in ids:
            _copy(source, target, account, report)
        for stone in source.tombstones():
            target.add_tombstone(stone)
            report.tombstones += 1
    return report


def _copy(source: Backend, target: Backend, account: str, report: MigrationReport) -> None:
    current = source.read_account(account)
    versions: list[tuple[CurrentAccount, Change]] = []
    for version in source.history(account):
        if not version.readable or version.serial == current.serial:
            continue
        state = source.read_account(account, serial=version.serial)
        versions.append((state, _change(version.time, version.actor, version.operation)))
    known = {v.serial: v for v in source.history(account)}
    last = known.get(current.serial)
    versions.append((current, _change(last.time if last else None,
                                      last.actor if last else None,
                                      last.operation if last else None)))
    audit = list(source.audit(account))
    mirror = source.read_mirror(account)
    target.restore(account, versions, audit, mirror)
    _verify(source, target, account, current, len(audit))
    report.accounts.append(account)
    report.versions += len(versions)
    report.audit_entries += len(audit)
    report.recordings += len(mirror.recordings)


def _change(time: str | None, actor: str | None, operation: str | None) -> Change:
    return Change(run_id=new_id(), time=time or now_iso(), actor=actor or "",
                  operation=operation or "migrate-state")


def _verify(source: Backend, target: Backend, account: str, current: CurrentAccount,
            audit_count: int) -> None:
    """The copy reads back as the source: account, mirror (recordings by id), audit."""
    copied = target.read_account(account)
    problems = []
    if (copied.lineage, copied.serial, copied.name, copied.next_user_id) != \
            (current.lineage, current.serial, current.name, current.next_user_id):
        problems.append("lineage, serial, name or next_user_id")
    if copied.users != current.users:
        problems.append("users")
    if (copied.groups, copied.time_zone) != (current.groups, current.time_zone):
        problems.append("recording groups or time zone")
    mine, theirs = source.read_mirror(account), target.read_mirror(account)
    if mine.users != theirs.users:
        problems.append("MIR mirror users")
    if mine.groups != theirs.groups:
        problems.append("MIR mirror groups")
    if sorted(str(r.get("id")) for r in mine.recordings) != \
            sorted(str(r.get("id")) for r in theirs.recordings):
        problems.append("recordings")
    if sum(1 for _ in target.audit(account)) != audit_count:
        problems.append("audit entries")
    if problems:
        raise StateError(f"account {account}: the copy in {target.location} differs from the "
                         f"source in its {', '.join(problems)}; the source is untouched")
