"""Regressions of the attacker's tryout that concern locks, interrupts and the state
selection (issue 10: failures 1, 2, 12's "global options after the command"; DESIGN §3.1,
§3.2, §4), each through the real `crctl` command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from apply_helpers import (
    EXAMPLE_ACME,
    account_yaml,
    acme_users,
    apply_ok,
    popen,
    run,
)
from helpers import run_crctl


def _wait_for_lock(state: Path, account: str = "acme", timeout: float = 30) -> dict:
    path = state / "locks" / f"{account}.lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = json.loads(path.read_text() or "null")
            if data:
                return data
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError("the first apply never took the lock")


def _changed_acme(tmp_path: Path) -> Path:
    users = acme_users()
    users["asmith"]["call_recording"] = {"product": "always-on"}
    path = tmp_path / "v2" / "acme.yaml"
    path.parent.mkdir()
    path.write_text(account_yaml("acme", users))
    return path


# -- 1. force-unlock of a live holder ------------------------------------------------------

def test_force_unlock_of_a_live_holder_is_refused_and_no_second_apply_runs(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    apply_ok(state, EXAMPLE_ACME)
    changed = _changed_acme(tmp_path)
    first = popen(state, "apply", str(changed), actor="jdoe", stdin=subprocess.PIPE)
    try:
        holder = _wait_for_lock(state)
        refused = run(state, "force-unlock", "acme", holder["id"])
        assert refused.returncode == 4, refused.stderr
        assert "alive" in refused.stderr and holder["who"] in refused.stderr
        assert (state / "locks" / "acme.lock").exists()
        second = run(state, "apply", str(changed), "--auto-approve", "--lock-timeout", "1s",
                     actor="jdoe")
        assert second.returncode == 4, second.stderr
        assert holder["id"] in second.stderr and "force-unlock" not in second.stderr
        assert "Waiting for the lock of account acme (held by" in second.stderr
        out, err = first.communicate("yes\n", timeout=60)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    portal = json.loads((state / "portal" / "acme.json").read_text())
    assert portal["serial"] == 2  # exactly one of the two applies ran
    audit = (state / "audit" / "acme.jsonl").read_text().splitlines()
    assert sum(1 for line in audit if json.loads(line)["serial"] == 2) == 1


def test_force_unlock_with_force_removes_a_live_holders_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    apply_ok(state, EXAMPLE_ACME)
    first = popen(state, "apply", str(_changed_acme(tmp_path)), actor="jdoe",
                  stdin=subprocess.PIPE)
    try:
        holder = _wait_for_lock(state)
        forced = run(state, "force-unlock", "acme", holder["id"], "--force",
                     "--format", "json")
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout)["removed"]["id"] == holder["id"]
    finally:
        first.kill()
        first.wait()


# -- 2. Ctrl-C at any moment of an apply -----------------------------------------------------

def _big_account(tmp_path: Path, n: int) -> tuple[Path, Path]:
    users = acme_users()
    for i in range(n):
        users[f"user{i:05d}"] = {"first_name": f"F{i}", "last_name": "L",
                                 "email": f"u{i}@acme.example", "extension": f"{30000 + i}",
                                 "profile": "Elite", "call_recording": {"product": "on-demand"}}
    v1 = tmp_path / "v1" / "acme.yaml"
    v1.parent.mkdir()
    v1.write_text(account_yaml("acme", users))
    for i in range(0, n, 2):
        users[f"user{i:05d}"]["call_recording"] = {"product": "always-on"}
    v2 = tmp_path / "v2" / "acme.yaml"
    v2.parent.mkdir()
    v2.write_text(account_yaml("acme", users))
    return v1, v2


def _audit_serials(state: Path) -> list[int]:
    path = state / "audit" / "acme.jsonl"
    return [json.loads(line)["serial"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0])
def test_sigint_at_any_moment_leaves_before_or_after(tmp_path: Path, fraction: float) -> None:
    """Ctrl-C at spread-out moments of an apply: before (exit 130, nothing written) or
    after (every audit entry of the commit there, reported as committed)."""
    v1, v2 = _big_account(tmp_path, 3000)
    base = tmp_path / "base"
    apply_ok(base, v1)
    before = _audit_serials(base)
    started = time.monotonic()
    apply_ok(tmp_path / "timing", v1)  # how long one apply takes on this machine
    duration = time.monotonic() - started
    state = tmp_path / "state"
    shutil.copytree(base, state)
    proc = popen(state, "apply", str(v2), "--auto-approve", actor="jdoe")
    time.sleep(duration * fraction)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "internal error" not in err, err
    # the next locked command finishes whatever the journal holds
    synced = run(state, "sync", "acme", actor="jdoe")
    assert synced.returncode == 0, synced.stderr
    portal = json.loads((state / "portal" / "acme.json").read_text())
    serials = _audit_serials(state)
    if portal["serial"] == 1:
        assert proc.returncode == 130, (proc.returncode, out, err)
        assert serials == before
    else:
        assert portal["serial"] == 2
        # SIGINT lands at a random moment: after the commit, either the apply finished
        # (0) or the interrupt came before its last line (130, and it says "committed")
        assert proc.returncode in (0, 130), err
        if proc.returncode == 130:
            assert "committed" in err, err
        else:
            assert "Apply complete" in out or "committed" in err
        assert serials.count(2) == 1500  # every change entry of the commit
    plan = run(state, "plan", str(v2 if portal["serial"] == 2 else v1),
               "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout[-2000:]  # no drift either
    leftovers = [p.name for p in (state / "audit").iterdir() if p.suffix == ".pending"]
    assert leftovers == []


def test_sigint_at_the_prompt_writes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    apply_ok(state, EXAMPLE_ACME)
    before = (state / "portal" / "acme.json").read_bytes()
    proc = popen(state, "apply", str(_changed_acme(tmp_path)), actor="jdoe",
                 stdin=subprocess.PIPE)
    _wait_for_lock(state)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert (state / "portal" / "acme.json").read_bytes() == before
    assert not (state / "locks" / "acme.lock").exists()


# -- 12. global options after the command; crctl.toml; the state header ------------------

def test_global_options_after_the_command_name(tmp_path: Path) -> None:
    state = tmp_path / "after"
    result = run_crctl("apply", EXAMPLE_ACME, "--auto-approve", "--state", state,
                       "--actor", "jdoe", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (state / "portal" / "acme.json").exists()
    result = run_crctl("users", "acme", "--state-dir", state, "--format", "json", cwd=tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout)


def test_crctl_toml_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "accounts" / "deep").mkdir(parents=True)
    (repo / "crctl.toml").write_text('state = "state/"\nactor = "jdoe"\n')
    shutil.copy(EXAMPLE_ACME, repo / "accounts" / "acme.yaml")
    applied = run_crctl("apply", "../acme.yaml", "--auto-approve", cwd=repo / "accounts" / "deep")
    assert applied.returncode == 0, applied.stderr
    assert (repo / "state" / "portal" / "acme.json").exists()
    planned = run_crctl("plan", "acme.yaml", cwd=repo / "accounts")
    assert planned.stdout.splitlines()[0] == f"State: {repo / 'state'}"
    assert "No changes." in planned.stdout


def test_crctl_toml_with_a_password_is_refused(tmp_path: Path) -> None:
    (tmp_path / "crctl.toml").write_text('state = "postgresql://bob:hunter2@db/crctl"\n')
    result = run_crctl("plan", EXAMPLE_ACME, cwd=tmp_path)
    assert result.returncode == 1
    assert "password" in result.stderr and "hunter2" not in result.stderr


def test_plan_says_when_the_state_is_empty(tmp_path: Path) -> None:
    result = run_crctl("plan", EXAMPLE_ACME, cwd=tmp_path)
    first = result.stdout.splitlines()[0]
    assert first == f"State: {tmp_path / '.crctl'} (empty: nothing applied here yet)"
    assert not (tmp_path / ".crctl").exists()  # plan never writes


def test_env_state_beats_config_and_cli_beats_env(tmp_path: Path) -> None:
    (tmp_path / "crctl.toml").write_text('state = "from-config"\n')
    env = {"CRCTL_STATE": str(tmp_path / "from-env")}
    result = run_crctl("plan", EXAMPLE_ACME, cwd=tmp_path, env=env)
    assert str(tmp_path / "from-env") in result.stdout.splitlines()[0]
    result = run_crctl("plan", EXAMPLE_ACME, "--state", tmp_path / "from-cli", cwd=tmp_path,
                       env=env)
    assert str(tmp_path / "from-cli") in result.stdout.splitlines()[0]
    os.environ.pop("CRCTL_STATE", None)


# -- accounts, history, audit ---------------------------------------------------------------

def test_accounts_history_and_audit_commands(tmp_path: Path) -> None:
    state = tmp_path / "state"
    apply_ok(state, EXAMPLE_ACME)
    apply_ok(state, _changed_acme(tmp_path))
    accounts = run(state, "accounts", "--format", "json")
    assert accounts.returncode == 0, accounts.stderr
    [acme] = json.loads(accounts.stdout)
    assert (acme["account"], acme["users"], acme["cr_users"], acme["serial"]) == \
        ("acme", 4, 3, 2)
    history = json.loads(run(state, "history", "acme", "--format", "json").stdout)
    assert [v["serial"] for v in history] == [1, 2]
    assert history[1]["counts"] == {"change": 1} and history[1]["actor"] == "jdoe"
    assert history[1]["operation"] == "apply"
    text = run(state, "history", "acme")
    assert text.stdout.startswith(f"State: {state}")
    entries = json.loads(run(state, "audit", "acme", "--user", "asmith", "--format",
                             "json").stdout)
    assert [e["action"] for e in entries] == ["add_user", "enable", "change"]
    changes = run(state, "audit", "acme", "--action", "change", "--format", "csv")
    lines = changes.stdout.splitlines()
    assert lines[0].startswith("time,serial,actor") and len(lines) == 2
    bad = run(state, "audit", "acme", "--since", "yesterday")
    assert bad.returncode == 1 and "ISO date" in bad.stderr
    missing = run(state, "history", "nope")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_lock_timeout_takes_compound_durations(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = run(state, "apply", str(EXAMPLE_ACME), "--auto-approve", "--lock-timeout",
                 "1m30s", actor="jdoe")
    assert result.returncode == 0, result.stderr
    bad = run(state, "sync", "acme", "--lock-timeout", "soon")
    assert bad.returncode == 1 and "invalid duration" in bad.stderr


def test_json_output_of_validate_sync_and_terminate(tmp_path: Path) -> None:
    state = tmp_path / "state"
    valid = run(state, "validate", str(EXAMPLE_ACME), "--format", "json")
    assert json.loads(valid.stdout) == {"valid": True, "files": 1, "errors": [], "warnings": []}
    apply_ok(state, EXAMPLE_ACME)
    synced = json.loads(run(state, "sync", "acme", "--format", "json", actor="jdoe").stdout)
    assert synced["account"] == "acme" and synced["serial"] == 1
    applied = run(state, "apply", str(EXAMPLE_ACME), "--auto-approve", "--format", "json",
                  actor="jdoe")
    assert json.loads(applied.stdout) == {"applied": [], "changed": False,
                                          "unchanged": ["acme"], "unmanaged": []}
    gone = run(state, "terminate", "acme", "--confirm", "acme", "--force", "--format", "json",
               actor="jdoe")
    assert json.loads(gone.stdout)["terminated"]["users"] == 4


def test_import_serial_reads_the_backup_version(tmp_path: Path) -> None:
    state = tmp_path / "state"
    apply_ok(state, EXAMPLE_ACME)
    apply_ok(state, _changed_acme(tmp_path))
    old = run(state, "import", "acme", "--serial", "1")
    assert old.returncode == 0, old.stderr
    assert "always-on" not in old.stdout.split("asmith:")[1].split("bob.smith:")[0]
    gone = run(state, "import", "acme", "--serial", "7")
    assert gone.returncode == 1 and "serial 7 is not kept" in gone.stderr
