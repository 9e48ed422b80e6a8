"""`crctl import ACCOUNT [--out FILE]`: the current account as desired-state YAML, and the
round trip `apply -> import -> plan` that must show "No changes." (DESIGN §4).

Round trips run on both example accounts, on a generated 1,000-user account, and on users
whose names could be misread by YAML (apostrophes, colons, '#', a leading '-', unicode,
"yes"/"null"/"123", a location with ': ' in it).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import EXAMPLES, REPO, crctl

SCHEMA_HINT = ("# Editor validation: save the schema once with `crctl schema account > "
               "account.schema.json`,")
MODELINE = re.compile(r"^#\s*yaml-language-server\s*:", re.MULTILINE)


def assert_schema_header(text: str) -> None:
    """The header says how to get the schema, and holds no `$schema=` line pointing at a
    path that does not exist in the user's repository (issue 10, 12a)."""
    assert SCHEMA_HINT in text.splitlines()[:3], text[:400]
    assert not MODELINE.search(text)
USER_KEY_ORDER = ("first_name", "last_name", "email", "extension", "phone_number", "profile",
                  "location", "roles", "call_recording")
TOP_KEY_ORDER = ("account", "name", "recording_settings", "recording_groups", "safety",
                 "users")


def apply_file(state: Path, path: Path, actor: str) -> None:
    result = crctl("apply", path, "--auto-approve", state=state, actor=actor)
    assert result.returncode == 0, result.stderr + result.stdout


def import_account(state: Path, account: str) -> str:
    result = crctl("import", account, state=state)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_plans_no_changes(state: Path, path: Path, actor: str) -> None:
    """Planning `path` shows no changes (exit 0 with --detailed-exitcode); applying it
    changes nothing either."""
    result = crctl("plan", path, "--detailed-exitcode", state=state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes." in result.stdout, result.stdout
    portal = state / "portal" / f"{path.stem}.json"
    before = portal.read_bytes()
    result = crctl("apply", path, "--auto-approve", state=state, actor=actor)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("No changes."), result.stdout
    assert portal.read_bytes() == before


def round_trip(state: Path, account: str, actor: str, where: Path) -> str:
    """Import `account` into where/ACCOUNT.yaml and check that it plans to no changes."""
    text = import_account(state, account)
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{account}.yaml"
    path.write_text(text, encoding="utf-8")
    assert crctl("validate", path, state=state).returncode == 0
    assert_plans_no_changes(state, path, actor)
    return text


def q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML double-quoted scalars)."""
    return json.dumps(value, ensure_ascii=False)


def desired_yaml(account: str, users: dict[str, dict[str, Any]], name: str | None = None,
                 max_remove_pct: int = 100) -> str:
    """A desired-state file with every text value double-quoted, so odd names are exact."""
    lines = [f"account: {account}"]
    if name is not None:
        lines.append(f"name: {q(name)}")
    lines += ["safety:", f"  max_remove_pct: {max_remove_pct}", "users:"]
    for username, u in users.items():
        lines.append(f"  {q(username)}:")
        for key in ("first_name", "last_name", "email", "extension", "phone_number",
                    "profile", "location"):
            if u.get(key) is not None:
                lines.append(f"    {key}: {q(u[key])}")
        if u.get("roles"):
            lines.append(f"    roles: [{', '.join(u['roles'])}]")
        cr = u.get("call_recording")
        if cr:
            lines.append("    call_recording:")
            lines.append(f"      product: {cr['product']}")
            if cr.get("activation_date"):
                lines.append(f"      activation_date: {cr['activation_date']}")
            if cr.get("prevent_remove"):
                lines.append("      prevent_remove: true")
    return "\n".join(lines) + "\n"


def user_blocks(text: str) -> dict[str, list[str]]:
    """username -> the keys of its block, in file order (for the imported layout)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_users = False
    for line in text.splitlines():
        if re.match(r"^\S", line):
            in_users = line.startswith("users:")
        if not in_users:
            continue
        match = re.match(r"^  (\S.*):$", line)
        if match:
            current = blocks.setdefault(match[1].strip('"'), [])
            continue
        match = re.match(r"^    ([a-z_]+):", line)
        if match and current is not None:
            current.append(match[1])
    return blocks


def example_state(tmp_path: Path, *names: str) -> Path:
    accounts = tmp_path / "accounts"
    accounts.mkdir()
    state = tmp_path / "state"
    actors = {"acme": "jdoe", "globex": "hank"}
    for name in names:
        shutil.copy(EXAMPLES / f"{name}.yaml", accounts / f"{name}.yaml")
        apply_file(state, accounts / f"{name}.yaml", actors[name])
    return state


