"""The benchmark of DESIGN §7: crctl against the floor, the naive pipeline and its peers.

Every figure is a separate process (start-up included) measured in the same run as its
reference, median of --repeat runs; memory is the measured process's own peak RSS
(through benchmarks/child.py: the benchmark's own memory is not counted). Sections:

  single   per size (default 1,000 / 10,000 / 100,000 users), a seeded account and a
           copy with 1% of the users changed:
             floor       libyaml's event scan of the file, building nothing
             validate    crctl validate
             plan        crctl plan of the 1%-changed file against the applied account
             apply-new   crctl apply of the whole account into an empty state directory
             apply-1%    crctl apply of the 1%-changed file
             naive       yaml.safe_load + whole-document jsonschema + whole-document
                         DeepDiff (once, largest size; --no-naive skips it)
  pinned   plan of the largest size and the floor, both pinned to CPU 0 (taskset -c 0)
  msp      directories of many accounts (default 1,000 x 50 and 10,000 x 10 users), each
           next to one account with as many users: validate, plan (1% of the users
           changed) and apply into an empty state; the largest shape's apply runs under
           ulimit -n 256 (if that fails it is reported, and the apply is timed unlimited)
  pg       (--pg) PostgreSQL vs local plan and 1% apply (benchmarks/pg.py), 8 concurrent
           runners over disjoint halves of 1,000 accounts (runners.py), the lock-free
           time after kill -9 (lockfree.py); it starts its own server (tests/pgserver.py)
  peers    (--peers) Terraform and octoDNS planning as many objects as crctl plan
           (benchmarks/peers.py); each skipped with a line saying so when not installed

Without --sizes the MSP shapes and the pinned plan are DESIGN §7's; with --sizes they
shrink with the largest size (so `--sizes 1000` is a quick smoke run of every section),
unless --msp / --pinned say otherwise.

    python benchmarks/run.py                       # the default sections, ~10 minutes
    python benchmarks/run.py --full --readme README.md   # + --pg --peers, README rewritten
    python benchmarks/run.py --sizes 1000 --repeat 1 --no-naive     # CI's smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
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

from generate import change, make_users, to_yaml, with_groups, with_rules  # noqa: E402

TODAY = "2026-11-25"
CHILD = str(HERE / "child.py")
DEFAULT_SIZES = "1000,10000,100000"
DEFAULT_MSP = ((1000, 50), (10000, 10))
SHAPE_OPS = ("floor", "validate", "plan", "apply-1%", "apply-new")
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
Json = dict[str, Any]


def execute(cmd: list[str], env: dict[str, str], *, cpu: int | None = None,
            nofile: int | None = None, cwd: Path | None = None) -> Json:
    """One process through child.py: seconds, its own peak MiB, exit code, stderr."""
    wrapper = [sys.executable, CHILD]
    if cpu is not None:
        wrapper += ["--cpu", str(cpu)]
    if nofile is not None:
        wrapper += ["--nofile", str(nofile)]
    with tempfile.TemporaryFile() as err:
        done = subprocess.run([*wrapper, "--", *cmd], env=env, cwd=cwd, stdout=subprocess.PIPE,
                              stderr=err, stdin=subprocess.DEVNULL)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if done.returncode != 0:
        raise SystemExit(f"benchmark wrapper failed: {' '.join(cmd)}\n{stderr}")
    got = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return {"seconds": got["seconds"], "peak_mib": got["maxrss_kib"] / 1024,
            "exit": got["exit"], "stderr": stderr}


def run(cmd: list[str], env: dict[str, str], *, cpu: int | None = None,
        cwd: Path | None = None) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB, exit code) of one process; exit 0 or 2 (changes) only."""
    got = execute(cmd, env, cpu=cpu, cwd=cwd)
    if got["exit"] not in (0, 2):
        raise SystemExit(f"benchmark step failed ({got['exit']}): {' '.join(cmd)}\n"
                         f"{got['stderr'][-3000:]}")
    return got["seconds"], got["peak_mib"], got["exit"]


Step = tuple[str, Callable[[], list[str]], Callable[[], None] | None]


