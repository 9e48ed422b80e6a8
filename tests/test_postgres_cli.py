"""The PostgreSQL backend through the `crctl` command (DESIGN §3.1, §3.4, §3.5, §4), against
a real server started by the tests: apply/plan/users/import/history/audit, writes in
proportion to the change, a read-only role, termination erasure in a pg_dump, schema
creation (concurrent, versioned), connection errors without passwords, migrate-state in
both directions, and locking 10,000 accounts in one run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import EXAMPLE_ACME, account_yaml, acme_users, crctl_env
from helpers import REPO

pytestmark = pytest.mark.usefixtures("pg_server")


def crctl(state: str, *args: str, actor: str | None = "jdoe",
          input: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "reconciler", *args, "--state", state],
                            env=crctl_env(actor), capture_output=True, text=True, timeout=300,
                            input=input, stdin=None if input is not None else subprocess.DEVNULL)
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream and "internal error" not in stream, stream
    return result


def big_account(tmp_path: Path, n: int, changed: int = 0, name: str = "big") -> Path:
    users = acme_users()
    for i in range(n):
        users[f"user{i:05d}"] = {"first_name": f"F{i}", "last_name": "L",
                                 "email": f"u{i}@big.example", "extension": f"{30000 + i}",
                                 "profile": "Elite",
                                 "call_recording": {"product": "always-on" if i < changed
                                                    else "on-demand"}}
    path = tmp_path / f"{name}-{changed}" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(account_yaml(name, users))
    return path


def test_apply_plan_users_import_history_audit(pg_database: Callable[[], str],
                                               tmp_path: Path) -> None:
    url = pg_database()
    planned = crctl(url, "plan", str(EXAMPLE_ACME))
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines()[0] == f"State: {url} (empty: nothing applied here yet)"
    applied = crctl(url, "apply", str(EXAMPLE_ACME), "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    again = crctl(url, "plan", str(EXAMPLE_ACME), "--detailed-exitcode")
    assert again.returncode == 0 and "No changes." in again.stdout
    users = json.loads(crctl(url, "users", "acme", "--format", "json").stdout)
    assert sorted(u["username"] for u in users) == ["asmith", "bob.smith", "jdoe"]
    imported = crctl(url, "import", "acme")
    assert imported.returncode == 0
    (tmp_path / "acme.yaml").write_text(imported.stdout)
    assert crctl(url, "plan", str(tmp_path / "acme.yaml"),
                 "--detailed-exitcode").returncode == 0
    history = json.loads(crctl(url, "history", "acme", "--format", "json").stdout)
    assert [(v["serial"], v["operation"], v["actor"]) for v in history] == \
        [(1, "apply", "jdoe")]
    audit = json.loads(crctl(url, "audit", "acme", "--action", "enable",
                             "--format", "json").stdout)
    assert len(audit) == 3 and {e["serial"] for e in audit} == {1}
    accounts = json.loads(crctl(url, "accounts", "--format", "json").stdout)
    assert [(a["account"], a["users"], a["cr_users"]) for a in accounts] == [("acme", 4, 3)]


def test_writes_are_in_proportion_to_the_change(pg_server, pg_database: Callable[[], str],
                                                tmp_path: Path) -> None:
    url = pg_database()
    database = url.split("/")[3].split("?")[0]
    assert crctl(url, "apply", str(big_account(tmp_path, 2000)),
                 "--auto-approve").returncode == 0

    def rows(table: str) -> int:
        return int(pg_server.psql(f"SELECT count(*) FROM crctl.{table}", database))

    before = {t: rows(t) for t in ("user_versions", "mir_users", "audit")}
    result = crctl(url, "apply", str(big_account(tmp_path, 2000, changed=20)), "--auto-approve")
    assert result.returncode == 0, result.stderr
    after = {t: rows(t) for t in ("user_versions", "mir_users", "audit")}
    assert after["user_versions"] - before["user_versions"] == 20  # 1% of the users
    assert after["audit"] - before["audit"] == 20
    assert after["mir_users"] == before["mir_users"]  # upserted in place
    # every version stays reconstructable
    old = crctl(url, "import", "big", "--serial", "1")
    assert old.returncode == 0, old.stderr
    assert "always-on" not in old.stdout.split("user00000:")[1].split("user00001:")[0]
    new = crctl(url, "import", "big")
    assert "always-on" in new.stdout.split("user00000:")[1].split("user00001:")[0]


def test_a_read_only_role_can_plan_but_not_apply(pg_server, pg_database: Callable[[], str],
                                                 tmp_path: Path) -> None:
    url = pg_database()
    database = url.split("/")[3].split("?")[0]
    assert crctl(url, "apply", str(EXAMPLE_ACME), "--auto-approve").returncode == 0
    sql = crctl(url, "init", "--print-sql").stdout
    assert "CREATE TABLE IF NOT EXISTS" in sql and "crctl_reader" in sql
    grants = sql.split("COMMIT;", 1)[1]
    pg_server.psql(f"DROP ROLE IF EXISTS crctl_reader; DROP ROLE IF EXISTS crctl_writer; "
                   f"DROP ROLE IF EXISTS pr_bot; DROP ROLE IF EXISTS half_bot; {grants}"
                   "CREATE ROLE pr_bot LOGIN IN ROLE crctl_reader;", database)
    reader = url.replace("postgres@", "pr_bot@")
    users = acme_users()
    users["asmith"]["call_recording"] = {"product": "always-on"}
    changed = tmp_path / "v2" / "acme.yaml"
    changed.parent.mkdir()
    changed.write_text(account_yaml("acme", users))
    planned = crctl(reader, "plan", str(changed), "--detailed-exitcode")
    assert planned.returncode == 2, planned.stderr
    for command in (["users", "acme"], ["history", "acme"], ["audit", "acme"], ["accounts"],
                    ["import", "acme"]):
        result = crctl(reader, *command)
        assert result.returncode == 0, (command, result.stderr)
    refused = crctl(reader, "apply", str(changed), "--auto-approve")
    assert refused.returncode == 1
    assert "permission denied" in refused.stderr
    # a directory of accounts is written as one batch, one savepoint each: the same words
    # for a role that may take locks but not write accounts
    pg_server.psql("CREATE ROLE half_bot LOGIN IN ROLE crctl_reader; "
                   "GRANT INSERT, UPDATE, DELETE ON crctl.locks TO half_bot;", database)
    (changed.parent / "beta.yaml").write_text(account_yaml("beta", acme_users()))
    refused = crctl(url.replace("postgres@", "half_bot@"), "--actor", "jdoe", "apply",
                    str(changed.parent), "--auto-approve")
    assert refused.returncode == 1
    assert "permission denied while writing account" in refused.stderr, refused.stderr
    assert "a writing role is needed to apply" in refused.stderr
    assert crctl(url, "plan", str(changed), "--detailed-exitcode").returncode == 2


def test_termination_leaves_nothing_in_a_pg_dump(pg_server, pg_database: Callable[[], str],
                                                 tmp_path: Path) -> None:
    url = pg_database()
    database = url.split("/")[3].split("?")[0]
    assert crctl(url, "apply", str(EXAMPLE_ACME), "--auto-approve").returncode == 0
    pg_server.psql("INSERT INTO crctl.recordings (account, id, user_id, data) VALUES "
                   "('acme', 'r1', 'u1', '{\"id\": \"r1\", \"user_id\": \"u1\", "
                   "\"caller\": \"+16135559876\"}')", database)
    secrets = [b"jane.doe@acme.example", b"Alice", b"+16135550101", b"2103", b"+16135559876"]
    assert all(s in pg_server.dump(database) for s in secrets)
    gone = crctl(url, "terminate", "acme", "--confirm", "acme", "--force")  # prevent_remove
    assert gone.returncode == 0, gone.stderr
    assert "1 recording" in gone.stdout
    dump = pg_server.dump(database)
    for secret in secrets:
        assert secret not in dump, secret
    assert b"acme" in dump  # the tombstone: the id, no personal data
    again = crctl(url, "plan", str(EXAMPLE_ACME))
    assert again.returncode == 5 and "terminated" in again.stderr


def test_schema_creation_is_safe_concurrently_and_versioned(
        pg_server, pg_database: Callable[[], str]) -> None:
    url = pg_database()
    database = url.split("/")[3].split("?")[0]
    procs = [subprocess.Popen([sys.executable, "-m", "reconciler", "init", "--state", url],
                              env=crctl_env(None), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    assert all(code == 0 for code, _ in results), results
    assert pg_server.psql("SELECT count(*) FROM crctl.schema_version", database).strip() == "1"
    pg_server.psql("INSERT INTO crctl.schema_version (version) VALUES (99)", database)
    refused = crctl(url, "plan", str(EXAMPLE_ACME))
    assert refused.returncode == 1
    assert "version 99" in refused.stderr and "upgrade crctl" in refused.stderr


def test_connection_errors_name_the_server_never_the_password(tmp_path: Path) -> None:
    url = f"postgresql://bob:hunter2@/nodb?host={tmp_path}&port=5999"
    result = crctl(url, "plan", str(EXAMPLE_ACME))
    assert result.returncode == 1
    assert f"host {tmp_path}" in result.stderr and "port 5999" in result.stderr
    assert "database nodb" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_the_state_header_hides_the_password(pg_database: Callable[[], str]) -> None:
    url = pg_database()
    with_password = url.replace("postgres@", "postgres:s3cret@")
    result = crctl(with_password, "plan", str(EXAMPLE_ACME))
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    assert result.stdout.startswith(f"State: {url}")


def test_migrate_state_both_directions(pg_database: Callable[[], str], tmp_path: Path) -> None:
    local = str(tmp_path / "local")
    users = acme_users()
    users["asmith"]["call_recording"] = {"product": "always-on"}
    changed = tmp_path / "v2" / "acme.yaml"
    changed.parent.mkdir()
    changed.write_text(account_yaml("acme", users))
    globex = REPO / "examples" / "globex.yaml"
    for path in (EXAMPLE_ACME, changed):
        assert crctl(local, "apply", str(path), "--auto-approve").returncode == 0
    assert crctl(local, "apply", str(globex), "--auto-approve", actor="hank").returncode == 0
    assert crctl(local, "terminate", "globex", "--confirm", "globex",
                 actor="hank").returncode == 0
    assert crctl(local, "apply", str(EXAMPLE_ACME.parent / "acme.yaml"),
                 "--auto-approve").returncode == 0
    url = pg_database()
    moved = crctl(local, "migrate-state", "--to", url, "--format", "json")
    assert moved.returncode == 0, moved.stderr
    report = json.loads(moved.stdout)
    assert report["accounts"] == ["acme"] and report["tombstones"] == 1 and report["verified"]
    assert crctl(url, "plan", str(EXAMPLE_ACME), "--detailed-exitcode").returncode == 0
    assert [v["serial"] for v in json.loads(crctl(url, "history", "acme", "--format",
                                                  "json").stdout)][-2:] == [2, 3]
    assert crctl(url, "plan", str(globex)).returncode == 5  # the tombstone came along
    again = crctl(local, "migrate-state", "--to", url)
    assert again.returncode == 1 and "already holds account acme" in again.stderr
    back = str(tmp_path / "back")
    returned = crctl(url, "migrate-state", "--to", back)
    assert returned.returncode == 0, returned.stderr
    assert crctl(back, "plan", str(EXAMPLE_ACME), "--detailed-exitcode").returncode == 0
    assert len(json.loads(crctl(back, "audit", "acme", "--format", "json").stdout)) == \
        len(json.loads(crctl(local, "audit", "acme", "--format", "json").stdout))
    assert crctl(local, "accounts", "--format", "json").returncode == 0  # source untouched


def test_one_run_locks_10000_accounts(pg_database: Callable[[], str]) -> None:
    """Default server settings (max_locks_per_transaction 64): one advisory lock per run,
    a row per account."""
    from reconciler.backends import open_backend

    backend = open_backend(pg_database())
    other = open_backend(backend.url)  # type: ignore[attr-defined]
    accounts = [f"a{i:05d}" for i in range(10000)]
    try:
        with backend.lock(accounts, "bulk@test", "apply", 60.0):
            assert other.holder("a09999").who == "bulk@test"  # type: ignore[union-attr]
        assert other.holder("a00000") is None
    finally:
        backend.close()
        other.close()


HOLD = """
import sys, time
from reconciler.backends import open_backend
backend = open_backend(sys.argv[1], lock_lease=1.0)
with backend.lock(["acme"], "hung@test", "apply", 5.0) as info:
    print(info.id, flush=True)
    time.sleep(120)
