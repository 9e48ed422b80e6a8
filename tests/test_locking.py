"""The account lock, concurrent applies, force-unlock, and applies killed with SIGKILL
(DESIGN §3, §6). Every crctl run is a real subprocess."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import (
    TODAY,
    acme_users,
    apply_ok,
    audit,
    crctl_env,
    lock_path,
    mirror,
    popen,
    portal,
    run,
    save_plan,
    snapshot,
    wait_for_lock,
    write_account,
)

from reconciler.backends.local import LocalBackend
from reconciler.mirror import project


@pytest.fixture
def acme(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    apply_ok(state, write_account(tmp_path / "v1", "acme", acme_users()))
    return state


def variant(tmp_path: Path, tag: str, **changes: Any) -> Path:
    users = acme_users()
    for dotted, value in changes.items():
        name, field = dotted.split("__")
        users[name.replace("_", ".")][field] = value
    return write_account(tmp_path / tag, "acme", users)


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    for stream in (out, err):
        assert "Traceback" not in stream, stream
    return proc.returncode, out, err


# -- concurrent applies --------------------------------------------------------------------------

@pytest.mark.parametrize("round_", range(3))
def test_two_saved_plans_from_same_serial_exactly_one_applies(acme: Path, tmp_path: Path,
                                                              round_: int) -> None:
    plans = []
    for tag, change in (("x", {"asmith__first_name": "Alicia"}),
                        ("y", {"lobby__last_name": "Reception"})):
        out = tmp_path / f"{tag}.json"
        doc = save_plan(acme, variant(tmp_path, tag, **change), out)
        assert doc["prior_state"]["serial"] == 1
        plans.append(out)
    lines = len(audit(acme))

    procs = [popen(acme, "apply", str(p), "--lock-timeout", "30s", actor="jdoe")
             for p in plans]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], results
    loser = next(r for r in results if r[0] == 3)
    assert "stale" in loser[2].lower()
    users = {u["username"]: u for u in portal(acme)["users"].values()}
    applied = (users["asmith"]["first_name"] == "Alicia",
               users["lobby"]["last_name"] == "Reception")
    assert sorted(applied) == [False, True]
    assert portal(acme)["serial"] == 2
    assert len(audit(acme)) == lines + 1
    assert not lock_path(acme).exists()


def test_two_applies_of_same_file_apply_once(acme: Path, tmp_path: Path) -> None:
    path = variant(tmp_path, "x", asmith__first_name="Alicia")
    lines = len(audit(acme))
    procs = [popen(acme, "apply", str(path), "--auto-approve", "--lock-timeout", "30s",
                   actor="jdoe") for _ in range(2)]
    results = [finish(p) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    outs = sorted(r[1].rstrip().splitlines()[-1] for r in results)
    assert outs[0].startswith("Apply complete: 0 enabled"), outs
    assert outs[1] == "No changes.", outs
    assert portal(acme)["serial"] == 2
    assert len(audit(acme)) == lines + 1


# -- the lock during the confirmation prompt ----------------------------------------------------

def test_apply_waiting_at_prompt_holds_the_lock(acme: Path, tmp_path: Path) -> None:
    path = variant(tmp_path, "x", asmith__first_name="Alicia")
    other_plan = tmp_path / "other.json"
    save_plan(acme, variant(tmp_path, "y", lobby__last_name="Reception"), other_plan)
    first = popen(acme, "apply", str(path), actor="jdoe", stdin=subprocess.PIPE)
    try:
        holder = wait_for_lock(acme, proc=first)
        assert set(holder) >= {"id", "who", "operation", "created"}
        assert holder["who"].startswith("jdoe@")
        assert holder["operation"] == "apply"

        started = time.monotonic()
        second = run(acme, "apply", str(path), "--lock-timeout", "1s", "--auto-approve",
                     actor="asmith")
        waited = time.monotonic() - started
        assert second.returncode == 4, (second.stdout, second.stderr)
        assert holder["id"] in second.stderr
        assert "jdoe" in second.stderr
        assert waited >= 0.9
        assert portal(acme)["serial"] == 1

        saved = run(acme, "apply", str(other_plan), "--lock-timeout", "1s", actor="jdoe")
        assert saved.returncode == 4, saved.stderr
        sync = run(acme, "sync", "acme", "--lock-timeout", "1s")
        assert sync.returncode == 4, sync.stderr
        plan = run(acme, "plan", str(path), "--detailed-exitcode")  # plan never locks
        assert plan.returncode == 2, plan.stderr

        code, out, err = finish_with(first, "yes\n")
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert code == 0, (out, err)
    assert "Apply these actions? Only 'yes' will be accepted:" in out
    assert out.rstrip().splitlines()[-1].startswith("Apply complete: 0 enabled")
    assert portal(acme)["serial"] == 2
    assert not lock_path(acme).exists()


def finish_with(proc: subprocess.Popen, answer: str) -> tuple[int, str, str]:
    out, err = proc.communicate(answer, timeout=60)
    return proc.returncode, out, err


def test_answering_no_at_prompt_cancels_and_releases(acme: Path, tmp_path: Path) -> None:
    path = variant(tmp_path, "x", asmith__first_name="Alicia")
    before = snapshot(acme)
    first = popen(acme, "apply", str(path), actor="jdoe", stdin=subprocess.PIPE)
    wait_for_lock(acme, proc=first)
    code, out, err = finish_with(first, "no\n")
    assert code == 1, (out, err)
    assert "Apply cancelled" in err
    assert snapshot(acme) == before
    apply_ok(acme, path, "jdoe", "--lock-timeout", "1s")


# -- a holder that died; force-unlock -------------------------------------------------------------

def _killed_holder(state: Path, path: Path) -> dict[str, Any]:
    proc = popen(state, "apply", str(path), actor="jdoe", stdin=subprocess.PIPE)
    holder = wait_for_lock(state, proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(lock_path(state).read_text())["id"] == holder["id"]
    return holder


def test_lock_of_killed_holder_does_not_block(acme: Path, tmp_path: Path) -> None:
    path = variant(tmp_path, "x", asmith__first_name="Alicia")
    _killed_holder(acme, path)
    assert portal(acme)["serial"] == 1
    started = time.monotonic()
    apply_ok(acme, path, "jdoe", "--lock-timeout", "1s")
    assert time.monotonic() - started < 30
    assert portal(acme)["serial"] == 2
    assert not lock_path(acme).exists()
    # the killed holder's own file (linked as acme.lock while it lived) is swept too
    assert os.listdir(acme / "locks") == []


def test_force_unlock(acme: Path, tmp_path: Path) -> None:
    path = variant(tmp_path, "x", asmith__first_name="Alicia")
    holder = _killed_holder(acme, path)
    lock = lock_path(acme)
    content = lock.read_bytes()

    wrong = run(acme, "force-unlock", "acme", "00000000-0000-0000-0000-000000000000")
    assert wrong.returncode == 1, wrong.stderr
    assert "does not match" in wrong.stderr
    assert lock.read_bytes() == content

    right = run(acme, "force-unlock", "acme", holder["id"])
    assert right.returncode == 0, right.stderr
    assert holder["id"] in right.stdout
    assert not lock.exists()

    again = run(acme, "force-unlock", "acme", holder["id"])
    assert again.returncode == 1
    bad = run(acme, "force-unlock", "../acme", holder["id"])
    assert bad.returncode == 1
    apply_ok(acme, path, "jdoe", "--lock-timeout", "1s")


# -- SIGKILL at random moments of a big apply ------------------------------------------------------

BIG_USERS = 5000


def big_users(kind: str) -> dict[str, dict[str, Any]]:
    """Two desired states of one 5,000-user account; every user differs between them."""
    users = {}
    for i in range(BIG_USERS):
        user: dict[str, Any] = {
            "first_name": f"{'F' if kind == 'a' else 'G'}{i}", "last_name": "Big",
            "email": f"user{i}@big.example", "extension": str(10000 + i), "profile": "Elite",
        }
        if i == 0:
            user["roles"] = ["decision-maker"]
        if kind == "b":
            user["call_recording"] = {"product": "on-demand"}
        elif i % 2 == 0:
            user["call_recording"] = {"product": "always-on"}
        users[f"user{i}"] = user
    return users


@dataclass
class Big:
    state: Path
    files: dict[str, Path]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Big:
    root = tmp_path_factory.mktemp("big")
    files = {kind: write_account(root / kind, "big", big_users(kind)) for kind in "ab"}
    state = root / "state"
    result = run(state, "apply", str(files["a"]), "--auto-approve", actor="user0")
    assert result.returncode == 0, result.stderr
    return Big(state, files)


def classify(state: Path) -> tuple[str, int]:
    """Which of the two desired states the portal holds (never a mix), and its serial."""
    doc = portal(state, "big")
    users = doc["users"]
    assert len(users) == BIG_USERS
    firsts = {u["first_name"][0] for u in users.values()}
    assert len(firsts) == 1, f"the account file mixes two states: {firsts}"
    kind = "a" if firsts == {"F"} else "b"
    products = {u["call_recording"]["product"] if u["call_recording"] else None
                for u in users.values()}
    assert products == ({"always-on", None} if kind == "a" else {"on-demand"}), products
    return kind, doc["serial"]


def assert_json_files_parse(state: Path) -> None:
    for dirpath, _, filenames in os.walk(state):
        for name in filenames:
            if name.endswith(".json"):
                with open(os.path.join(dirpath, name), "rb") as fh:
                    json.loads(fh.read())


def tmp_files(state: Path) -> set[str]:
    found = set()
    for kind in ("portal", "mir", "audit"):
        directory = state / kind
        if directory.is_dir():
            found.update(f"{kind}/{n}" for n in os.listdir(directory) if ".tmp-" in n)
    return found


def start_and_kill(big: Big, trigger: str, delay: float) -> tuple[str, int, int | None]:
    """Apply the other desired state and SIGKILL it when `trigger` fires.
    Returns (kind before, serial before, exit status if it finished first)."""
    kind, serial = classify(big.state)
    target = big.files["b" if kind == "a" else "a"]
    portal_file = big.state / "portal" / "big.json"
    inode = os.stat(portal_file).st_ino
    old_tmp = tmp_files(big.state)
    proc = popen(big.state, "apply", str(target), "--auto-approve", "--force",
                 "--lock-timeout", "1s", actor="user0",
                 stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    if trigger == "delay":
        time.sleep(delay)
    elif trigger == "commit":  # right after the account file is replaced
        while proc.poll() is None and os.stat(portal_file).st_ino == inode \
                and time.monotonic() < deadline:
            pass
    elif trigger == "tmp":  # while a state file is being written
        while proc.poll() is None and not (tmp_files(big.state) - old_tmp) \
                and time.monotonic() < deadline:
            pass
    finished = proc.poll()
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    if finished is not None:
        assert finished == 0, err
    return kind, serial, finished


def test_sigkill_during_apply_leaves_consistent_state(big: Big) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    triggers = [("delay", rng.uniform(0.05, 0.5)), ("commit", 0.0), ("tmp", 0.0),
                ("delay", rng.uniform(0.05, 0.5)), ("delay", rng.uniform(0.2, 1.0))]
    for trigger, delay in triggers:
        where = f"seed {seed}, {trigger} {delay:.2f}s"
        kind, serial, finished = start_and_kill(big, trigger, delay)
        assert_json_files_parse(big.state)
        now, now_serial = classify(big.state)
        if now == kind:
            assert now_serial == serial, where
        else:
            assert now_serial == serial + 1, where
        target = big.files["a" if now == "b" else "b"]
        plan = run(big.state, "plan", str(target), "--detailed-exitcode", "--force",
                   actor="user0")
        assert plan.returncode == 2, (where, plan.stderr)
        with LocalBackend(str(big.state)).lock("big", "test", "probe", 1.0):
            pass  # the killed holder's lock died with it

    final = big.files["b"]
    result = run(big.state, "apply", str(final), "--auto-approve", "--force",
                 "--lock-timeout", "1s", actor="user0")
    assert result.returncode == 0, result.stderr
    assert classify(big.state)[0] == "b"
    plan = run(big.state, "plan", str(final), "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout
    assert "No changes" in plan.stdout
    assert mirror(big.state, "big")["users"] == project(portal(big.state, "big")["users"],
                                                        TODAY)
    assert_json_files_parse(big.state)


# -- a crash right after the account file is committed ----------------------------------------

CRASH_AFTER_COMMIT = textwrap.dedent("""
    import os, sys
    from reconciler.backends import local
    def finish(self, *args, **kwargs):
        os._exit(137)  # the process dies right after the commit point
    local.LocalBackend._finish = finish
    from reconciler.cli import main
    sys.argv = ["crctl", *sys.argv[1:]]
    main()