def measure(name: str, make_cmd: Callable[[], list[str]], repeat: int, env: dict[str, str],
            prepare: Callable[[], None] | None = None, cpu: int | None = None) -> Json:
    times, peaks = [], []
    for _ in range(repeat):
        if prepare:
            prepare()
        seconds, peak, _ = run(make_cmd(), env, cpu=cpu)
        times.append(seconds)
        peaks.append(peak)
    return {"op": name, "median_s": statistics.median(times), "runs_s": times,
            "peak_mib": max(peaks)}


def alternate(steps: list[Step], repeat: int, env: dict[str, str],
              cpu: int | None = None) -> list[Json]:
    """Several commands, in turn (a, b, a, b...), so that a shared machine's load of the
    moment weighs on each side of a ratio alike; median and peak of each."""
    out: list[Json] = [{"op": name, "runs_s": [], "peak_mib": 0.0} for name, _, _ in steps]
    for _ in range(repeat):
        for (_, make_cmd, prepare), result in zip(steps, out, strict=True):
            if prepare:
                prepare()
            seconds, peak, _ = run(make_cmd(), env, cpu=cpu)
            result["runs_s"].append(seconds)
            result["peak_mib"] = max(result["peak_mib"], peak)
    for result in out:
        result["median_s"] = statistics.median(result["runs_s"])
    return out


def crctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRCTL_")}
    env.update({"CRCTL_TODAY": TODAY, "CRCTL_ACTOR": "user000000", "NO_COLOR": "1"})
    return env


CRCTL = [sys.executable, "-m", "reconciler"]


SHAPES = {"groups": "35 recording groups of 1,000 members",
          "rules": "20 defaults and 20 policies"}


def shaped(users: dict[str, dict[str, Any]], shape: str | None) -> str:
    """The account's YAML in one of the wave-2 SHAPES (None: users only)."""
    if shape == "groups":
        extra = with_groups(users)
    elif shape == "rules":
        extra = with_rules(users)
    else:
        extra = ""
    return to_yaml("big", users) + extra


def write_single(work: Path, n: int, shape: str | None = None) -> tuple[Path, Path, Path]:
    """The base and 1%-changed files of one account of n users, and the applied state."""
    users = make_users(n)
    base = work / "base" / "big.yaml"
    changed = work / "changed" / "big.yaml"
    base.parent.mkdir(parents=True, exist_ok=True)
    changed.parent.mkdir(parents=True, exist_ok=True)
    changed_users = change(users, 1.0)
    base.write_text(shaped(users, shape), encoding="utf-8")
    changed.write_text(shaped(changed_users, shape), encoding="utf-8")
    applied = work / "state-base"
    run([*CRCTL, "--state-dir", str(applied), "apply", str(base), "--auto-approve"],
        crctl_env())
    return base, changed, applied


def bench_size(n: int, repeat: int, naive: bool, pinned: bool, work: Path,
               shape: str | None = None) -> list[Json]:
    base, changed, applied = write_single(work, n, shape)
    env = crctl_env()
    scratch = work / "state-scratch"

    def fresh() -> None:
        shutil.rmtree(scratch, ignore_errors=True)

    def copy_applied() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(applied, scratch)

    floor_cmd = [sys.executable, "-c", FLOOR, str(changed)]
    plan_cmd = [*CRCTL, "--state-dir", str(applied), "plan", str(changed)]
    results = [
        measure("floor", lambda: floor_cmd, repeat, env),
        measure("validate", lambda: [*CRCTL, "validate", str(changed)], repeat, env),
        measure("plan", lambda: plan_cmd, repeat, env),
        measure("apply-new", lambda: [*CRCTL, "--state-dir", str(scratch), "apply", str(base),
                                      "--auto-approve"], repeat, env, prepare=fresh),
        measure("apply-1%", lambda: [*CRCTL, "--state-dir", str(scratch), "apply",
                                     str(changed), "--auto-approve"], repeat, env,
                prepare=copy_applied),
    ]
    if pinned:
        results += alternate([("floor pinned", lambda: floor_cmd, None),
                              ("plan pinned", lambda: plan_cmd, None)], repeat, env, cpu=0)
    if naive:
        portal = applied / "portal" / "big.json"
        results.append(measure("naive", lambda: [sys.executable, "-c", NAIVE, str(changed),
                                                 str(portal)], 1, env))
    floors = {r["op"]: r["median_s"] for r in results if r["op"].startswith("floor")}
    for r in results:
        floor = floors["floor pinned" if r["op"].endswith("pinned") else "floor"]
        r["users"] = n
        if shape:
            r["shape"] = shape
        r["ratio_to_floor"] = r["median_s"] / floor if floor else None
        r["us_per_user"] = r["median_s"] / n * 1e6
    return results


