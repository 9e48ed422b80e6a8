"""Plan output in its three formats (DESIGN §5): the text final line, the JSON plan
document (keys, schema, checksum) and the markdown pull-request comment (summary table
first, call-outs, <details>, GitHub's 65,536-character limit, rows never cut).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support import REPO, TODAY, crctl

from reconciler.model import CurrentAccount, DesiredAccount, Mirror
from reconciler.plan import Action, Kind, MirrorChange, Plan
from reconciler.planner import make_plan
from reconciler.render import markdown, text
from reconciler.render.common import summary_line

ACME = REPO / "examples" / "acme.yaml"
GLOBEX = REPO / "examples" / "globex.yaml"
PLAN_SCHEMA = json.loads((REPO / "schemas" / "plan.schema.json").read_text())
GITHUB_LIMIT = 65_536

FINAL_LINE = re.compile(
    r"^(Plan: \d+ to enable, \d+ to change, \d+ to remove; \d+ users? to add, \d+ to update, "
    r"\d+ to delete(; \d+ groups? to add, \d+ to update, \d+ to delete)?\."
    r"|No changes\. Account [a-z0-9-]+ matches the desired state\."
    r"|Plan: terminate account [a-z0-9-]+ \(\d+ users?, \d+ recordings? will be deleted\)\.)$")


# -- records and plans built in memory ----------------------------------------------------------

def rec(name: str, ext: str, *, product: str | None = None, roles: tuple[str, ...] = (),
        email: str | None = None, first: str | None = None,
        profile: str = "Elite") -> dict[str, Any]:
    return {"username": name, "first_name": first or name.title(), "last_name": "Tester",
            "email": email or f"{name}@x.example", "extension": ext, "phone_number": None,
            "profile": profile, "location": None, "roles": list(roles), "tags": [],
            "call_recording": None if product is None else {
                "product": product, "activation_date": None, "prevent_remove": False,
                "access": "none", "status": "active"}}


def every_kind_plan(account: str) -> Plan:
    """One action of each kind, and three MIR mirror entries missing."""
    current = {"u1": rec("jdoe", "10", product="always-on", roles=("decision-maker",)),
               "u2": rec("rem", "11", product="on-demand"), "u3": rec("del", "12"),
               "u4": rec("upd", "13"), "u5": rec("chg", "14", product="on-demand"),
               "u6": rec("ena", "15")}
    desired = {"jdoe": current["u1"], "rem": rec("rem", "11"),
               "upd": rec("upd", "13", email="new@x.example"),
               "chg": rec("chg", "14", product="always-on"),
               "ena": rec("ena", "15", product="on-demand"), "new": rec("new", "16")}
    return make_plan(DesiredAccount(account, f"{account}.yaml", "0" * 64, users=desired),
                     CurrentAccount(account, lineage="lineage-1", serial=3, next_user_id=7,
                                    users=current),
                     Mirror(account), TODAY)


def counted_plan(**counts: int) -> Plan:
    """A plan with the given number of actions per kind (for the final line)."""
    actions = []
    for kind in Kind:
        for i in range(counts.get(str(kind), 0)):
            actions.append(Action(kind, f"user{i}", f"u{i + 1}", {}, {}))
    return Plan(account="acme", desired_path=None, desired_sha256=None, lineage="l", serial=1,
                actions=tuple(actions))


# -- text: the final line ------------------------------------------------------------------------

@pytest.mark.parametrize(("counts", "line"), [
    ({"enable": 2, "change": 1, "remove": 1, "add_user": 1, "update_user": 3},
     "Plan: 2 to enable, 1 to change, 1 to remove; 1 user to add, 3 to update, 0 to delete."),
    ({"add_user": 2, "delete_user": 1},
     "Plan: 0 to enable, 0 to change, 0 to remove; 2 users to add, 0 to update, 1 to delete."),
    ({"update_user": 1},
     "Plan: 0 to enable, 0 to change, 0 to remove; 0 users to add, 1 to update, 0 to delete."),
    ({}, "No changes. Account acme matches the desired state."),
])
def test_final_line_forms(counts: dict[str, int], line: str) -> None:
    plan = counted_plan(**counts)
    assert summary_line(plan) == line
    assert text.render(plan).splitlines()[-1] == line
    assert FINAL_LINE.match(line)


@pytest.mark.parametrize(("users", "recordings", "line"), [
    (12, 340, "Plan: terminate account acme (12 users, 340 recordings will be deleted)."),
    (1, 0, "Plan: terminate account acme (1 user, 0 recordings will be deleted)."),
    (2, 1, "Plan: terminate account acme (2 users, 1 recording will be deleted)."),
])
def test_final_line_of_a_termination(users: int, recordings: int, line: str) -> None:
    action = Action(Kind.TERMINATE_ACCOUNT, None, None,
                    {"users": users, "cr_users": 1, "recordings": recordings}, None)
    plan = Plan(account="acme", desired_path=None, desired_sha256=None, lineage="l", serial=4,
                actions=(action,))
    assert summary_line(plan) == line
    assert text.render(plan).splitlines()[-1] == line


def test_termination_action_line_counts_in_singular() -> None:
    action = Action(Kind.TERMINATE_ACCOUNT, None, None,
                    {"users": 1, "cr_users": 1, "recordings": 1}, None)
    plan = Plan(account="acme", desired_path=None, desired_sha256=None, lineage="l", serial=4,
                actions=(action,))
    line = text.render(plan).splitlines()[1]
    assert "1 user," in line and "1 CR service," in line and "1 recording " in line, line


def test_mirror_drift_alone_is_a_change_with_zero_counts() -> None:
    plan = Plan(account="acme", desired_path=None, desired_sha256=None, lineage="l", serial=1,
                mir_delete=(MirrorChange("u9", "ghost", "CR not live in the portal"),))
    assert plan.has_changes
    out = text.render(plan).splitlines()
    assert out[-1] == ("Plan: 0 to enable, 0 to change, 0 to remove; 0 users to add, "
                       "0 to update, 0 to delete.")
    assert out[-2] == ""
    assert out[-4].startswith("MIR mirror drift (1 entry")
    assert out[-3] == "  - delete ghost (u9): CR not live in the portal"


def test_text_lists_each_action_with_its_user() -> None:
    plan = every_kind_plan("acme")
    lines = text.render(plan).splitlines()
    assert lines[0] == "Account acme (serial 3)"
    body = [line for line in lines[1:] if line.startswith("  ")]
    expected = [("-", "remove CR", "rem"), ("-", "delete user", "del"), ("+", "add user", "new"),
                ("~", "update user", "upd"), ("~", "change CR", "chg"), ("+", "enable CR", "ena")]
    assert len(body) == len(expected) + 3  # and three drift entries
    for line, (sign, verb, user) in zip(body, expected, strict=False):
        assert line.startswith(f"  {sign} {verb}") and f" {user} " in line
    update = next(line for line in body if "update user" in line)
    assert "email: upd@x.example -> new@x.example" in update
    change = next(line for line in body if "change CR" in line)
    assert ("product: MiCloud Connect MIR On-Demand -> MiCloud Connect MIR Always-On"
            in change)
    assert "MIR mirror drift (3 entries" in text.render(plan)


def test_text_colour_only_when_asked() -> None:
    plan = every_kind_plan("acme")
    assert "\x1b[" not in text.render(plan)
    coloured = text.render(plan, color=True)
    assert "\x1b[" in coloured
    assert summary_line(plan) in coloured


def test_cli_text_output_has_no_escape_codes_and_ends_with_the_final_line(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    for path in (ACME, GLOBEX):
        out = crctl("plan", path, state=state).stdout
        assert "\x1b" not in out
        assert out.endswith("\n")
        assert FINAL_LINE.match(out.splitlines()[-1])


# -- JSON: the plan document ---------------------------------------------------------------------

TOP_KEYS = {"format_version", "tool_version", "account", "created_at", "desired",
            "prior_state", "actions", "summary", "mir", "checksum", "digest", "violations",
            "forced"}
SUMMARY_KEYS = {"enable", "change", "remove", "add_user", "update_user", "delete_user",
                "terminate_account"}
GROUP_SUMMARY_KEYS = {"delete_group", "add_group", "update_group"}


def canonical_checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def check_document(doc: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(PLAN_SCHEMA)
    jsonschema.Draft202012Validator(PLAN_SCHEMA).validate(doc)
    assert set(doc) >= TOP_KEYS
    assert doc["format_version"] == "1"
    assert isinstance(doc["tool_version"], str) and doc["tool_version"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["created_at"])
    assert set(doc["desired"]) == {"path", "sha256"}
    assert set(doc["prior_state"]) == {"lineage", "serial"}
    # group counts only in a plan with group actions (a plan without keeps its old digest)
    has_groups = any(a["action"].endswith("_group") for a in doc["actions"])
    assert set(doc["summary"]) == SUMMARY_KEYS | (GROUP_SUMMARY_KEYS if has_groups else set())
    assert set(doc["mir"]) == {"upsert", "delete"}
    for action in doc["actions"]:
        keys = {"action", "user", "user_id", "before", "after", "changed"}
        if action["action"].endswith("_group"):
            keys.add("group")
        assert set(action) == keys
    counted = {k: sum(1 for a in doc["actions"] if a["action"] == k) for k in doc["summary"]}
    assert doc["summary"] == counted
    assert doc["checksum"] == canonical_checksum(doc)


def test_json_document_of_a_new_account(tmp_path: Path) -> None:
    result = crctl("plan", ACME, "--format", "json", state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    check_document(doc)
    assert doc["account"] == "acme"
    assert doc["desired"] == {"path": str(ACME),
                              "sha256": hashlib.sha256(ACME.read_bytes()).hexdigest()}
    assert doc["prior_state"] == {"lineage": None, "serial": 0}
    assert doc["mir"] == {"upsert": [], "delete": []}


def test_json_document_with_actions_and_drift(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert crctl("apply", ACME, "--auto-approve", state=state, actor="jdoe").returncode == 0
    portal = json.loads((state / "portal" / "acme.json").read_text())
    mirror_path = state / "mir" / "acme.json"
    mirror = json.loads(mirror_path.read_text())
    mirror["users"]["u77"] = {"username": "ghost", "full_name": "Ghost"}
    mirror_path.write_text(json.dumps(mirror))
    edited = tmp_path / "pr" / "acme.yaml"
    edited.parent.mkdir()
    edited.write_text(ACME.read_text()
                      .replace("product: on-demand            # MiCloud", "product: always-on #")
                      .replace("location: Toronto", "location: Halifax")
                      .replace("  lobby:\n", "  lobby:\n    call_recording: null\n")
                      + "  new.user:\n    first_name: New\n    last_name: User\n"
                        "    email: new@acme.example\n    extension: \"2200\"\n"
                        "    profile: Premier\n    call_recording: {product: on-demand}\n")
    doc = json.loads(crctl("plan", edited, "--format", "json", state=state).stdout)
    check_document(doc)
    assert doc["prior_state"] == {"lineage": portal["lineage"], "serial": 1}
    assert [(a["action"], a["user"]) for a in doc["actions"]] == [
        ("add_user", "new.user"), ("update_user", "bob.smith"), ("change", "asmith"),
        ("enable", "new.user")]
    assert doc["mir"]["delete"] == [{"user_id": "u77", "username": "ghost",
                                     "reason": "CR not live in the portal"}]
    assert doc["desired"]["sha256"] == hashlib.sha256(edited.read_bytes()).hexdigest()


def test_json_document_of_a_termination_and_of_no_changes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert crctl("apply", ACME, "--auto-approve", state=state, actor="jdoe").returncode == 0
    doc = json.loads(crctl("plan", ACME, "--format", "json", state=state).stdout)
    check_document(doc)
    assert doc["actions"] == [] and not any(doc["summary"].values())
    end = tmp_path / "end" / "acme.yaml"
    end.parent.mkdir()
    end.write_text("account: acme\nterminate: true\n")
    doc = json.loads(crctl("plan", end, "--format", "json", state=state).stdout)
    check_document(doc)
    assert [a["action"] for a in doc["actions"]] == ["terminate_account"]
    assert doc["summary"]["terminate_account"] == 1


def test_json_checksum_covers_non_ascii_text(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(ACME.read_text().replace("first_name: Jane", "first_name: Zoë")
                    .replace("location: Ottawa", "location: Québec"), encoding="utf-8")
    result = crctl("plan", path, "--format", "json", state=tmp_path / "state")
    assert "Zoë" in result.stdout  # not \u-escaped
    check_document(json.loads(result.stdout))


def test_saved_plan_equals_printed_json(tmp_path: Path) -> None:
    saved = tmp_path / "p.json"
    result = crctl("plan", ACME, "--format", "json", "--out", saved, state=tmp_path / "s")
    assert json.loads(saved.read_text()) == json.loads(result.stdout)
    check_document(json.loads(saved.read_text()))
    # --out always saves JSON, whatever --format prints
    md = crctl("plan", ACME, "--format", "markdown", "--out", saved, state=tmp_path / "s")
    assert body(md.stdout).startswith("### crctl plan")
    check_document(json.loads(saved.read_text()))


# -- markdown ------------------------------------------------------------------------------------

ROW_CELL = re.compile(r"(?<!\\)\|")
PREAMBLE = re.compile(r"<!-- crctl-plan digest=[0-9a-f]{64} -->\n(?:>.*\n)*\n?"
                      r"`Digest[^\n]*`\n(?:`Checksum[^\n]*`\n)?\n")


def body(md: str) -> str:
    """A markdown plan without its preamble (marker line, safety call-out, digest), which
    test_plan_identity.py tests; the accounts follow it."""
    found = PREAMBLE.match(md)
    assert found, md[:500]
    return md[found.end():]


def check_tables(md: str) -> None:
    """Every table line is whole: it starts and ends with an unescaped '|', and has as
    many cells as its table's header."""
    width = None
    for line in md.splitlines():
        if not line.startswith("|"):
            width = None
            continue
        assert line.endswith("|") and not line.endswith("\\|"), line
        cells = len(ROW_CELL.findall(line))
        if width is None:
            width = cells
        assert cells == width, line


