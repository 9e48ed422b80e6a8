"""Regressions of `crctl apply` robustness (issue 10, items 3, 8, 9, 10, 11): stale
termination counts, plan sets naming an account twice, plans read from a pipe, a reader
that goes away after the commit, and one audit trail for an activation whichever command
made it (DESIGN §4-§6).

Black-box: every test runs the real `crctl` command against a scratch state directory
(a copy of one where examples/acme.yaml is applied) and checks what a user sees: the exit
code, the message and the files of the state.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import EXAMPLE_ACME, audit, popen, portal, run, snapshot
from support import argv, crctl, crctl_env

from reconciler.plan import checksum as plan_checksum
from reconciler.plan import digest as plan_digest


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/acme.yaml applied once (serial 1): 4 users, 3 with CR; copied per test."""
    root = tmp_path_factory.mktemp("applied")
    desired = root / "accounts" / "acme.yaml"
    desired.parent.mkdir()
    shutil.copy(EXAMPLE_ACME, desired)
    result = run(root / "state", "apply", str(desired), "--auto-approve", actor="jdoe")
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def root(applied: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "work"
    shutil.copytree(applied, copy, symlinks=True)
    return copy


def add_recordings(state: Path, count: int, account: str = "acme") -> None:
    """What phones do: recordings appear in the MIR mirror (crctl never creates them, and
    the account's serial does not move)."""
    path = state / "mir" / f"{account}.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    start = len(doc["recordings"])
    doc["recordings"].extend({"id": f"rec-{start + i}", "user_id": "u1",
                              "started": "2026-11-24T10:00:00Z"} for i in range(count))
    path.write_text(json.dumps(doc), encoding="utf-8")


def rechecksum(doc: dict[str, Any]) -> dict[str, Any]:
    """What a forger does after editing a plan: recompute its digest and checksum."""
    doc["digest"] = plan_digest(doc)
    doc["checksum"] = plan_checksum(doc)
    return doc


# -- item 3: a saved termination whose counts changed is stale --------------------------------

def _termination_plan(root: Path, recordings: int = 0) -> tuple[Path, Path]:
    """A `terminate: true` desired file and the saved plan of it."""
    terminate = root / "terminate" / "acme.yaml"
    terminate.parent.mkdir()
    terminate.write_text(EXAMPLE_ACME.read_text(encoding="utf-8") + "terminate: true\n",
                         encoding="utf-8")
    planfile = root / "terminate.plan.json"
    # --force: jdoe's prevent_remove refuses a termination (DESIGN §5); the forced plan
    # records it and applies without a second --force
    result = run(root / "state", "plan", str(terminate), "--out", str(planfile), "--force")
    assert result.returncode == 0, result.stderr
    doc = json.loads(planfile.read_text(encoding="utf-8"))
    assert doc["actions"][0]["before"] == {"users": 4, "cr_users": 3,
                                           "recordings": recordings}
    return terminate, planfile


@pytest.mark.parametrize("desired_file", ["unchanged", "removed", "edited"])
def test_saved_termination_is_stale_after_recordings_were_made(root: Path,
                                                               desired_file: str) -> None:
    state = root / "state"
    terminate, planfile = _termination_plan(root)
    add_recordings(state, 2)
    if desired_file == "removed":
        terminate.unlink()
    elif desired_file == "edited":
        terminate.write_text(terminate.read_text(encoding="utf-8") + "# reviewed\n",
                             encoding="utf-8")
    before = snapshot(state)
    result = run(state, "apply", str(planfile), actor="jdoe")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "plan is stale" in result.stderr
    assert "recordings 0 → 2" in result.stderr
    assert snapshot(state) == before  # nothing terminated, nothing written


def test_saved_termination_is_stale_after_a_user_was_added(root: Path) -> None:
    state = root / "state"
    _, planfile = _termination_plan(root)
    grown = root / "grown" / "acme.yaml"
    grown.parent.mkdir()
    grown.write_text(EXAMPLE_ACME.read_text(encoding="utf-8").replace(
        "users:\n", "users:\n  zed:\n    first_name: Zed\n    last_name: Zee\n"
        "    email: zed@acme.example\n    extension: \"2150\"\n    profile: Elite\n"
        "    call_recording: {product: on-demand}\n", 1), encoding="utf-8")
    assert run(state, "apply", str(grown), "--auto-approve", actor="jdoe").returncode == 0
    add_recordings(state, 1)
    before = snapshot(state)
    result = run(state, "apply", str(planfile), actor="jdoe")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert ("the account changed since the plan was made (serial 1 → 2, users 4 → 5, "
            "CR users 3 → 4, recordings 0 → 1)") in result.stderr
    assert snapshot(state) == before


def test_saved_termination_with_unchanged_counts_applies(root: Path) -> None:
    state = root / "state"
    add_recordings(state, 3)
    _, planfile = _termination_plan(root, recordings=3)
    result = run(state, "apply", str(planfile), actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert "account acme terminated (4 users, 3 recordings deleted)" in result.stdout
    assert not (state / "portal" / "acme.json").exists()


@pytest.mark.parametrize(("forge", "words"), [
    # counts that do not match the state the plan claims to be made from
    (lambda c: c.update(recordings=5), "recordings 5 → 0"),
    (lambda c: c.update(users=3), "plan was altered"),
    (lambda c: c.update(cr_users=0), "plan was altered"),
    # counts of the wrong shape
    (lambda c: c.update(recordings="0"), "plan was altered"),
    (lambda c: c.update(recordings=-1), "plan was altered"),
    (lambda c: c.update(extra=1), "plan was altered"),
    (lambda c: c.pop("recordings"), "plan was altered"),
], ids=["more-recordings", "fewer-users", "no-cr-users", "string", "negative", "extra-key",
        "missing-key"])
@pytest.mark.parametrize("desired_file", ["unchanged", "removed"])
def test_forged_termination_counts_are_refused(root: Path, forge: Any, words: str,
                                               desired_file: str) -> None:
    state = root / "state"
    terminate, planfile = _termination_plan(root)
    if desired_file == "removed":
        terminate.unlink()
    doc = json.loads(planfile.read_text(encoding="utf-8"))
    forge(doc["actions"][0]["before"])
    planfile.write_text(json.dumps(rechecksum(doc)), encoding="utf-8")
    before = snapshot(state)
    result = run(state, "apply", str(planfile), actor="jdoe")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert words in result.stderr, result.stderr
    assert snapshot(state) == before


def test_termination_plan_without_counts_is_refused(root: Path) -> None:
    state = root / "state"
    terminate, planfile = _termination_plan(root)
    terminate.unlink()
    doc = json.loads(planfile.read_text(encoding="utf-8"))
    doc["actions"][0]["before"] = None
    planfile.write_text(json.dumps(rechecksum(doc)), encoding="utf-8")
    before = snapshot(state)
    result = run(state, "apply", str(planfile), actor="jdoe")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "plan was altered" in result.stderr
    assert snapshot(state) == before
    assert portal(state)["serial"] == 1
    assert audit(state)  # the account and its audit log are still there


def test_termination_of_a_desired_file_counts_what_it_deletes(root: Path) -> None:
    """Applying the desired file plans afresh under the lock: the new recordings are shown
    and deleted, with no staleness to report."""
    state = root / "state"
    terminate, _ = _termination_plan(root)
    add_recordings(state, 2)
    result = run(state, "apply", str(terminate), "--auto-approve", "--force", actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert "account acme terminated (4 users, 2 recordings deleted)" in result.stdout


# -- item 8: a plan set naming one account twice is refused whole ----------------------------

def _acme_and_initech_plans(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Saved plans of a change to acme and of a new account initech (jdoe manages both)."""
    state = root / "state"
    text = EXAMPLE_ACME.read_text(encoding="utf-8")
    changed = root / "changed" / "acme.yaml"
    changed.parent.mkdir()
    changed.write_text(text.replace("location: Toronto", "location: Kanata"), encoding="utf-8")
    initech = root / "changed" / "initech.yaml"
    initech.write_text(text.replace("account: acme", "account: initech"), encoding="utf-8")
    docs = []
    for desired in (changed, initech):
        out = root / f"{desired.stem}.plan.json"
        result = run(state, "plan", str(desired), "--out", str(out))
        assert result.returncode == 0, result.stderr
        docs.append(json.loads(out.read_text(encoding="utf-8")))
    return docs[0], docs[1]


@pytest.mark.parametrize("order", ["adjacent", "apart"])
def test_plan_set_naming_an_account_twice_is_refused_whole(root: Path, order: str) -> None:
    state = root / "state"
    acme, initech = _acme_and_initech_plans(root)
    docs = [initech, acme, acme] if order == "adjacent" else [acme, initech, acme]
    planfile = root / "set.json"
    planfile.write_text(json.dumps(docs), encoding="utf-8")
    before = snapshot(state)
    result = run(state, "apply", str(planfile), actor="jdoe")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "account acme: the plan set names it twice" in result.stderr
    assert "nothing was applied" in result.stderr
    assert snapshot(state) == before  # neither initech (new) nor acme was written
    assert not (state / "portal" / "initech.json").exists()


# -- item 9: a plan read from a pipe ----------------------------------------------------------

def _saved_change(root: Path) -> Path:
    """A saved plan of one change to acme (bob.smith moves to Kanata)."""
    changed = root / "changed" / "acme.yaml"
    changed.parent.mkdir(exist_ok=True)
    changed.write_text(EXAMPLE_ACME.read_text(encoding="utf-8").replace(
        "location: Toronto", "location: Kanata"), encoding="utf-8")
    planfile = root / "change.plan.json"
    result = run(root / "state", "plan", str(changed), "--out", str(planfile))
    assert result.returncode == 0, result.stderr
    return planfile


def _assert_change_applied(state: Path, result: Any) -> None:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout.rstrip().splitlines()[-1] == (
        "Apply complete: 0 enabled, 0 changed, 0 removed; 0 users added, 1 updated, "
        "0 deleted.")
    assert portal(state)["serial"] == 2
    assert {u["location"] for u in portal(state)["users"].values()} >= {"Kanata"}


def test_apply_reads_a_plan_from_stdin(root: Path) -> None:
    state = root / "state"
    planfile = _saved_change(root)
    result = run(state, "apply", "/dev/stdin", actor="jdoe",
                 input=planfile.read_text(encoding="utf-8"))
    _assert_change_applied(state, result)


def test_apply_reads_a_plan_from_stdin_with_its_checksum(root: Path) -> None:
    state = root / "state"
    doc = json.loads(_saved_change(root).read_text(encoding="utf-8"))
    result = run(state, "apply", "/dev/stdin", "--checksum", doc["checksum"], actor="jdoe",
                 input=json.dumps(doc))
    _assert_change_applied(state, result)


def test_apply_reads_a_plan_from_a_fifo(root: Path) -> None:
    state = root / "state"
    text = _saved_change(root).read_text(encoding="utf-8")
    fifo = root / "plan.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(fifo, "w", encoding="utf-8") as out:
            out.write(text)  # the open blocks until crctl opens the FIFO to read

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    proc = popen(state, "apply", str(fifo), actor="jdoe")
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if writer.is_alive():  # crctl never opened it: release the writer
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(timeout=10)
    _assert_change_applied(state, subprocess.CompletedProcess(proc.args, proc.returncode,
                                                              out, err))


@pytest.mark.skipif(shutil.which("bash") is None, reason="process substitution needs bash")
def test_apply_reads_a_plan_from_process_substitution(root: Path) -> None:
    state = root / "state"
    planfile = _saved_change(root)
    command = shlex.join(argv("apply", state=state)) + f" <(cat {shlex.quote(str(planfile))})"
    result = subprocess.run(["bash", "-c", command], env=crctl_env("jdoe"),
                            capture_output=True, text=True, timeout=120)
    _assert_change_applied(state, result)


def test_desired_state_from_a_pipe_is_a_clear_refusal(root: Path) -> None:
    state = root / "state"
    before = snapshot(state)
    result = run(state, "apply", "/dev/stdin", "--auto-approve", actor="jdoe",
                 input=EXAMPLE_ACME.read_text(encoding="utf-8"))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "/dev/stdin: not a saved plan (JSON)" in result.stderr
    assert snapshot(state) == before


# -- item 10: a reader that goes away after the commit ----------------------------------------

def _read_until(stream: Any, marker: bytes, limit: int = 1 << 20) -> bytes:
    seen = b""
    while marker not in seen and len(seen) < limit:
        chunk = stream.read1(4096)
        if not chunk:
            break
        seen += chunk
    return seen


def test_reader_gone_after_the_commit_exits_0(root: Path) -> None:
    """The reader closes stdout at the prompt; after 'yes' the commit runs and the closing
    line meets a broken pipe: the change is applied, so exit 0, and stderr says so."""
    state = root / "state"
    _saved_change(root)
    changed = root / "changed" / "acme.yaml"
    proc = popen(state, "apply", str(changed), actor="jdoe", stdin=subprocess.PIPE,
                 text=False)
    shown = _read_until(proc.stdout, b"Only 'yes' will be accepted: ")
    assert b"Only 'yes' will be accepted: " in shown, shown
    proc.stdout.close()  # the reader goes away (as `| head -1` would)
    proc.stdin.write(b"yes\n")
    proc.stdin.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert "the apply had committed: acme (serial 2)" in err
    assert portal(state)["serial"] == 2
    assert [e["action"] for e in audit(state)][-1] == "update_user"


@pytest.mark.skipif(shutil.which("bash") is None, reason="pipefail needs bash")
@pytest.mark.parametrize("streams", ["stdout", "stdout and stderr"])
def test_json_apply_into_a_pipe_closed_early_exits_0(root: Path, streams: str) -> None:
    """`crctl apply --auto-approve --format json | true`: nothing is printed before the
    commit, the reader is gone when the result is written; crctl's own status is 0."""
    state = root / "state"
    _saved_change(root)
    changed = root / "changed" / "acme.yaml"
    command = shlex.join(argv("apply", str(changed), "--auto-approve", "--format", "json",
                              state=state))
    redirect = " 2>&1" if streams == "stdout and stderr" else ""
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}{redirect} | true"],
        env=crctl_env("jdoe"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr
    assert portal(state)["serial"] == 2


def test_reader_gone_before_the_commit_changes_nothing(root: Path) -> None:
    """Before the commit a broken pipe stays an error (the plan could not be shown): exit 1,
    a message, and nothing written."""
    state = root / "state"
    planfile = _saved_change(root)
    before = snapshot(state)
    proc = popen(state, "apply", str(planfile), actor="jdoe", text=False)
    proc.stdout.close()  # gone before crctl prints the plan
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, err
    assert "the output was closed before anything was applied; nothing was changed" in err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert snapshot(state) == before


# -- item 11: an activation writes the same audit entries from apply and from sync -------------

DUE = "2026-12-03"  # after bob.smith's activation date (2026-12-01) in examples/acme.yaml
RUN_METADATA = ("time", "operation", "run_id")  # when and by which command: not the change


def _activation_entries(state: Path, since: int) -> list[dict[str, Any]]:
    return [{k: v for k, v in entry.items() if k not in RUN_METADATA}
            for entry in audit(state)[since:]]


@pytest.mark.parametrize("via", ["desired file", "saved plan"])
def test_activation_by_apply_and_by_sync_write_the_same_audit_entries(root: Path,
                                                                      via: str) -> None:
    by_apply, by_sync = root / "state", root / "synced"
    shutil.copytree(by_apply, by_sync)
    desired = root / "accounts" / "acme.yaml"
    since = len(audit(by_apply))
    if via == "desired file":
        applied = run(by_apply, "apply", str(desired), "--auto-approve", actor="jdoe",
                      today=DUE)
    else:
        planfile = root / "due.plan.json"
        planned = run(by_apply, "plan", str(desired), "--out", str(planfile), today=DUE)
        assert planned.returncode == 0, planned.stderr
        applied = run(by_apply, "apply", str(planfile), actor="jdoe", today=DUE)
    assert applied.returncode == 0, applied.stderr
    synced = run(by_sync, "sync", "acme", actor="jdoe", today=DUE)
    assert synced.returncode == 0, synced.stderr
    assert "1 pending service activated" in synced.stdout

    from_apply = _activation_entries(by_apply, since)
    from_sync = _activation_entries(by_sync, since)
    assert from_apply == from_sync
    assert [(e["action"], e["user"], e["serial"]) for e in from_apply] == [
        ("activate", "bob.smith", 2)]
    entry = from_apply[0]
    assert (entry["before"]["status"], entry["after"]["status"]) == ("pending", "active")
    assert entry["actor"] == "jdoe" and entry["plan_checksum"] is None
    assert portal(by_apply)["users"] == portal(by_sync)["users"]
    assert portal(by_apply)["serial"] == portal(by_sync)["serial"] == 2
    # once activated, neither command activates it again
    again = run(by_apply, "sync", "acme", actor="jdoe", today=DUE)
    assert again.returncode == 0 and len(audit(by_apply)) == since + 1


def test_activation_entry_follows_the_actions_of_the_same_apply(root: Path) -> None:
    """An apply that also changes something writes its actions' entries, then the
    activation's, all in the one commit (one serial)."""
    state = root / "state"
    _saved_change(root)
    changed = root / "changed" / "acme.yaml"
    since = len(audit(state))
    result = run(state, "apply", str(changed), "--auto-approve", actor="jdoe", today=DUE)
    assert result.returncode == 0, result.stderr
    entries = audit(state)[since:]
    assert [(e["action"], e["user"]) for e in entries] == [
        ("update_user", "bob.smith"), ("activate", "bob.smith")]
    assert {e["serial"] for e in entries} == {2}
    assert entries[0]["plan_checksum"] is not None and entries[1]["plan_checksum"] is None


# -- the same promises on the PostgreSQL backend (items 3 and 11) ------------------------------

def _pg_audit(url: str) -> list[dict[str, Any]]:
    result = crctl("audit", "acme", "--format", "json", state=url)
    assert result.returncode == 0, result.stderr
    return [{k: v for k, v in e.items() if k not in RUN_METADATA}
            for e in json.loads(result.stdout)]


def test_postgres_saved_termination_is_stale_after_a_recording(
        pg_server: Any, pg_database: Callable[[], str], tmp_path: Path) -> None:
    url = pg_database()
    database = url.split("/")[3].split("?")[0]
    assert crctl("apply", EXAMPLE_ACME, "--auto-approve", state=url,
                 actor="jdoe").returncode == 0
    _, planfile = _termination_plan_at(url, tmp_path)
    pg_server.psql("INSERT INTO crctl.recordings (account, id, user_id, data) VALUES "
                   "('acme', 'r1', 'u1', '{\"id\": \"r1\", \"user_id\": \"u1\"}')", database)
    result = crctl("apply", planfile, state=url, actor="jdoe")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "plan is stale" in result.stderr and "recordings 0 → 1" in result.stderr
    users = crctl("users", "acme", "--format", "json", state=url)
    assert users.returncode == 0 and len(json.loads(users.stdout)) == 3  # not terminated


def _termination_plan_at(url: str, tmp_path: Path) -> tuple[Path, Path]:
    terminate = tmp_path / "terminate" / "acme.yaml"
    terminate.parent.mkdir()
    terminate.write_text(EXAMPLE_ACME.read_text(encoding="utf-8") + "terminate: true\n",
                         encoding="utf-8")
    planfile = tmp_path / "terminate.plan.json"
    result = crctl("plan", terminate, "--out", planfile, "--force", state=url)  # prevent_remove
    assert result.returncode == 0, result.stderr
    return terminate, planfile


def test_postgres_activation_by_apply_and_by_sync_write_the_same_audit_entries(
        pg_server: Any, pg_database: Callable[[], str]) -> None:
    by_apply, by_sync = pg_database(), pg_database()
    for url in (by_apply, by_sync):
        assert crctl("apply", EXAMPLE_ACME, "--auto-approve", state=url,
                     actor="jdoe").returncode == 0
    since = len(_pg_audit(by_apply))
    applied = crctl("apply", EXAMPLE_ACME, "--auto-approve", state=by_apply, actor="jdoe",
                    today=DUE)
    assert applied.returncode == 0, applied.stderr
    synced = crctl("sync", "acme", state=by_sync, actor="jdoe", today=DUE)
    assert synced.returncode == 0, synced.stderr
    from_apply, from_sync = _pg_audit(by_apply)[since:], _pg_audit(by_sync)[since:]
    assert from_apply == from_sync
    assert [(e["action"], e["user"]) for e in from_apply] == [("activate", "bob.smith")]
