"""The benchmark of DESIGN §7: crctl against the floor and the naive pipeline.

For each size (default 1,000 / 10,000 / 100,000 users) it generates a seeded account
and a copy with 1% of the users changed, then measures, as separate processes (start-up
included, median of --repeat runs, peak RSS from wait4):

  floor       libyaml's event scan of the file, building nothing
  validate    crctl validate
  plan        crctl plan of the 1%-changed file against the applied account
  apply-new   crctl apply of the whole account into an empty state directory
  apply-1%    crctl apply of the 1%-changed file
  naive       yaml.safe_load + whole-document jsonschema + whole-document DeepDiff

It prints a table (seconds, ratio to the floor, peak MiB) and writes the results as JSON.

    python benchmarks/run.py                       # 1k, 10k, 100k
    python benchmarks/run.py --sizes 1000 --repeat 1 --no-naive
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import change, make_users, to_yaml  # noqa: E402

TODAY = "2026-11-25"
FLOOR = """
import sys
from yaml.cyaml import CParser
from yaml.events import StreamEndEvent
text = open(sys.argv[1], 'rb').read().decode('utf-8')
get = CParser(text).get_event
while type(get()) is not StreamEndEvent:
    pass
"""
NAIVE = """
import json, sys, yaml, jsonschema
from deepdiff import DeepDiff
from reconciler.schema import load_schema
desired = yaml.safe_load(open(sys.argv[1], encoding='utf-8'))
jsonschema.validate(desired, load_schema('account.schema.json'))
portal = json.load(open(sys.argv[2], encoding='utf-8'))
current = {u['username']: {k: v for k, v in u.items() if k != 'username' and v not in (None, [])}
           for u in portal['users'].values()}
for u in current.values():
    if u.get('call_recording'):
        u['call_recording'] = {'product': u['call_recording']['product']}
print(len(DeepDiff(current, desired['users'], ignore_order=True)))
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB, exit code) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 2):
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"benchmark step failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    if proc.stderr:
        proc.stderr.close()
    return elapsed, usage.ru_maxrss / 1024, proc.returncode


def measure(name: str, make_cmd, repeat: int, env: dict[str, str], prepare=None) -> dict:
    times, peaks = [], []
    for _ in range(repeat):
        if prepare:
            prepare()
        seconds, peak, _ = run(make_cmd(), env)
        times.append(seconds)
        peaks.append(peak)
    return {"op": name, "median_s": statistics.median(times), "runs_s": times,
            "peak_mib": max(peaks)}


def bench_size(n: int, repeat: int, naive: bool, work: Path) -> list[dict]:
    users = make_users(n)
    base = work / "base" / "big.yaml"
    changed = work / "changed" / "big.yaml"
    base.parent.mkdir(parents=True, exist_ok=True)
    changed.parent.mkdir(parents=True, exist_ok=True)
    base.write_text(to_yaml("big", users), encoding="utf-8")
    changed.write_text(to_yaml("big", change(users, 1.0)), encoding="utf-8")
    env = {**os.environ, "CRCTL_TODAY": TODAY, "CRCTL_ACTOR": "user000000", "NO_COLOR": "1"}
    crctl = [sys.executable, "-m", "reconciler"]
    applied = work / "state-base"
    scratch = work / "state-scratch"
    run([*crctl, "--state-dir", str(applied), "apply", str(base), "--auto-approve"], env)

    def fresh() -> None:
        shutil.rmtree(scratch, ignore_errors=True)

    def copy_applied() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(applied, scratch)

    results = [
        measure("floor", lambda: [sys.executable, "-c", FLOOR, str(changed)], repeat, env),
        measure("validate", lambda: [*crctl, "validate", str(changed)], repeat, env),
        measure("plan", lambda: [*crctl, "--state-dir", str(applied), "plan", str(changed)],
                repeat, env),
        measure("apply-new", lambda: [*crctl, "--state-dir", str(scratch), "apply", str(base),
                                      "--auto-approve"], repeat, env, prepare=fresh),
        measure("apply-1%", lambda: [*crctl, "--state-dir", str(scratch), "apply",
                                     str(changed), "--auto-approve"], repeat, env,
                prepare=copy_applied),
    ]
    if naive:
        portal = applied / "portal" / "big.json"
        results.append(measure("naive", lambda: [sys.executable, "-c", NAIVE, str(changed),
                                                 str(portal)], 1, env))
    floor = results[0]["median_s"]
    for r in results:
        r["users"] = n
        r["ratio_to_floor"] = r["median_s"] / floor if floor else None
        r["us_per_user"] = r["median_s"] / n * 1e6
    return results


def table(results: list[dict]) -> str:
    sizes = sorted({r["users"] for r in results})
    ops = list(dict.fromkeys(r["op"] for r in results))
    head = f"{'operation':<10}" + "".join(f"{f'{n:,} users':>28}" for n in sizes)
    sub = f"{'':<10}" + "".join(f"{'s   xfloor   MiB':>28}" for _ in sizes)
    lines = [head, sub]
    for op in ops:
        row = f"{op:<10}"
        for n in sizes:
            r = next((x for x in results if x["users"] == n and x["op"] == op), None)
            cell = (f"{r['median_s']:7.2f} {r['ratio_to_floor']:7.2f} {r['peak_mib']:7.0f}"
                    if r else "-")
            row += f"{cell:>28}"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive pipeline")
    parser.add_argument("--out", default=str(HERE / "out" / "results.json"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="crctl-bench-") as tmp:
        for n in sizes:
            results += bench_size(n, args.repeat, not args.no_naive, Path(tmp) / str(n))
            print(f"... {n:,} users done", file=sys.stderr)
    print(table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"today": TODAY, "repeat": args.repeat, "results": results},
                              indent=2) + "\n", encoding="utf-8")
    print(f"\nResults written to {out}")


if __name__ == "__main__":
    main()