def check_details(md: str) -> None:
    depth = 0
    for line in md.splitlines():
        depth += line.count("<details>") - line.count("</details>")
        assert depth in (0, 1), line
    assert depth == 0


def test_markdown_layout() -> None:
    md = body(markdown.render_all([every_kind_plan("acme")]))
    lines = md.splitlines()
    assert lines[0] == "### crctl plan: `acme`"
    first_table = next(i for i, line in enumerate(lines) if line.startswith("|"))
    assert lines[first_table] == "| Action | Count |"
    first_details = next(i for i, line in enumerate(lines) if line.startswith("<details>"))
    assert first_table < first_details
    table = lines[first_table:lines.index("", first_table)]
    assert "| CR to remove | 1 |" in table and "| Users to delete | 1 |" in table
    assert "| CR to enable | 1 |" in table and "| MIR mirror drift | 3 |" in table
    # removals and deletions are called out before the details
    details_at = md.index("<details>")
    assert md.index("**CR removed from 1 user:** `rem`") < details_at
    assert md.index("**Deleted 1 user:** `del`") < details_at
    assert md.count("> [!WARNING]") == 2
    summaries = re.findall(r"<details><summary>(.*?)</summary>", md)
    assert summaries == ["CR to remove (1)", "Users to delete (1)", "Users to add (1)",
                         "Users to update (1)", "CR to change (1)", "CR to enable (1)",
                         "MIR mirror drift (3)"]
    assert lines[-1] == f"**{summary_line(every_kind_plan('acme'))}**"
    check_tables(md)
    check_details(md)