@pytest.fixture(scope="module")
def examples_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return example_state(tmp_path_factory.mktemp("import"), "acme", "globex")


# -- the layout of the imported file ---------------------------------------------------------

def test_acme_import_layout(examples_state: Path) -> None:
    text = import_account(examples_state, "acme")
    lines = text.splitlines()
    assert_schema_header(text)
    top = [m[1] for line in lines if (m := re.match(r"^([a-z_]+):", line))]
    assert top == sorted(top, key=TOP_KEY_ORDER.index)
    assert top[0] == "account" and "users" in top
    # Quoted extensions and phone numbers.
    quoted = [line for line in lines
              if line.strip().startswith(("extension:", "phone_number:"))]
    assert len(quoted) == 6
    for line in quoted:
        assert re.fullmatch(r""" +(extension|phone_number): ("\+?\d+"|'\+?\d+')""", line), line
    blocks = user_blocks(text)
    assert set(blocks) == {"jdoe", "asmith", "bob.smith", "lobby"}  # the renamed bob.smith
    for username, keys in blocks.items():
        assert keys == sorted(keys, key=USER_KEY_ORDER.index), (username, keys)
    # Read as plain YAML: account, name, roles, activation date and prevent_remove are kept.
    data = yaml.safe_load(text)
    assert data["account"] == "acme" and data["name"] == "Acme Corporation"
    users = data["users"]
    assert users["jdoe"]["roles"] == ["decision-maker"]
    assert users["asmith"]["roles"] == ["phone-manager"]
    assert str(users["bob.smith"]["call_recording"]["activation_date"]) == "2026-12-01"
    assert users["jdoe"]["call_recording"]["prevent_remove"] is True
    assert users["jdoe"]["call_recording"]["product"] == "always-on"
    assert users["asmith"]["call_recording"]["product"] == "on-demand"
    assert users["jdoe"]["extension"] == "2101"
    assert users["jdoe"]["phone_number"] == "+16135550101"
    assert "phone_number" not in users["bob.smith"]
    # lobby has no call recording.
    assert users["lobby"].get("call_recording") is None


def test_globex_import_keeps_leading_zero_extensions_and_both_roles(
        examples_state: Path) -> None:
    text = import_account(examples_state, "globex")
    assert_schema_header(text)
    users = yaml.safe_load(text)["users"]  # plain YAML would turn unquoted 0101 into 65
    assert {u: users[u]["extension"] for u in users} == {
        "hank": "100", "homer": "0101", "frank": "0102"}
    assert sorted(users["hank"]["roles"]) == ["decision-maker", "phone-manager"]
    assert yaml.safe_load(text)["name"] == "Globex Inc."
    assert "acme" not in text


def test_import_is_stable(examples_state: Path) -> None:
    first = import_account(examples_state, "acme")
    second = import_account(examples_state, "acme")
    assert first == second