# --- many accounts (an MSP) --------------------------------------------------------------

def touched(users: dict[str, dict[str, Any]], start: int) -> dict[str, dict[str, Any]]:
    """A copy where every 100th user counted across the whole MSP (from `start`, this
    account's first index in it) moved to Halifax: 1% of the users, the same ones
    whether they are spread over accounts or in one."""
    out = {k: {**v} for k, v in users.items()}
    for i, name in enumerate(out):
        if (start + i) % 100 == 37:
            out[name]["location"] = "Halifax"
    return out


def bench_msp(accounts: int, per: int, repeat: int, nofile: int | None, work: Path) -> Json:
    """One MSP shape next to one account with as many users, in the same run."""
    env = crctl_env()
    people = make_users(per)
    dirs = {k: work / k for k in ("dir-base", "dir-changed")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for a in range(accounts):
        name = f"acct{a:05d}"
        (dirs["dir-base"] / f"{name}.yaml").write_text(to_yaml(name, people), encoding="utf-8")
        (dirs["dir-changed"] / f"{name}.yaml").write_text(
            to_yaml(name, touched(people, a * per)), encoding="utf-8")
    single = make_users(accounts * per)
    one = {k: work / k / "big.yaml" for k in ("one-base", "one-changed")}
    for key, users in (("one-base", single), ("one-changed", touched(single, 0))):
        one[key].parent.mkdir(parents=True, exist_ok=True)
        one[key].write_text(to_yaml("big", users), encoding="utf-8")
    state_dir, state_one = work / "state-dir", work / "state-one"

    def empty(state: Path) -> Callable[[], None]:
        return lambda: shutil.rmtree(state, ignore_errors=True)

    validate = alternate([
        ("validate dir", lambda: [*CRCTL, "validate", str(dirs["dir-changed"])], None),
        ("validate one", lambda: [*CRCTL, "validate", str(one["one-changed"])], None)],
        repeat, env)
    apply_dir_cmd = [*CRCTL, "--state-dir", str(state_dir), "apply", str(dirs["dir-base"]),
                     "--auto-approve"]
    limited: Json | None = None
    if nofile is not None:
        empty(state_dir)()
        got = execute(apply_dir_cmd, env, nofile=nofile)
        limited = {"limit": nofile, "ok": got["exit"] == 0, "exit": got["exit"],
                   "seconds": got["seconds"], "peak_mib": got["peak_mib"],
                   "stderr": got["stderr"][-1500:]}
    apply = alternate([
        ("apply dir", lambda: apply_dir_cmd, empty(state_dir)),
        ("apply one", lambda: [*CRCTL, "--state-dir", str(state_one), "apply",
                               str(one["one-base"]), "--auto-approve"], empty(state_one))],
        repeat, env)
    plan = alternate([
        ("plan dir", lambda: [*CRCTL, "--state-dir", str(state_dir), "plan",
                              str(dirs["dir-changed"])], None),
        ("plan one", lambda: [*CRCTL, "--state-dir", str(state_one), "plan",
                              str(one["one-changed"])], None)], repeat, env)
    shutil.rmtree(work, ignore_errors=True)  # 10,000 accounts: hundreds of MiB of state
    return {"shape": f"{accounts}x{per}", "accounts": accounts, "users_per_account": per,
            "users": accounts * per, "repeat": repeat,
            "validate": {"dir": validate[0], "one": validate[1],
                         "ratio": validate[0]["median_s"] / validate[1]["median_s"]},
            "plan": {"dir": plan[0], "one": plan[1],
                     "ratio": plan[0]["median_s"] / plan[1]["median_s"]},
            "apply": {"dir": apply[0], "one": apply[1],
                      "per_account_ms": (apply[0]["median_s"] - apply[1]["median_s"])
                      / accounts * 1000},
            "nofile": limited}


# --- PostgreSQL and peers ----------------------------------------------------------------

def bench_pg(sizes: list[int], repeat: int, work: Path, runners: tuple[int, int, int]
             ) -> Json:
    """benchmarks/pg.py's figures, runners.py's run and lockfree.py's, on one server."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    try:
        import pgserver
        import psycopg  # noqa: F401  (the postgresql extra)
    except ImportError as exc:
        return {"skipped": f"PostgreSQL figures skipped: {exc}"}
    if pgserver.find_bindir() is None:
        return {"skipped": "PostgreSQL figures skipped: no PostgreSQL server installed"}
    import lockfree
    import pg
    import runners as runners_mod

    server = pgserver.start()
    try:
        out: Json = {"sizes": []}
        for n in sizes:
            out["sizes"].append(pg.bench_size(server, n, repeat, work / f"pg{n}"))
            print(f"... PostgreSQL at {n:,} users done", file=sys.stderr)
        accounts, users, count = runners
        server.psql("CREATE DATABASE runners", database="postgres")
        out["runners"] = runners_mod.measure(server.url_for("runners"), accounts, users, count)
        print("... concurrent runners done", file=sys.stderr)
        out["lock_free"] = lockfree.measure_both(server, work / "lockfree", repeat)
    finally:
        server.stop()
    return out


def bench_peers(sizes: list[int], repeat: int, work: Path, install: bool) -> Json:
    import peers

    def make(n: int) -> tuple[dict, dict, Path, Path]:
        base = make_users(n)
        changed = {k: {**v} for k, v in base.items()}
        changed["user000042" if n > 42 else "user000000"]["location"] = "Halifax"
        where = work / f"crctl{n}"
        (where / "base").mkdir(parents=True, exist_ok=True)
        (where / "changed").mkdir(parents=True, exist_ok=True)
        (where / "base" / "big.yaml").write_text(to_yaml("big", base), encoding="utf-8")
        (where / "changed" / "big.yaml").write_text(to_yaml("big", changed), encoding="utf-8")
        state = where / "state"
        run([*CRCTL, "--state-dir", str(state), "apply", str(where / "base" / "big.yaml"),
             "--auto-approve"], crctl_env())
        return base, changed, where / "changed" / "big.yaml", state

    return peers.bench(run, sizes, repeat, work, crctl_env(), make, install)


# --- the report ----------------------------------------------------------------------

def byte_compile() -> bool:
    """Byte-compile crctl's own modules, as `pip install` does for an installed package.

    Why: an editable install run with PYTHONDONTWRITEBYTECODE set (CI images and this
    sandbox set it) compiles every module from source on every start: 0.25 s more per
    command, a cost no installed crctl pays. Returns whether the variable was set."""
    import compileall

    compileall.compile_dir(str(HERE.parent / "reconciler"), quiet=1)
    return bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))


def machine() -> Json:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"arch": platform.machine(), "cpu": model or platform.processor(),
            "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}


def find(results: list[Json], n: int, op: str) -> Json | None:
    return next((r for r in results if r["users"] == n and r["op"] == op), None)


def targets(report: Json) -> list[Json]:
    """Each DESIGN §7 target this run measured: figure, limit, pass/fail."""
    out: list[Json] = []

    def add(what: str, value: float, limit: float, unit: str, at_most: bool = True,
            design: bool = True) -> None:
        """`design`: measured at DESIGN §7's own size (else reported, not judged)."""
        verdict = value <= limit if at_most else value >= limit
        out.append({"target": what, "value": value, "limit": limit, "unit": unit,
                    "at_most": at_most, "pass": verdict if design else None})

    res = report["results"]
    big = 100_000
    for op, limit in (("plan", 2.5), ("apply-1%", 3.0), ("apply-new", 4.0),
                      ("validate", 1.5)):
        r = find(res, big, op)
        if r:
            add(f"100,000 users: {op} / floor", r["ratio_to_floor"], limit, "x")
    r = find(res, big, "plan")
    if r:
        add("100,000 users: plan peak memory", r["peak_mib"], 1024, "MiB")
    for shape in report.get("shapes", []):
        n = shape["users"]
        for op, limit in (("plan", 2.5), ("apply-1%", 3.0), ("apply-new", 4.0),
                          ("validate", 1.5)):
            r = find(shape["results"], n, op)
            if r:
                add(f"{n:,} users with {SHAPES[shape['shape']]}: {op} / floor",
                    r["ratio_to_floor"], limit, "x", design=n == big)
    r = find(res, 10_000, "plan")
    if r:
        add("10,000 users: plan", r["median_s"], 0.6, "s")
    r = next((x for x in res if x["op"] == "plan pinned"), None)
    if r:
        add(f"{r['users']:,} users pinned to one core: plan / floor", r["ratio_to_floor"],
            3.0, "x", design=r["users"] == big)
    for m in report["msp"]:
        shape = f"{m['accounts']:,} accounts x {m['users_per_account']}"
        design = (m["accounts"], m["users_per_account"]) in DEFAULT_MSP
        add(f"{shape}: validate / one account", m["validate"]["ratio"], 1.5, "x",
            design=design)
        add(f"{shape}: plan / one account", m["plan"]["ratio"], 1.5, "x", design=design)
        add(f"{shape}: apply, per account over one account", m["apply"]["per_account_ms"],
            2.0, "ms", design=design)
        if m["nofile"]:
            out.append({"target": f"{shape}: apply under ulimit -n {m['nofile']['limit']}",
                        "value": "succeeded" if m["nofile"]["ok"]
                        else f"failed (exit {m['nofile']['exit']})", "limit": None,
                        "unit": "", "at_most": True,
                        "pass": m["nofile"]["ok"] if m["accounts"] >= 10_000 else None})
    pgr = report.get("pg") or {}
    for size in pgr.get("sizes", []):
        add(f"PostgreSQL, {size['users']:,} users: plan / local", size["plan_ratio"], 1.3, "x",
            design=size["users"] == big)
        add(f"PostgreSQL, {size['users']:,} users: apply 1% / local", size["apply_ratio"],
            1.5, "x", design=size["users"] == big)
    if pgr.get("runners"):
        rr = pgr["runners"]
        out.append({"target": f"PostgreSQL: {rr['runners']} runners over disjoint halves of "
                              f"{rr['accounts']:,} accounts, every account applied once",
                    "value": "yes" if not rr["problems"]
                    else f"no ({len(rr['problems'])} problems)", "limit": None,
                    "unit": "", "at_most": True,
                    "pass": not rr["problems"] if rr["runners"] >= 8 and rr["accounts"] >= 1000
                    else None})
    naive = next((x for x in res if x["op"] == "naive"), None)
    if naive:
        plan = find(res, naive["users"], "plan")
        if plan:
            add(f"{naive['users']:,} users: naive pipeline / plan", naive["median_s"]
                / plan["median_s"], 55.0, "x", at_most=False, design=naive["users"] == big)
    return out


def fmt(value: Any, unit: str) -> str:
    if isinstance(value, str):
        return value
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:.2f} {unit}"


