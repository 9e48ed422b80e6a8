"""Defaults, policies, exceptions, `explain` and `report` (DESIGN §9): effective values
planned and applied, every rule's error or warning located at the user, default, policy
or exception it concerns, and the evidence read from the current state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import crctl

HEAD = "account: acme\nname: Acme\n"


def person(name: str, ext: str, *, location: str = "Ottawa", profile: str = "Elite",
           roles: str | None = None, tags: str | None = None, cr: str | None = None) -> str:
    """A user block; `cr` is the call_recording value text: None leaves the key out,
    "null" opts out, otherwise 'product: x' style lines joined by ';'."""
    lines = [f"  {name}:", f"    first_name: {name.capitalize()}", "    last_name: Test",
             f"    email: {name}@acme.example", f'    extension: "{ext}"',
             f"    profile: {profile}", f"    location: {location}"]
    if roles:
        lines.append(f"    roles: {roles}")
    if tags:
        lines.append(f"    tags: {tags}")
    if cr == "null":
        lines.append("    call_recording: null")
    elif cr is not None:
        lines.append("    call_recording:")
        lines += [f"      {part.strip()}" for part in cr.split(";")]
    return "\n".join(lines) + "\n"


BOSS = person("jdoe", "2101", roles="[decision-maker]", cr="product: always-on")
DEFAULTS = """\
defaults:
  - match: {location: Ottawa}
    call_recording:
      product: on-demand
      access: own-group
  - match: {tags: [mifid]}
    call_recording:
      product: always-on
      prevent_remove: true
"""
POLICY = """\
policies:
  mifid-recording:
    description: MiFID II Art. 16(7)
    match: {tags: [mifid]}
    require: {product: always-on, prevent_remove: true}