def test_import_out_writes_the_same_text_as_stdout(examples_state: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out" / "acme.yaml"
    out.parent.mkdir()
    result = crctl("import", "acme", "--out", out, state=examples_state)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert str(out) in result.stderr
    assert out.read_text(encoding="utf-8") == import_account(examples_state, "acme")


def test_import_out_to_an_unwritable_place_is_an_error(examples_state: Path,
                                                       tmp_path: Path) -> None:
    (tmp_path / "missing").write_text("a file, not a directory\n")
    result = crctl("import", "acme", "--out", tmp_path / "missing" / "a.yaml",
                   state=examples_state)
    assert result.returncode == 1
    assert (tmp_path / "missing").read_text() == "a file, not a directory\n"


def test_import_of_an_unknown_account_is_an_error(examples_state: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "initech.yaml"
    result = crctl("import", "initech", "--out", out, state=examples_state)
    assert result.returncode == 1
    assert "initech" in result.stderr
    assert not out.exists()


def test_import_does_not_write_to_the_state_dir(examples_state: Path) -> None:
    before = {p: p.read_bytes() for p in examples_state.rglob("*") if p.is_file()}
    import_account(examples_state, "acme")
    after = {p: p.read_bytes() for p in examples_state.rglob("*") if p.is_file()}
    assert after == before


# -- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize(("account", "actor"), [("acme", "jdoe"), ("globex", "hank")])
def test_example_round_trip(tmp_path: Path, account: str, actor: str) -> None:
    state = example_state(tmp_path, account)
    round_trip(state, account, actor, tmp_path / "imported")


def test_round_trip_after_changes_and_a_rename(tmp_path: Path) -> None:
    """Import reflects the current state, not the first file: edit, apply, import, plan."""
    state = example_state(tmp_path, "acme")
    edited = (EXAMPLES / "acme.yaml").read_text(encoding="utf-8")
    edited = edited.replace("  asmith:\n", "  alice.smith:\n    renamed_from: asmith\n")
    edited = edited.replace("managers: [asmith]", "managers: [alice.smith]")
    edited = edited.replace("      product: on-demand            # MiCloud",
                            "      product: always-on            # MiCloud")
    edited = edited.replace("location: Toronto", "location: \"Kanata: Building 2\"")
    changed = tmp_path / "changed" / "acme.yaml"
    changed.parent.mkdir()
    changed.write_text(edited, encoding="utf-8")
    apply_file(state, changed, "jdoe")
    text = round_trip(state, "acme", "jdoe", tmp_path / "imported")
    blocks = user_blocks(text)
    assert "alice.smith" in blocks and "asmith" not in blocks
    users = yaml.safe_load(text)["users"]
    assert users["bob.smith"]["location"] == "Kanata: Building 2"
    assert users["alice.smith"]["call_recording"]["product"] == "always-on"
    assert users["alice.smith"]["roles"] == ["phone-manager"]
    assert yaml.safe_load(text)["recording_groups"] == {
        "sales": {"managers": ["alice.smith"], "members": ["bob.smith"]}}


def test_round_trip_with_an_activation_date_in_the_past(tmp_path: Path) -> None:
    """A service whose activation date has come keeps its date in the imported file."""
    state = example_state(tmp_path, "acme")
    path = tmp_path / "imported" / "acme.yaml"
    path.parent.mkdir()
    kw: dict[str, Any] = {"state": state, "actor": "jdoe", "today": "2026-12-05"}
    assert crctl("sync", "acme", **kw).returncode == 0
    later = crctl("import", "acme", **kw)
    assert later.returncode == 0, later.stderr
    assert "      activation_date: 2026-12-01" in later.stdout.splitlines()
    path.write_text(later.stdout, encoding="utf-8")
    planned = crctl("plan", path, "--detailed-exitcode", **kw)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "No changes." in planned.stdout


AWKWARD: dict[str, dict[str, Any]] = {
    "jdoe": {"first_name": "Jane", "last_name": "Doe", "location": "Ottawa",
             "roles": ["decision-maker"]},
    "obrien": {"first_name": "O'Brien", "last_name": "D'Arcy", "location": "Building 5: Floor 2",
               "email": "o'brien@weird.example"},
    "colons": {"first_name": "Smith: Jr", "last_name": "a:b", "location": "Room: 12: East"},
    "hashes": {"first_name": "#1", "last_name": "Hash # tag", "location": "x #y"},
    "dashes": {"first_name": "-Dash", "last_name": "- x", "location": "-",
               "email": "-dash@weird.example"},
    "jose": {"first_name": "José", "last_name": "Müller-Łukasz", "location": "Montréal"},
    "yes": {"first_name": "yes", "last_name": "null", "location": "123"},
    "null": {"first_name": "No", "last_name": "true", "location": "~"},
    "123": {"first_name": "123", "last_name": "0101", "location": "1e3"},
    "on": {"first_name": "on", "last_name": "Off", "location": "Y"},
    "nulls": {"first_name": "NULL", "last_name": "Null", "location": "TRUE"},
    "quotes": {"first_name": '"Quoted"', "last_name": "back\\slash", "location": "'single'"},
    "sigils": {"first_name": "*star", "last_name": "&amp", "location": "!bang"},
    "sigils2": {"first_name": "%pct", "last_name": "@at", "location": "`tick"},
    "brackets": {"first_name": "[br]", "last_name": "{brace}", "location": "|pipe"},
    "more": {"first_name": ">gt", "last_name": "?q", "location": "a, b"},
    "spaces": {"first_name": " Lead", "last_name": "Trail ", "location": "two  spaces"},
    "wide": {"first_name": "日本", "last_name": "😀", "location": "\u00a0nbsp"},
    "dates": {"first_name": "2026-12-01", "last_name": "12:30", "location": "0x1F"},
    "yaml": {"first_name": "---", "last_name": "...", "location": "<<"},
    "seps": {"first_name": "Line\u2028Sep", "last_name": "Zero\u200bWidth",
             "location": "\ufeffBOM"},
}


def awkward_users() -> dict[str, dict[str, Any]]:
    users = {}
    for i, (username, extra) in enumerate(AWKWARD.items()):
        users[username] = {
            "first_name": extra["first_name"], "last_name": extra["last_name"],
            "email": extra.get("email", f"{username}@weird.example"),
            "extension": f"0{300 + i}", "phone_number": f"+1613555{1000 + i}",
            "profile": "Elite", "location": extra["location"], "roles": extra.get("roles"),
            "call_recording": {"product": ("on-demand", "always-on")[i % 2],
                               "activation_date": f"2027-01-0{1 + i % 3}" if i % 4 == 1
                               else None,
                               "prevent_remove": i % 5 == 2},
        }
    return users


def test_round_trip_with_awkward_names(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts"
    accounts.mkdir()
    desired = accounts / "weird.yaml"
    desired.write_text(desired_yaml("weird", awkward_users(), name="Weird: Co #1 'yes'"),
                       encoding="utf-8")
    state = tmp_path / "state"
    apply_file(state, desired, "jdoe")
    text = round_trip(state, "weird", "jdoe", tmp_path / "imported")
    assert_schema_header(text)
    # The values themselves survived (not just "some" file planning to no changes).
    rows = json.loads(crctl("users", "weird", "--format", "json", state=state).stdout)
    names = {r["username"]: r["full_name"] for r in rows}
    for username, extra in AWKWARD.items():
        assert names[username] == f"{extra['first_name']} {extra['last_name']}"
    # Every extension stays quoted, with its leading zero.
    users = yaml.safe_load(text)["users"]
    assert all(re.fullmatch(r"0\d+", u["extension"]) for u in users.values())


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("crctl_bench_generate",
                                                  REPO / "benchmarks" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_round_trip_of_a_generated_1000_user_account_with_awkward_names(
        tmp_path: Path) -> None:
    generate = load_generator()
    users = generate.make_users(1000)
    # Sprinkle awkward names, roles, activation dates and prevent_remove over it.
    awkward = list(AWKWARD.values())
    for i, user in enumerate(users.values()):
        if i and i % 37 == 0:
            extra = awkward[(i // 37) % len(awkward)]
            user["first_name"], user["last_name"] = extra["first_name"], extra["last_name"]
            user["location"] = extra["location"]
        if i % 101 == 5:
            user["roles"] = ["phone-manager"]
        cr = user.get("call_recording")
        if cr and i % 7 == 3:
            cr["activation_date"] = "2027-03-01"
        if cr and i % 11 == 4:
            cr["prevent_remove"] = True
    accounts = tmp_path / "accounts"
    accounts.mkdir()
    desired = accounts / "big.yaml"
    desired.write_text(desired_yaml("big", users), encoding="utf-8")
    state = tmp_path / "state"
    apply_file(state, desired, "user000000")
    text = round_trip(state, "big", "user000000", tmp_path / "imported")
    blocks = user_blocks(text)
    assert len(blocks) == 1000
    for username, keys in blocks.items():
        assert keys == sorted(keys, key=USER_KEY_ORDER.index), (username, keys)
    assert text.count("      activation_date: 2027-03-01\n") == sum(
        1 for u in users.values() if u.get("call_recording", {}).get("activation_date"))
    assert text.count("      prevent_remove: true\n") == sum(
        1 for u in users.values() if u.get("call_recording", {}).get("prevent_remove"))
    assert text.count("    roles: [phone-manager]\n") == sum(
        1 for u in users.values() if u.get("roles") == ["phone-manager"])


def test_round_trip_of_the_generator_output_as_is(tmp_path: Path) -> None:
    """benchmarks/generate.py's own YAML (unquoted names) also imports to no changes."""
    generate = load_generator()
    accounts = tmp_path / "accounts"
    accounts.mkdir()
    desired = accounts / "gen.yaml"
    desired.write_text(generate.to_yaml("gen", generate.make_users(200, seed=7)),
                       encoding="utf-8")
    state = tmp_path / "state"
    apply_file(state, desired, "user000000")
    round_trip(state, "gen", "user000000", tmp_path / "imported")


def test_round_trip_with_characters_beyond_the_bmp_that_are_not_printable(
        tmp_path: Path) -> None:
    england = "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F"
    users = {"jdoe": {"first_name": "Jane", "last_name": "Doe", "email": "jdoe@flag.example",
                      "extension": "300", "profile": "Elite", "roles": ["decision-maker"],
                      "location": f"London {england}"},
             "priv": {"first_name": "Ann\U000F0000", "last_name": "Beam\U0001D173",
                      "email": "priv@flag.example", "extension": "301", "profile": "Elite"}}
    accounts = tmp_path / "accounts"
    accounts.mkdir()
    desired = accounts / "flag.yaml"
    desired.write_text(desired_yaml("flag", users), encoding="utf-8")
    state = tmp_path / "state"
    apply_file(state, desired, "jdoe")
    round_trip(state, "flag", "jdoe", tmp_path / "imported")