def markdown(report: Json, heading: str = "##") -> str:
    """The run as markdown: the README's performance section is exactly this."""
    m = report["machine"]
    lines = [f"{heading} Performance", "",
             "`python benchmarks/run.py` (DESIGN §7) times each command as its own process "
             "(start-up included, median of `--repeat` runs, in the same run as its "
             "reference) and reports each process's own peak memory. The figures below are "
             "from `" + report["command"] + "`"
             f" on {report['date'][:10]}: {m['arch']}, {m['cpu']}, {m['cores']} cores, "
             f"Python {m['python']}"
             + (" (a shared machine: single runs vary by 10–20%)." if m["cores"] <= 2
                else ".")
             + (" crctl's modules are byte-compiled first, as an installed package is "
                "(this machine sets PYTHONDONTWRITEBYTECODE)." if report.get("byte_compiled")
                else ""), "",
             f"{heading}# DESIGN §7 targets", "",
             "| target | figure | limit | |", "|---|---|---|---|"]
    for t in report["targets"]:
        limit = "" if t["limit"] is None else (("≤ " if t["at_most"] else "≥ ")
                                               + fmt(t["limit"], t["unit"]))
        lines.append(f"| {t['target']} | {fmt(t['value'], t['unit'])} | {limit} | "
                     f"{VERDICT[t['pass']]} |")
    res = report["results"]
    if res:
        sizes = sorted({r["users"] for r in res})
        lines += ["", f"{heading}# One account", "",
                  "The floor is libyaml's bare event scan of the same file; 1% of the users "
                  "changed for `plan` and `apply`.", "",
                  "| operation | " + " | ".join(f"{n:,} users: s, × floor, MiB" for n in sizes)
                  + " |", "|---" * (len(sizes) + 1) + "|"]
        for op in dict.fromkeys(r["op"] for r in res):
            cells = []
            for n in sizes:
                r = find(res, n, op)
                cells.append(f"{r['median_s']:.2f}, {r['ratio_to_floor']:.2f}×, "
                             f"{r['peak_mib']:,.0f}" if r else "–")
            lines.append(f"| {LABELS.get(op, op)} | " + " | ".join(cells) + " |")
    if report.get("shapes"):
        lines += ["", f"{heading}# One account with groups, defaults and policies", "",
                  "The same accounts with the wave-2 parts of the file (each against the "
                  "floor of its own file).", "",
                  "| shape | " + " | ".join(LABELS.get(op, op) for op in SHAPE_OPS)
                  + " |", "|---" * (len(SHAPE_OPS) + 1) + "|"]
        for shape in report["shapes"]:
            cells = []
            for op in SHAPE_OPS:
                r = find(shape["results"], shape["users"], op)
                cells.append(f"{r['median_s']:.2f} s, {r['ratio_to_floor']:.2f}×" if r
                             else "–")
            lines.append(f"| {shape['users']:,} users, {SHAPES[shape['shape']]} | "
                         + " | ".join(cells) + " |")
    if report["msp"]:
        lines += ["", f"{heading}# Many accounts (an MSP)", "",
                  "A directory of accounts next to one account with as many users, in the "
                  "same run; `plan` with 1% of the users changed, `apply` into an empty "
                  "state.", "",
                  "| shape | validate: dir / one | plan: dir / one | apply: dir / one | "
                  "apply: ms per account |", "|---|---|---|---|---|"]
        for s in report["msp"]:
            v, p, a = s["validate"], s["plan"], s["apply"]
            lines.append(
                f"| {s['accounts']:,} × {s['users_per_account']} "
                f"({s['users']:,} users) | {v['dir']['median_s']:.2f} / "
                f"{v['one']['median_s']:.2f} s = {v['ratio']:.2f}× | "
                f"{p['dir']['median_s']:.2f} / {p['one']['median_s']:.2f} s = "
                f"{p['ratio']:.2f}× | {a['dir']['median_s']:.2f} / "
                f"{a['one']['median_s']:.2f} s | {a['per_account_ms']:.2f} |")
        for s in report["msp"]:
            if s["nofile"]:
                n = s["nofile"]
                lines += ["", f"Apply of {s['accounts']:,} accounts under `ulimit -n "
                          f"{n['limit']}`: " + ("succeeded" if n["ok"] else
                                               f"**failed** (exit {n['exit']})") + "."]
    pgr = report.get("pg")
    lines += ["", f"{heading}# PostgreSQL", ""]
    if not pgr:
        lines.append("Not measured in this run (`--pg`).")
    elif "skipped" in pgr:
        lines.append(pgr["skipped"] + ".")
    else:
        lines += ["Its own throwaway server (tests/pgserver.py: a unix socket, `fsync=off`); "
                  "local and PostgreSQL runs alternate.", "",
                  "| 1% changed | local | PostgreSQL | PostgreSQL / local |",
                  "|---|---|---|---|"]
        for size in pgr["sizes"]:
            by = {r["op"]: r for r in size["results"]}
            for op, key in (("plan", "plan_ratio"), ("apply-1%", "apply_ratio")):
                lines.append(f"| {size['users']:,} users: `crctl {op.split('-')[0]}` | "
                             f"{by[op + ' local']['median_s']:.2f} s | "
                             f"{by[op + ' pg']['median_s']:.2f} s | {size[key]:.2f}× |")
        rr = pgr["runners"]
        said = sorted({f"{r['said']}" for r in rr["per_runner"]})
        lines += ["", f"{rr['runners']} concurrent `crctl apply DIR --auto-approve` runners, "
                  f"half on each disjoint half of {rr['accounts']:,} accounts × "
                  f"{rr['users']} users: {rr['wall_s']:.1f} s wall; "
                  + ("every account applied exactly once (serial 1, one version, one "
                     "apply's audit entries)" if not rr["problems"] else
                     f"**{len(rr['problems'])} problems**: {rr['problems'][:3]}")
                  + f"; runners said: {', '.join(said)}."]
        lf = pgr.get("lock_free")
        if lf:
            lines += ["", "After `kill -9` of an apply holding the lock, a waiting apply "
                      f"holds it within {lf['local']['median_s'] * 1000:.0f} ms (local) / "
                      f"{lf['postgresql']['median_s'] * 1000:.0f} ms (PostgreSQL), "
                      "medians, the waiter's retry back-off included."]
    peers = report.get("peers")
    lines += ["", f"{heading}# Peers", ""]
    if not peers:
        lines.append("Not measured in this run (`--peers`).")
    else:
        lines += ["The same number of objects (users ↔ `terraform_data` resources ↔ DNS "
                  "records), one changed, each paired with `crctl plan` in the same run. "
                  "Terraform's state is written directly as its JSON state file "
                  "(local backend); it runs `terraform plan -refresh=false`. octoDNS plans "
                  "YamlProvider to YamlProvider (`octodns-sync` without `--doit`).", "",
                  "| objects | peer | peer s | `crctl plan` s | peer / crctl |",
                  "|---|---|---|---|---|"]
        for name, key in (("Terraform", "terraform_plan"), ("octoDNS", "octodns_sync_plan")):
            for row in peers[name.lower()]:
                lines.append(f"| {row['objects']:,} | {name} | {row[key]['median_s']:.2f} | "
                             f"{row['crctl_plan']['median_s']:.2f} | {row['ratio']:.1f}× |")
        for line in peers["skipped"]:
            lines += ["", f"Skipped: {line}."]
    lines += ["", "What keeps `plan` near the floor: the loader builds data straight from "
              "libyaml's events, and above 4 MiB the second half of the `users` block is "
              "parsed by a forked child (`reconciler/halves.py`, exact or not used); the "
              "JSON Schema is compiled into column-wise checks, with `jsonschema` run only "
              "on the users that fail, for its messages; users are compared as dicts keyed "
              "by id.", ""]
    return "\n".join(lines)


