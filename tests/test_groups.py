"""Recording groups, recording_settings.time_zone and location Phone Managers (DESIGN §1
wave 2, §2, §5): validated with located errors and lints, planned as group actions and
update_account, applied into both the account state and the MIR mirror, audited,
imported back, and checked per action against the actor's locations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support import crctl, resign


def user(name: str, ext: str, *, location: str = "Ottawa", product: str | None = "on-demand",
         access: str | None = None, roles: str | None = None,
         renamed_from: str | None = None) -> str:
    """One user block of a desired file (10-13 lines, in this fixed order)."""
    lines = [f"  {name}:"]
    if renamed_from:
        lines.append(f"    renamed_from: {renamed_from}")
    lines += [f"    first_name: {name.capitalize()}", "    last_name: Test",
              f"    email: {name}@acme.example", f'    extension: "{ext}"',
              "    profile: Elite", f"    location: {location}"]
    if roles:
        lines.append(f"    roles: {roles}")
    if product:
        lines += ["    call_recording:", f"      product: {product}"]
        if access:
            lines.append(f"      access: {access}")
    return "\n".join(lines) + "\n"


def account(users: list[str], groups: str | None = None, zone: str | None = None,
            extra: str = "") -> str:
    head = "account: acme\nname: Acme\n" + extra
    if zone:
        head += f"recording_settings:\n  time_zone: {zone}\n"
    text = head + "users:\n" + "".join(users)
    if groups is not None:
        text += "recording_groups:" + (" {}\n" if not groups else "\n" + groups)
    return text


BOSS = user("jdoe", "2101", product="always-on", access="all", roles="[decision-maker]")
SALES = "  sales:\n    managers: [asmith]\n    members: [kli]\n"


def team(**kw: Any) -> list[str]:
    return [BOSS, user("asmith", "2102", access="own-group"),
            user("kli", "2103", location="Toronto", **kw)]


def write(tmp_path: Path, text: str, name: str = "acme.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def subdir(tmp_path: Path, name: str) -> Path:
    """A directory for a second version of acme.yaml (the stem must stay `acme`)."""
    path = tmp_path / name
    path.mkdir(exist_ok=True)
    return path


def has_line(text: str, words: str) -> bool:
    """Whether `text` has a line reading `words` (columns padded any width)."""
    return any(" ".join(line.split()) == words for line in text.splitlines())


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the `nth` line containing `needle`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


def portal(state: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((state / "portal" / "acme.json").read_text())
    return doc


def ids(state: Path) -> dict[str, str]:
    return {u["username"]: uid for uid, u in portal(state)["users"].items()}


# -- validation ---------------------------------------------------------------------------

def test_group_and_zone_errors_are_located_with_hints(tmp_path: Path) -> None:
    groups = ("  sales:\n    managers: [asmith, nocr]\n    members: [kil, asmith]\n")
    text = account([*team(), user("nocr", "2104", product=None)], groups,
                   zone="America/Toronot")
    path = write(tmp_path, text)
    result = crctl("validate", path)
    assert result.returncode == 1, result.stdout + result.stderr
    managers, members = line_of(text, "managers:"), line_of(text, "members:")
    zone = line_of(text, "time_zone:")
    assert result.stderr.splitlines()[:4] == [
        f"{path}:{zone}:14: error: recording_settings.time_zone: 'America/Toronot' is not "
        "an IANA time zone (did you mean 'America/Toronto'?)",
        f"{path}:{managers}:24: error: recording_groups.sales.managers[1]: nocr has no Call "
        "Recording; only CR users can be in a recording group",
        f"{path}:{members}:15: error: recording_groups.sales.members[0]: 'kil' is not a "
        "user of this file (did you mean 'kli'?)",
        f"{path}:{members}:20: error: recording_groups.sales.members[1]: asmith is also a "
        f"manager of sales (line {managers}); a user is either a manager or a member of a "
        "group"]
    assert crctl("plan", path, state=tmp_path / "state").returncode == 1
    assert not (tmp_path / "state" / "portal").exists()


def test_lints_warn_on_stderr_and_fail_only_validate_strict(tmp_path: Path) -> None:
    groups = "  empty:\n    managers: [jdoe2]\n    members: []\n"
    boss2 = user("jdoe2", "2105", product="always-on")
    text = account([BOSS, boss2, user("od", "2106")], groups)
    path = write(tmp_path, text)
    od = line_of(text, "product: on-demand")
    manager = line_of(text, "managers:")
    expected = [
        f"{path}:{od}:16: warning: users.od.call_recording.product: od is On-Demand but in "
        "no recording group; On-Demand users reach their recordings only as members of a "
        "recording group",
        f"{path}:{manager}:16: warning: recording_groups.empty.managers[0]: jdoe2 manages "
        "empty but has access none; a manager hears the members' recordings only with "
        "own-group or all access (set users.jdoe2.call_recording.access)"]
    result = crctl("validate", path)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if ": warning: " in line] == expected
    strict = crctl("validate", "--strict", path)
    assert strict.returncode == 1 and expected[0] in strict.stderr
    plan = crctl("plan", path, state=tmp_path / "state")
    assert plan.returncode == 0 and expected[1] in plan.stderr
    assert "warning" not in plan.stdout


def test_a_file_without_recording_groups_has_no_group_lints(tmp_path: Path) -> None:
    path = write(tmp_path, account([BOSS, user("od", "2106")]))
    result = crctl("validate", "--strict", path)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr


# -- plan, apply, mirror, audit, import -----------------------------------------------------

def test_groups_and_zone_are_planned_applied_mirrored_audited_and_imported(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = write(tmp_path, account(team(), SALES, zone="America/Toronto"))
    plan = crctl("plan", path, state=state)
    assert plan.returncode == 0, plan.stderr
    assert has_line(plan.stdout, "+ add group sales managers [asmith], members [kli]")
    assert has_line(plan.stdout, "+ create account acme (Acme), time zone America/Toronto")
    assert plan.stdout.rstrip().endswith(
        "Plan: 3 to enable, 0 to change, 0 to remove; 3 users to add, 0 to update, 0 to "
        "delete; 1 group to add, 0 to update, 0 to delete.")
    doc = json.loads(crctl("plan", path, "--format", "json", state=state).stdout)
    (add,) = [a for a in doc["actions"] if a["action"] == "add_group"]
    assert add == {"action": "add_group", "group": "sales", "user": None, "user_id": None,
                   "before": None, "after": {"managers": ["asmith"], "members": ["kli"]},
                   "changed": []}
    assert doc["summary"]["add_group"] == 1
    applied = crctl("apply", path, "--auto-approve", state=state, actor="jdoe")
    assert applied.returncode == 0, applied.stderr
    assert "1 group added, 0 updated, 0 deleted" in applied.stdout
    who = ids(state)
    stored = portal(state)
    assert stored["recording_groups"] == {"sales": {"managers": [who["asmith"]],
                                                    "members": [who["kli"]]}}
    assert stored["recording_settings"] == {"time_zone": "America/Toronto"}
    mirror = json.loads((state / "mir" / "acme.json").read_text())
    assert mirror["groups"] == stored["recording_groups"]
    audit = json.loads(crctl("audit", "acme", "--format", "json", state=state).stdout)
    (entry,) = [e for e in audit if e["action"] == "add_group"]
    assert entry["group"] == "sales" and entry["after"] == add["after"]
    table = crctl("audit", "acme", "--action", "add_group", state=state).stdout
    assert "group sales" in table
    imported = tmp_path / "imported" / "acme.yaml"
    assert crctl("import", "acme", "--out", imported, state=state).returncode == 0
    text = imported.read_text()
    assert "recording_settings:\n  time_zone: America/Toronto\n" in text
    assert ("recording_groups:\n  sales:\n    managers: [asmith]\n"
            "    members: [kli]\nusers:\n") in text
    assert crctl("plan", imported, "--detailed-exitcode", state=state).returncode == 0


def applied(tmp_path: Path, text: str, state: Path, name: str = "acme.yaml") -> None:
    sub = tmp_path / name.replace(".yaml", "") if name != "acme.yaml" else tmp_path
    sub.mkdir(exist_ok=True)
    path = write(sub, text, "acme.yaml")
    result = crctl("apply", path, "--auto-approve", state=state, actor="jdoe")
    assert result.returncode == 0, result.stdout + result.stderr


def plan_doc(tmp_path: Path, text: str, state: Path) -> dict[str, Any]:
    sub = tmp_path / "next"
    sub.mkdir(exist_ok=True)
    path = write(sub, text)
    result = crctl("plan", path, "--format", "json", state=state)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_a_rename_keeps_group_membership(tmp_path: Path) -> None:
    state = tmp_path / "state"
    applied(tmp_path, account(team(), SALES), state)
    kli = ids(state)["kli"]
    renamed = [BOSS, user("asmith", "2102", access="own-group"),
               user("kim.li", "2103", location="Toronto", renamed_from="kli")]
    text = account(renamed, "  sales:\n    managers: [asmith]\n    members: [kim.li]\n")
    doc = plan_doc(tmp_path, text, state)
    assert [a["action"] for a in doc["actions"]] == ["update_user"]
    applied(tmp_path, text, state, "v2.yaml")
    assert portal(state)["recording_groups"]["sales"]["members"] == [kli]
    assert ids(state)["kim.li"] == kli


def test_losing_cr_or_being_deleted_drops_a_user_from_groups_in_the_same_plan(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    applied(tmp_path, account([*team(), user("zed", "2104")],
                              SALES.replace("[kli]", "[kli, zed]")), state)
    # no recording_groups key: the groups stay, minus those who lose CR or are deleted
    doc = plan_doc(tmp_path, account(team(product=None)), state)
    kinds = [(a["action"], a.get("user") or a.get("group")) for a in doc["actions"]]
    assert kinds == [("remove", "kli"), ("remove", "zed"), ("delete_user", "zed"),
                     ("update_group", "sales")]
    update = doc["actions"][-1]
    assert update["before"] == {"managers": ["asmith"], "members": ["kli", "zed"]}
    assert update["after"] == {"managers": ["asmith"], "members": []}
    assert update["changed"] == ["members"]
    text = crctl("plan", tmp_path / "next" / "acme.yaml", state=state).stdout
    assert has_line(text, "~ update group sales members: -kli -zed"), text
    applied(tmp_path, account(team(product=None)), state, "v2.yaml")
    assert portal(state)["recording_groups"] == {"sales": {
        "managers": [ids(state)["asmith"]], "members": []}}


def test_deleting_a_group_with_members_is_a_markdown_caution(tmp_path: Path) -> None:
    state = tmp_path / "state"
    applied(tmp_path, account(team(), SALES), state)
    path = write(subdir(tmp_path, "next"),
                 account(team(), ""))
    md = crctl("plan", path, "--format", "markdown", state=state).stdout
    assert "> [!CAUTION]\n> **1 recording group with members to delete:** `sales`." in md, md
    assert "| Recording groups to delete | 1 |" in md
    text = crctl("plan", path, state=state).stdout
    assert has_line(text, "- delete group sales managers [asmith], members [kli]"), text


def test_lowering_access_and_leaving_a_group_are_no_removal(tmp_path: Path) -> None:
    """Safety limits count removals of CR only: max_remove_pct 0 lets these through."""
    state = tmp_path / "state"
    safety = "safety:\n  max_remove_pct: 0\n"
    applied(tmp_path, account(team(), SALES, extra=safety), state)
    lowered = [BOSS, user("asmith", "2102"), user("kli", "2103", location="Toronto")]
    doc = plan_doc(tmp_path, account(lowered, "  sales:\n    managers: [asmith]\n"
                                     "    members: []\n", extra=safety), state)
    assert doc["violations"] == []
    assert [a["action"] for a in doc["actions"]] == ["change", "update_group"]


def test_time_zone_is_an_update_account(tmp_path: Path) -> None:
    state = tmp_path / "state"
    applied(tmp_path, account(team(), zone="America/Toronto"), state)
    doc = plan_doc(tmp_path, account(team(), zone="Europe/London"), state)
    (action,) = doc["actions"]
    assert action == {"action": "update_account", "user": None, "user_id": None,
                      "before": {"name": "Acme", "time_zone": "America/Toronto"},
                      "after": {"name": "Acme", "time_zone": "Europe/London"},
                      "changed": ["time_zone"]}
    # a file without recording_settings leaves the zone as it is
    assert plan_doc(tmp_path, account(team()), state)["actions"] == []
    applied(tmp_path, account(team(), zone="Europe/London"), state, "v2.yaml")
    assert portal(state)["recording_settings"] == {"time_zone": "Europe/London"}


def test_an_edited_group_plan_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    applied(tmp_path, account(team(), SALES), state)
    path = write(subdir(tmp_path, "next"),
                 account(team(), SALES.replace("[kli]", "[]")))
    saved = tmp_path / "plan.json"
    assert crctl("plan", path, "--out", saved, state=state).returncode == 0
    doc = json.loads(saved.read_text())
    doc["actions"][0]["after"]["members"] = ["ghost"]
    saved.write_text(json.dumps(resign(doc)))
    result = crctl("apply", saved, "--auto-approve", state=state, actor="jdoe")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "action 1 (update_group): its after.members[0] differs" in result.stderr
    assert portal(state)["serial"] == 1


# -- the actor check per action ----------------------------------------------------------

def pm_team(kli_location: str, zed_location: str = "Toronto") -> list[str]:
    """bob manages Toronto and Montreal; kli and zed are users of some location."""
    return [BOSS, user("bob", "2102", location="Toronto",
                       roles="[{phone-manager: [Toronto, Montreal]}]"),
            user("kli", "2103", location=kli_location),
            user("zed", "2104", location=zed_location)]


def test_a_location_phone_manager_applies_only_actions_on_their_locations(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    applied(tmp_path, account(pm_team("Toronto", "Ottawa")), state)
    # moving kli between two of bob's locations: allowed
    moved = write(subdir(tmp_path, "moved"),
                  account(pm_team("Montreal", "Ottawa")))
    ok = crctl("apply", moved, "--auto-approve", state=state, actor="bob")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # a user of Ottawa (zed's CR off), a move out of bob's locations and a group: refused
    other = [BOSS, user("bob", "2102", location="Toronto",
                        roles="[{phone-manager: [Toronto, Montreal]}]"),
             user("kli", "2103", location="Ottawa"), user("zed", "2104", location="Ottawa",
                                                          product=None)]
    refused_path = write(subdir(tmp_path, "other"), account(other, "  g:\n    managers: []\n"
                                                "    members: [kli]\n"))
    refused = crctl("apply", refused_path, "--auto-approve", state=state, actor="bob")
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "Error: account acme: actor 'bob' is a Phone Manager of Montreal, Toronto only, "
        "and may not apply 3 actions of the plan: remove zed (Ottawa); update_user kli "
        "(Ottawa); add_group g (account-level); nothing was changed")
    assert portal(state)["serial"] == 2
    # a Decision Maker may
    assert crctl("apply", refused_path, "--auto-approve", state=state,
                 actor="jdoe").returncode == 0


def test_a_location_phone_manager_may_not_create_an_account(tmp_path: Path) -> None:
    path = write(tmp_path, account(pm_team("Toronto")))
    result = crctl("apply", path, "--auto-approve", state=tmp_path / "state", actor="bob")
    assert result.returncode == 6, result.stderr
    assert "create_account (account-level)" in result.stderr
    assert not (tmp_path / "state" / "portal" / "acme.json").exists()


def test_several_groups_are_added_and_updated_in_one_plan(tmp_path: Path) -> None:
    """Group actions name no user: a plan of two add_group (or update_group) actions is
    not "a repeated action" (each is keyed by its group)."""
    state = tmp_path / "state"
    two = SALES + "  support:\n    managers: [kli]\n    members: [asmith]\n"
    first = crctl("apply", write(tmp_path, account(team(access="own-group"), two)),
                  "--auto-approve", state=state, actor="jdoe")
    assert first.returncode == 0, first.stderr
    assert "2 groups added, 0 updated, 0 deleted" in first.stdout
    swapped = ("  sales:\n    managers: [kli]\n    members: [asmith]\n"
               "  support:\n    managers: [asmith]\n    members: [kli]\n")
    (tmp_path / "v2").mkdir()
    path = write(tmp_path / "v2", account(team(access="own-group"), swapped))
    saved = tmp_path / "swap.plan"
    assert crctl("plan", path, "--out", saved, state=state).returncode == 0
    second = crctl("apply", saved, state=state, actor="jdoe")
    assert second.returncode == 0, second.stderr
    assert "0 groups added, 2 updated, 0 deleted" in second.stdout
    assert crctl("plan", path, "--detailed-exitcode", state=state).returncode == 0