"""


def exception(user: str, *, policy: str = "mifid-recording", approved_by: str = "jdoe",
              expires: str = "2027-03-31", reason: str = "on leave") -> str:
    return (f"  - policy: {policy}\n    user: {user}\n    reason: {reason}\n"
            f"    approved_by: {approved_by}\n    expires: {expires}\n")


def write(tmp_path: Path, *users: str, tail: str = "") -> Path:
    path = tmp_path / "acme.yaml"
    path.write_text(HEAD + "users:\n" + "".join(users) + tail)
    return path


def at(path: Path, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """Line and column (1-based) of the first character after leading spaces of the
    `occurrence`-th line containing `needle`."""
    seen = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number, len(line) - len(line.lstrip()) + 1
    raise AssertionError(needle)


def value_at(path: Path, needle: str, occurrence: int = 1) -> tuple[int, int]:
    line, _ = at(path, needle, occurrence)
    text = path.read_text().splitlines()[line - 1]
    return line, text.index(":", text.index(needle.strip())) + 3


def state_users(state: Path) -> dict[str, dict]:
    doc = json.loads(crctl("users", "acme", "--format", "json", state=state).stdout)
    return {row["username"]: row for row in doc}


# -- defaults -------------------------------------------------------------------------

def test_defaults_apply_in_order_field_wise_and_the_users_own_fields_win(tmp_path: Path
                                                                         ) -> None:
    path = write(tmp_path, BOSS,
                 person("kli", "2102", tags="[mifid]"),  # both defaults: the later wins
                 person("amy", "2103"),  # the first only
                 person("bo", "2104", tags="[mifid]", cr="access: all"),  # own field wins
                 person("zed", "2105", tags="[mifid]", cr="null"),  # opted out
                 person("cat", "2106", profile="Courtesy"),  # cannot have CR
                 person("tor", "2107", location="Toronto"),  # no default matches
                 tail=DEFAULTS)
    state = tmp_path / "state"
    result = crctl("apply", path, "--auto-approve", state=state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    users = state_users(state)
    assert {n: (u["product"], u["access"]) for n, u in users.items()} == {
        "jdoe": ("MiCloud Connect MIR Always-On", "own-group"),  # Ottawa: defaults[0]
        "kli": ("MiCloud Connect MIR Always-On", "own-group"),
        "amy": ("MiCloud Connect MIR On-Demand", "own-group"),
        "bo": ("MiCloud Connect MIR Always-On", "all")}
    portal = json.loads((state / "portal" / "acme.json").read_text())
    records = {u["username"]: u["call_recording"] for u in portal["users"].values()}
    assert records["kli"]["prevent_remove"] is True
    assert records["amy"]["prevent_remove"] is False
    assert records["zed"] is None and records["cat"] is None and records["tor"] is None


def test_a_default_changing_plans_every_user_it_reaches_with_effective_values(
        tmp_path: Path) -> None:
    users = [BOSS, person("kli", "2102"), person("amy", "2103"), person("tor", "2104",
                                                                        location="Toronto")]
    path = write(tmp_path, *users, tail=DEFAULTS)
    state = tmp_path / "state"
    assert crctl("apply", path, "--auto-approve", state=state, actor="jdoe").returncode == 0
    write(tmp_path, *users, tail=DEFAULTS.replace("access: own-group", "access: all"))
    result = crctl("plan", path, "--format", "json", state=state)
    assert result.returncode == 0, result.stderr
    actions = json.loads(result.stdout)["actions"]
    assert [(a["action"], a["user"], a["before"]["access"], a["after"]["access"])
            for a in actions] == [("change", "amy", "own-group", "all"),
                                  ("change", "jdoe", "own-group", "all"),  # own product
                                  ("change", "kli", "own-group", "all")]  # tor: Toronto


def test_import_of_an_account_made_with_defaults_plans_no_changes(tmp_path: Path) -> None:
    path = write(tmp_path, BOSS, person("kli", "2102", tags="[mifid]"),
                 person("zed", "2103", tags="[mifid]", cr="null"),
                 tail=DEFAULTS + POLICY + "exceptions:\n" + exception("zed"))
    state = tmp_path / "state"
    assert crctl("apply", path, "--auto-approve", state=state, actor="jdoe").returncode == 0
    assert crctl("plan", path, "--detailed-exitcode", state=state).returncode == 0
    imported = tmp_path / "imported" / "acme.yaml"
    assert crctl("import", "acme", "--out", imported, state=state).returncode == 0
    assert "defaults" not in imported.read_text()  # explicit per-user settings
    result = crctl("plan", imported, "--detailed-exitcode", state=state)
    assert result.returncode == 0, result.stdout + result.stderr


def test_own_fields_without_a_product_from_anywhere_are_a_located_error(tmp_path: Path
                                                                        ) -> None:
    path = write(tmp_path, BOSS, person("tor", "2102", location="Toronto",
                                        cr="access: all"), tail=DEFAULTS)
    result = crctl("validate", path)
    assert result.returncode == 1
    line, col = at(path, "call_recording:", 2)
    assert (f"acme.yaml:{line}:{col}: error: users.tor.call_recording: tor has "
            "call_recording fields but no product, and no default that matches them "
            "gives one") in result.stderr


@pytest.mark.parametrize("match, matched", [
    ("{}", {"jdoe", "kli", "amy", "tor"}),
    ("{location: [Toronto, Ottawa]}", {"jdoe", "kli", "amy", "tor"}),
    ("{location: Toronto}", {"tor"}),
    ("{profile: Premier}", {"amy"}),
    ("{role: decision-maker}", {"jdoe"}),
    ("{role: phone-manager}", {"kli"}),
    ("{tags: [desk, mifid]}", {"tor"}),
    ("{tags: [mifid], location: Ottawa}", {"kli"}),
])
def test_match_keys(tmp_path: Path, match: str, matched: set[str]) -> None:
    path = write(tmp_path, person("jdoe", "2101", roles="[decision-maker]"),
                 person("kli", "2102", roles="[{phone-manager: [Ottawa]}]", tags="[mifid]"),
                 person("amy", "2103", profile="Premier", tags="[desk]"),
                 person("tor", "2104", location="Toronto", tags="[mifid, desk]"),
                 tail=f"defaults:\n  - match: {match}\n    call_recording:\n"
                      "      product: always-on\n")
    state = tmp_path / "state"
    result = crctl("apply", path, "--auto-approve", state=state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert set(state_users(state)) == matched


# -- policies and exceptions ----------------------------------------------------------

def test_a_breach_is_a_located_error_naming_the_policy_and_what_it_requires(
        tmp_path: Path) -> None:
    path = write(tmp_path, BOSS,
                 person("kli", "2102", tags="[mifid]", cr="product: on-demand"),
                 person("tor", "2103", location="Toronto", tags="[mifid]"),
                 tail=POLICY)
    result = crctl("validate", path)
    assert result.returncode == 1
    line, col = at(path, "product: on-demand")
    assert (f"acme.yaml:{line}:{col}: error: users.kli.call_recording.product: policy "
            "mifid-recording requires MiCloud Connect MIR Always-On; this file gives "
            "MiCloud Connect MIR On-Demand") in result.stderr
    assert "users.kli.call_recording.prevent_remove: policy mifid-recording requires " \
           "prevent_remove: true; this file gives prevent_remove: false" in result.stderr
    line, col = at(path, "tor:")  # no call_recording key: at the user
    assert (f"acme.yaml:{line}:{col}: error: users.tor.call_recording.product: policy "
            "mifid-recording requires MiCloud Connect MIR Always-On; this file gives no "
            "Call Recording") in result.stderr
    plan = crctl("plan", path, state=tmp_path / "state")
    assert plan.returncode == 1 and "policy mifid-recording requires" in plan.stderr


@pytest.mark.parametrize("require, cr, words", [
    ("{product: none}", "product: on-demand",
     "requires no Call Recording; this file gives MiCloud Connect MIR On-Demand"),
    ("{product: any}", None, "requires Call Recording (either product); this file gives "
                             "no Call Recording"),
    ("{access: all}", "product: on-demand", "requires access all; this file gives access none"),
])
def test_each_requirement(tmp_path: Path, require: str, cr: str | None, words: str) -> None:
    path = write(tmp_path, BOSS, person("kli", "2102", tags="[x]", cr=cr),
                 tail=f"policies:\n  p1:\n    match: {{tags: [x]}}\n    require: {require}\n")
    result = crctl("validate", path)
    assert result.returncode == 1 and f"policy p1 {words}" in result.stderr, result.stderr


def test_a_valid_exception_waives_the_breach_and_the_register_is_checked(tmp_path: Path
                                                                         ) -> None:
    users = [BOSS, person("kli", "2102", tags="[mifid]", cr="null"),
             person("amy", "2103", tags="[mifid]",
                    cr="product: always-on; prevent_remove: true"),
             person("bo", "2104")]
    path = write(tmp_path, *users, tail=POLICY + "exceptions:\n" + exception("kli"))
    result = crctl("validate", path)
    assert result.returncode == 0, result.stderr
    register = (exception("kli") + exception("amy")
                + exception("kli", policy="mifid-recordin")
                + exception("nobdy") + exception("kli", approved_by="bo")
                + exception("kli", expires="2026-11-24"))
    write(tmp_path, *users, tail=POLICY + "exceptions:\n" + register)
    result = crctl("validate", path)
    assert result.returncode == 1
    text = path.read_text()
    first = text.index("exceptions:")
    lines = {n for n, line in enumerate(text.splitlines(), 1)}
    assert lines

    def pos(needle: str, nth: int) -> str:
        start = first
        for _ in range(nth):
            start = text.index(needle, start) + 1
        line = text.count("\n", 0, start) + 1
        col = start - text.rfind("\n", 0, start) - 1 + len(needle.split(":")[0]) + 2
        return f"acme.yaml:{line}:{col}"

    err = result.stderr
    assert (f"{pos('policy: mifid-recordin', 3)}: error: exceptions[2].policy: unknown "
            "policy 'mifid-recordin' (did you mean 'mifid-recording'?)") in err
    assert (f"{pos('user: nobdy', 1)}: error: exceptions[3].user: 'nobdy' is not a user of "
            "this file") in err
    assert (f"{pos('approved_by: bo', 1)}: error: exceptions[4].approved_by: bo is neither "
            "a Decision Maker nor a Phone Manager; only they may approve an exception") in err
    assert (f"{pos('expires: 2026-11-24', 1)}: error: exceptions[5].expires: the exception "
            "expired on 2026-11-24 (today is 2026-11-25); renew it with a new date or "
            "remove it") in err
    # the same register on the day it expires is still valid (the date is CRCTL_TODAY's)
    assert "exceptions[5]" not in crctl("validate", path, today="2026-11-24").stderr
    # a valid exception that waives nothing is a warning, an error with --strict
    write(tmp_path, *users, tail=POLICY + "exceptions:\n" + exception("kli")
          + exception("amy") + exception("kli"))
    result = crctl("validate", path)
    assert result.returncode == 0, result.stderr
    line = text.count("\n", 0, text.index("- policy", text.index("user: amy") - 40)) + 1
    assert (f"acme.yaml:{line}:5: warning: exceptions[1]: waives nothing: amy meets "
            "mifid-recording") in result.stderr
    assert "warning: exceptions[2]: waives nothing: exceptions[0] already waives " \
           "mifid-recording for kli" in result.stderr
    assert crctl("validate", "--strict", path).returncode == 1


def test_rule_sections_are_checked_by_the_schema_with_located_errors(tmp_path: Path) -> None:
    path = write(tmp_path, BOSS, tail=(
        "defaults:\n  - match: {locaton: Ottawa}\n    call_recording: {product: always-on}\n"
        "policies:\n  p1:\n    match: {}\n    require: {prevent_remove: false}\n"))
    result = crctl("validate", path)
    assert result.returncode == 1
    line, col = at(path, "locaton")
    assert (f"acme.yaml:{line}:{col + 10}: error: defaults[0].match.locaton: unknown key "
            "'locaton' (did you mean 'location'?)") in result.stderr
    line, col = at(path, "prevent_remove: false")
    assert f"acme.yaml:{line}:" in result.stderr
    assert ("policies.p1.require.prevent_remove: must be true, not False (leave it out to "
            "not require it)") in result.stderr


# -- explain --------------------------------------------------------------------------

def test_explain_a_user_reached_by_two_defaults_and_a_waived_policy(tmp_path: Path) -> None:
    path = write(tmp_path, BOSS,
                 person("kli", "2102", tags="[mifid]", cr="access: all"),
                 tail=DEFAULTS.replace("      prevent_remove: true\n", "")
                 + POLICY + "exceptions:\n" + exception("kli", reason="desk move, Q1"))
    result = crctl("explain", path, "kli")
    assert result.returncode == 0, result.stderr
    product = at(path, "product: always-on", 2)[0]  # defaults[1] (the later one wins)
    access = at(path, "access: all")[0]
    assert result.stdout == (
        f"kli (Kli Test), account acme, {path}\n"
        "  location Ottawa, profile Elite, roles -, tags mifid\n"
        "\n"
        "Call Recording (effective):\n"
        f"  product          MiCloud Connect MIR Always-On    from defaults[1] ({path}:"
        f"{product})\n"
        "  activation_date  -                                the product's default\n"
        "  prevent_remove   false                            the product's default\n"
        f"  access           all                              from "
        f"users.kli.call_recording.access ({path}:{access})\n"
        "  status           active                           from activation_date\n"
        "\n"
        "Policies:\n"
        "  mifid-recording  waived by exceptions[0] until 2027-03-31 (approved by jdoe): "
        "desk move, Q1\n")
    doc = json.loads(crctl("explain", path, "kli", "--format", "json").stdout)
    assert doc["call_recording"]["product"] == {"value": "always-on", "from": "defaults[1]",
                                                "line": product}
    assert doc["policies"][0]["status"] == "waived"
    assert doc["policies"][0]["breaches"] == [
        {"field": "prevent_remove", "requires": "prevent_remove: true",
         "gives": "prevent_remove: false"}]
    missing = crctl("explain", path, "kl")
    assert missing.returncode == 1 and "no user 'kl' (did you mean 'kli'?)" in missing.stderr


def test_explain_of_a_renamed_user_names_the_new_username() -> None:
    from support import EXAMPLES

    result = crctl("explain", EXAMPLES / "acme.yaml", "bsmith")
    assert result.returncode == 1
    assert "no user 'bsmith': it was renamed to 'bob.smith'" in result.stderr
    assert "Traceback" not in result.stderr


# -- report ---------------------------------------------------------------------------

def test_report_shows_a_breach_made_in_the_state_outside_the_policy_file(tmp_path: Path
                                                                          ) -> None:
    users = [BOSS, person("kli", "2102", tags="[mifid]"),
             person("zed", "2103", tags="[mifid]", cr="null")]
    policy_file = write(tmp_path, *users,
                        tail=DEFAULTS + POLICY + "exceptions:\n" + exception("zed"))
    state = tmp_path / "state"
    assert crctl("apply", policy_file, "--auto-approve", state=state,
                 actor="jdoe").returncode == 0
    result = crctl("report", policy_file, "--format", "json", state=state)
    assert result.returncode == 0, result.stderr
    policy = json.loads(result.stdout)["accounts"][0]["policies"][0]
    assert [c["user"] for c in policy["compliant"]] == ["kli"]
    assert [w["user"] for w in policy["waived"]] == ["zed"]
    # someone changes kli by hand (here: another file, without the policy, applied)
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    (by_hand / "acme.yaml").write_text(
        HEAD + "users:\n" + BOSS + person("kli", "2102", tags="[mifid]",
                                          cr="product: on-demand")
        + person("zed", "2103", tags="[mifid]", cr="null"))
    assert crctl("apply", by_hand / "acme.yaml", "--auto-approve", state=state,
                 actor="jdoe").returncode == 0
    # the policy file itself is unchanged and still valid...
    assert crctl("validate", policy_file).returncode == 0
    # ...and the report, which reads the state, shows the breach
    result = crctl("report", policy_file, "--format", "json", state=state)
    doc = json.loads(result.stdout)
    account = doc["accounts"][0]
    assert account["serial"] == 2
    policy = account["policies"][0]
    assert policy["in_scope"] == 2 and policy["compliant"] == []
    assert policy["breaking"] == [{"user": "kli", "breaches": [
        {"field": "product", "requires": "MiCloud Connect MIR Always-On",
         "has": "MiCloud Connect MIR On-Demand"},
        {"field": "prevent_remove", "requires": "prevent_remove: true",
         "has": "prevent_remove: false"}]}]
    body = {k: v for k, v in doc.items() if k != "sha256"}
    import hashlib
    assert doc["sha256"] == hashlib.sha256(json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    text = crctl("report", policy_file, state=state).stdout
    assert ("    BREAKING   kli  requires MiCloud Connect MIR Always-On, the state has "
            "MiCloud Connect MIR On-Demand") in text
    assert f"Report sha256: {doc['sha256']}" in text
    csv_rows = crctl("report", policy_file, "--format", "csv", state=state).stdout
    assert csv_rows.splitlines()[0] == \
        "account,serial,policy,user,status,since,exception,expires,detail"
    assert "acme,2,mifid-recording,zed,waived,,exceptions[0],2027-03-31,on leave" in csv_rows
    markdown = crctl("report", policy_file, "--format", "markdown", state=state).stdout
    assert "| mifid-recording | kli | breaking |" in markdown
    # as of a day before the state existed there is nothing to report on
    early = crctl("report", policy_file, "--as-of", "2000-01-01", state=state)
    assert early.returncode == 1 and "has no version on or before 2000-01-01" in early.stderr


def test_compliant_since_comes_from_the_audit_log(tmp_path: Path) -> None:
    users = [BOSS, person("kli", "2102", tags="[mifid]", cr="product: on-demand")]
    path = write(tmp_path, *users)
    state = tmp_path / "state"
    assert crctl("apply", path, "--auto-approve", state=state, actor="jdoe").returncode == 0
    write(tmp_path, BOSS, person("kli", "2102", tags="[mifid]",
                                 cr="product: always-on; prevent_remove: true"),
          tail=POLICY)
    assert crctl("apply", path, "--auto-approve", state=state, actor="jdoe").returncode == 0
    audit = json.loads(crctl("audit", "acme", "--user", "kli", "--format", "json",
                             state=state).stdout)
    changed = [e["time"] for e in audit if e["action"] == "change"]
    doc = json.loads(crctl("report", path, "--format", "json", state=state).stdout)
    assert doc["accounts"][0]["policies"][0]["compliant"] == [
        {"user": "kli", "since": changed[-1]}]


# -- the README's worked example ------------------------------------------------------

def test_the_readme_compliance_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    """Each `$ crctl` line of the README's compliance block, run in order on one state,
    prints what the README shows; the audit times and the report's sha256 (which covers
    them) are the run's own."""
    import re
    import shutil

    from support import EXAMPLES, REPO
    from test_readme_tour import run

    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Compliance as code: defaults, policies, exceptions\n")[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    assert [c.split()[1] for c, _ in steps if c.split()[1] != "--actor"] == [
        "validate", "explain", "explain", "report"]
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    stamp = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
    digest = re.compile(r"Report sha256: [0-9a-f]{64}")
    for command, expected in steps:
        while expected and not expected[-1]:
            expected.pop()
        shown = run(command, tmp_path)
        normal = [digest.sub("Report sha256: -", stamp.sub("TIME", line)) for line in shown]
        wanted = [digest.sub("Report sha256: -", stamp.sub("TIME", line)) for line in expected]
        assert normal == wanted, command
    # the breach the README quotes
    example = tmp_path / "examples" / "compliance" / "trading.yaml"
    example.write_text(example.read_text().replace("access: own-group", "product: on-demand"))
    result = crctl("validate", "examples/compliance/trading.yaml", cwd=tmp_path)
    quoted = " ".join(section.split("(the example with mrossi's")[1].split("`")[5:6][0]
                      .split())
    assert result.returncode == 1 and quoted in result.stderr, (quoted, result.stderr)


