"""Account termination (DESIGN §1 "Termination ... deletes the account and all its
recordings", §3 tombstones, §4 `crctl terminate`, §5 the lone terminate_account action).

Declarative (`terminate: true` in the account file, then plan/apply) and imperative
(`crctl terminate ACCOUNT --confirm ACCOUNT`). Each test builds a state directory holding
acme (applied twice, so that portal/acme.json.backup exists, with recordings added to its
MIR mirror by hand, as phones would) and globex, which must come through byte-identical.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from support import EXAMPLES, crctl

ACME_USERS = 4
ACME_CR_USERS = 3


def snapshot(state: Path) -> dict[str, bytes]:
    return {p.relative_to(state).as_posix(): p.read_bytes()
            for p in sorted(state.rglob("*")) if p.is_file()}


def is_acme_file(relpath: str) -> bool:
    return relpath.split("/")[-1].startswith("acme.")


def personal_data(path: Path) -> list[str]:
    """First and last names, full names, emails and phone numbers of a desired file."""
    users = yaml.safe_load(path.read_text(encoding="utf-8"))["users"]
    out: list[str] = []
    for user in users.values():
        out += [user["first_name"], user["last_name"],
                f"{user['first_name']} {user['last_name']}", user["email"]]
        if user.get("phone_number"):
            out += [user["phone_number"], user["phone_number"].lstrip("+")]
    return out


@dataclass
class Setup:
    root: Path
    state: Path
    acme: Path          # examples/acme.yaml, copied
    globex: Path
    terminate: Path     # acme.yaml + `terminate: true`
    recordings: int

    def files(self) -> dict[str, bytes]:
        return snapshot(self.state)


RECORDINGS = [
    {"id": "rec-0001", "user_id": "u1", "started": "2026-11-20T10:00:00Z", "seconds": 61,
     "caller": "+16135550102", "title": "Alice Smith with a customer"},
    {"id": "rec-0002", "user_id": "u1", "started": "2026-11-21T11:00:00Z", "seconds": 12,
     "callee": "alice.smith@acme.example"},
    {"id": "rec-0003", "user_id": "u3", "started": "2026-11-22T09:30:00Z", "seconds": 300,
     "caller": "+16135550101", "title": "Jane Doe: budget"},
    {"id": "rec-0004", "user_id": "u3", "started": "2026-11-23T16:45:00Z", "seconds": 5},
    # A recording of a user deleted long ago: recordings outlive their users.
    {"id": "rec-0005", "user_id": "u99", "started": "2025-01-02T08:00:00Z", "seconds": 42,
     "title": "Bob Smith and Front Desk"},
]


def add_recordings(state: Path, account: str, recordings: list[dict]) -> None:
    """What phones do: recordings appear in the MIR mirror (crctl never creates them)."""
    path = state / "mir" / f"{account}.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["recordings"].extend(recordings)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once: accounts/, edited/, terminate/ and state/; each test works on a copy."""
    root = tmp_path_factory.mktemp("terminate-template")
    accounts = root / "accounts"
    accounts.mkdir()
    acme = accounts / "acme.yaml"
    globex = accounts / "globex.yaml"
    shutil.copy(EXAMPLES / "acme.yaml", acme)
    shutil.copy(EXAMPLES / "globex.yaml", globex)
    state = root / "state"
    for path, actor in ((acme, "jdoe"), (globex, "hank")):
        result = crctl("apply", path, "--auto-approve", state=state, actor=actor)
        assert result.returncode == 0, result.stderr
    # A second apply of acme leaves portal/acme.json.backup behind.
    edited = root / "edited" / "acme.yaml"
    edited.parent.mkdir()
    # It also clears jdoe's prevent_remove, which would refuse every termination (DESIGN
    # §5; test_plan_identity.py tests that refusal).
    edited.write_text(acme.read_text().replace("location: Toronto", "location: Kanata")
                      .replace("prevent_remove: true", "prevent_remove: false"))
    result = crctl("apply", edited, "--auto-approve", state=state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    add_recordings(state, "acme", RECORDINGS)
    terminate = root / "terminate" / "acme.yaml"
    terminate.parent.mkdir()
    terminate.write_text(acme.read_text() + "terminate: true\n")
    files = snapshot(state)
    for name in ("portal/acme.json", "portal/acme.json.backup", "mir/acme.json",
                 "audit/acme.jsonl", "portal/globex.json", "mir/globex.json",
                 "audit/globex.jsonl"):
        assert name in files, sorted(files)
    return root


@pytest.fixture
def setup(template: Path, tmp_path: Path) -> Setup:
    root = tmp_path / "work"
    shutil.copytree(template, root, symlinks=True)
    return Setup(root, root / "state", root / "accounts" / "acme.yaml",
                 root / "accounts" / "globex.yaml", root / "terminate" / "acme.yaml",
                 len(RECORDINGS))


def assert_terminated(s: Setup, before: dict[str, bytes], actor: str) -> dict:
    """acme is gone without a trace of personal data; globex is byte-identical; returns
    the tombstone."""
    after = s.files()
    for name in ("portal/acme.json", "portal/acme.json.backup", "mir/acme.json",
                 "audit/acme.jsonl", "locks/acme.lock"):
        assert name not in after, name
    assert not [n for n in after if is_acme_file(n)], sorted(after)
    # Everything else is exactly as it was; the only new file is the tombstone list.
    kept = {n: b for n, b in before.items() if not is_acme_file(n)}
    assert {n: b for n, b in after.items() if n != "terminated.jsonl"} == \
        {n: b for n, b in kept.items() if n != "terminated.jsonl"}
    for name in ("portal/globex.json", "mir/globex.json", "audit/globex.jsonl"):
        assert after[name] == before[name], name
    # No file left in the state directory holds acme's personal data.
    needles = personal_data(s.acme)
    for name, data in after.items():
        text = data.decode("utf-8", "replace")
        for needle in needles:
            found = needle.lower() in text.lower() if "@" in needle else needle in text
            assert not found, f"{name} still contains {needle!r}"
    # One tombstone: account, time, actor, counts.
    lines = after["terminated.jsonl"].decode().splitlines()
    old = before.get("terminated.jsonl", b"").decode().splitlines()
    assert lines[:len(old)] == old  # appended, never rewritten
    assert len(lines) == len(old) + 1
    tomb = json.loads(lines[-1])
    assert tomb["account"] == "acme"
    assert tomb["actor"] == actor
    when = next(v for k, v in tomb.items() if "time" in k or k.endswith("_at"))
    datetime.fromisoformat(when.replace("Z", "+00:00"))
    counts = tomb.get("deleted", tomb)
    assert counts["users"] == ACME_USERS
    assert counts["recordings"] == s.recordings
    return tomb


# -- declarative: terminate: true -------------------------------------------------------------

def test_plan_of_terminate_true_is_a_lone_terminate_action(setup: Setup) -> None:
    before = setup.files()
    result = crctl("plan", setup.terminate, state=setup.state)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[-1] == (f"Plan: terminate account acme ({ACME_USERS} users, "
                         f"{setup.recordings} recordings will be deleted).")
    # No per-user actions are listed: the termination is the only action.
    assert not re.search(r"(enable CR|add user|update user|remove CR|delete user)",
                         result.stdout), result.stdout

    doc = json.loads(crctl("plan", setup.terminate, "--format", "json", state=setup.state).stdout)
    assert [a["action"] for a in doc["actions"]] == ["terminate_account"]
    assert doc["account"] == "acme"
    assert doc["summary"]["terminate_account"] == 1
    assert all(v == 0 for k, v in doc["summary"].items() if k != "terminate_account")

    assert crctl("plan", setup.terminate, "--detailed-exitcode", state=setup.state).returncode == 2
    markdown = crctl("plan", setup.terminate, "--format", "markdown", state=setup.state).stdout
    assert "terminate account acme" in markdown
    assert setup.files() == before  # plan never writes


def test_terminate_file_without_users_plans_the_same(setup: Setup) -> None:
    bare = setup.root / "bare" / "acme.yaml"
    bare.parent.mkdir()
    bare.write_text("account: acme\nterminate: true\n")
    result = crctl("plan", bare, "--detailed-exitcode", state=setup.state)
    assert result.returncode == 2, result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == (
        f"Plan: terminate account acme ({ACME_USERS} users, {setup.recordings} recordings "
        "will be deleted).")


def test_terminate_plan_of_a_one_user_account_says_user(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts"
    accounts.mkdir()
    solo = accounts / "solo.yaml"
    solo.write_text("account: solo\nusers:\n  boss:\n    first_name: Bo\n    last_name: Ss\n"
                    "    email: boss@solo.example\n    extension: \"10\"\n"
                    "    profile: Elite\n    roles: [decision-maker]\n")
    state = tmp_path / "state"
    assert crctl("apply", solo, "--auto-approve", state=state, actor="boss").returncode == 0
    term = tmp_path / "t" / "solo.yaml"
    term.parent.mkdir()
    term.write_text(solo.read_text() + "terminate: true\n")
    result = crctl("plan", term, state=state)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == \
        "Plan: terminate account solo (1 user, 0 recordings will be deleted)."
    result = crctl("apply", term, "--auto-approve", state=state, actor="boss")
    assert result.returncode == 0, result.stderr
    assert not (state / "portal" / "solo.json").exists()


def test_declarative_termination_needs_a_decision_maker(setup: Setup) -> None:
    before = setup.files()
    for actor in ("asmith", "bob.smith", "lobby", "hank", None):  # phone manager first
        result = crctl("apply", setup.terminate, "--auto-approve", state=setup.state, actor=actor)
        assert result.returncode == 6, (actor, result.stdout + result.stderr)
        assert setup.files() == before, actor


def test_declarative_termination(setup: Setup) -> None:
    before = setup.files()
    result = crctl("apply", setup.terminate, "--auto-approve", state=setup.state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert (f"Plan: terminate account acme ({ACME_USERS} users, {setup.recordings} "
            "recordings will be deleted).") in result.stdout
    assert result.stdout.rstrip().splitlines()[-1] == (
        f"Apply complete: account acme terminated ({ACME_USERS} users, {setup.recordings} "
        "recordings deleted).")
    assert_terminated(setup, before, "jdoe")


def test_declarative_termination_with_the_actor_from_the_environment(setup: Setup) -> None:
    before = setup.files()
    result = crctl("apply", setup.terminate, "--auto-approve",
                   state=setup.state, env={"CRCTL_ACTOR": "jdoe"})
    assert result.returncode == 0, result.stderr
    assert_terminated(setup, before, "jdoe")


def test_declarative_termination_asks_for_yes(setup: Setup) -> None:
    before = setup.files()
    args = ("apply", setup.terminate)
    refused = crctl(*args, state=setup.state, actor="jdoe", input="y\n")
    assert refused.returncode == 1, refused.stdout + refused.stderr  # cancelled
    assert setup.files() == before
    accepted = crctl(*args, state=setup.state, actor="jdoe", input="yes\n")
    assert accepted.returncode == 0, accepted.stderr
    assert_terminated(setup, before, "jdoe")


def test_saved_terminate_plan_applies_once(setup: Setup) -> None:
    planfile = setup.root / "acme.plan"
    assert crctl("plan", setup.terminate, "--out", planfile, state=setup.state).returncode == 0
    before = setup.files()
    assert crctl("apply", planfile, state=setup.state, actor="asmith").returncode == 6
    assert setup.files() == before
    result = crctl("apply", planfile, state=setup.state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert_terminated(setup, before, "jdoe")
    after = setup.files()
    again = crctl("apply", planfile, state=setup.state, actor="jdoe")
    assert again.returncode == 3, again.stdout + again.stderr
    assert setup.files() == after


def test_stale_terminate_plan_is_refused(setup: Setup) -> None:
    planfile = setup.root / "acme.plan"
    assert crctl("plan", setup.terminate, "--out", planfile, state=setup.state).returncode == 0
    # The account moves on (a user is edited) after the plan was reviewed.
    edited = setup.root / "edited2" / "acme.yaml"
    edited.parent.mkdir()
    edited.write_text(setup.acme.read_text().replace("location: Ottawa", "location: Nepean", 1))
    assert crctl("apply", edited, "--auto-approve", state=setup.state, actor="jdoe").returncode == 0
    before = setup.files()
    result = crctl("apply", planfile, state=setup.state, actor="jdoe")
    assert result.returncode == 3, result.stdout + result.stderr
    assert setup.files() == before


# -- imperative: crctl terminate ----------------------------------------------------------------

def test_imperative_termination(setup: Setup) -> None:
    before = setup.files()
    result = crctl("terminate", "acme", "--confirm", "acme", state=setup.state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert "acme" in result.stdout
    assert f"{setup.recordings} recordings" in result.stdout
    assert_terminated(setup, before, "jdoe")


def test_imperative_termination_needs_a_decision_maker(setup: Setup) -> None:
    before = setup.files()
    for actor in ("asmith", "lobby", "hank", None):  # asmith is a Phone Manager
        result = crctl("terminate", "acme", "--confirm", "acme", state=setup.state, actor=actor)
        assert result.returncode == 6, (actor, result.stdout + result.stderr)
        assert "Decision Maker" in result.stderr or actor is None
        assert setup.files() == before, actor


def test_imperative_termination_needs_the_id_repeated(setup: Setup) -> None:
    before = setup.files()
    for confirm in (["--confirm", "globex"], ["--confirm", "ACME"], ["--confirm", "acme "],
                    ["--confirm", ""], []):
        result = crctl("terminate", "acme", *confirm, state=setup.state, actor="jdoe")
        assert result.returncode == 1, (confirm, result.stdout + result.stderr)
        assert "confirm" in result.stderr.lower(), result.stderr
        assert setup.files() == before, confirm


def test_terminating_an_unknown_account_is_an_error(setup: Setup) -> None:
    before = setup.files()
    result = crctl("terminate", "initech", "--confirm", "initech", state=setup.state, actor="jdoe")
    assert result.returncode == 1
    assert "initech" in result.stderr
    assert setup.files() == before


def test_termination_removes_leftovers_of_killed_runs(setup: Setup) -> None:
    """Temporary files of a crashed write and a stale lock hold personal data too."""
    portal = (setup.state / "portal" / "acme.json").read_bytes()
    (setup.state / "portal" / "acme.json.tmp-99999-deadbeef").write_bytes(portal)
    (setup.state / "mir" / "acme.json.tmp-99999-cafef00d").write_bytes(
        (setup.state / "mir" / "acme.json").read_bytes())
    (setup.state / "locks").mkdir(exist_ok=True)
    (setup.state / "locks" / "acme.lock").write_text(json.dumps(
        {"id": "6f1c2a4e-dead-beef-0000-000000000000", "who": "jdoe@crashed-host",
         "operation": "apply", "created": "2026-11-24T10:00:00Z"}))
    before = setup.files()
    result = crctl("terminate", "acme", "--confirm", "acme", state=setup.state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert_terminated(setup, before, "jdoe")


def test_terminating_both_accounts_leaves_two_tombstones(setup: Setup) -> None:
    before = setup.files()
    assert crctl("terminate", "acme", "--confirm", "acme",
                 state=setup.state, actor="jdoe").returncode == 0
    tomb = assert_terminated(setup, before, "jdoe")
    middle = setup.files()
    result = crctl("terminate", "globex", "--confirm", "globex", state=setup.state, actor="hank")
    assert result.returncode == 0, result.stderr
    after = setup.files()
    assert after["terminated.jsonl"].startswith(middle["terminated.jsonl"])
    lines = [json.loads(line) for line in after["terminated.jsonl"].decode().splitlines()]
    assert [t["account"] for t in lines] == ["acme", "globex"]
    assert lines[0] == tomb
    assert set(after) == {"terminated.jsonl"}


# -- after a termination -----------------------------------------------------------------------

@pytest.fixture
def terminated(setup: Setup) -> Setup:
    result = crctl("terminate", "acme", "--confirm", "acme", state=setup.state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    return setup


def test_planning_a_terminated_account_again_shows_no_changes(terminated: Setup) -> None:
    before = terminated.files()
    result = crctl("plan", terminated.terminate, "--detailed-exitcode", state=terminated.state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes." in result.stdout
    result = crctl("apply", terminated.terminate, "--auto-approve",
                   state=terminated.state, actor="jdoe")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes." in result.stdout
    assert terminated.files() == before  # no second tombstone


def test_a_terminated_account_does_not_exist(terminated: Setup) -> None:
    before = terminated.files()
    for command in (["users", "acme"], ["import", "acme"], ["sync", "acme"],
                    ["terminate", "acme", "--confirm", "acme"]):
        result = crctl(*command, state=terminated.state, actor="jdoe")
        assert result.returncode == 1, (command, result.stdout + result.stderr)
        assert "acme" in result.stderr
        assert terminated.files() == before, command


def test_recreating_a_terminated_account_needs_force(terminated: Setup) -> None:
    s = terminated
    before = s.files()
    result = crctl("plan", s.acme, state=s.state)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "--force" in result.stderr
    result = crctl("apply", s.acme, "--auto-approve", state=s.state, actor="jdoe")
    assert result.returncode == 5, result.stdout + result.stderr
    assert "--force" in result.stderr
    assert s.files() == before

    # A plan refused by the limit is still saved (for review), but not forced: applying
    # it needs --force (a forced one would not: test_plan_identity.py).
    planfile = s.root / "recreate.plan"
    result = crctl("plan", s.acme, "--out", planfile, state=s.state)
    assert result.returncode == 5, result.stderr
    result = crctl("apply", planfile, state=s.state, actor="jdoe")
    assert result.returncode == 5, result.stdout + result.stderr
    assert s.files() == before

    result = crctl("apply", s.acme, "--auto-approve", "--force", state=s.state, actor="jdoe")
    assert result.returncode == 0, result.stdout + result.stderr
    portal = json.loads((s.state / "portal" / "acme.json").read_text())
    tomb = json.loads(s.files()["terminated.jsonl"].decode().splitlines()[-1])
    if "lineage" in tomb:
        assert portal["lineage"] != tomb["lineage"]
    users = json.loads(crctl("users", "acme", "--format", "json", state=s.state).stdout)
    assert {u["username"] for u in users} == {"jdoe", "asmith", "bob.smith"}
    mirror = json.loads((s.state / "mir" / "acme.json").read_text())
    assert mirror["recordings"] == []  # the old recordings are gone for good
    # Once re-created, the account plans normally: no changes, no --force needed.
    result = crctl("plan", s.acme, "--detailed-exitcode", state=s.state)
    assert result.returncode == 0, result.stdout + result.stderr


def test_recreating_with_a_saved_plan_and_force(terminated: Setup) -> None:
    s = terminated
    planfile = s.root / "recreate.plan"
    assert crctl("plan", s.acme, "--force", "--out", planfile, state=s.state).returncode == 0
    result = crctl("apply", planfile, "--force", state=s.state, actor="jdoe")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (s.state / "portal" / "acme.json").exists()


def test_an_old_creation_plan_is_refused_after_termination(setup: Setup,
                                                           tmp_path: Path) -> None:
    """A plan saved before the account existed, applied, then the account terminated:
    the plan must not bring the account back without --force."""
    state = tmp_path / "fresh-state"
    planfile = tmp_path / "create.plan"
    assert crctl("plan", setup.acme, "--out", planfile, state=state).returncode == 0
    assert crctl("apply", planfile, state=state, actor="jdoe").returncode == 0
    assert crctl("terminate", "acme", "--confirm", "acme", "--force", state=state,
                 actor="jdoe").returncode == 0  # --force: jdoe's prevent_remove
    before = snapshot(state)
    result = crctl("apply", planfile, state=state, actor="jdoe")
    # applied once already, so stale (3) with or without --force (DESIGN §5)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "stale" in result.stderr, result.stderr
    assert snapshot(state) == before


def test_an_applied_creation_plan_does_not_apply_again_after_termination(
        setup: Setup, tmp_path: Path) -> None:
    state = tmp_path / "fresh-state"
    planfile = tmp_path / "create.plan"
    assert crctl("plan", setup.acme, "--out", planfile, state=state).returncode == 0
    assert crctl("apply", planfile, state=state, actor="jdoe").returncode == 0
    assert crctl("terminate", "acme", "--confirm", "acme", "--force", state=state,
                 actor="jdoe").returncode == 0  # --force: jdoe's prevent_remove
    before = snapshot(state)
    result = crctl("apply", planfile, "--force", state=state, actor="jdoe")
    assert result.returncode == 3, result.stdout + result.stderr
    assert snapshot(state) == before


def test_terminate_messages_use_the_singular_for_one(tmp_path: Path) -> None:
    """One user, one CR service, one recording: "1 user", never "1 users"."""
    state = tmp_path / "state"
    solo = tmp_path / "accounts" / "solo.yaml"
    solo.parent.mkdir()
    solo.write_text(
        "account: solo\nusers:\n  jdoe:\n    first_name: Jane\n    last_name: Doe\n"
        "    email: jane@solo.example\n    extension: \"2101\"\n    profile: Elite\n"
        "    roles: [decision-maker]\n    call_recording:\n      product: on-demand\n",
        encoding="utf-8")
    assert crctl("apply", solo, "--auto-approve", state=state, actor="jdoe").returncode == 0
    add_recordings(state, "solo", RECORDINGS[:1])
    result = crctl("terminate", "solo", "--confirm", "solo", state=state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert "Terminated account solo: 1 user, 1 CR service and 1 recording deleted" \
        in result.stdout, result.stdout
    assert not re.search(r"\b1 (users|recordings|CR services)\b", result.stdout)
