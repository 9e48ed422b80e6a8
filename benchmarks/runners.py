"""Concurrent runners against one PostgreSQL state (DESIGN §7): "8 runners applying
disjoint halves of 1,000 accounts concurrently finish with every account applied once".

It writes --accounts small accounts (--users each, benchmarks/generate.py) as desired
files, half in directory A and half in B, and starts --runners concurrent
`crctl apply DIR --auto-approve` processes against one PostgreSQL state: half of them on
A, half on B. Why that assignment: the halves are disjoint, so the A runners and the B
runners must make progress side by side (no lock of one half may block the other), and
each half is raced by several runners at once, which is what "applied once" is about —
exactly one of them applies an account, the others, queued behind its locks (taken in
sorted order, so nobody deadlocks), re-plan under the lock and find `No changes`.

Then it checks, in the database: every account has serial 1, exactly one row in
`versions`, and exactly the audit entries of one apply (all with serial 1); every runner
exited 0, and each half's changes were applied by exactly one runner (the others said
`No changes.`). It prints the total wall time and the time of each runner.

`--overlap` makes every third runner apply both halves (its account set overlaps all
the others'); `--kills K` SIGKILLs K runners at random moments (seeded) and then runs
one final apply of both halves: every account must still be applied exactly once (a
killed runner's transaction rolls back, its locks die with its session, and whoever
re-plans afterwards sees what was committed).

    python benchmarks/runners.py                           # 1,000 accounts, 8 runners
    python benchmarks/runners.py --overlap --kills 3       # overlapping sets, 3 SIGKILLs
    python benchmarks/runners.py --accounts 40 --runners 4 --url postgresql://...

Without --url it starts its own throwaway server (tests/pgserver.py). tests/
test_postgres_cli.py runs the same check at 40 accounts and 4 runners (`check`).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from generate import make_users, to_yaml  # noqa: E402

ACTOR = "user000000"  # the Decision Maker of every generated account


def write_halves(root: Path, accounts: int, users: int) -> tuple[Path, Path, list[str]]:
    """Directories A and B, each with half of the accounts (one file per account)."""
    names = [f"acct{i:05d}" for i in range(accounts)]
    people = make_users(users)
    halves = (root / "desired" / "A", root / "desired" / "B")
    every = root / "desired" / "all"  # both halves' files (for overlapping runners)
    every.mkdir(parents=True, exist_ok=True)
    for half in halves:
        half.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        half = halves[0] if i < accounts // 2 else halves[1]
        for where in (half, every):
            (where / f"{name}.yaml").write_text(to_yaml(name, people), encoding="utf-8")
    return halves[0], halves[1], names


def run_all(url: str, halves: tuple[Path, Path], runners: int, env: dict[str, str],
            logs: Path, overlap: bool = False, kills: dict[int, float] | None = None,
            holders: Callable[[], set[int]] | None = None
            ) -> tuple[float, list[dict[str, Any]]]:
    """Start every runner at once; wait for all. Returns (wall seconds, per runner).

    Runner i applies half A or B (alternately); with `overlap`, every third runner applies
    both (`crctl apply desired/all`: its account set overlaps everyone's).
    `kills` maps a runner to the second at which it gets SIGKILL (if still running);
    with `holders` (the pids holding account locks now), the kill waits until that runner
    holds locks, so it lands mid-apply however fast the machine is, never after the end.
    Output goes to files in `logs`: a runner whose plan fills a pipe nobody is reading
    yet would block while holding its locks, and stall the runners queued behind it."""
    logs.mkdir(parents=True, exist_ok=True)
    kills = kills or {}
    start = time.perf_counter()
    procs = []
    for i in range(runners):
        both = overlap and i % 3 == 2  # `apply` takes one path: desired/all
        out, err = (open(logs / f"runner{i}.{n}", "w+", encoding="utf-8")  # noqa: SIM115
                    for n in ("out", "err"))
        path = halves[0].parent / "all" if both else halves[i % 2]
        procs.append(("A+B" if both else path.name, out, err, subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", str(path), "--auto-approve",
             "--lock-timeout", "20m", "--state", url], env=env, text=True,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err)))
    ended: dict[int, float] = {}
    while len(ended) < len(procs):  # each runner's own end time, whatever the order
        now = time.perf_counter() - start
        for i, (_, _, _, proc) in enumerate(procs):
            if i in kills and i not in ended and now >= kills[i] and proc.poll() is None \
                    and (holders is None or proc.pid in holders()):
                proc.send_signal(signal.SIGKILL)
            if i not in ended and proc.poll() is not None:
                ended[i] = time.perf_counter() - start
        if time.perf_counter() - start > 3600:
            raise SystemExit("the runners did not finish within an hour")
        time.sleep(0.02)
    results = []
    for i, (half, out, err, proc) in enumerate(procs):
        results.append({"half": half, "exit": proc.returncode, "seconds": ended[i],
                        "killed": i in kills and proc.returncode == -signal.SIGKILL})
        for name, stream in (("stdout", out), ("stderr", err)):
            stream.seek(0)
            results[-1][name] = stream.read()
            stream.close()
    return time.perf_counter() - start, results


def check(url: str, names: list[str], results: list[dict[str, Any]],
          query: Callable[[str], list[tuple[Any, ...]]], expected_audit: int) -> list[str]:
    """What went wrong (empty: every account applied exactly once, every runner fine)."""
    problems = []
    for r in results:
        if r["exit"] != 0 and not r.get("killed"):
            problems.append(f"runner on {r['half']} exited {r['exit']}: {r['stderr'][-500:]}")
    chaos = any(r.get("killed") or "+" in r["half"] for r in results)
    for half in () if chaos else ("A", "B"):  # who applied is only fixed without chaos
        mine = [r for r in results if r["half"] == half]
        applied = [r for r in mine if "Apply complete" in r["stdout"]]
        idle = [r for r in mine if "No changes." in r["stdout"]
                and "Apply complete" not in r["stdout"]]
        if len(applied) != 1 or len(idle) != len(mine) - 1:
            problems.append(f"half {half}: {len(applied)} runners applied, {len(idle)} said "
                            f"No changes (of {len(mine)})")
    heads = {a: s for a, s in query("SELECT account, serial FROM crctl.accounts")}
    versions = {a: (n, lo, hi) for a, n, lo, hi in query(
        "SELECT account, count(*), min(serial), max(serial) FROM crctl.versions "
        "GROUP BY account")}
    audit = {a: (n, s) for a, n, s in query(
        "SELECT account, count(*), array_agg(DISTINCT serial) FROM crctl.audit "
        "GROUP BY account")}
    for name in names:
        if heads.get(name) != 1:
            problems.append(f"{name}: serial {heads.get(name)} (expected 1)")
        if versions.get(name) != (1, 1, 1):
            problems.append(f"{name}: versions (count, min, max) {versions.get(name)}")
        count, serials = audit.get(name, (0, []))
        if count != expected_audit or list(serials) != [1]:
            problems.append(f"{name}: {count} audit entries with serials {serials} "
                            f"(expected {expected_audit}, all serial 1)")
    extra = set(heads) - set(names)
    if extra:
        problems.append(f"unexpected accounts: {sorted(extra)[:5]}")
    return problems


def audit_of_one_apply(users: int, work: Path, env: dict[str, str]) -> int:
    """How many audit entries one apply of one such account writes (local scratch)."""
    one = work / "one" / "acctref.yaml"
    one.parent.mkdir(parents=True, exist_ok=True)
    one.write_text(to_yaml("acctref", make_users(users)), encoding="utf-8")
    state = work / "one-state"
    subprocess.run([sys.executable, "-m", "reconciler", "apply", str(one), "--auto-approve",
                    "--state-dir", str(state)], env=env, check=True, capture_output=True)
    return sum(1 for _ in (state / "audit" / "acctref.jsonl").open(encoding="utf-8"))


def crctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRCTL_")}
    env.update({"CRCTL_TODAY": "2026-11-25", "CRCTL_ACTOR": ACTOR, "NO_COLOR": "1"})
    return env


def converge(url: str, halves: tuple[Path, Path], env: dict[str, str]) -> dict[str, Any]:
    """After kills: one more apply of everything finishes what the killed runners left
    (a killed runner's locks die with its session; its uncommitted account rolled back)."""
    every = halves[0].parent / "all"
    done = subprocess.run([sys.executable, "-m", "reconciler", "apply", str(every),
                           "--auto-approve", "--lock-timeout", "60s", "--state", url],
                          env=env, text=True, capture_output=True, stdin=subprocess.DEVNULL)
    return {"half": "final", "exit": done.returncode, "stdout": done.stdout,
            "stderr": done.stderr, "seconds": 0.0}


def measure(url: str | None, accounts: int = 1000, users: int = 5, runners: int = 8,
            overlap: bool = False, kills: int = 0, seed: int = 1) -> dict[str, Any]:
    """One concurrent run and its check (benchmarks/run.py --pg calls this too).
    Without `url` it starts (and stops) its own throwaway server (tests/pgserver.py)."""
    import psycopg

    rng = random.Random(seed)
    kill_at = {i: rng.uniform(0.5, 8.0) for i in rng.sample(range(runners), kills)}
    server = None
    if url is None:
        import pgserver

        server = pgserver.start()
        url = server.url
    try:
        with tempfile.TemporaryDirectory(prefix="crctl-runners-") as tmp:
            env = crctl_env()
            a, b, names = write_halves(Path(tmp), accounts, users)
            expected = audit_of_one_apply(users, Path(tmp), env)
            subprocess.run([sys.executable, "-m", "reconciler", "init", "--state", url],
                           env=env, check=True, capture_output=True)
            with psycopg.connect(url, autocommit=True) as watcher:
                def holders() -> set[int]:
                    return {row[0] for row in watcher.execute("SELECT pid FROM crctl.locks")}
                wall, results = run_all(url, (a, b), runners, env, Path(tmp) / "logs",
                                        overlap=overlap, kills=kill_at, holders=holders)
            if kill_at:
                results.append(converge(url, (a, b), env))
            with psycopg.connect(url) as conn:
                problems = check(url, names, results,
                                 lambda q: conn.execute(q).fetchall(), expected)
    finally:
        if server is not None:
            server.stop()
    return {"runners": runners, "accounts": accounts, "users": users, "overlap": overlap,
            "killed": len(kill_at), "wall_s": wall, "audit_per_account": expected,
            "problems": problems,
            "per_runner": [{"half": r["half"], "exit": r["exit"], "seconds": r["seconds"],
                            "said": ("killed" if r.get("killed") else "applied"
                                     if "Apply complete" in r["stdout"] else "No changes")}
                           for r in results]}


def describe(result: dict[str, Any]) -> str:
    lines = [f"{result['runners']} runners, {result['accounts']} accounts x "
             f"{result['users']} users ("
             f"{'overlapping sets: A, B, A+B' if result['overlap'] else 'disjoint halves A and B'}"
             f", {result['killed']} killed): {result['wall_s']:.1f} s wall"]
    for r in result["per_runner"]:
        lines.append(f"  runner on {r['half']}: exit {r['exit']}, {r['seconds']:.1f} s, "
                     f"{r['said']}")
    if result["problems"]:
        lines.append(f"FAILED ({len(result['problems'])} problems):")
        lines += [f"  {p}" for p in result["problems"][:20]]
    else:
        lines.append("every account applied exactly once: serial 1, one version, "
                     f"{result['audit_per_account']} audit entries each")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--runners", type=int, default=8)
    parser.add_argument("--overlap", action="store_true",
                        help="every third runner applies both halves (overlapping sets)")
    parser.add_argument("--kills", type=int, default=0,
                        help="SIGKILL this many runners at random moments, then converge")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="an empty PostgreSQL database (default: start one)")
    args = parser.parse_args()
    result = measure(args.url, args.accounts, args.users, args.runners, args.overlap,
                     args.kills, args.seed)
    print(describe(result))
    if result["problems"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
