"""The PostgreSQL figures of DESIGN §7, next to the local backend's, in one run.

It starts its own throwaway PostgreSQL server (tests/pgserver.py: initdb + pg_ctl, a unix
socket, fsync off, no TCP port) and, for each size (default 10,000 and 100,000 users),
measures as separate processes (start-up included, median of --repeat runs, local and
PostgreSQL runs alternating so that a shared machine's load weighs on both), with the
same seeded files as benchmarks/run.py:

  plan      crctl plan of the 1%-changed file: local directory vs PostgreSQL (≤ 1.3×)
  apply-1%  crctl apply of the 1%-changed file: local vs PostgreSQL (≤ 1.5×)

and the rows one PostgreSQL 1% apply writes (inserted, updated, deleted per table, from
pg_stat_user_tables, and the row counts before/after), so "writes in proportion to the
change" is a number, not a claim. Each apply-1% run starts from a copy of the applied
state: `cp -r` of the directory locally, `CREATE DATABASE ... TEMPLATE` on PostgreSQL
(neither copy is timed).

With --lock-free it also measures how long after `kill -9` of a process holding an
account's lock a waiting `crctl apply` gets it, on both backends (see lockfree.py).

    python benchmarks/pg.py                        # 10k, 100k, --repeat 5
    python benchmarks/pg.py --sizes 10000 --repeat 3 --lock-free
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import pgserver  # noqa: E402  (tests/pgserver.py: the one way a throwaway server starts)
from generate import change, make_users, to_yaml  # noqa: E402
from run import TODAY, run  # noqa: E402

TABLES = ("accounts", "versions", "user_versions", "mir_users", "recordings", "audit")


def crctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRCTL_")}
    env.update({"CRCTL_TODAY": TODAY, "CRCTL_ACTOR": "user000000", "NO_COLOR": "1"})
    return env


def counts(server: pgserver.Server, database: str) -> dict[str, int]:
    out = server.psql(" UNION ALL ".join(
        f"SELECT '{t}', count(*) FROM crctl.{t}" for t in TABLES), database)
    return {name: int(n) for name, n in (line.split("|") for line in out.split())}


def tuple_stats(server: pgserver.Server, database: str) -> dict[str, tuple[int, int, int]]:
    """Cumulative (inserted, updated, deleted) rows per table since the database exists."""
    out = server.psql("SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM "
                      "pg_stat_user_tables WHERE schemaname = 'crctl'", database)
    rows = (line.split("|") for line in out.split())
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows if r[0] in TABLES}


def rows_written(server: pgserver.Server, database: str, apply: list[str],
                 env: dict[str, str]) -> dict[str, Any]:
    """Apply once and report what it wrote, table by table."""
    before, stats_before = counts(server, database), tuple_stats(server, database)
    run(apply, env)
    time.sleep(1.5)  # the ended session's statistics reach pg_stat_user_tables
    after, stats_after = counts(server, database), tuple_stats(server, database)
    tables = {}
    for t in TABLES:
        ins, upd, dele = (a - b for a, b in zip(stats_after.get(t, (0, 0, 0)),
                                                 stats_before.get(t, (0, 0, 0)), strict=True))
        tables[t] = {"rows_before": before[t], "rows_after": after[t], "inserted": ins,
                     "updated": upd, "deleted": dele}
    return tables


Step = tuple[str, Callable[[], list[str]], Callable[[], None] | None]


def pair(a: Step, b: Step, repeat: int, env: dict[str, str]) -> tuple[dict, dict]:
    """Both commands, alternately (a, b, a, b...), so that on a shared machine the load
    of the moment weighs on both sides of a ratio alike; median of each."""
    out = []
    for name, _, _ in (a, b):
        out.append({"op": name, "runs_s": [], "peak_mib": 0.0})
    for _ in range(repeat):
        for (_, make_cmd, prepare), result in zip((a, b), out, strict=True):
            if prepare:
                prepare()
            seconds, peak, _ = run(make_cmd(), env)
            result["runs_s"].append(seconds)
            result["peak_mib"] = max(result["peak_mib"], peak)
    for result in out:
        result["median_s"] = statistics.median(result["runs_s"])
    return out[0], out[1]


def bench_size(server: pgserver.Server, n: int, repeat: int, work: Path) -> dict[str, Any]:
    users = make_users(n)
    changed_users = change(users, 1.0)
    base = work / "base" / "big.yaml"
    changed = work / "changed" / "big.yaml"
    for path, content in ((base, users), (changed, changed_users)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_yaml("big", content), encoding="utf-8")
    env = crctl_env()
    crctl = [sys.executable, "-m", "reconciler"]
    applied, scratch = work / "state-base", work / "state-scratch"
    template, copy = f"base{n}", f"scratch{n}"
    server.psql(f"CREATE DATABASE {template}", database="postgres")
    url, scratch_url = server.url_for(template), server.url_for(copy)
    run([*crctl, "--state-dir", str(applied), "apply", str(base), "--auto-approve"], env)
    run([*crctl, "--state", url, "apply", str(base), "--auto-approve"], env)

    def copy_local() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(applied, scratch)

    def copy_pg() -> None:
        server.psql(f"DROP DATABASE IF EXISTS {copy}", database="postgres")
        server.psql(f"CREATE DATABASE {copy} TEMPLATE {template}", database="postgres")

    plan_local, plan_pg = pair(
        ("plan local", lambda: [*crctl, "--state-dir", str(applied), "plan", str(changed)],
         None),
        ("plan pg", lambda: [*crctl, "--state", url, "plan", str(changed)], None),
        repeat, env)
    apply_local, apply_pg = pair(
        ("apply-1% local", lambda: [*crctl, "--state-dir", str(scratch), "apply",
                                    str(changed), "--auto-approve"], copy_local),
        ("apply-1% pg", lambda: [*crctl, "--state", scratch_url, "apply", str(changed),
                                 "--auto-approve"], copy_pg),
        repeat, env)
    results = [plan_local, plan_pg, apply_local, apply_pg]
    copy_pg()
    written = rows_written(server, copy, [*crctl, "--state", scratch_url, "apply",
                                          str(changed), "--auto-approve"], env)
    server.psql(f"DROP DATABASE IF EXISTS {copy}", database="postgres")
    by_op = {r["op"]: r for r in results}
    changed_count = sum(1 for k in set(users) | set(changed_users)
                        if users.get(k) != changed_users.get(k))
    return {"users": n, "changed_users": changed_count, "results": results,
            "plan_ratio": by_op["plan pg"]["median_s"] / by_op["plan local"]["median_s"],
            "apply_ratio": (by_op["apply-1% pg"]["median_s"]
                            / by_op["apply-1% local"]["median_s"]),
            "plan_ratio_paired": _paired(by_op["plan pg"], by_op["plan local"]),
            "apply_ratio_paired": _paired(by_op["apply-1% pg"], by_op["apply-1% local"]),
            "rows_written": written}


def _paired(pg: dict[str, Any], local: dict[str, Any]) -> float:
    """The median of each run's ratio to the local run right before it."""
    return statistics.median(p / q for p, q in zip(pg["runs_s"], local["runs_s"], strict=True))