""")


def test_crash_after_commit_mirror_drift_is_shown_and_repaired(acme: Path,
                                                              tmp_path: Path) -> None:
    users = acme_users()
    users["asmith"]["call_recording"]["product"] = "always-on"
    path = write_account(tmp_path / "v2", "acme", users)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_COMMIT, "--state-dir", str(acme), "apply",
         str(path), "--auto-approve"], env=crctl_env("jdoe"), capture_output=True, text=True,
        timeout=60)
    assert crashed.returncode == 137, crashed.stderr
    assert portal(acme)["serial"] == 2
    asmith = next(uid for uid, u in portal(acme)["users"].items()
                  if u["username"] == "asmith")
    assert mirror(acme)["users"][asmith]["product"] == "on-demand"  # not synced yet
    assert_json_files_parse(acme)

    plan = run(acme, "plan", str(path), "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout  # the MIR drift counts as a change
    assert "asmith" in plan.stdout
    result = run(acme, "apply", str(path), "--auto-approve", "--lock-timeout", "1s",
                 actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert mirror(acme)["users"][asmith]["product"] == "always-on"
    assert portal(acme)["serial"] == 2
    assert run(acme, "plan", str(path), "--detailed-exitcode").returncode == 0


def test_crash_after_commit_keeps_audit_lines(acme: Path, tmp_path: Path) -> None:
    users = acme_users()
    users["asmith"]["call_recording"]["product"] = "always-on"
    path = write_account(tmp_path / "v2", "acme", users)
    lines = len(audit(acme))
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_COMMIT, "--state-dir", str(acme), "apply",
         str(path), "--auto-approve"], env=crctl_env("jdoe"), capture_output=True, text=True,
        timeout=60)
    assert crashed.returncode == 137, crashed.stderr
    assert portal(acme)["serial"] == 2
    run(acme, "sync", "acme", actor="jdoe")
    run(acme, "apply", str(path), "--auto-approve", actor="jdoe")
    new = audit(acme)[lines:]
    assert [(e["action"], e["user"]) for e in new] == [("change", "asmith")]