def test_markdown_of_no_changes_and_of_a_termination() -> None:
    quiet = Plan(account="acme", desired_path=None, desired_sha256=None, lineage="l", serial=1)
    md = markdown.render_all([quiet])
    assert md.count("No changes. Account acme matches the desired state.") == 1
    assert "**No changes. Account acme matches the desired state.**" in md
    assert "<details>" not in md and "[!WARNING]" not in md
    end = Plan(account="acme", desired_path=None, desired_sha256=None, lineage="l", serial=1,
               actions=(Action(Kind.TERMINATE_ACCOUNT, None, None,
                               {"users": 3, "cr_users": 2, "recordings": 9}, None),))
    md = markdown.render_all([end])
    assert "[!CAUTION]" in md and "all recordings" in md
    assert "Plan: terminate account acme (3 users, 9 recordings will be deleted)." in md


def test_markdown_cells_are_escaped() -> None:
    nasty = "Pipe | <b>Bold</b> `tick` \\ end"
    current = {"u1": rec("jdoe", "10", roles=("decision-maker",)),
               "u2": rec("old", "11", first=nasty)}
    desired = {"jdoe": current["u1"], "old": rec("old", "11", first="Plain"),
               "new": rec("new", "12", first=nasty, product="on-demand")}
    plan = make_plan(DesiredAccount("acme", "acme.yaml", "0" * 64, users=desired),
                     CurrentAccount("acme", lineage="l", serial=1, next_user_id=3,
                                    users=current), Mirror("acme"), TODAY)
    md = markdown.render_all([plan])
    check_tables(md)
    assert "<b>" not in md
    assert "Pipe \\| &lt;b&gt;Bold&lt;/b&gt;" in md