"""


def test_a_hung_holder_loses_its_lock_after_the_lease(pg_database: Callable[[], str],
                                                      tmp_path: Path) -> None:
    import os
    import signal

    url = pg_database()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip()
        (tmp_path / "crctl.toml").write_text('lock_lease = "1s"\n')
        busy = subprocess.run([sys.executable, "-m", "reconciler", "apply", str(EXAMPLE_ACME),
                               "--auto-approve", "--lock-timeout", "0.2s", "--state", url],
                              env=crctl_env("jdoe"), capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        assert busy.returncode == 4 and "hung@test" in busy.stderr, busy.stderr
        os.kill(holder.pid, signal.SIGSTOP)  # hung: alive, but its heartbeat stops
        taken = subprocess.run([sys.executable, "-m", "reconciler", "apply",
                                str(EXAMPLE_ACME), "--auto-approve", "--lock-timeout", "20s",
                                "--state", url], env=crctl_env("jdoe"), capture_output=True,
                               text=True, cwd=tmp_path, timeout=120)
        assert taken.returncode == 0, taken.stderr
        assert "Waiting for the lock of account acme (held by lock" in taken.stderr
    finally:
        holder.kill()
        holder.wait()


def test_force_unlock_force_ends_the_holders_session(pg_database: Callable[[], str]) -> None:
    url = pg_database()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        lock_id = holder.stdout.readline().strip()
        refused = crctl(url, "force-unlock", "acme", lock_id)
        assert refused.returncode == 4 and "alive" in refused.stderr
        forced = crctl(url, "force-unlock", "acme", lock_id, "--force")
        assert forced.returncode == 0, forced.stderr
        assert crctl(url, "apply", str(EXAMPLE_ACME), "--auto-approve",
                     "--lock-timeout", "2s").returncode == 0
    finally:
        holder.kill()
        holder.wait()


def test_libpq_environment_alone(pg_server, pg_database: Callable[[], str]) -> None:
    url = pg_database()
    database = url.split("/")[3].split("?")[0]
    env = crctl_env("jdoe", extra={"PGHOST": pg_server.socket_dir, "PGPORT": "5432",
                                   "PGUSER": "postgres", "PGDATABASE": database})
    result = subprocess.run([sys.executable, "-m", "reconciler", "apply", str(EXAMPLE_ACME),
                             "--auto-approve", "--state", "postgresql://"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert crctl(url, "users", "acme").returncode == 0


def _runners() -> Any:
    spec = importlib.util.spec_from_file_location("crctl_runners",
                                                  REPO / "benchmarks" / "runners.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_concurrent_runners_on_disjoint_halves_apply_every_account_once(
        pg_database: Callable[[], str], tmp_path: Path) -> None:
    """DESIGN §7's 8-runner run, small: 40 accounts in two disjoint halves, 2 runners on
    each half at once (benchmarks/runners.py runs 1,000 accounts and 8 runners). Every
    runner exits 0; per half one applies and the other says No changes; every account
    has serial 1, one version and the audit entries of exactly one apply."""
    runners = _runners()
    url = pg_database()
    env = runners.crctl_env()
    a, b, names = runners.write_halves(tmp_path, 40, 5)
    expected = runners.audit_of_one_apply(5, tmp_path, env)
    assert crctl(url, "init").returncode == 0
    _, results = runners.run_all(url, (a, b), 4, env, tmp_path / "logs")
    for r in results:
        assert "Traceback" not in r["stderr"], r["stderr"]

    import psycopg

    with psycopg.connect(url) as conn:
        problems = runners.check(url, names, results,
                                 lambda sql: conn.execute(sql).fetchall(), expected)
    assert problems == []


LOST_ACK = r"""
import sys
import psycopg
from reconciler.backends import postgres