def report(sizes: list[dict[str, Any]]) -> str:
    lines = [f"{'operation':<16}{'users':>9}{'median s':>10}{'runs':>28}{'MiB':>6}"]
    for size in sizes:
        for r in size["results"]:
            runs = " ".join(f"{t:.2f}" for t in r["runs_s"])
            lines.append(f"{r['op']:<16}{size['users']:>9,}{r['median_s']:>10.2f}"
                         f"{runs:>28}{r['peak_mib']:>6.0f}")
        lines.append(f"  pg/local (ratio of medians; median of paired ratios): plan "
                     f"{size['plan_ratio']:.2f}x; {size['plan_ratio_paired']:.2f}x (target <= "
                     f"1.3), apply-1% {size['apply_ratio']:.2f}x; "
                     f"{size['apply_ratio_paired']:.2f}x (target <= 1.5)")
        lines.append(f"  rows written by one 1% apply ({size['changed_users']} users "
                     "changed): table inserted/updated/deleted (rows before -> after)")
        for table, w in size["rows_written"].items():
            lines.append(f"    {table:<14}{w['inserted']:>7}/{w['updated']}/{w['deleted']}"
                         f"  ({w['rows_before']} -> {w['rows_after']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lock-free", action="store_true",
                        help="also measure the lock-free time after kill -9 of a holder")
    parser.add_argument("--out", default=str(HERE / "out" / "pg.json"))
    args = parser.parse_args()
    server = pgserver.start()
    sizes: list[dict[str, Any]] = []
    lock_free: dict[str, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="crctl-pgbench-") as tmp:
            for n in (int(s) for s in args.sizes.split(",") if s):
                sizes.append(bench_size(server, n, args.repeat, Path(tmp) / str(n)))
                print(f"... {n:,} users done", file=sys.stderr)
            if args.lock_free:
                from lockfree import measure_both

                lock_free = measure_both(server, Path(tmp) / "lockfree", args.repeat)
    finally:
        server.stop()
    print(report(sizes))
    if lock_free:
        from lockfree import describe

        print(describe(lock_free))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"today": TODAY, "repeat": args.repeat, "sizes": sizes,
                               "lock_free": lock_free}, indent=2) + "\n", encoding="utf-8")
    print(f"\nResults written to {out}")


if __name__ == "__main__":
    main()
