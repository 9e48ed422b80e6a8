"""`crctl apply`: saved plans (stale, altered, applied once), the prompt, actors, the audit
log, pending services and `sync`, renames, recordings, and the closing line (DESIGN §1,
§3-§6). Every command runs the real CLI in a subprocess against a scratch state dir."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import (
    COMPLETE_RE,
    EXAMPLE_ACME,
    TODAY,
    acme_users,
    apply_ok,
    audit,
    complete_line,
    files_of,
    mirror,
    portal,
    run,
    save_plan,
    snapshot,
    user_id,
    write_acme,
    write_mirror,
)

from reconciler.mirror import project
from reconciler.plan import checksum as plan_checksum

HEX64 = re.compile(r"^[0-9a-f]{64}$")
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


# -- fixtures and small helpers ---------------------------------------------------------------

@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of examples/acme.yaml (the desired file records its path in plans)."""
    target = tmp_path / "example" / "acme.yaml"
    target.parent.mkdir()
    shutil.copy(EXAMPLE_ACME, target)
    return target


@pytest.fixture
def acme(state: Path, example: Path) -> Path:
    """The state dir with examples/acme.yaml applied (serial 1)."""
    apply_ok(state, example)
    assert portal(state)["serial"] == 1
    return state


def desired(tmp_path: Path, tag: str, users: dict[str, dict[str, Any]], **top: Any) -> Path:
    """A desired acme.yaml: `users` with the example's time zone and recording groups."""
    return write_acme(tmp_path / tag, users, **top)


def assert_mirror_consistent(state: Path, today: str = TODAY, account: str = "acme") -> None:
    assert mirror(state, account)["users"] == project(portal(state, account)["users"], today)


