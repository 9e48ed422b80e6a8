"""`call_recording.access` (MIR Record Management Access, DESIGN §1 wave 2): read from the
desired file (default none), planned as a `change`, applied, kept in the account state and
the MIR mirror, listed and filtered by `crctl users`, written back by `crctl import`."""

from __future__ import annotations

import json
from pathlib import Path

from support import crctl

BASE = """\
account: acme
users:
  jdoe:
    first_name: Jane
    last_name: Doe
    email: jane@acme.example
    extension: "2101"
    profile: Elite
    roles: [decision-maker]
    call_recording:
      product: always-on
{access}
  kli:
    first_name: Kim
    last_name: Li
    email: kim@acme.example
    extension: "2102"
    profile: Elite
    tags: [mifid, desk-a]
    call_recording:
      product: on-demand
"""


def write(tmp_path: Path, access: str | None) -> Path:
    path = tmp_path / "acme.yaml"
    line = f"      access: {access}" if access else ""
    path.write_text(BASE.format(access=line))
    return path


def test_access_is_planned_as_a_change_applied_listed_and_imported(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = write(tmp_path, None)
    assert crctl("apply", path, "--auto-approve", state=state, actor="jdoe").returncode == 0
    listed = json.loads(crctl("users", "acme", "--format", "json", state=state).stdout)
    assert {r["username"]: r["access"] for r in listed} == {"jdoe": "none", "kli": "none"}

    write(tmp_path, "all")
    plan = crctl("plan", path, "--format", "json", state=state)
    doc = json.loads(plan.stdout)
    (change,) = doc["actions"]
    assert (change["action"], change["user"], change["changed"]) == ("change", "jdoe",
                                                                       ["access"])
    assert (change["before"]["access"], change["after"]["access"]) == ("none", "all")
    text = crctl("plan", path, state=state).stdout
    assert "access: none -> all" in text, text
    assert "Plan: 0 to enable, 1 to change, 0 to remove" in text

    assert crctl("apply", path, "--auto-approve", state=state, actor="jdoe").returncode == 0
    portal = json.loads((state / "portal" / "acme.json").read_text())
    mirror = json.loads((state / "mir" / "acme.json").read_text())
    jdoe = next(uid for uid, u in portal["users"].items() if u["username"] == "jdoe")
    assert portal["users"][jdoe]["call_recording"]["access"] == "all"
    assert mirror["users"][jdoe]["access"] == "all"
    kli = next(u for u in portal["users"].values() if u["username"] == "kli")
    assert kli["tags"] == ["desk-a", "mifid"]

    only = crctl("users", "acme", "--filter", "access=all", "--format", "csv", state=state)
    lines = only.stdout.splitlines()
    assert lines[0].endswith(",status,access") and len(lines) == 2 and "jdoe" in lines[1]

    imported = tmp_path / "imported" / "acme.yaml"
    assert crctl("import", "acme", "--out", imported, state=state).returncode == 0
    body = imported.read_text()
    assert "      access: all\n" in body and "    tags: [desk-a, mifid]\n" in body
    again = crctl("plan", imported, "--detailed-exitcode", state=state)
    assert again.returncode == 0, again.stdout + again.stderr


def test_an_unknown_access_level_is_a_located_error(tmp_path: Path) -> None:
    path = write(tmp_path, "everyone")
    result = crctl("validate", path)
    assert result.returncode == 1
    assert (f"{path}:12:15: error: users.jdoe.call_recording.access: 'everyone' is not one "
            "of: none, own-group, all") in result.stderr, result.stderr


def test_a_state_written_before_access_and_tags_reads_as_none_and_no_tags(
        tmp_path: Path) -> None:
    """A state directory from the previous crctl (no `access`, no `tags`) still plans to no
    changes against the file it was applied from."""
    state = tmp_path / "state"
    path = write(tmp_path, None)
    path.write_text(path.read_text().replace("    tags: [mifid, desk-a]\n", ""))
    assert crctl("apply", path, "--auto-approve", state=state, actor="jdoe").returncode == 0
    portal_file = state / "portal" / "acme.json"
    portal = json.loads(portal_file.read_text())
    for user in portal["users"].values():
        del user["tags"]
        if user["call_recording"]:
            del user["call_recording"]["access"]
    portal_file.write_text(json.dumps(portal))
    mirror_file = state / "mir" / "acme.json"
    mirror = json.loads(mirror_file.read_text())
    for entry in mirror["users"].values():
        del entry["access"]
    mirror_file.write_text(json.dumps(mirror))
    result = crctl("plan", path, "--format", "json", state=state)
    doc = json.loads(result.stdout)
    assert doc["actions"] == []
    # the MIR mirror lacks the access levels: drift that the next apply repairs
    assert {m["reason"] for m in doc["mir"]["upsert"]} == {"out of date: access"}
    assert crctl("apply", path, "--auto-approve", state=state, actor="jdoe").returncode == 0
    assert crctl("plan", path, "--detailed-exitcode", state=state).returncode == 0


def test_a_location_phone_manager_applies_no_account_level_or_other_location_action(
        tmp_path: Path) -> None:
    """`{phone-manager: [Ottawa]}` loads and is kept; such a user may not create the
    account (account-level) nor change a user outside Ottawa (jdoe has no location):
    exit 6 (tests/test_groups.py checks the per-action rules in full)."""
    state = tmp_path / "state"
    path = write(tmp_path, None)
    scoped = path.read_text().replace(
        "    tags: [mifid, desk-a]\n", "    tags: [mifid, desk-a]\n    location: Ottawa\n"
        "    roles:\n      - phone-manager: [Ottawa]\n")
    path.write_text(scoped)
    refused = crctl("apply", path, "--auto-approve", state=state, actor="kli")
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "kli" in refused.stderr and not (state / "portal" / "acme.json").exists()
    assert crctl("apply", path, "--auto-approve", state=state, actor="jdoe").returncode == 0
    portal = json.loads((state / "portal" / "acme.json").read_text())
    kli = next(u for u in portal["users"].values() if u["username"] == "kli")
    assert kli["roles"] == [{"phone-manager": ["Ottawa"]}]
    write(tmp_path, "all")
    path.write_text(path.read_text().replace(
        "    tags: [mifid, desk-a]\n", "    tags: [mifid, desk-a]\n    location: Ottawa\n"
        "    roles:\n      - phone-manager: [Ottawa]\n"))
    again = crctl("apply", path, "--auto-approve", state=state, actor="kli")
    assert again.returncode == 6, again.stdout + again.stderr
    imported = tmp_path / "imported" / "acme.yaml"
    assert crctl("import", "acme", "--out", imported, state=state).returncode == 0
    assert "    roles: [{phone-manager: [Ottawa]}]\n" in imported.read_text()
    assert crctl("plan", imported, "--detailed-exitcode", state=state).returncode == 0