def big_account(path: Path, users: dict[int, tuple[str, str]]) -> Path:
    """Account `big`: jdoe (Decision Maker) and user<i> with (location, product) each."""
    parts = ["account: big\nusers:\n  jdoe:\n    first_name: Jane\n    last_name: Doe\n"
             "    email: jdoe@big.example\n    extension: \"99\"\n    profile: Elite\n"
             "    roles: [decision-maker]\n"]
    for i, (location, product) in users.items():
        parts.append(f"  user{i:04d}:\n    first_name: First{i}\n    last_name: Last\n"
                     f"    email: user{i}@big.example\n    extension: \"{10000 + i}\"\n"
                     f"    profile: Elite\n    location: {location}\n"
                     f"    call_recording:\n      product: {product}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts))
    return path


def test_markdown_of_a_huge_plan_fits_in_a_comment(tmp_path: Path) -> None:
    """6,000 actions: 1,000 of each kind. The comment stays under GitHub's limit, keeps
    every table row whole and says how many rows it left out."""
    state = tmp_path / "state"
    first = big_account(tmp_path / "v1" / "big.yaml",
                        dict.fromkeys(range(3000), ("Ottawa", "on-demand")))
    applied = crctl("apply", first, "--auto-approve", state=state, actor="jdoe")
    assert applied.returncode == 0, applied.stderr
    # delete 0-999, update 1000-1999, change 2000-2999, add 3000-3999 with CR
    desired = big_account(tmp_path / "v2" / "big.yaml", {
        **dict.fromkeys(range(1000, 2000), ("Kingston", "on-demand")),
        **dict.fromkeys(range(2000, 3000), ("Ottawa", "always-on")),
        **dict.fromkeys(range(3000, 4000), ("Ottawa", "on-demand"))})
    saved = tmp_path / "big.plan"
    result = crctl("plan", desired, "--format", "markdown", "--force", "--out", saved,
                   state=state)
    assert result.returncode == 0, result.stderr
    doc = json.loads(saved.read_text())
    total = len(doc["actions"])
    assert total == 6000
    assert doc["summary"] == {"enable": 1000, "change": 1000, "remove": 1000, "add_user": 1000,
                              "update_user": 1000, "delete_user": 1000, "terminate_account": 0}
    md = result.stdout
    assert len(md) < GITHUB_LIMIT
    check_tables(md)
    check_details(md)
    assert body(md).splitlines()[2] == "| Action | Count |"
    assert "**CR removed from 1000 users:**" in md and "and 980 more" in md
    assert "**Deleted 1000 users:**" in md
    assert ("**Plan: 1000 to enable, 1000 to change, 1000 to remove; 1000 users to add, "
            "1000 to update, 1000 to delete.**") in md
    shown = sum(1 for line in md.splitlines() if line.startswith("| `"))
    assert 0 < shown < total
    note = re.search(r"_(\d+) detail rows are not shown", md)
    assert note, md[-500:]
    assert int(note[1]) == total - shown
    assert "crctl show" in md[note.start():]
    # the saved plan renders the same comment; text shows every action
    assert crctl("show", saved, "--format", "markdown").stdout == md
    text_out = crctl("show", saved).stdout
    actions = text_out.split("\nAccount ", 1)[1]  # after the safety limits it was forced past
    assert sum(1 for line in actions.splitlines() if line.startswith("  ")) == total


def test_markdown_of_a_large_new_account(tmp_path: Path) -> None:
    """5,001 actions of two kinds (create, add, enable)."""
    path = big_account(tmp_path / "v1" / "big.yaml",
                       dict.fromkeys(range(2500), ("Ottawa", "always-on")))
    result = crctl("plan", path, "--format", "markdown", state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    md = result.stdout
    assert len(md) < GITHUB_LIMIT
    check_tables(md)
    check_details(md)
    shown = sum(1 for line in md.splitlines() if line.startswith("| `"))
    note = re.search(r"_(\d+) detail rows are not shown", md)
    assert note and int(note[1]) == 2501 + 2500 - shown
    assert "| Account to create | 1 |" in md


def test_markdown_of_many_accounts_fits_in_a_comment() -> None:
    plans = [every_kind_plan(f"account-{i:03d}") for i in range(80)]
    sizes = {n: len(markdown.render_all(plans[:n])) for n in range(30, 81)}
    over = {n: size for n, size in sizes.items() if size >= GITHUB_LIMIT}
    assert not over, f"accounts -> characters over the limit: {over}"


def test_markdown_of_a_thousand_accounts_fits_in_a_comment() -> None:
    plans = [every_kind_plan(f"account-{i:04d}") for i in range(1000)]  # 6,000 actions
    md = markdown.render_all(plans)
    assert len(md) < GITHUB_LIMIT, len(md)


def _terminating(account: str) -> Plan:
    action = Action(Kind.TERMINATE_ACCOUNT, None, None,
                    {"users": 3, "cr_users": 1, "recordings": 7}, None)
    return Plan(account=account, desired_path=None, desired_sha256=None, lineage="l",
                serial=2, actions=(action,))


def test_markdown_overview_of_a_thousand_accounts() -> None:
    """Too many accounts for every summary: totals first, whole account sections by risk
    (terminations first) in directory order, and a note naming what was left out."""
    plans: list[Plan] = []
    for i in range(1000):
        account = f"account-{i:04d}"
        if i % 250 == 249:
            plans.append(_terminating(account))
        elif i % 3 == 0:
            plans.append(Plan(account=account, desired_path=None, desired_sha256=None,
                              lineage="l", serial=1))
        else:
            plans.append(every_kind_plan(account))
    md = markdown.render_all(plans)
    assert len(md) < GITHUB_LIMIT, len(md)
    check_tables(md)
    check_details(md)
    lines = body(md).splitlines()
    assert lines[0] == "### crctl plan: 1000 accounts"
    assert lines[2] == "| Action | All accounts |"
    assert "| Accounts to terminate | 4 |" in lines and "| CR to remove | 664 |" in lines
    assert ("> **4 accounts to terminate:** `account-0249`, `account-0499`, `account-0749`, "
            "`account-0999`.") in md
    shown = re.findall(r"^### crctl plan: `(account-\d{4})`$", md, re.M)
    assert shown == sorted(shown)  # directory order
    for account in ("account-0249", "account-0499", "account-0749", "account-0999"):
        assert account in shown  # terminations are never the ones left out
    assert "<details>" not in md  # whole sections, no details cut in between
    note = re.search(r"_(\d+) of 1000 accounts \(`account-\d{4}`.* and (\d+) more\) and "
                     r"the \d+ detail rows are not shown", md)
    assert note and int(note[1]) == 1000 - len(shown), md[-800:]
    assert int(note[2]) == int(note[1]) - 20
    assert "crctl show PLANFILE --format text" in md[note.start():]
    assert md.endswith("._\n")


def test_markdown_size_at_every_count_of_accounts_near_the_switch() -> None:
    """From the accounts that fit with details to those that need the overview, every
    comment stays under the limit and every row is whole."""
    plans = [every_kind_plan(f"account-{i:03d}") for i in range(160)]
    modes = set()
    for n in range(130, 161):
        md = body(markdown.render_all(plans[:n]))
        assert len(md) < GITHUB_LIMIT, n
        check_tables(md)
        check_details(md)
        modes.add(md.splitlines()[0])
        if md.startswith("### crctl plan: `"):
            assert md.count("**Plan: ") == n  # every account's summary is there
    # both layouts were exercised: per account with details, then the overview
    assert "### crctl plan: `account-000`" in modes, modes
    assert any(m.endswith(" accounts") for m in modes), modes


def test_markdown_directory_plan(tmp_path: Path) -> None:
    directory = tmp_path / "accounts"
    directory.mkdir()
    for src in (ACME, GLOBEX):
        (directory / src.name).write_text(src.read_text())
    md = crctl("plan", directory, "--format", "markdown", state=tmp_path / "state").stdout
    assert md.index("### crctl plan: `acme`") < md.index("### crctl plan: `globex`")
    assert md.count("| Action | Count |") == 2
    check_tables(md)
    check_details(md)
