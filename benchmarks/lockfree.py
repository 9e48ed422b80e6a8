"""Lock-free time after `kill -9` of a lock holder (DESIGN §3.2: a lock dies with its
holder), on the local backend and on PostgreSQL.

The holder is a real `crctl apply examples/acme.yaml` into an empty state, stopped at its
confirmation prompt (it holds the account's lock from reading the state through the
prompt, §6). A second `crctl apply --auto-approve --lock-timeout 60s` is started and
waits ("Waiting for the lock of account acme ..."). Then the holder is SIGKILLed and the
clock runs until the waiter's pid is the one in the lock (the lock file locally, the
`locks` row on PostgreSQL), polled every millisecond. The figure is what a user sees,
so it includes the waiter's retry back-off (10 ms doubling to at most 200 ms, base.py);
on PostgreSQL the dead session's advisory lock is gone as soon as the server notices the
closed socket.

    python benchmarks/lockfree.py --repeat 5     # starts its own PostgreSQL server
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
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

import pgserver  # noqa: E402

ACME = HERE.parent / "examples" / "acme.yaml"
_databases = itertools.count(1)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRCTL_")}
    env.update({"CRCTL_TODAY": "2026-11-25", "CRCTL_ACTOR": "jdoe", "NO_COLOR": "1"})
    return env


def _state_args(location: str) -> list[str]:
    return ["--state" if "://" in location else "--state-dir", location]


def once(location: str, holder_pid_of: Callable[[], int | None]) -> float:
    """One kill: seconds from SIGKILL of the holder to the waiter holding the lock."""
    crctl = [sys.executable, "-m", "reconciler", *_state_args(location)]
    holder = subprocess.Popen([*crctl, "apply", str(ACME)], env=_env(), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    waiter = None
    try:
        assert holder.stdout is not None
        seen = ""
        while "Only 'yes' will be accepted" not in seen:
            chunk = holder.stdout.read(1)
            if not chunk:
                raise SystemExit(f"the holder ended before its prompt: {seen}")
            seen += chunk
        waiter = subprocess.Popen([*crctl, "apply", str(ACME), "--auto-approve",
                                   "--lock-timeout", "60s"], env=_env(), text=True,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        assert waiter.stderr is not None
        line = waiter.stderr.readline()
        if "Waiting for the lock of account acme" not in line:
            raise SystemExit(f"the waiter did not wait: {line}")
        time.sleep(0.5)  # the waiter's back-off is at its usual pace
        killed = time.perf_counter()
        os.kill(holder.pid, signal.SIGKILL)
        while holder_pid_of() != waiter.pid:
            if waiter.poll() is not None or time.perf_counter() - killed > 60:
                raise SystemExit("the waiter never took the lock")
            time.sleep(0.001)
        free = time.perf_counter() - killed
        _, err = waiter.communicate(timeout=120)
        if waiter.returncode != 0:
            raise SystemExit(f"the waiter failed ({waiter.returncode}): {line}{err}")
        return free
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait()


def _local_pid(state: Path) -> Callable[[], int | None]:
    path = state / "locks" / "acme.lock"

    def pid() -> int | None:
        try:
            data = json.loads(path.read_bytes() or b"null")
        except (OSError, ValueError):
            return None
        return data.get("pid") if isinstance(data, dict) else None
    return pid


def _pg_pid(url: str) -> Callable[[], int | None]:
    import psycopg

    conn = psycopg.connect(url, autocommit=True)

    def pid() -> int | None:
        try:
            row = conn.execute("SELECT pid FROM crctl.locks WHERE account = 'acme'").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return row[0] if row else None
    return pid


def measure_both(server: pgserver.Server, work: Path, repeat: int) -> dict[str, Any]:
    """Median and runs of the lock-free time, local and PostgreSQL."""
    local, pg = [], []
    for i in range(repeat):
        state = work / f"state{i}"
        local.append(once(str(state), _local_pid(state)))
        name = f"lockfree{next(_databases)}"
        server.psql(f"CREATE DATABASE {name}", database="postgres")
        url = server.url_for(name)
        subprocess.run([sys.executable, "-m", "reconciler", "init", "--state", url],
                       env=_env(), check=True, capture_output=True)
        pg.append(once(url, _pg_pid(url)))
    return {"local": {"median_s": statistics.median(local), "runs_s": local},
            "postgresql": {"median_s": statistics.median(pg), "runs_s": pg}}


def describe(result: dict[str, Any]) -> str:
    lines = ["lock-free time after kill -9 of the holder (until a waiting apply holds it):"]
    for name in ("local", "postgresql"):
        r = result[name]
        runs = " ".join(f"{t * 1000:.0f}" for t in r["runs_s"])
        lines.append(f"  {name:<11} median {r['median_s'] * 1000:6.0f} ms   runs (ms): {runs}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    server = pgserver.start()
    try:
        with tempfile.TemporaryDirectory(prefix="crctl-lockfree-") as tmp:
            result = measure_both(server, Path(tmp), args.repeat)
    finally:
        server.stop()
    print(describe(result))


if __name__ == "__main__":
    main()
