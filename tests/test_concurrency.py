"""Concurrent applies on one account (DESIGN §6: the lock is held from reading the state,
through the prompt, to the end).

Four applies of four different desired files of the same account start at once; each
waits for the lock (--lock-timeout 60s), re-reads the state and applies its own plan. Each
must exit 0; the final account equals the desired file of the last apply; the serial
rises by one per apply; the audit log has exactly one line per applied action, the lines
of one apply together. Meanwhile, plans
running in a loop only ever see a whole state (exit 0 or 2). Saved plans made from the
same state race too: exactly one applies, the others are stale (exit 3).
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import support
from support import REPO, popen

ACCOUNT = "acme"
MANAGERS = [f"user{i:06d}" for i in range(4)]  # one actor per concurrent apply
crctl = partial(support.crctl, actor=MANAGERS[0])
COMPLETE = re.compile(r"^Apply complete: (\d+) enabled, (\d+) changed, (\d+) removed; "
                      r"(\d+) users? added, (\d+) updated, (\d+) deleted\.$", re.M)


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("crctl_generate",
                                                  REPO / "benchmarks" / "generate.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


GEN = _generator()


def audit(state: Path) -> list[dict[str, Any]]:
    path = state / "audit" / f"{ACCOUNT}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def portal(state: Path) -> dict[str, Any]:
    return json.loads((state / "portal" / f"{ACCOUNT}.json").read_text())


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    """The account (3,000 users, four managers) applied; four different changed files."""
    base = GEN.make_users(3000, seed=21)
    for name in MANAGERS[1:]:
        base[name]["roles"] = ["phone-manager"]
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / f"{ACCOUNT}.yaml").write_text(GEN.to_yaml(ACCOUNT, base))
    desired = []
    for index in range(4):
        changed = GEN.change(base, 3.0, seed=100 + index)
        for name in MANAGERS:  # every actor stays a manager whatever the order
            changed[name] = base[name]
        folder = tmp_path / f"d{index}"
        folder.mkdir()
        (folder / f"{ACCOUNT}.yaml").write_text(GEN.to_yaml(ACCOUNT, changed))
        desired.append(folder / f"{ACCOUNT}.yaml")
    state = tmp_path / "state"
    r = crctl("apply", str(tmp_path / "base" / f"{ACCOUNT}.yaml"), "--auto-approve", state=state)
    assert r.returncode == 0, r.stderr
    return {"state": state, "desired": desired}


class PlanLoop(threading.Thread):
    """Plans one file over and over while the applies run; records any bad outcome."""

    def __init__(self, state: Path, desired: Path):
        super().__init__(daemon=True)
        self.state, self.desired = state, desired
        self.stop = threading.Event()
        self.runs = 0
        self.bad: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            # a failed assert would die with this thread: record it for the test instead
            r = support.crctl("plan", self.desired, "--detailed-exitcode", state=self.state,
                              timeout=120, check_clean=False)
            self.runs += 1
            # either outcome is right: the plan reads whichever whole state is committed
            if r.returncode not in (0, 2) or "Traceback" in r.stderr:
                self.bad.append(f"exit {r.returncode}: {r.stderr.strip()[:300]}")


def test_four_concurrent_applies_of_different_files(setup: dict[str, Any]) -> None:
    state, desired = setup["state"], setup["desired"]
    serial_before = portal(state)["serial"]
    audit_before = len(audit(state))
    reader = PlanLoop(state, desired[0])
    reader.start()
    procs = [popen("apply", path, "--auto-approve", "--lock-timeout", "60s", state=state,
                   actor=MANAGERS[index])
             for index, path in enumerate(desired)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    reader.stop.set()
    reader.join(timeout=120)

    applied: dict[str, int] = {}  # actor -> number of actions applied
    for index, (code, out, err) in enumerate(results):
        assert "Traceback" not in err and "internal error" not in err, err
        # each waits for the lock, then plans its own file against the state it finds: not
        # stale (3, saved plans only), within the safety limit (5: about 6% change at most)
        assert code == 0, (index, code, out, err)
        match = COMPLETE.search(out)
        assert match, (index, out)
        applied[MANAGERS[index]] = sum(map(int, match.groups()))
    assert len(applied) == 4, applied
    assert not reader.bad, reader.bad[:3]
    assert reader.runs >= 1

    # one serial per apply that changed something
    assert portal(state)["serial"] == serial_before + sum(1 for n in applied.values() if n)

    # the audit log: exactly one line per applied action, each apply's lines together
    lines = audit(state)[audit_before:]
    assert len(lines) == sum(applied.values()), (len(lines), applied)
    groups: list[tuple[str, str, int]] = []  # (plan checksum, actor, lines)
    for entry in lines:
        key = (entry["plan_checksum"], entry["actor"])
        if groups and groups[-1][:2] == key:
            groups[-1] = (*key, groups[-1][2] + 1)
        else:
            groups.append((*key, 1))
    assert len({g[0] for g in groups}) == len(groups), "one apply's audit lines interleave"
    assert {g[1]: g[2] for g in groups} == {a: n for a, n in applied.items() if n}
    if lines and "serial" in lines[0]:
        serials = [e["serial"] for e in lines]
        assert serials == sorted(serials)

    # the final state is the desired state of the last successful apply
    last = MANAGERS.index(groups[-1][1])
    r = crctl("plan", str(desired[last]), "--detailed-exitcode", state=state)
    assert r.returncode == 0 and "No changes." in r.stdout, (last, r.stdout, r.stderr)
    others = [i for i in range(4) if i != last]
    for index in others:
        r = crctl("plan", str(desired[index]), "--detailed-exitcode", state=state)
        assert r.returncode == 2, (index, r.stdout)
    assert not list(state.rglob("*.tmp-*")), list(state.rglob("*.tmp-*"))
    assert not (state / "locks" / f"{ACCOUNT}.lock").exists()


def test_concurrent_saved_plans_from_the_same_state(setup: dict[str, Any]) -> None:
    """Four plans saved from one state, applied at once: one wins, three are stale."""
    state, desired = setup["state"], setup["desired"]
    plans = []
    for path in desired:
        out = path.parent / "acme.plan"
        r = crctl("plan", str(path), "--out", str(out), state=state)
        assert r.returncode == 0, r.stderr
        plans.append(out)
    audit_before = len(audit(state))
    procs = [popen("apply", plan, "--lock-timeout", "60s", state=state, actor=MANAGERS[index])
             for index, plan in enumerate(plans)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    codes = [code for code, _, _ in results]
    assert sorted(codes) == [0, 3, 3, 3], results
    winner = codes.index(0)
    for code, _, err in results:
        assert "Traceback" not in err and "internal error" not in err, err
        if code == 3:
            assert "stale" in err, err
    actions = len(json.loads(plans[winner].read_text())["actions"])
    assert len(audit(state)) - audit_before == actions
    r = crctl("plan", str(desired[winner]), "--detailed-exitcode", state=state)
    assert r.returncode == 0 and "No changes." in r.stdout, r.stdout


def test_concurrent_applies_of_the_same_file(setup: dict[str, Any]) -> None:
    """The same desired file applied four times at once: one applies, the others then find
    nothing to do ("No changes.") and write nothing."""
    state, desired = setup["state"], setup["desired"]
    serial_before = portal(state)["serial"]
    audit_before = len(audit(state))
    procs = [popen("apply", desired[1], "--auto-approve", "--lock-timeout", "60s",
                   state=state, actor=MANAGERS[index])
             for index in range(4)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    completes = [out for _, out, _ in results if COMPLETE.search(out)]
    assert len(completes) == 1, [out[-200:] for _, out, _ in results]
    assert sum("No changes." in out for _, out, _ in results) == 3
    assert portal(state)["serial"] == serial_before + 1
    applied = sum(map(int, COMPLETE.search(completes[0]).groups()))  # type: ignore[union-attr]
    assert len(audit(state)) - audit_before == applied