# -- the policy hook (plan JSON for conftest / OPA) -----------------------------------

HOOK_POLICY = ("policies:\n  desk-recording:\n    description: desks are recorded\n"
               "    match: {tags: [desk]}\n    require: {product: any}\n")


def test_a_plan_of_a_file_with_policies_carries_the_policy_input(tmp_path: Path) -> None:
    path = write(tmp_path, BOSS,
                 person("kli", "2102", tags="[desk, mifid]", cr="product: on-demand"),
                 tail=HOOK_POLICY)
    state = tmp_path / "state"
    doc = json.loads(crctl("plan", path, "--format", "json", state=state).stdout)
    assert doc["policy_input"] == {
        "policies": {"desk-recording": {"description": "desks are recorded",
                                        "match": {"tags": ["desk"]},
                                        "require": {"product": "any"}}},
        "users": {
            "jdoe": {"location": "Ottawa", "profile": "Elite", "roles": ["decision-maker"],
                     "tags": [], "policies": []},
            "kli": {"location": "Ottawa", "profile": "Elite", "roles": [],
                    "tags": ["desk", "mifid"], "policies": ["desk-recording"]}}}
    # a saved plan keeps it under its checksum, and applies
    out = tmp_path / "plan.json"
    assert crctl("plan", path, "--out", out, state=state).returncode == 0
    saved = json.loads(out.read_text())
    assert saved["policy_input"] == doc["policy_input"]
    result = crctl("apply", out, state=state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    # a file without policies makes the plan it always made
    plain = write(tmp_path, BOSS)
    assert "policy_input" not in json.loads(
        crctl("plan", plain, "--format", "json", state=tmp_path / "s2").stdout)


def test_the_example_rego_rule_denies_a_plan(tmp_path: Path) -> None:
    """The example rule, run by conftest or opa when installed, else by regopy (the
    rego-cpp interpreter, a test dependency: the binaries cannot be fetched in CI)."""
    import shutil
    import subprocess

    from support import EXAMPLES

    path = write(tmp_path, BOSS,
                 person("kli", "2102", tags="[desk, mifid]", cr="product: on-demand"),
                 person("lon", "2103", location="London", cr="product: on-demand"),
                 tail=HOOK_POLICY)
    plan = tmp_path / "plan.json"
    plan.write_text(crctl("plan", path, "--format", "json", state=tmp_path / "s").stdout)
    rules = EXAMPLES / "policy"
    wanted = ["acme: kli is tagged mifid and may not get On-Demand",
              "acme: lon (London) is covered by no policy"]
    conftest, opa = shutil.which("conftest"), shutil.which("opa")
    if conftest is not None or opa is not None:
        if conftest is not None:
            result = subprocess.run([conftest, "test", "--policy", str(rules), str(plan)],
                                    capture_output=True, text=True, timeout=60)
        else:
            result = subprocess.run([str(opa), "eval", "--fail-defined", "-d", str(rules),
                                     "-i", str(plan), "data.main.deny[x]"],
                                    capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        for message in wanted:
            assert message in result.stdout
        return
    regopy = pytest.importorskip("regopy")
    rego = regopy.Interpreter()
    rego.add_module("crctl", (rules / "crctl.rego").read_text(encoding="utf-8"))
    rego.set_input(json.loads(plan.read_text(encoding="utf-8")))
    denied = json.loads(str(rego.query("data.main.deny")))["expressions"][0]
    assert sorted(denied) == wanted
    # a plan the rules allow: kli gets Always-On, lon leaves London
    allowed = write(tmp_path, BOSS,
                    person("kli", "2102", tags="[desk, mifid]", cr="product: always-on"),
                    person("lon", "2103", cr="product: on-demand"), tail=HOOK_POLICY)
    rego = regopy.Interpreter()
    rego.add_module("crctl", (rules / "crctl.rego").read_text(encoding="utf-8"))
    rego.set_input(json.loads(crctl("plan", allowed, "--format", "json",
                                    state=tmp_path / "s").stdout))
    assert json.loads(str(rego.query("data.main.deny")))["expressions"][0] == []


def test_import_factor_proposes_defaults_that_plan_no_changes(tmp_path: Path) -> None:
    users = [BOSS] + [person(f"ott{i}", f"22{i:02d}", cr="product: on-demand; access: own-group")
                      for i in range(8)]
    users += [person("odd", "2301", cr="product: always-on"),
              person("none1", "2302"), person("desk", "2303", profile="Courtesy"),
              person("act", "2304", cr="product: on-demand; access: own-group; "
                                       "activation_date: 2027-01-04"),
              person("tor", "2305", location="Toronto", cr="product: always-on")]
    path = write(tmp_path, *users)
    state = tmp_path / "state"
    assert crctl("apply", path, "--auto-approve", state=state, actor="jdoe").returncode == 0
    explicit = crctl("import", "acme", state=state).stdout
    result = crctl("import", "acme", "--factor", state=state)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert ("defaults:\n  - match: {location: Ottawa}\n    call_recording:\n"
            "      product: on-demand\n      access: own-group\n") in text
    assert text.count("\n") < explicit.count("\n")
    assert "1 default(s) proposed; the file is" in result.stderr
    factored = tmp_path / "factored" / "acme.yaml"
    factored.parent.mkdir()
    factored.write_text(text)
    plan = crctl("plan", factored, "--detailed-exitcode", state=state)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    # the exceptions to the default are explicit
    assert "  none1:\n" in text and "    call_recording: null\n" in text
    assert "      product: always-on\n      prevent_remove: false\n      access: none\n" in text