# The commit of the first account write reaches the server, but the client sees the
# connection die (as when the network drops right after COMMIT): the transaction's exit
# commits for real, then the connection is closed and OperationalError raised.
armed: list = []
real_write, real_exit = postgres.PostgresBackend._write, psycopg.Transaction.__exit__

def _write(self, conn, *args, **kwargs):
    real_write(self, conn, *args, **kwargs)
    if not armed:
        armed.append(conn)

def __exit__(self, kind, value, tb):
    result = real_exit(self, kind, value, tb)
    if kind is None and armed and armed[0] is self.connection:
        armed.append(None)  # once
        self.connection.close()
        raise psycopg.OperationalError("server closed the connection unexpectedly")
    return result

postgres.PostgresBackend._write, psycopg.Transaction.__exit__ = _write, __exit__
sys.argv = ["crctl", *sys.argv[1:]]
from reconciler.cli import main
main()
"""


@pytest.mark.parametrize("first", [False, True], ids=["update", "creation"])
def test_a_lost_commit_acknowledgement_is_resolved_by_the_run_id(
        pg_database: Callable[[], str], tmp_path: Path, first: bool) -> None:
    """DESIGN §3.4: "A commit whose acknowledgement was lost (connection cut) is resolved
    by the run's id, never applied twice". The COMMIT succeeds, the client sees a
    connection failure: crctl finds its run id in `versions` and reports the apply as
    committed (exit 0); the state has exactly one new version and one set of audit
    entries, and planning again shows no changes."""
    url = pg_database()
    users = acme_users()
    users["asmith"]["call_recording"] = {"product": "always-on"}
    changed = tmp_path / "v2" / "acme.yaml"
    changed.parent.mkdir()
    changed.write_text(account_yaml("acme", users))
    target = EXAMPLE_ACME if first else changed
    if not first:
        assert crctl(url, "apply", str(EXAMPLE_ACME), "--auto-approve").returncode == 0
    before = json.loads(crctl(url, "audit", "acme", "--format", "json").stdout or "[]")
    planned = json.loads(crctl(url, "plan", str(target), "--format", "json").stdout)
    plan = planned[0] if isinstance(planned, list) else planned
    result = subprocess.run([sys.executable, "-c", LOST_ACK, "apply", str(target),
                             "--auto-approve", "--state", url], cwd=REPO,
                            env=crctl_env("jdoe"), capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert "Apply complete" in result.stdout
    history = json.loads(crctl(url, "history", "acme", "--format", "json").stdout)
    assert [v["serial"] for v in history] == ([1] if first else [1, 2])
    after = json.loads(crctl(url, "audit", "acme", "--format", "json").stdout)
    new = after[len(before):]
    assert after[:len(before)] == before
    assert len(new) == len(plan["actions"]) and {e["serial"] for e in new} == \
        {history[-1]["serial"]}
    assert crctl(url, "plan", str(target), "--detailed-exitcode").returncode == 0


def test_the_readme_documents_every_table_and_column(pg_server,
                                                     pg_database: Callable[[], str]) -> None:
    """The README's PostgreSQL table (what a DBA reads) names exactly the tables and
    views `crctl init` creates, and every column it names exists; every table column is
    named (views list their main columns)."""
    import re

    url = pg_database()
    database = url.split("/")[3].split("?")[0]
    assert crctl(url, "init").returncode == 0
    columns: dict[str, set[str]] = {}
    for line in pg_server.psql("SELECT table_name, column_name FROM information_schema."
                               "columns WHERE table_schema = 'crctl'", database).split():
        table, column = line.split("|")
        columns.setdefault(table, set()).add(column)
    views = set(pg_server.psql("SELECT table_name FROM information_schema.views WHERE "
                               "table_schema = 'crctl'", database).split())
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("| table or view | one row per |", 1)[1].split("\n\n", 1)[0]
    documented: dict[str, set[str]] = {}
    for row in section.strip().splitlines()[1:]:
        names, what = row.strip("|").split("|", 1)
        mentioned = set(re.findall(r"`([a-z_]+)`", what))
        for name in re.findall(r"`([a-z_]+)`", names):
            documented[name] = mentioned
    assert set(documented) == set(columns), set(documented) ^ set(columns)
    for table, cols in columns.items():
        named = documented[table] & cols
        missing = documented[table] - cols - set(columns)
        if table in ("mir_users", "recordings"):  # one row describes both
            named = (documented["mir_users"] | documented["recordings"]) & cols
            missing = set()
        assert not missing, (table, missing)
        if table not in views:
            assert named == cols, (table, cols - named)


@pytest.mark.parametrize("seed", [1, 2])
def test_runners_on_overlapping_sets_with_random_kills_apply_every_account_once(
        pg_database: Callable[[], str], tmp_path: Path, seed: int) -> None:
    """The issue's chaos run, small: 6 runners on A, B and A+B at once, 2 of them
    SIGKILLed at seeded random moments, then one final apply of both halves. Every runner
    not killed exits 0, and every account still has serial 1, one version and the audit
    entries of exactly one apply (a killed runner's transaction rolls back, its locks die
    with its session)."""
    import random

    import psycopg

    runners = _runners()
    url = pg_database()
    env = runners.crctl_env()
    a, b, names = runners.write_halves(tmp_path, 40, 5)
    expected = runners.audit_of_one_apply(5, tmp_path, env)
    assert crctl(url, "init").returncode == 0
    rng = random.Random(seed)
    # each kill lands at its seeded moment or, if the runner holds no lock yet, at the
    # first moment it does: mid-apply on a fast machine as on a slow one
    kills = {i: rng.uniform(0.0, 0.3) for i in rng.sample(range(6), 2)}
    with psycopg.connect(url, autocommit=True) as watcher:
        def holders() -> set[int]:
            return {row[0] for row in watcher.execute("SELECT pid FROM crctl.locks")}
        _, results = runners.run_all(url, (a, b), 6, env, tmp_path / "logs", overlap=True,
                                     kills=kills, holders=holders)
    assert sum(r["killed"] for r in results) == 2, [r["exit"] for r in results]
    results.append(runners.converge(url, (a, b), env))
    for r in results:
        assert "Traceback" not in r["stderr"], r["stderr"]
    with psycopg.connect(url) as conn:
        problems = runners.check(url, names, results,
                                 lambda sql: conn.execute(sql).fetchall(), expected)
    assert problems == []


CUT = r"""
import os, subprocess, sys
import psycopg
from reconciler.backends import postgres