VERDICT = {True: "pass", False: "**fail**", None: "not the §7 size"}
LABELS = {"floor": "floor (libyaml events)", "validate": "`crctl validate`",
          "plan": "`crctl plan`", "apply-new": "`crctl apply` (new account)",
          "apply-1%": "`crctl apply`", "floor pinned": "floor, `taskset -c 0`",
          "plan pinned": "`crctl plan`, `taskset -c 0`",
          "naive": "naive pipeline (safe_load + jsonschema + DeepDiff)"}


def rewrite_readme(path: Path, section: str) -> None:
    """Replace the README's `## Performance` section (up to the next `## `) by `section`."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Performance"),
                 None)
    if start is None:
        raise SystemExit(f"{path}: no '## Performance' section to rewrite")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    path.write_text("\n".join([*lines[:start], *section.rstrip("\n").split("\n"), "",
                               *lines[end:]]), encoding="utf-8")


def shapes(text: str) -> list[tuple[int, int]]:
    if text in ("", "none", "0"):
        return []
    out = []
    for part in text.split(","):
        accounts, per = part.lower().split("x")
        out.append((int(accounts), int(per)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help=f"users per single account (default {DEFAULT_SIZES})")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive pipeline")
    parser.add_argument("--msp", help="MSP shapes ACCOUNTSxUSERS,... or none (default "
                        "1000x50,10000x10, shrunk with --sizes)")
    parser.add_argument("--msp-repeat", type=int, default=1,
                        help="runs of each MSP command (default 1: the largest take minutes)")
    parser.add_argument("--nofile", type=int, default=256,
                        help="open-file limit of the largest MSP shape's apply (0: none)")
    parser.add_argument("--pinned", type=int,
                        help="users of the pinned plan (default the largest size; 0: none)")
    parser.add_argument("--shapes", default="groups,rules",
                        help="wave-2 shapes of the largest account: groups, rules, or none "
                             "(default groups,rules)")
    parser.add_argument("--pg", action="store_true", help="the PostgreSQL figures")
    parser.add_argument("--pg-sizes", help="users for pg plan/apply (default the largest)")
    parser.add_argument("--runners", default="1000,5,8",
                        help="ACCOUNTS,USERS,RUNNERS of the concurrent runners (--pg)")
    parser.add_argument("--peers", action="store_true", help="Terraform and octoDNS")
    parser.add_argument("--peer-sizes", default="1000,10000",
                        help="objects for the peers (default 1000,10000: Terraform is slow)")
    parser.add_argument("--no-install", action="store_true",
                        help="--peers: do not pip install octodns when it is missing")
    parser.add_argument("--full", action="store_true", help="every section: + --pg --peers")
    parser.add_argument("--out", default=str(HERE / "out" / "results.json"))
    parser.add_argument("--markdown", help="the summary (default: --out with .md)")
    parser.add_argument("--readme", help="rewrite this README's '## Performance' section")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or DEFAULT_SIZES).split(",") if s]
    largest = max(sizes) if sizes else 0
    scale = 1.0 if args.sizes is None else largest / 100_000
    msp = shapes(args.msp) if args.msp is not None else [
        (max(2, round(a * scale)), p) for a, p in DEFAULT_MSP]
    pinned = largest if args.pinned is None else args.pinned
    pg_on, peers_on = args.pg or args.full, args.peers or args.full
    compiled = byte_compile()
    started = time.perf_counter()
    report: Json = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/run.py" + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:])
            if not a.startswith("--readme") and a != args.readme),
        "today": TODAY, "machine": machine(), "repeat": args.repeat, "results": [],
        "byte_compiled": compiled,
        "msp": [], "pg": None, "peers": None}
    with tempfile.TemporaryDirectory(prefix="crctl-bench-") as tmp:
        work = Path(tmp)
        for n in sizes:
            report["results"] += bench_size(n, args.repeat, not args.no_naive and n == largest,
                                            n == pinned, work / str(n))
            print(f"... {n:,} users done", file=sys.stderr)
        report["shapes"] = []
        for shape in [x for x in args.shapes.split(",") if x in SHAPES] if largest else []:
            report["shapes"].append({"shape": shape, "users": largest, "results": bench_size(
                largest, args.repeat, False, False, work / f"shape-{shape}", shape)})
            print(f"... {largest:,} users with {SHAPES[shape]} done", file=sys.stderr)
        if pinned and pinned not in sizes:
            report["results"] += [r for r in bench_size(pinned, args.repeat, False, True,
                                                        work / f"pin{pinned}")
                                  if r["op"].endswith("pinned")]
        for i, (accounts, per) in enumerate(msp):
            limit = args.nofile if args.nofile and i == max(
                range(len(msp)), key=lambda j: msp[j][0]) else None
            report["msp"].append(bench_msp(accounts, per, args.msp_repeat, limit,
                                           work / f"msp{accounts}x{per}"))
            print(f"... {accounts:,} accounts x {per} users done", file=sys.stderr)
        if pg_on:
            pg_sizes = [int(s) for s in (args.pg_sizes or str(largest)).split(",") if s]
            accounts, users, count = (int(x) for x in args.runners.split(","))
            report["pg"] = bench_pg(pg_sizes, args.repeat, work / "pg",
                                    (accounts, users, count))
        if peers_on:
            report["peers"] = bench_peers(
                [int(s) for s in args.peer_sizes.split(",") if s], args.repeat,
                work / "peers", not args.no_install)
    report["targets"] = targets(report)
    report["seconds"] = time.perf_counter() - started
    # The benchmark's own peak, for comparison with its children's (each its own).
    report["benchmark_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = markdown(report)
    print(summary)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md = Path(args.markdown) if args.markdown else out.with_suffix(".md")
    md.write_text(summary, encoding="utf-8")
    if args.readme:
        rewrite_readme(Path(args.readme), summary)
        print(f"{args.readme}: Performance section rewritten", file=sys.stderr)
    print(f"\nResults written to {out} and {md} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