def assert_refused(result, code: int, *words: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    for word in words:
        assert word in result.stderr.lower(), result.stderr


def plan_exit(state: Path, path: Path, today: str = TODAY) -> int:
    result = run(state, "plan", str(path), "--detailed-exitcode", today=today)
    # not an error; the callers assert which of the two they expect
    assert result.returncode in (0, 2), (result.stdout, result.stderr)
    return result.returncode


def counts(stdout: str) -> tuple[int, ...]:
    match = re.match(COMPLETE_RE, complete_line(stdout))
    assert match, stdout
    return tuple(int(g) for g in match.groups())


# -- saved plans: applied at most once, stale, altered ------------------------------------------

def test_saved_plan_of_new_account_applies_once(state: Path, example: Path,
                                                tmp_path: Path) -> None:
    plan_file = tmp_path / "acme.plan.json"
    doc = save_plan(state, example, plan_file)
    assert doc["prior_state"] == {"lineage": None, "serial": 0}
    assert files_of(state) == []  # plan never writes

    first = run(state, "apply", str(plan_file), actor="jdoe")
    assert first.returncode == 0, first.stderr
    assert "Apply these actions?" not in first.stdout  # the reviewed plan is the approval
    assert complete_line(first.stdout) == ("Apply complete: 3 enabled, 0 changed, 0 removed; "
                                           "4 users added, 0 updated, 0 deleted; "
                                           "1 group added, 0 updated, 0 deleted.")
    before = snapshot(state)

    again = run(state, "apply", str(plan_file), actor="jdoe")
    assert_refused(again, 3, "stale")
    assert snapshot(state) == before


def test_second_plan_made_before_account_existed_is_stale(state: Path, example: Path,
                                                          tmp_path: Path) -> None:
    plan_a = tmp_path / "a.json"
    plan_b = tmp_path / "b.json"
    save_plan(state, example, plan_a)
    save_plan(state, example, plan_b)
    apply_ok(state, plan_a)
    before = snapshot(state)
    result = run(state, "apply", str(plan_b), actor="jdoe")
    assert_refused(result, 3, "stale")
    assert "does not exist" not in result.stderr
    assert snapshot(state) == before


def test_plan_made_before_account_existed_not_reapplied_after_termination(
        state: Path, example: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "acme.plan.json"
    save_plan(state, example, plan_file)
    apply_ok(state, plan_file)
    gone = tmp_path / "terminate" / "acme.yaml"
    gone.parent.mkdir()
    gone.write_text("account: acme\nterminate: true\n", encoding="utf-8")
    apply_ok(state, gone, "jdoe", "--force")  # --force: jdoe's prevent_remove (DESIGN §5)
    assert not (state / "portal" / "acme.json").exists()
    before = snapshot(state)

    refused = run(state, "apply", str(plan_file), actor="jdoe")
    # it applied once already: stale (DESIGN §5 "a saved plan applies at most once"); the
    # re-creation limit is moot for a plan that cannot apply, and --force says 3 below too
    assert_refused(refused, 3, "stale")
    assert snapshot(state) == before
    forced = run(state, "apply", str(plan_file), "--force", actor="jdoe")
    assert_refused(forced, 3, "stale")  # --force overrides safety limits, not staleness
    assert snapshot(state) == before


def _creation_plan(created_at: str) -> Any:
    """A saved plan (it has its checksum, as `plan.load` gives it) that creates acme."""
    from dataclasses import replace

    from reconciler.plan import Action, Kind, Plan

    plan = Plan(account="acme", desired_path=None, desired_sha256=None, lineage=None,
                serial=0, created_at=created_at, actions=(Action(
                    Kind.CREATE_ACCOUNT, None, None, None, {"account": "acme", "name": None}),))
    return replace(plan, checksum=plan.to_document()["checksum"])


@pytest.mark.parametrize(("tomb_time", "same_lineage", "stale"), [
    ("2026-11-25T10:00:01Z", False, True),   # created and terminated after the plan
    ("2026-11-25T09:59:59Z", True, True),    # this very plan created the account before
    ("2026-11-25T10:00:00Z", False, False),  # the same second: the plan may be newer
    ("2026-11-25T09:00:00Z", False, False),  # an older account life: the plan is newer
    ("not a time", False, False),
])
def test_creation_plan_against_tombstones(tomb_time: str, same_lineage: bool,
                                          stale: bool) -> None:
    """A plan made before its account existed is stale once the account id has a tombstone
    of a life that began after the plan, or of the lineage this plan itself created."""
    from reconciler.applier import check_fresh, lineage_for
    from reconciler.errors import StalePlanError
    from reconciler.model import CurrentAccount

    plan = _creation_plan("2026-11-25T10:00:00Z")
    lineage = lineage_for(plan) if same_lineage else "0f0f0f0f-0000-4000-8000-000000000000"
    assert lineage_for(plan) == lineage_for(plan)  # derived from the saved plan: stable
    tombstones = [{"account": "acme", "terminated_at": tomb_time, "lineage": lineage}]
    if stale:
        with pytest.raises(StalePlanError, match="stale"):
            check_fresh(plan, CurrentAccount("acme"), tombstones)
    else:
        check_fresh(plan, CurrentAccount("acme"), tombstones)
    check_fresh(plan, CurrentAccount("acme"), [])  # no tombstone: a plain new account


def test_stale_plan_after_another_apply(acme: Path, tmp_path: Path) -> None:
    users = acme_users()
    users["asmith"]["call_recording"]["product"] = "always-on"
    plan_file = tmp_path / "change.json"
    doc = save_plan(acme, desired(tmp_path, "change", users), plan_file)
    assert doc["prior_state"]["serial"] == 1
    assert doc["summary"]["change"] == 1

    other = acme_users()
    other["lobby"]["last_name"] = "Reception"
    apply_ok(acme, desired(tmp_path, "other", other), "asmith")
    assert portal(acme)["serial"] == 2
    before = snapshot(acme)

    result = run(acme, "apply", str(plan_file), actor="jdoe")
    assert_refused(result, 3, "stale")
    assert "serial 1" in result.stderr and "serial 2" in result.stderr
    assert snapshot(acme) == before


def _edit_action_product(doc: dict[str, Any]) -> None:
    change = next(a for a in doc["actions"] if a["action"] == "change")
    change["after"]["product"] = "on-demand" if change["after"]["product"] == "always-on" \
        else "always-on"


def _edit_serial(doc: dict[str, Any]) -> None:
    doc["prior_state"]["serial"] += 1


def _edit_checksum(doc: dict[str, Any]) -> None:
    doc["checksum"] = "0" * 64


def _edit_user(doc: dict[str, Any]) -> None:
    doc["actions"][0]["user"] = "jdoe"


@pytest.mark.parametrize("edit", [_edit_action_product, _edit_serial, _edit_checksum,
                                  _edit_user])
def test_altered_plan_is_refused(acme: Path, tmp_path: Path, edit) -> None:
    users = acme_users()
    users["asmith"]["call_recording"]["product"] = "always-on"
    plan_file = tmp_path / "change.json"
    doc = save_plan(acme, desired(tmp_path, "change", users), plan_file)
    edit(doc)
    plan_file.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    before = snapshot(acme)

    result = run(acme, "apply", str(plan_file), actor="jdoe")
    assert_refused(result, 3, "altered")
    assert snapshot(acme) == before
    shown = run(acme, "show", str(plan_file))
    assert shown.returncode == 3


def test_altered_plan_with_recomputed_checksum_is_refused(acme: Path, tmp_path: Path) -> None:
    """Editing an action and redoing the checksum is caught while the desired file that
    the plan names is unchanged."""
    users = acme_users()
    users["asmith"]["call_recording"]["product"] = "always-on"
    plan_file = tmp_path / "change.json"
    doc = save_plan(acme, desired(tmp_path, "change", users), plan_file)
    _edit_action_product(doc)
    doc["checksum"] = plan_checksum(doc)
    plan_file.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    before = snapshot(acme)

    result = run(acme, "apply", str(plan_file), actor="jdoe")
    assert_refused(result, 3, "altered")
    assert snapshot(acme) == before


def test_checksum_option(acme: Path, tmp_path: Path) -> None:
    users = acme_users()
    users["lobby"]["first_name"] = "Main"
    plan_file = tmp_path / "p.json"
    doc = save_plan(acme, desired(tmp_path, "v2", users), plan_file)
    before = snapshot(acme)

    wrong = "f" * 64 if doc["checksum"] != "f" * 64 else "e" * 64
    result = run(acme, "apply", str(plan_file), "--checksum", wrong, actor="jdoe")
    assert_refused(result, 3, "altered")
    assert snapshot(acme) == before

    result = run(acme, "apply", str(plan_file), "--checksum", doc["checksum"], actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert portal(acme)["serial"] == 2
    assert counts(result.stdout) == (0, 0, 0, 0, 1, 0)


def test_checksum_option_needs_a_saved_plan(acme: Path, example: Path) -> None:
    before = snapshot(acme)
    result = run(acme, "apply", str(example), "--auto-approve", "--checksum", "0" * 64,
                 actor="jdoe")
    assert result.returncode == 1
    assert snapshot(acme) == before


def test_saved_plan_applies_after_activation_date(state: Path, example: Path,
                                                  tmp_path: Path) -> None:
    plan_file = tmp_path / "acme.plan.json"
    save_plan(state, example, plan_file, today="2026-11-25")
    result = run(state, "apply", str(plan_file), actor="jdoe", today="2026-12-02")
    assert result.returncode == 0, result.stderr
    bob = portal(state)["users"][user_id(state, "bob.smith")]
    assert bob["call_recording"]["status"] == "active"
    assert_mirror_consistent(state, "2026-12-02")


# -- idempotence -------------------------------------------------------------------------------

def test_second_apply_of_same_file_changes_nothing(acme: Path, example: Path) -> None:
    assert plan_exit(acme, example) == 0
    before = snapshot(acme)
    lines = len(audit(acme))
    assert lines == 9  # create_account, 4 add_user, 3 enable, add_group

    result = run(acme, "apply", str(example), "--auto-approve", actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("No changes.")
    assert "Apply complete" not in result.stdout
    assert portal(acme)["serial"] == 1
    assert len(audit(acme)) == lines
    assert snapshot(acme) == before


def test_saved_plan_without_changes_changes_nothing(acme: Path, example: Path,
                                                    tmp_path: Path) -> None:
    plan_file = tmp_path / "noop.json"
    doc = save_plan(acme, example, plan_file)
    assert doc["actions"] == []
    before = snapshot(acme)
    result = run(acme, "apply", str(plan_file), actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert "No changes." in result.stdout
    assert snapshot(acme) == before


# -- the confirmation prompt ---------------------------------------------------------------------

def test_prompt_yes_applies(state: Path, example: Path) -> None:
    result = run(state, "apply", str(example), actor="jdoe", input="yes\n")
    assert result.returncode == 0, result.stderr
    assert "Apply these actions? Only 'yes' will be accepted:" in result.stdout
    assert result.stdout.index("Plan: 3 to enable") < result.stdout.index("Apply these")
    assert complete_line(result.stdout).startswith("Apply complete: 3 enabled")
    assert portal(state)["serial"] == 1


@pytest.mark.parametrize("answer", ["no\n", "y\n", "YES\n", "\n", ""])
def test_prompt_anything_but_yes_cancels(acme: Path, tmp_path: Path, answer: str) -> None:
    users = acme_users()
    users["lobby"]["last_name"] = "Reception"
    before = snapshot(acme)
    result = run(acme, "apply", str(desired(tmp_path, "v2", users)), actor="jdoe",
                 input=answer)
    assert_refused(result, 1, "apply cancelled")
    assert "Apply complete" not in result.stdout
    assert snapshot(acme) == before


def test_prompt_no_on_new_account_writes_nothing(state: Path, example: Path) -> None:
    result = run(state, "apply", str(example), actor="jdoe", input="no\n")
    assert_refused(result, 1, "apply cancelled")
    assert files_of(state) == []


# -- actors -------------------------------------------------------------------------------------

def _apply_as(state: Path, path: Path, actor: str | None, how: str):
    if how == "flag" and actor is not None:
        return run(state, "--actor", actor, "apply", str(path), "--auto-approve")
    return run(state, "apply", str(path), "--auto-approve", actor=actor)


@pytest.mark.parametrize(("actor", "code", "how"), [
    (None, 6, "env"), ("nobody", 6, "env"), ("nobody", 6, "flag"), ("lobby", 6, "env"),
    ("bob.smith", 6, "flag"), ("asmith", 0, "env"), ("asmith", 0, "flag"), ("jdoe", 0, "flag"),
])
def test_actor_on_existing_account(acme: Path, tmp_path: Path, actor: str | None, code: int,
                                   how: str) -> None:
    users = acme_users()
    users["lobby"]["last_name"] = "Reception"
    path = desired(tmp_path, "v2", users)
    before = snapshot(acme)
    result = _apply_as(acme, path, actor, how)
    assert result.returncode == code, (result.stdout, result.stderr)
    if code == 6:
        assert snapshot(acme) == before
        assert "actor" in result.stderr.lower()
        if actor:
            assert actor in result.stderr
    else:
        assert portal(acme)["serial"] == 2
        assert audit(acme)[-1]["actor"] == actor


@pytest.mark.parametrize(("actor", "code"), [
    (None, 6), ("nobody", 6), ("lobby", 6), ("bob.smith", 6), ("asmith", 0), ("jdoe", 0),
])
def test_actor_on_new_account_comes_from_desired_file(state: Path, example: Path,
                                                      actor: str | None, code: int) -> None:
    result = _apply_as(state, example, actor, "env")
    assert result.returncode == code, (result.stdout, result.stderr)
    if code == 6:
        assert files_of(state) == []  # nothing written (at most empty directories)
    else:
        assert portal(state)["serial"] == 1


def test_actor_role_counts_in_current_account_not_desired(acme: Path, tmp_path: Path) -> None:
    users = acme_users()
    users["lobby"]["roles"] = ["decision-maker"]  # granted by the very file being applied
    path = desired(tmp_path, "grant", users)
    before = snapshot(acme)
    result = run(acme, "apply", str(path), "--auto-approve", actor="lobby")
    assert_refused(result, 6, "lobby")
    assert snapshot(acme) == before

    newcomer = acme_users()
    newcomer["eve"] = {"first_name": "Eve", "last_name": "New", "email": "eve@acme.example",
                       "extension": "2150", "profile": "Elite", "roles": ["decision-maker"]}
    result = run(acme, "apply", str(desired(tmp_path, "eve", newcomer)), "--auto-approve",
                 actor="eve")
    assert_refused(result, 6, "eve")
    assert snapshot(acme) == before

    # a Decision Maker may give up the role in the apply that hands it to someone else
    handover = acme_users()
    handover["jdoe"]["roles"] = []
    handover["asmith"]["roles"] = ["decision-maker"]
    apply_ok(acme, desired(tmp_path, "handover", handover), "jdoe")
    assert "decision-maker" in portal(acme)["users"][user_id(acme, "asmith")]["roles"]


def test_actor_checked_for_saved_plan(acme: Path, tmp_path: Path) -> None:
    users = acme_users()
    users["lobby"]["last_name"] = "Reception"
    plan_file = tmp_path / "p.json"
    save_plan(acme, desired(tmp_path, "v2", users), plan_file)
    before = snapshot(acme)
    for actor in (None, "lobby", "nobody"):
        result = run(acme, "apply", str(plan_file), actor=actor)
        assert_refused(result, 6)
        assert snapshot(acme) == before
    result = run(acme, "apply", str(plan_file), actor="asmith")
    assert result.returncode == 0, result.stderr


# -- the audit log --------------------------------------------------------------------------------

AUDIT_KEYS = {"time", "actor", "action", "user", "before", "after", "plan_checksum"}


def test_audit_log_has_one_line_per_applied_action(state: Path, example: Path,
                                                   tmp_path: Path) -> None:
    plan_file = tmp_path / "new.json"
    doc = save_plan(state, example, plan_file)
    result = run(state, "--actor", "jdoe", "apply", str(plan_file))
    assert result.returncode == 0, result.stderr
    lines = audit(state)
    assert len(lines) == len(doc["actions"]) == 9
    for line, action in zip(lines, doc["actions"], strict=True):
        assert set(line) >= AUDIT_KEYS, line
        assert ISO_TIME.match(line["time"]), line["time"]
        assert line["actor"] == "jdoe"
        assert line["plan_checksum"] == doc["checksum"]
        assert (line["action"], line["user"], line["before"], line["after"]) == (
            action["action"], action["user"], action["before"], action["after"])

    # an apply of a desired file: its own plan's digest; the actor from CRCTL_ACTOR
    users = acme_users()
    users["asmith"]["call_recording"]["product"] = "always-on"
    users["lobby"]["location"] = "Ottawa"
    del users["bob.smith"]["call_recording"]
    path = desired(tmp_path, "v2", users, recording_groups={
        "sales": {"managers": ["asmith"], "members": []}})
    plan_json = run(state, "plan", str(path), "--format", "json")
    assert plan_json.returncode == 0
    expected = json.loads(plan_json.stdout)
    apply_ok(state, path, "asmith")
    new = audit(state)[9:]
    assert [(n["action"], n["user"], n.get("group")) for n in new] == [
        ("remove", "bob.smith", None), ("update_user", "lobby", None),
        ("change", "asmith", None), ("update_group", None, "sales")]
    assert [(n["before"], n["after"]) for n in new] == [
        (a["before"], a["after"]) for a in expected["actions"]]
    assert {n["actor"] for n in new} == {"asmith"}
    assert len({n["plan_checksum"] for n in new}) == 1
    assert HEX64.match(new[0]["plan_checksum"])
    # no plan was saved: the entries name the plan by the digest it showed (and that
    # `--expect` pins), the same as `plan --format json` gave for the same change
    assert new[0]["plan_checksum"] == expected["digest"]
    assert new[1]["user_id"] == user_id(state, "lobby")


# -- pending services: activation date, sync, mirror ----------------------------------------------

def test_pending_becomes_active_through_sync(acme: Path, example: Path) -> None:
    bob = user_id(acme, "bob.smith")
    cr = portal(acme)["users"][bob]["call_recording"]
    assert cr["status"] == "pending" and cr["activation_date"] == "2026-12-01"
    assert bob not in mirror(acme)["users"]
    assert {u["username"] for u in mirror(acme)["users"].values()} == {"jdoe", "asmith"}
    assert_mirror_consistent(acme)

    early = run(acme, "sync", "acme", today="2026-11-30")
    assert early.returncode == 0, early.stderr
    assert portal(acme)["users"][bob]["call_recording"]["status"] == "pending"
    assert bob not in mirror(acme)["users"]
    assert portal(acme)["serial"] == 1

    assert plan_exit(acme, example, today="2026-12-01") == 2  # the due activation shows
    lines = len(audit(acme))
    due = run(acme, "sync", "acme", actor="jdoe", today="2026-12-01")
    assert due.returncode == 0, due.stderr
    assert "1 pending service activated" in due.stdout
    after = portal(acme)
    assert after["serial"] == 2
    assert after["users"][bob]["call_recording"]["status"] == "active"
    entry = mirror(acme)["users"][bob]
    assert entry["username"] == "bob.smith" and entry["product"] == "on-demand"
    assert entry["full_name"] == "Bob Smith" and entry["extension"] == "2103"
    assert_mirror_consistent(acme, "2026-12-01")
    assert [e["action"] for e in audit(acme)[lines:]] == ["activate"]

    assert plan_exit(acme, example, today="2026-12-01") == 0
    again = run(acme, "sync", "acme", today="2026-12-01")
    assert again.returncode == 0 and portal(acme)["serial"] == 2


def test_apply_after_activation_date_activates(acme: Path, example: Path) -> None:
    bob = user_id(acme, "bob.smith")
    result = run(acme, "apply", str(example), "--auto-approve", actor="asmith",
                 today="2026-12-03")
    assert result.returncode == 0, result.stderr
    assert portal(acme)["users"][bob]["call_recording"]["status"] == "active"
    assert bob in mirror(acme)["users"]
    assert_mirror_consistent(acme, "2026-12-03")
    assert plan_exit(acme, example, today="2026-12-03") == 0


# -- renames, removals, deletions and recordings -------------------------------------------------

def _recordings(*owners: str) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "user_id": uid, "started": f"2026-11-{10 + i}T10:00:00Z",
             "duration_s": 60 * i} for i, uid in enumerate(owners, start=1)]


def test_rename_keeps_user_id_cr_and_recordings(state: Path, tmp_path: Path) -> None:
    users = acme_users()
    bob = users.pop("bob.smith")
    bob["call_recording"] = {"product": "on-demand"}
    users["bsmith"] = bob
    apply_ok(state, desired(tmp_path, "v1", users, recording_groups={
        "sales": {"managers": ["asmith"], "members": ["bsmith"]}}))
    uid = user_id(state, "bsmith")
    cr_before = portal(state)["users"][uid]["call_recording"]
    doc = mirror(state)
    doc["recordings"] = _recordings(uid, uid, user_id(state, "jdoe"))
    write_mirror(state, doc)

    renamed = acme_users()
    renamed["bob.smith"] = {**bob, "renamed_from": "bsmith", "email": "bob.smith@acme.example"}
    path = desired(tmp_path, "v2", renamed)
    result = apply_ok(state, path)
    assert counts(result.stdout) == (0, 0, 0, 0, 1, 0)
    assert "group" not in complete_line(result.stdout)  # the group follows the user id
    after = portal(state)["users"]
    assert after[uid]["username"] == "bob.smith"
    assert after[uid]["call_recording"] == cr_before
    assert "bsmith" not in {u["username"] for u in after.values()}
    assert mirror(state)["users"][uid]["username"] == "bob.smith"
    assert mirror(state)["recordings"] == doc["recordings"]
    assert_mirror_consistent(state)
    assert [e["action"] for e in audit(state)[-1:]] == ["update_user"]
    assert plan_exit(state, path) == 0


def test_remove_and_delete_keep_recordings(state: Path, tmp_path: Path) -> None:
    users = acme_users()
    users["carol"] = {"first_name": "Carol", "last_name": "King",
                      "email": "carol@acme.example", "extension": "2104",
                      "profile": "Telephony", "call_recording": {"product": "always-on"}}
    apply_ok(state, desired(tmp_path, "v1", users))
    asmith, carol = user_id(state, "asmith"), user_id(state, "carol")
    doc = mirror(state)
    assert {asmith, carol} <= set(doc["users"])
    doc["recordings"] = _recordings(asmith, carol, carol, "u999")
    write_mirror(state, doc)

    users["asmith"]["call_recording"] = None
    del users["carol"]
    result = apply_ok(state, desired(tmp_path, "v2", users, recording_groups={
        "sales": {"managers": [], "members": ["bob.smith"]}}))
    assert counts(result.stdout) == (0, 0, 2, 0, 0, 1)
    assert carol not in portal(state)["users"]
    assert portal(state)["users"][asmith]["call_recording"] is None
    after = mirror(state)
    assert asmith not in after["users"] and carol not in after["users"]
    assert after["recordings"] == doc["recordings"]
    assert_mirror_consistent(state)


@pytest.mark.parametrize("via", ["file", "saved-plan"])
def test_profile_downgrade_with_cr_removal(state: Path, tmp_path: Path, via: str) -> None:
    users = acme_users()
    users["carol"] = {"first_name": "Carol", "last_name": "King",
                      "email": "carol@acme.example", "extension": "2104", "profile": "Elite",
                      "call_recording": {"product": "always-on"}}
    apply_ok(state, desired(tmp_path, "v1", users))
    carol = user_id(state, "carol")
    users["carol"]["profile"] = "Courtesy"
    users["carol"]["call_recording"] = None
    path = desired(tmp_path, "v2", users)
    if via == "saved-plan":
        plan_file = tmp_path / "down.json"
        doc = save_plan(state, path, plan_file)
        assert [a["action"] for a in doc["actions"]] == ["remove", "update_user"]
        result = apply_ok(state, plan_file)
    else:
        result = apply_ok(state, path)
    assert counts(result.stdout) == (0, 0, 1, 0, 1, 0)
    record = portal(state)["users"][carol]
    assert record["profile"] == "Courtesy" and record["call_recording"] is None
    assert carol not in mirror(state)["users"]
    assert plan_exit(state, path) == 0


# -- the closing line ----------------------------------------------------------------------

def test_complete_line_matches_design_example(state: Path, tmp_path: Path) -> None:
    """DESIGN §6's line exactly: no group changes, so no group clause."""
    users = acme_users()
    apply_ok(state, desired(tmp_path, "v1", users, recording_groups=None))
    users["dave"] = {"first_name": "Dave", "last_name": "Jones", "email": "dave@acme.example",
                     "extension": "2105", "profile": "Telephony",
                     "call_recording": {"product": "on-demand"}}
    users["lobby"]["profile"] = "Telephony"
    users["lobby"]["call_recording"] = {"product": "always-on"}
    users["asmith"]["call_recording"]["product"] = "always-on"
    users["bob.smith"]["call_recording"] = None
    users["bob.smith"]["last_name"] = "Smythe"
    users["jdoe"]["location"] = "Montreal"
    result = apply_ok(state, desired(tmp_path, "v2", users, recording_groups=None))
    assert complete_line(result.stdout) == (
        "Apply complete: 2 enabled, 1 changed, 1 removed; 1 user added, 3 updated, "
        "0 deleted.")
    assert_mirror_consistent(state)


def test_complete_line_plural_forms(state: Path, tmp_path: Path) -> None:
    users = acme_users()
    result = apply_ok(state, desired(tmp_path, "v1", users))
    assert complete_line(result.stdout) == (
        "Apply complete: 3 enabled, 0 changed, 0 removed; 4 users added, 0 updated, "
        "0 deleted; 1 group added, 0 updated, 0 deleted.")
    users["lobby"]["first_name"] = "Main"
    result = apply_ok(state, desired(tmp_path, "v2", users))
    assert complete_line(result.stdout) == (
        "Apply complete: 0 enabled, 0 changed, 0 removed; 0 users added, 1 updated, "
        "0 deleted.")
    users["x1"] = {"first_name": "X", "last_name": "One", "email": "x1@acme.example",
                   "extension": "2201", "profile": "Voicemail"}
    users["x2"] = {"first_name": "X", "last_name": "Two", "email": "x2@acme.example",
                   "extension": "2202", "profile": "Analog"}
    result = apply_ok(state, desired(tmp_path, "v3", users))
    assert complete_line(result.stdout) == (
        "Apply complete: 0 enabled, 0 changed, 0 removed; 2 users added, 0 updated, "
        "0 deleted.")
    del users["x1"], users["x2"]
    users["lobby"]["first_name"] = "Front"
    result = apply_ok(state, desired(tmp_path, "v4", users))
    assert complete_line(result.stdout) == (
        "Apply complete: 0 enabled, 0 changed, 0 removed; 0 users added, 1 updated, "
        "2 deleted.")