# Inside the account write's transaction, before its COMMIT, the server side goes away:
# the working connection is ended by pg_terminate_backend, or the whole server restarts
# with `pg_ctl restart -m immediate` (a crash). The transaction never commits.
fault, url = os.environ["CUT"], os.environ["CUT_URL"]
real_write = postgres.PostgresBackend._write

def _write(self, conn, *args, **kwargs):
    real_write(self, conn, *args, **kwargs)
    if fault == "terminate":
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))
    else:
        cmd = [os.environ["CUT_PG_CTL"], "-D", os.environ["CUT_DATA"], "-l",
               os.environ["CUT_LOG"], "-m", "immediate", "-w", "-t", "60", "restart"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, stdin=subprocess.DEVNULL)

postgres.PostgresBackend._write = _write
sys.argv = ["crctl", *sys.argv[1:]]
from reconciler.cli import main
main()
"""


@pytest.mark.parametrize("fault", ["terminate", "restart"])
def test_a_connection_cut_mid_apply_leaves_the_state_as_before(
        pg_server, pg_database: Callable[[], str], tmp_path: Path, fault: str) -> None:
    """The issue's `pg_terminate_backend` of the working connection and `pg_ctl restart
    -m immediate` mid-apply: the state is as before (serial 1, the old users, no new audit
    entries), crctl exits 1 naming the problem (no traceback), and the retry succeeds."""

    import pgserver

    if fault == "restart":  # its own server: a restart must not cut the other tests' one
        server = pgserver.start()
        try:
            _cut_mid_apply(server, server.url, tmp_path, fault)
        finally:
            server.stop()
    else:
        _cut_mid_apply(pg_server, pg_database(), tmp_path, fault)


def _cut_mid_apply(pg_server: Any, url: str, tmp_path: Path, fault: str) -> None:
    import os

    assert crctl(url, "apply", str(EXAMPLE_ACME), "--auto-approve").returncode == 0
    users = acme_users()
    users["asmith"]["call_recording"] = {"product": "always-on"}
    changed = tmp_path / "v2" / "acme.yaml"
    changed.parent.mkdir()
    changed.write_text(account_yaml("acme", users))
    audit = crctl(url, "audit", "acme", "--format", "json").stdout
    env = crctl_env("jdoe", extra={
        "CUT": fault, "CUT_URL": url, "CUT_DATA": os.path.join(pg_server.base, "data"),
        "CUT_LOG": os.path.join(pg_server.base, "log"),
        "CUT_PG_CTL": os.path.join(pg_server.bindir, "pg_ctl")})
    cut = subprocess.run([sys.executable, "-c", CUT, "apply", str(changed), "--auto-approve",
                          "--state", url], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=180, stdin=subprocess.DEVNULL)
    assert "Traceback" not in cut.stderr, cut.stderr
    assert cut.returncode == 1, (cut.returncode, cut.stdout, cut.stderr)
    assert "writing the account failed" in cut.stderr, cut.stderr
    history = json.loads(crctl(url, "history", "acme", "--format", "json").stdout)
    assert [v["serial"] for v in history] == [1]
    assert crctl(url, "audit", "acme", "--format", "json").stdout == audit
    assert crctl(url, "plan", str(EXAMPLE_ACME), "--detailed-exitcode").returncode == 0
    retry = crctl(url, "apply", str(changed), "--auto-approve")
    assert retry.returncode == 0, retry.stderr
    assert crctl(url, "plan", str(changed), "--detailed-exitcode").returncode == 0
