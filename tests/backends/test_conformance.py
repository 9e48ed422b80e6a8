"""The backend contract (reconciler/backends/base.py, DESIGN §3.2), checked against every
backend of conftest.BACKENDS: reads, compare-and-swap on lineage and serial, audit and
mirror in the same write, history, audit filters, accounts, locks (holder visible, wait
then exit 4, dies with a killed holder, force-unlock rules), termination erasure and
tombstones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from reconciler.backends import Backend
from reconciler.backends.base import AccountWrite, AuditFilter, LockInfo, new_change
from reconciler.errors import CrctlError, InputError, LockedError, StalePlanError, StateError
from reconciler.model import CurrentAccount, GroupRecord, Mirror

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def user(username: str, ext: str, *, cr: str | None = "always-on",
         roles: list[str] | None = None) -> dict[str, Any]:
    return {"username": username, "first_name": f"First{username}", "last_name": "Zyx",
            "email": f"{username}@secret.example", "extension": ext,
            "phone_number": f"+1613555{ext}", "profile": "Elite", "location": "Ottawa",
            "roles": roles or [], "tags": [],
            "call_recording": None if cr is None else {
                "product": cr, "activation_date": None, "prevent_remove": False,
                "access": "none", "status": "active"}}


def account_v1(account: str = "acme", lineage: str = "lin-1") -> CurrentAccount:
    return CurrentAccount(account=account, lineage=lineage, serial=1, name="Acme Corp",
                          next_user_id=3, users={
                              "u1": user("jdoe", "2101", roles=["decision-maker"]),
                              "u2": user("kli", "2102", cr=None)})


def entry(action: str, username: str, time_: str = "2026-11-20T10:00:00Z") -> dict[str, Any]:
    return {"time": time_, "actor": "jdoe", "account": "acme", "action": action,
            "user": username, "user_id": None, "before": None, "after": None,
            "plan_checksum": None}


def mirror_of(state: CurrentAccount, recordings: int = 0) -> Mirror:
    users = {uid: {"username": u["username"], "full_name": "x", "email": u["email"],
                   "extension": u["extension"], "phone_number": u["phone_number"],
                   "product": u["call_recording"]["product"]}
             for uid, u in state.users.items() if u["call_recording"]}
    return Mirror(state.account, users, [{"id": f"r{i}", "user_id": "u1",
                                          "caller": "+16135559999"}
                                         for i in range(recordings)])


def create(backend: Backend, state: CurrentAccount | None = None,
           recordings: int = 0) -> CurrentAccount:
    state = state or account_v1()
    backend.read_account(state.account)
    backend.write_account(state, None, 0, [entry("create_account", "")],
                          mirror_of(state, recordings), new_change("jdoe", "apply"))
    return state


# -- reading and writing -----------------------------------------------------------------

def test_absent_account_reads_empty(backend: Backend) -> None:
    current = backend.read_account("acme")
    assert (current.lineage, current.serial, current.users) == (None, 0, {})
    assert backend.read_mirror("acme").users == {}
    assert backend.accounts() == []
    assert backend.history("acme") == []
    assert list(backend.audit("acme")) == []
    assert backend.tombstones("acme") == []
    assert backend.exists() is False
    assert backend.holder("acme") is None


def test_write_then_read_back(backend: Backend, other: Backend) -> None:
    state = create(backend, recordings=2)
    got = other.read_account("acme")
    assert (got.lineage, got.serial, got.name, got.next_user_id) == ("lin-1", 1, "Acme Corp", 3)
    assert got.users == state.users
    mirror = other.read_mirror("acme")
    assert set(mirror.users) == {"u1"} and len(mirror.recordings) == 2
    assert other.exists()
    [summary] = other.accounts()
    assert (summary.account, summary.users, summary.cr_users, summary.serial,
            summary.name) == ("acme", 2, 1, 1, "Acme Corp")
    assert summary.last_change


def test_cas_refuses_a_moved_serial(backend: Backend, other: Backend) -> None:
    state = create(backend)
    other.read_account("acme")
    other.write_account(replace(state, serial=2, name="By other"), "lin-1", 1, [], None,
                        new_change("kli", "apply"))
    with pytest.raises(StalePlanError):
        backend.write_account(replace(state, serial=2, name="Lost"), "lin-1", 1, [], None,
                              new_change("jdoe", "apply"))
    assert other.read_account("acme").name == "By other"


def test_cas_refuses_a_new_lineage_at_the_same_serial(backend: Backend,
                                                      other: Backend) -> None:
    """An account terminated and re-created since: same serial, new lineage."""
    create(backend)
    backend.read_account("acme")
    other.terminate("acme", {"account": "acme", "lineage": "lin-1",
                             "terminated_at": "2026-11-21T00:00:00Z", "deleted": {}})
    create(other, account_v1(lineage="lin-2"))
    with pytest.raises(StalePlanError):
        backend.write_account(replace(account_v1(), serial=2), "lin-1", 1, [], None,
                              new_change("jdoe", "apply"))
    assert other.read_account("acme").lineage == "lin-2"


def test_cas_refuses_creating_an_existing_account(backend: Backend, other: Backend) -> None:
    create(backend)
    with pytest.raises(StalePlanError):
        other.write_account(account_v1(lineage="lin-9"), None, 0, [], None,
                            new_change("x", "apply"))
    assert backend.read_account("acme").lineage == "lin-1"


def test_audit_and_mirror_are_part_of_the_write(backend: Backend, other: Backend) -> None:
    state = create(backend)
    new = replace(state, serial=2, users={**state.users, "u2": user("kli", "2102")})
    backend.write_account(new, "lin-1", 1, [entry("enable", "kli")], mirror_of(new),
                          new_change("jdoe", "apply"))
    entries = list(other.audit("acme"))
    assert [(e["action"], e["serial"], e["operation"]) for e in entries] == \
        [("create_account", 1, "apply"), ("enable", 2, "apply")]
    assert set(other.read_mirror("acme").users) == {"u1", "u2"}
    # a refused write leaves neither entries nor mirror behind
    with pytest.raises(StalePlanError):
        backend.write_account(replace(new, serial=3, users={}), "lin-1", 1,
                              [entry("remove", "kli")], Mirror("acme"),
                              new_change("jdoe", "apply"))
    assert len(list(other.audit("acme"))) == 2
    assert set(other.read_mirror("acme").users) == {"u1", "u2"}


def _batch(accounts: list[str]) -> list[AccountWrite]:
    """New accounts, each with an audit entry and a mirror (a directory apply's writes)."""
    out = []
    for name in accounts:
        state = account_v1(name, lineage=f"lin-{name}")
        out.append(AccountWrite(state, None, 0, [entry("create_account", "")],
                                mirror_of(state), new_change("jdoe", "apply")))
    return out


def test_write_accounts_commits_each_with_its_audit_and_mirror(backend: Backend,
                                                               other: Backend) -> None:
    names = ["acme", "beta", "gamma", "delta"]
    for name in names:
        backend.read_account(name)
    committed: list[int] = []
    backend.write_accounts(_batch(names), committed.append)
    assert committed == [0, 1, 2, 3]
    for name in names:
        got = other.read_account(name)
        assert (got.lineage, got.serial) == (f"lin-{name}", 1)
        assert [(e["action"], e["serial"]) for e in other.audit(name)] == \
            [("create_account", 1)]
        assert set(other.read_mirror(name).users) == {"u1"}
    assert [h.serial for h in other.history("beta")] == [1]
    # and the next batch changes them again, compare-and-swap from what it wrote
    again = [AccountWrite(replace(w.state, serial=2, name="Again"), w.state.lineage, 1,
                          [entry("enable", "kli")], None, new_change("jdoe", "apply"))
             for w in _batch(names)]
    committed.clear()
    backend.write_accounts(again, committed.append)
    assert committed == [0, 1, 2, 3]
    assert {other.read_account(n).name for n in names} == {"Again"}


def test_write_accounts_stops_at_a_stale_account(backend: Backend, other: Backend) -> None:
    """The accounts before the refused one are committed; it and those after it are
    left exactly as they were, with no audit entry and no mirror."""
    create(backend, account_v1("beta", lineage="lin-beta"))
    before = other.read_account("beta")
    names = ["acme", "beta", "gamma"]
    for name in names:
        backend.read_account(name)
    committed: list[int] = []
    with pytest.raises(StalePlanError, match="beta"):
        backend.write_accounts(_batch(names), committed.append)  # beta exists: stale
    assert committed == [0]
    assert other.read_account("acme").serial == 1
    assert [e["action"] for e in other.audit("acme")] == ["create_account"]
    assert other.read_account("beta") == before
    assert len(list(other.audit("beta"))) == 1
    assert other.read_account("gamma").lineage is None
    assert list(other.audit("gamma")) == [] and other.read_mirror("gamma").users == {}
    # nothing is left half-done: the next batch of the same accounts starts clean
    backend.write_accounts(_batch(["gamma", "delta"]), committed.append)
    assert other.read_account("gamma").serial == 1 == other.read_account("delta").serial


def test_mirror_alone_and_none(backend: Backend, other: Backend) -> None:
    state = create(backend, recordings=1)
    backend.write_account(replace(state, serial=2, name="N"), "lin-1", 1, [], None,
                          new_change("jdoe", "apply"))
    assert len(other.read_mirror("acme").recordings) == 1  # None: mirror untouched
    backend.write_mirror(Mirror("acme", {}, []))
    assert other.read_mirror("acme").users == {}


def test_audit_filters(backend: Backend) -> None:
    state = create(backend)
    backend.write_account(replace(state, serial=2), "lin-1", 1, [
        entry("enable", "kli", "2026-11-22T09:00:00Z"),
        entry("change", "jdoe", "2026-11-23T09:00:00Z"),
        entry("remove", "kli", "2026-11-24T09:00:00Z")], None, new_change("jdoe", "apply"))

    def actions(**filters: Any) -> list[str]:
        return [e["action"] for e in backend.audit("acme", AuditFilter(**filters))]

    assert actions(user="kli") == ["enable", "remove"]
    assert actions(actions=frozenset({"change", "remove"})) == ["change", "remove"]
    assert actions(since="2026-11-23") == ["change", "remove"]
    assert actions(until="2026-11-22") == ["create_account", "enable"]
    assert actions(user="kli", since="2026-11-23", until="2026-11-24") == ["remove"]


def test_history_lists_versions(backend: Backend) -> None:
    state = create(backend)
    backend.write_account(replace(state, serial=2, name="Two"), "lin-1", 1,
                          [entry("update_account", "")], None, new_change("kli", "sync"))
    versions = backend.history("acme")
    assert [v.serial for v in versions] == [1, 2]
    assert versions[-1].operation == "sync" and versions[-1].actor in ("kli", "jdoe")
    assert versions[0].counts.get("create_account") == 1
    assert all(v.time for v in versions)
    assert versions[-1].readable
    assert backend.read_account("acme", serial=2).name == "Two"
    readable = [v.serial for v in versions if v.readable]
    for serial in readable:
        assert backend.read_account("acme", serial=serial).serial == serial
    with pytest.raises(StateError):
        backend.read_account("acme", serial=99)


GROUPS: dict[str, GroupRecord] = {
    "sales": {"managers": ["u1"], "members": ["u2", "u3"]},
    "support": {"managers": ["u2"], "members": ["u1"]}}


def with_groups(state: CurrentAccount) -> CurrentAccount:
    return replace(state, users={**state.users, "u3": user("mli", "2103")}, next_user_id=4,
                   groups=GROUPS, time_zone="America/Toronto")


def test_groups_and_time_zone_round_trip(backend: Backend, other: Backend) -> None:
    state = create(backend, with_groups(account_v1()))
    got = other.read_account("acme")
    assert (got.groups, got.time_zone) == (GROUPS, "America/Toronto")
    assert got.users == state.users
    # a write that changes only the users keeps them; one that changes them replaces them
    moved = replace(state, serial=2, users={**state.users, "u2": user("kli", "2199")})
    backend.write_account(moved, "lin-1", 1, [], None, new_change("jdoe", "apply"))
    got = other.read_account("acme")
    assert (got.groups, got.time_zone, got.users["u2"]["extension"]) == \
        (GROUPS, "America/Toronto", "2199")
    emptied = replace(moved, serial=3, groups={}, time_zone=None)
    other.write_account(emptied, "lin-1", 2, [], None, new_change("kli", "apply"))
    got = backend.read_account("acme")
    assert (got.groups, got.time_zone, got.users) == ({}, None, moved.users)


def test_an_older_serial_reads_back_its_own_groups_and_time_zone(backend: Backend) -> None:
    state = create(backend, with_groups(account_v1()))
    two = replace(state, serial=2, groups={"sales": GROUPS["sales"]}, time_zone="Europe/Paris")
    backend.write_account(two, "lin-1", 1, [], None, new_change("jdoe", "apply"))
    three = replace(two, serial=3, name="Renamed")  # settings unchanged since serial 2
    backend.write_account(three, "lin-1", 2, [], None, new_change("jdoe", "apply"))
    readable = {v.serial for v in backend.history("acme") if v.readable}
    expected = {1: (GROUPS, "America/Toronto"), 2: ({"sales": GROUPS["sales"]}, "Europe/Paris"),
                3: ({"sales": GROUPS["sales"]}, "Europe/Paris")}
    assert 3 in readable and 2 in readable  # the current version and the one before
    for serial in sorted(readable):
        old = backend.read_account("acme", serial=serial)
        assert (old.serial, old.groups, old.time_zone) == (serial, *expected[serial])


def test_mirror_groups_round_trip(backend: Backend, other: Backend) -> None:
    state = with_groups(account_v1())
    backend.read_account("acme")
    backend.write_account(state, None, 0, [], replace(mirror_of(state, 1), groups=GROUPS),
                          new_change("jdoe", "apply"))
    mirror = other.read_mirror("acme")
    assert mirror.groups == GROUPS and set(mirror.users) == {"u1", "u3"}
    fewer = {"sales": {"managers": ["u1"], "members": ["u3"]}}
    other.write_mirror(replace(mirror, groups=fewer))
    assert backend.read_mirror("acme").groups == fewer
    # a write without a mirror leaves the groups; an account write with one replaces them
    backend.write_account(replace(state, serial=2), "lin-1", 1, [], None,
                          new_change("jdoe", "apply"))
    assert other.read_mirror("acme").groups == fewer
    backend.write_account(replace(state, serial=3), "lin-1", 2, [],
                          replace(mirror, groups={}), new_change("jdoe", "apply"))
    again = other.read_mirror("acme")
    assert (again.groups, len(again.recordings)) == ({}, 1)


def test_restore_keeps_groups_time_zone_and_mirror_groups(backend: Backend) -> None:
    """What migrate-state writes: every version with its own settings, the mirror's groups."""
    first = with_groups(account_v1())
    second = replace(first, serial=2, groups={}, time_zone="Europe/Paris")
    backend.restore("acme", [(first, new_change("jdoe", "apply")),
                             (second, new_change("kli", "apply"))], [],
                    replace(mirror_of(second), groups=GROUPS))
    got = backend.read_account("acme")
    assert (got.serial, got.groups, got.time_zone) == (2, {}, "Europe/Paris")
    assert backend.read_mirror("acme").groups == GROUPS
    if any(v.readable and v.serial == 1 for v in backend.history("acme")):
        old = backend.read_account("acme", serial=1)
        assert (old.groups, old.time_zone) == (GROUPS, "America/Toronto")


def test_accounts_sorted(backend: Backend) -> None:
    for name in ("zeta", "alpha", "mid"):
        create(backend, account_v1(account=name, lineage=f"l-{name}"))
    assert [a.account for a in backend.accounts()] == ["alpha", "mid", "zeta"]


def test_account_ids_are_the_accounts_ids_in_the_same_order(backend: Backend) -> None:
    """account_ids (what plan sets list as "not managed by these files") sorts like
    accounts, by code point whatever the database's collation ('-' sorts before digits)."""
    assert backend.account_ids() == []
    for name in ("ab", "a-c", "a1", "zeta"):
        create(backend, account_v1(account=name, lineage=f"l-{name}"))
    assert backend.account_ids() == ["a-c", "a1", "ab", "zeta"]
    assert backend.account_ids() == [a.account for a in backend.accounts()]


def test_bad_account_id_is_a_crctl_error(backend: Backend) -> None:
    for bad in ("ACME", "../x", "a\n", ""):
        with pytest.raises(InputError):
            backend.read_account(bad)


# -- locks ------------------------------------------------------------------------------

def test_holder_is_visible_and_second_locker_waits_then_fails(backend: Backend,
                                                              other: Backend) -> None:
    waited: list[tuple[str, LockInfo | None]] = []
    with backend.lock(["acme"], "jdoe@ci-1", "apply", 1.0) as mine:
        holder = other.holder("acme")
        assert holder is not None
        assert (holder.id, holder.who, holder.operation, holder.pid) == \
            (mine.id, "jdoe@ci-1", "apply", os.getpid())
        assert holder.host and holder.created
        start = time.monotonic()
        with pytest.raises(LockedError) as refused, \
                other.lock(["acme"], "kli@ci-2", "apply", 0.3,
                           lambda a, h: waited.append((a, h))):
            pass
        assert time.monotonic() - start >= 0.25
        assert "jdoe@ci-1" in str(refused.value) and mine.id in str(refused.value)
        assert "force-unlock" not in str(refused.value)  # never suggested for a live holder
        assert [a for a, _ in waited] == ["acme"]
        assert waited[0][1] is not None and waited[0][1].who == "jdoe@ci-1"
    with other.lock(["acme"], "kli@ci-2", "apply", 1.0):
        assert backend.holder("acme").who == "kli@ci-2"  # type: ignore[union-attr]


def test_several_accounts_locked_together(backend: Backend, other: Backend) -> None:
    with backend.lock(["zeta", "alpha", "alpha"], "a@h", "apply", 1.0):
        for account in ("alpha", "zeta"):
            with pytest.raises(LockedError), other.lock([account], "b@h", "apply", 0.05):
                pass
        with other.lock(["mid"], "b@h", "apply", 0.5):
            pass
    with other.lock(["alpha", "zeta"], "b@h", "apply", 0.5):
        pass


def test_locking_many_accounts_holds_a_few_descriptors(backend: Backend,
                                                       other: Backend) -> None:
    """DESIGN §7: an MSP's apply holds 10,000 accounts' locks under `ulimit -n 256`, so
    the descriptors a lock needs must not grow with the accounts."""
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    accounts = [f"a{n:04d}" for n in range(400)]
    other.holder("a0000")  # any connection a backend opens lazily is open before counting
    backend.holder("a0000")
    before = open_fds()
    with backend.lock(accounts, "a@h", "apply", 5.0):
        assert open_fds() - before <= 8
        for account in (accounts[0], accounts[199], accounts[-1]):
            assert other.holder(account) is not None
            with pytest.raises(LockedError), other.lock([account], "b@h", "apply", 0.05):
                pass
    assert open_fds() - before <= 8
    assert all(other.holder(a) is None for a in accounts[:5])
    with other.lock(accounts[:3], "b@h", "apply", 0.5):
        pass


HOLD = """
import sys, time
from reconciler.backends import open_backend
backend = open_backend(sys.argv[1])
with backend.lock(["acme"], "holder@test", "apply", 5.0) as info:
    print(info.id, flush=True)
    time.sleep(60)
"""


def _spawn_holder(location: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, location], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lock_id = proc.stdout.readline().strip()
    assert lock_id, "holder did not take the lock"
    return proc, lock_id


def test_lock_dies_with_a_killed_holder(location: str, backend: Backend) -> None:
    proc, lock_id = _spawn_holder(location)
    try:
        with pytest.raises(LockedError), backend.lock(["acme"], "me@h", "apply", 0.2):
            pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with backend.lock(["acme"], "me@h", "apply", 5.0) as info:
            assert backend.holder("acme").id == info.id  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_force_unlock_rules(location: str, backend: Backend) -> None:
    proc, lock_id = _spawn_holder(location)
    try:
        with pytest.raises(StateError):
            backend.force_unlock("acme", "not-the-id")
        with pytest.raises(LockedError) as refused:
            backend.force_unlock("acme", lock_id)
        assert "holder@test" in str(refused.value)
        assert backend.holder("acme") is not None  # refused: still locked
        removed = backend.force_unlock("acme", lock_id, force=True)
        assert removed.id == lock_id
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(StateError):
        backend.force_unlock("acme", lock_id)  # nothing left to remove


def test_force_unlock_of_a_dead_holder(location: str, backend: Backend) -> None:
    proc, lock_id = _spawn_holder(location)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    holder = backend.holder("acme")
    if holder is not None:  # a backend whose lock records outlive their holder
        assert backend.force_unlock("acme", lock_id).id == lock_id
    assert backend.holder("acme") is None


# -- termination ---------------------------------------------------------------------------

PERSONAL = (b"Firstjdoe", b"jdoe@secret.example", b"Firstkli", b"kli@secret.example",
            b"+16135552101", b"+16135559999", b"Acme Corp")


def test_terminate_erases_every_trace(backend: Backend, other: Backend,
                                      dump: Callable[[], bytes]) -> None:
    state = create(backend, recordings=3)
    backend.write_account(replace(state, serial=2, name="Acme Corp 2"), "lin-1", 1,
                          [entry("update_account", "jdoe")], None, new_change("jdoe", "apply"))
    create(backend, account_v1(account="other", lineage="lin-o"), recordings=1)
    assert all(p in dump() for p in PERSONAL[:4])
    with backend.lock(["acme"], "jdoe@h", "terminate", 1.0):
        backend.terminate("acme", {"account": "acme", "lineage": "lin-1",
                                   "terminated_at": "2026-11-25T00:00:00Z",
                                   "actor": "jdoe", "deleted": {"users": 2}})
    gone = other.read_account("acme")
    assert (gone.lineage, gone.serial, gone.users) == (None, 0, {})
    assert other.read_mirror("acme").recordings == []
    assert list(other.audit("acme")) == [] and other.history("acme") == []
    assert [t["lineage"] for t in other.tombstones("acme")] == ["lin-1"]
    assert [a.account for a in other.accounts()] == ["other"]
    stored = dump()
    # the other account keeps its data; acme's own (recording callers, names) is gone
    assert b"+16135559999" in stored  # the other account's recordings
    other.terminate("other", {"account": "other", "lineage": "lin-o",
                              "terminated_at": "2026-11-25T00:00:01Z", "deleted": {}})
    stored = dump()
    for secret in PERSONAL:
        assert secret not in stored, secret


def test_terminate_again_writes_one_tombstone(backend: Backend) -> None:
    create(backend)
    stone = {"account": "acme", "lineage": "lin-1", "terminated_at": "2026-11-25T00:00:00Z",
             "deleted": {}}
    backend.terminate("acme", stone)
    backend.terminate("acme", stone)  # a re-run after a crash mid-deletion
    assert len(backend.tombstones("acme")) == 1
    create(backend, account_v1(lineage="lin-2"))
    backend.terminate("acme", {**stone, "lineage": "lin-2"})
    assert [t["lineage"] for t in backend.tombstones("acme")] == ["lin-1", "lin-2"]


def test_errors_are_crctl_errors(backend: Backend) -> None:
    """Nothing but crctl errors (with exit codes) leave a backend."""
    with pytest.raises(CrctlError):
        backend.force_unlock("acme", "x")
    with pytest.raises(CrctlError):
        backend.read_account("acme", serial=5)


# -- the PostgreSQL schema's versions ------------------------------------------------------

def _version_1_database(url: str) -> None:
    """A database as crctl with schema version 1 left it: its DDL, and an account of two
    versions (kli's extension changed at serial 2) with a MIR mirror and a recording."""
    import json

    import psycopg

    from reconciler.backends import pgschema

    v1, v2 = account_v1(), replace(account_v1(), serial=2, name="Acme 2",
                                   users={**account_v1().users, "u2": user("kli", "2199",
                                                                           cr=None)})
    mirror = mirror_of(v1, recordings=1)
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute(pgschema.DDL_V1.format(s='"crctl"'))
        conn.execute("INSERT INTO crctl.schema_version (version) VALUES (1)")
        conn.execute("INSERT INTO crctl.accounts (account, lineage, serial, name, next_user_id, "
                     "mirror_serial) VALUES ('acme', 'lin-1', 2, 'Acme 2', 3, 1)")
        for state in (v1, v2):
            conn.execute("INSERT INTO crctl.versions (account, serial, lineage, name, "
                         "next_user_id, run_id, time, actor, operation, counts) VALUES "
                         "('acme', %s, 'lin-1', %s, 3, %s, '2026-11-20T10:00:00Z', 'jdoe', "
                         "'apply', '{}')", (state.serial, state.name, f"run-{state.serial}"))
        for uid, serial_from, serial_to, record in (
                ("u1", 1, None, v1.users["u1"]), ("u2", 1, 2, v1.users["u2"]),
                ("u2", 2, None, v2.users["u2"])):
            conn.execute("INSERT INTO crctl.user_versions (account, user_id, serial_from, "
                         "serial_to, record) VALUES ('acme', %s, %s, %s, %s::jsonb)",
                         (uid, serial_from, serial_to, json.dumps(record)))
        for uid, entry_ in mirror.users.items():
            conn.execute("INSERT INTO crctl.mir_users (account, user_id, entry) VALUES "
                         "('acme', %s, %s::jsonb)", (uid, json.dumps(entry_)))
        conn.execute("INSERT INTO crctl.recordings (account, id, user_id, data) VALUES "
                     "('acme', 'r0', 'u1', %s::jsonb)", (json.dumps(mirror.recordings[0]),))


def test_a_version_1_schema_is_migrated_to_2_keeping_its_data(
        pg_server: Any, pg_database: Callable[[], str]) -> None:
    from reconciler.backends import open_backend, pgschema

    url = pg_database()
    database = url.split("/")[3].split("?")[0]
    _version_1_database(url)

    def versions() -> list[str]:
        return pg_server.psql("SELECT version FROM crctl.schema_version ORDER BY version",
                              database).split()

    def readback(handle: Backend) -> None:
        for serial, name, ext in ((1, "Acme Corp", "2102"), (2, "Acme 2", "2199")):
            old = handle.read_account("acme", serial=serial)
            assert (old.lineage, old.serial, old.name, old.next_user_id) == \
                ("lin-1", serial, name, 3)
            assert (old.users["u2"]["extension"], old.groups, old.time_zone) == (ext, {}, None)
        mirror = handle.read_mirror("acme")
        assert set(mirror.users) == {"u1"}
        assert [r["id"] for r in mirror.recordings] == ["r0"]

    sales: dict[str, GroupRecord] = {"sales": {"managers": ["u1"], "members": ["u2"]}}
    reader = open_backend(url)  # reading does not migrate (a reading role cannot)
    try:
        readback(reader)
        current = reader.read_account("acme")
        assert (current.serial, current.groups, current.time_zone) == (2, {}, None)
        assert reader.read_mirror("acme").groups == {}
        assert versions() == ["1"]
    finally:
        reader.close()
    writer = open_backend(url)
    try:
        current = writer.read_account("acme")
        writer.write_account(replace(current, serial=3, groups=sales,
                                     time_zone="America/Toronto"),
                             "lin-1", 2, [entry("add_group", "")],
                             replace(writer.read_mirror("acme"), groups=sales),
                             new_change("jdoe", "apply"))
        assert versions() == ["1", "2"]  # migrated by the first write, in one step
        readback(writer)  # the old versions keep their data (and have no groups)
        now = writer.read_account("acme")
        assert (now.serial, now.groups, now.time_zone) == (3, sales, "America/Toronto")
        assert now.users == current.users
        assert writer.read_mirror("acme").groups == sales
        writer.init()  # idempotent: nothing more to do, no new version row
        writer.migrate()
        assert versions() == ["1", "2"]
    finally:
        writer.close()
    # the migration itself may run again (IF NOT EXISTS), and a newer schema is refused
    pg_server.psql(pgschema.DDL_V2.format(s='"crctl"'), database)
    pg_server.psql(f"INSERT INTO crctl.schema_version (version) VALUES "
                   f"({pgschema.SCHEMA_VERSION + 1})", database)
    newer = open_backend(url)
    try:
        with pytest.raises(StateError) as refused:
            newer.read_account("acme")
        assert f"version {pgschema.SCHEMA_VERSION + 1}" in str(refused.value)
        assert f"({pgschema.SCHEMA_VERSION})" in str(refused.value)
    finally:
        newer.close()


def test_a_fresh_schema_is_created_at_the_current_version(
        pg_server: Any, pg_database: Callable[[], str]) -> None:
    from reconciler.backends import open_backend, pgschema

    url = pg_database()
    handle = open_backend(url)
    try:
        create(handle, with_groups(account_v1()))
    finally:
        handle.close()
    database = url.split("/")[3].split("?")[0]
    assert pg_server.psql("SELECT version FROM crctl.schema_version",
                          database).split() == [str(pgschema.SCHEMA_VERSION)]
    stored = pg_server.psql("SELECT settings->'time_zone', jsonb_typeof(mir_groups) FROM "
                            "crctl.accounts", database).strip()
    assert stored == '"America/Toronto"|object'


def test_migrate_state_carries_groups_and_time_zone_both_ways(
        pg_database: Callable[[], str], tmp_path: Any) -> None:
    """local -> PostgreSQL -> local: every version's groups and time zone, the mirror's
    groups (migrate-state verifies them too)."""
    from reconciler.backends import open_backend
    from reconciler.migrate import migrate

    local, url, back = str(tmp_path / "local"), pg_database(), str(tmp_path / "back")
    source = open_backend(local)
    state = create(source, with_groups(account_v1()))
    two = replace(state, serial=2, groups={"sales": GROUPS["sales"]}, time_zone="Europe/Paris")
    source.write_account(two, "lin-1", 1, [], replace(mirror_of(two), groups=GROUPS),
                         new_change("jdoe", "apply"))
    handles = [source, open_backend(url), open_backend(back)]
    try:
        for src, dst in zip(handles, handles[1:], strict=False):
            migrate(src, dst, "jdoe", 5.0)
            got = dst.read_account("acme")
            assert (got.serial, got.groups, got.time_zone) == \
                (2, {"sales": GROUPS["sales"]}, "Europe/Paris")
            assert dst.read_mirror("acme").groups == GROUPS
            old = dst.read_account("acme", serial=1)
            assert (old.groups, old.time_zone) == (GROUPS, "America/Toronto")
    finally:
        for handle in handles:
            handle.close()


def test_a_writer_that_cannot_migrate_is_told_to_run_init_as_the_owner(
        pg_server: Any, pg_database: Callable[[], str]) -> None:
    from reconciler.backends import open_backend

    url = pg_database()
    database = url.split("/")[3].split("?")[0]
    _version_1_database(url)
    role = f"w_{database}"  # roles are per server: one per test database
    pg_server.psql(f"CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA crctl TO {role}; "
                   f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA crctl TO "
                   f"{role}; GRANT USAGE ON ALL SEQUENCES IN SCHEMA crctl TO {role}", database)
    writer = open_backend(url.replace("postgres@", f"{role}@"))
    try:
        current = writer.read_account("acme")  # reading needs no migration
        with pytest.raises(StateError) as refused:
            writer.write_account(replace(current, serial=3), "lin-1", 2, [], None,
                                 new_change("jdoe", "apply"))
        assert "version 1" in str(refused.value) and "crctl init" in str(refused.value)
    finally:
        writer.close()
    assert pg_server.psql("SELECT max(version) FROM crctl.schema_version",
                          database).strip() == "1"  # nothing half done
    assert pg_server.psql("SELECT serial FROM crctl.accounts", database).strip() == "2"
    owner = open_backend(url)
    try:
        owner.init()
    finally:
        owner.close()
    writer = open_backend(url.replace("postgres@", f"{role}@"))
    try:
        writer.write_account(replace(writer.read_account("acme"), serial=3,
                                     time_zone="Europe/Paris"), "lin-1", 2, [], None,
                             new_change("jdoe", "apply"))
        assert writer.read_account("acme").time_zone == "Europe/Paris"
    finally:
        writer.close()
