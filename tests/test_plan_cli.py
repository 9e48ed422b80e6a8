"""`crctl plan` and `crctl show` as users and CI run them: exit statuses, directory plans,
MIR mirror drift, saved plans, the promise that plan never writes to the state directory,
and golden files of the text and markdown output.

Golden files live in tests/golden/; rewrite them with `UPDATE_GOLDEN=1 pytest ...` and
review the diff.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from support import EXAMPLES, TODAY, crctl

ACME = EXAMPLES / "acme.yaml"
GLOBEX = EXAMPLES / "globex.yaml"
GOLDEN = Path(__file__).resolve().parent / "golden"


def apply(path: Path, state: Path, today: str = TODAY) -> None:
    result = crctl("apply", path, "--auto-approve", state=state, actor="jdoe", today=today)
    assert result.returncode == 0, result.stderr


def copy_as(src: Path | str, directory: Path, name: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = src.read_text(encoding="utf-8") if isinstance(src, Path) else src
    dest = directory / (name or (src.name if isinstance(src, Path) else "acme.yaml"))
    dest.write_text(text, encoding="utf-8")
    return dest


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def without_state_header(text: str) -> str:
    """A text plan without its first line, `State: LOCATION` (DESIGN §3.1), which names a
    temporary directory in tests and is not part of a saved plan (`show`)."""
    first, _, rest = text.partition("\n")
    assert first.startswith("State: "), text[:200]
    return rest


HASHES = re.compile(r"(digest=|Digest: |Checksum: )[0-9a-f]{64}")


def check_golden(name: str, actual: str) -> None:
    """The digest depends on the state's lineage (random), so golden files hold a mark
    in its place (test_plan_identity.py tests the values)."""
    if name.endswith(".txt"):
        actual = without_state_header(actual)
    actual = HASHES.sub(lambda m: m[1] + "<sha256>", actual)
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run the tests with UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, (f"{name} differs from the golden file; if the change is "
                                "intended, rerun with UPDATE_GOLDEN=1 and review the diff")


# acme.yaml after review: asmith downgraded to Courtesy with CR removed, jdoe moved,
# bob.smith on Always-On from a later date, lobby gone, carol new with CR.
MODIFIED_ACME = """\
account: acme
name: Acme Corporation
recording_settings:
  time_zone: America/Toronto
recording_groups:
  sales:
    managers: []
    members: [bob.smith]
safety:
  max_remove_pct: 30
users:
  jdoe:
    first_name: Jane
    last_name: Doe
    email: jane.doe@acme.example
    extension: "2101"
    phone_number: "+16135550101"
    profile: Elite
    location: Montreal
    roles: [decision-maker]
    call_recording:
      product: always-on
      prevent_remove: true
      access: all
  asmith:
    first_name: Alice
    last_name: Smith
    email: alice.smith@acme.example
    extension: "2102"
    phone_number: "+16135550102"
    profile: Courtesy
    location: Ottawa
    roles: [phone-manager]
  bob.smith:
    renamed_from: bsmith
    first_name: Bob
    last_name: Smith
    email: bob.smith@acme.example
    extension: "2103"
    profile: Essentials
    location: Toronto
    roles:
      - phone-manager: [Toronto]
    call_recording:
      product: always-on
      activation_date: 2026-12-15
  carol:
    first_name: Carol
    last_name: White
    email: carol.white@acme.example
    extension: "2104"
    profile: Telephony
    call_recording:
      product: on-demand
"""


@pytest.fixture
def applied(tmp_path: Path) -> Path:
    """A state directory holding examples/acme.yaml, applied on TODAY."""
    state = tmp_path / "state"
    apply(ACME, state)
    return state


# -- golden files -----------------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "suffix"), [("text", "txt"), ("markdown", "md")])
def test_golden_new_account(tmp_path: Path, fmt: str, suffix: str) -> None:
    result = crctl("plan", ACME, "--format", fmt, state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    check_golden(f"acme-new.{suffix}", result.stdout)


@pytest.mark.parametrize(("fmt", "suffix"), [("text", "txt"), ("markdown", "md")])
def test_golden_modified_account(applied: Path, tmp_path: Path, fmt: str,
                                 suffix: str) -> None:
    path = copy_as(MODIFIED_ACME, tmp_path / "pr")
    result = crctl("plan", path, "--format", fmt, state=applied)
    assert result.returncode == 0, result.stderr
    check_golden(f"acme-modified.{suffix}", result.stdout)


def test_modified_account_plan_applies(applied: Path, tmp_path: Path) -> None:
    path = copy_as(MODIFIED_ACME, tmp_path / "pr")
    doc = json.loads(crctl("plan", path, "--format", "json", state=applied).stdout)
    assert [(a["action"], a["user"]) for a in doc["actions"]] == [
        ("remove", "asmith"), ("delete_user", "lobby"), ("add_user", "carol"),
        ("update_user", "asmith"), ("update_user", "jdoe"), ("change", "bob.smith"),
        ("enable", "carol"), ("update_group", None)]
    apply(path, applied)
    again = crctl("plan", path, "--detailed-exitcode", state=applied)
    assert again.returncode == 0, again.stdout
    assert last_line(again.stdout) == "No changes. Account acme matches the desired state."


# -- exit statuses ------------------------------------------------------------------------------

def test_exit_status_no_changes(applied: Path) -> None:
    for extra in ([], ["--detailed-exitcode"]):
        result = crctl("plan", ACME, *extra, state=applied)
        assert result.returncode == 0, result.stderr
        assert last_line(result.stdout) == "No changes. Account acme matches the desired state."


def test_exit_status_changes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert crctl("plan", ACME, state=state).returncode == 0
    assert crctl("plan", ACME, "--detailed-exitcode", state=state).returncode == 2
    for fmt in ("json", "markdown"):
        assert crctl("plan", ACME, "--format", fmt, "--detailed-exitcode",
                     state=state).returncode == 2


def test_exit_status_invalid_file(tmp_path: Path) -> None:
    bad = copy_as(ACME.read_text().replace("product: on-demand", "product: on"),
                  tmp_path / "bad")
    for extra in ([], ["--detailed-exitcode"]):
        result = crctl("plan", bad, *extra, state=tmp_path / "state")
        assert result.returncode == 1
        assert result.stdout == ""
        assert f"{bad}:" in result.stderr and ": error: " in result.stderr


def acme_without_jdoe_cr() -> str:
    """examples/acme.yaml with CR removed from jdoe, whose service has prevent_remove."""
    text = ACME.read_text()
    start = text.index("    call_recording:\n      product: always-on")
    end = text.index("\n", text.index("access: all", start)) + 1
    text = text[:start] + text[end:]
    assert "always-on" not in text and "prevent_remove" not in text
    return text


def test_exit_status_safety_limit(applied: Path, tmp_path: Path) -> None:
    path = copy_as(acme_without_jdoe_cr(), tmp_path / "pr")
    for extra in ([], ["--detailed-exitcode"], ["--format", "json"]):
        result = crctl("plan", path, *extra, state=applied)
        assert result.returncode == 5, result.stderr
        assert "jdoe" in result.stderr and "prevent_remove" in result.stderr
        assert "remove" in result.stdout  # the refused plan is printed in full (DESIGN §5)
    assert crctl("plan", path, "--force", state=applied).returncode == 0
    assert crctl("plan", path, "--force", "--detailed-exitcode", state=applied).returncode == 2


@pytest.mark.parametrize("args", [
    ["plan"],                                   # missing PATH
    ["plan", str(ACME), "--format", "xml"],     # bad choice
    ["plan", str(ACME), "--bogus"],             # unknown option
    ["plan", str(ACME), "--out"],               # option without its value
])
def test_usage_errors_exit_1(tmp_path: Path, args: list[str]) -> None:
    result = crctl(*args, state=tmp_path / "state")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.strip()
    assert not (tmp_path / "state").exists()


def test_missing_file_exits_1(tmp_path: Path) -> None:
    result = crctl("plan", tmp_path / "nope.yaml", state=tmp_path / "state")
    assert result.returncode == 1
    assert "nope.yaml" in result.stderr


def test_bad_crctl_today_exits_1(tmp_path: Path) -> None:
    result = crctl("plan", ACME, state=tmp_path / "state", today="next tuesday")
    assert result.returncode == 1
    assert "CRCTL_TODAY" in result.stderr


# -- MIR mirror drift in the output -----------------------------------------------------------

def edit_mirror(state: Path, missing: str = "asmith", stale: str = "jdoe") -> dict[str, str]:
    """Break the mirror three ways; returns the user ids involved."""
    path = state / "mir" / "acme.json"
    mirror = json.loads(path.read_text())
    ids = {e["username"]: uid for uid, e in mirror["users"].items()}
    del mirror["users"][ids[missing]]
    mirror["users"][ids[stale]]["full_name"] = "Janet Doe"
    mirror["users"]["u99"] = {"username": "ghost", "full_name": "Ghost", "email": "g@x.example",
                              "extension": "2999", "phone_number": None,
                              "product": "on-demand"}
    path.write_text(json.dumps(mirror))
    return ids


def test_mirror_drift_text_section(applied: Path) -> None:
    edit_mirror(applied)
    result = crctl("plan", ACME, "--detailed-exitcode", state=applied)
    assert result.returncode == 2, result.stderr
    lines = result.stdout.rstrip("\n").splitlines()
    assert lines[-1] == ("Plan: 0 to enable, 0 to change, 0 to remove; 0 users to add, "
                         "0 to update, 0 to delete.")
    assert lines[-2].startswith("Digest: ")
    assert lines[-3] == ""
    start = next(i for i, line in enumerate(lines) if line.startswith("MIR mirror drift"))
    assert lines[start].startswith("MIR mirror drift (3 entries")
    section = lines[start + 1:-3]
    assert len(section) == 3
    assert any("asmith" in s and "missing from the MIR mirror" in s for s in section)
    assert any("jdoe" in s and "out of date: full_name" in s for s in section)
    assert any("ghost" in s and "u99" in s and "CR not live in the portal" in s
               for s in section)
    # and without --detailed-exitcode it is still a plain success
    assert crctl("plan", ACME, state=applied).returncode == 0


def test_mirror_drift_json_and_markdown(applied: Path, tmp_path: Path) -> None:
    ids = edit_mirror(applied)
    doc = json.loads(crctl("plan", ACME, "--format", "json", state=applied).stdout)
    assert doc["actions"] == []
    assert doc["mir"]["upsert"] == [
        {"user_id": ids["asmith"], "username": "asmith",
         "reason": "missing from the MIR mirror"},
        {"user_id": ids["jdoe"], "username": "jdoe", "reason": "out of date: full_name"}]
    assert doc["mir"]["delete"] == [
        {"user_id": "u99", "username": "ghost", "reason": "CR not live in the portal"}]
    md = crctl("plan", ACME, "--format", "markdown", state=applied).stdout
    assert "| MIR mirror drift | 3 |" in md
    assert "<details><summary>MIR mirror drift (3)</summary>" in md
    # drift with actions: the section sits between the actions and the final line
    path = copy_as(MODIFIED_ACME, tmp_path / "pr")
    text = crctl("plan", path, state=applied).stdout
    lines = text.rstrip("\n").splitlines()
    drift_at = next(i for i, line in enumerate(lines) if line.startswith("MIR mirror drift"))
    last_action = max(i for i, line in enumerate(lines) if line.startswith("  + enable CR"))
    assert last_action < drift_at < len(lines) - 1
    assert lines[-1].startswith("Plan: 1 to enable, 1 to change, 1 to remove;")


def test_apply_repairs_drift(applied: Path) -> None:
    edit_mirror(applied)
    apply(ACME, applied)
    result = crctl("plan", ACME, "--detailed-exitcode", state=applied)
    assert result.returncode == 0, result.stdout
    assert "MIR mirror drift" not in result.stdout


# -- directory plans ----------------------------------------------------------------------------

def accounts_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "accounts"
    copy_as(ACME, directory)
    copy_as(GLOBEX, directory)
    (directory / "README.md").write_text("not an account\n")
    return directory


def test_directory_plan_json_is_a_list(applied: Path, tmp_path: Path) -> None:
    directory = accounts_dir(tmp_path)
    result = crctl("plan", directory, "--format", "json", "--detailed-exitcode", state=applied)
    assert result.returncode == 2, result.stderr
    docs = json.loads(result.stdout)
    assert isinstance(docs, list)
    # a plan set lists the accounts with changes: acme is applied (DESIGN §5)
    assert [d["account"] for d in docs] == ["globex"]
    assert docs[0]["summary"]["add_user"] == 3
    for doc in docs:
        body = {k: v for k, v in doc.items() if k != "checksum"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False).encode()
        assert doc["checksum"] == hashlib.sha256(canonical).hexdigest()


def test_directory_of_one_file_is_still_a_list(tmp_path: Path) -> None:
    directory = tmp_path / "one"
    copy_as(GLOBEX, directory)
    docs = json.loads(crctl("plan", directory, "--format", "json",
                            state=tmp_path / "state").stdout)
    assert isinstance(docs, list) and len(docs) == 1
    single = json.loads(crctl("plan", directory / "globex.yaml", "--format", "json",
                              state=tmp_path / "state").stdout)
    assert isinstance(single, dict) and single["account"] == "globex"
    saved = tmp_path / "one.plan"
    crctl("plan", directory, "--out", saved, state=tmp_path / "state")
    shown = json.loads(crctl("show", saved, "--format", "json").stdout)
    assert isinstance(shown, list) and shown[0]["account"] == "globex"


def test_directory_without_accounts_exits_1(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = crctl("plan", empty, state=tmp_path / "state")
    assert result.returncode == 1 and "no *.yaml or *.yml files" in result.stderr


def test_directory_declaring_an_account_twice_exits_1(tmp_path: Path) -> None:
    directory = tmp_path / "twice"
    copy_as(ACME, directory)
    copy_as(ACME, directory, "acme.yml")
    result = crctl("plan", directory, state=tmp_path / "state")
    assert result.returncode == 1
    assert "also declared in" in result.stderr and result.stdout == ""


def test_directory_plan_text_and_markdown_show_each_changed_account(applied: Path,
                                                                   tmp_path: Path) -> None:
    """Accounts with changes in full; unchanged ones counted, not shown (DESIGN §4)."""
    directory = accounts_dir(tmp_path)
    text = crctl("plan", directory, state=applied).stdout
    assert "Account globex (new)" in text
    assert "Account acme" not in text
    assert "Plan: 2 to enable, 0 to change, 0 to remove; 3 users to add, 0 to update, 0 to " \
        "delete.\n" in text
    assert ("\n1 account unchanged.\nPlan: 2 to enable, 0 to change, 0 to remove; 3 users "
            "to add, 0 to update, 0 to delete; in 1 account.\n\n") in text
    assert last_line(text).startswith("Digest of the plan set (1 account): ")
    md = crctl("plan", directory, "--format", "markdown", state=applied).stdout
    assert "### crctl plan: `globex`" in md and "`acme`" not in md
    assert "_1 account unchanged._" in md


def test_directory_with_invalid_files_lists_every_problem(tmp_path: Path) -> None:
    directory = accounts_dir(tmp_path)
    (directory / "broken.yaml").write_text(
        "account: broken\nusers:\n  boss:\n    first_name: B\n    last_name: O\n"
        "    email: not-an-email\n    extension: \"12\"\n    profile: Elite\n"
        "    roles: [decision-maker]\n    call_recoding: {product: always-on}\n")
    (directory / "other.yml").write_text(
        "account: other\nusers:\n  boss:\n    first_name: B\n    last_name: O\n"
        "    email: b@other.example\n    extension: \"1\"\n    profile: Elite\n"
        "    roles: [decision-maker]\n")
    result = crctl("plan", directory, state=tmp_path / "state")
    assert result.returncode == 1
    assert result.stdout == ""
    err = result.stderr
    broken, other = directory / "broken.yaml", directory / "other.yml"
    assert f"{broken}:6:" in err and "email" in err          # bad email
    assert f"{broken}:10:" in err and "call_recording" in err  # typo, with a hint
    assert f"{other}:7:" in err and "extension" in err
    assert len([line for line in err.splitlines() if ": error: " in line]) == 3
    assert not (tmp_path / "state").exists()


# -- plan never writes --------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every file and directory under root: type, mode, mtime, size and content hash."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath, name)
            st = path.lstat()
            digest = (hashlib.sha256(path.read_bytes()).hexdigest()
                      if stat.S_ISREG(st.st_mode) else None)
            out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, st.st_size,
                                                st.st_ino, digest)
    return out


def test_plan_leaves_the_state_directory_untouched(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = copy_as(ACME.read_text().replace("2026-12-01", "2026-11-28"), tmp_path / "v1")
    apply(first, state)
    apply(copy_as(MODIFIED_ACME.replace("2026-12-15", "2026-11-28"), tmp_path / "v2"), state)
    edit_mirror(state, missing="carol")  # drift that plan must report, not repair
    mir = state / "mir" / "acme.json"
    mirror = json.loads(mir.read_text())
    mirror["recordings"] = [{"id": "r1", "user_id": "u3", "started": "2026-11-20T10:00:00Z"}]
    mir.write_text(json.dumps(mirror))
    assert (state / "portal" / "acme.json.backup").exists()
    before = snapshot(state)
    assert len(before) >= 8

    out = tmp_path / "out"
    out.mkdir()
    refused = copy_as(acme_without_jdoe_cr(), tmp_path / "v3")
    terminate = copy_as("account: acme\nterminate: true\n", tmp_path / "v4")
    directory = accounts_dir(tmp_path)
    runs = [
        (["plan", ACME], 0),
        (["plan", ACME, "--format", "json", "--out", out / "a.json"], 0),
        (["plan", ACME, "--format", "markdown", "--out", out / "b.json",
          "--detailed-exitcode"], 2),
        (["plan", ACME, "--format", "text", "--out", out / "c.json", "--detailed-exitcode"], 2),
        (["plan", refused], 5),
        (["plan", refused, "--format", "json", "--out", out / "x.json"], 5),
        (["plan", refused, "--force", "--detailed-exitcode"], 2),
        (["plan", terminate, "--out", out / "d.json"], 5),  # jdoe's prevent_remove
        (["plan", directory, "--format", "json", "--out", out / "e.json"], 0),
        (["show", out / "a.json", "--format", "markdown"], 0),
    ]
    for today in (TODAY, "2026-11-30"):  # the pending service is due on the 28th
        for args, code in runs:
            result = crctl(*args, state=state, today=today)
            assert result.returncode == code, (args, result.stderr)
            assert snapshot(state) == before, args
    refused_doc = json.loads((out / "x.json").read_text())  # saved for review (DESIGN §5)
    assert refused_doc["violations"] and refused_doc["forced"] is False
    for name in "abcde":
        plan_file = out / f"{name}.json"
        assert plan_file.stat().st_size > 0
        assert stat.S_IMODE(plan_file.stat().st_mode) == 0o600


def test_plan_does_not_create_a_fresh_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "fresh" / "state"
    for fmt in ("text", "json", "markdown"):
        result = crctl("plan", ACME, "--format", fmt, "--out", tmp_path / f"p-{fmt}.json",
                       "--detailed-exitcode", state=state)
        assert result.returncode == 2, result.stderr
    assert not (tmp_path / "fresh").exists()
    # the default state directory (.crctl in the working directory) neither
    work = tmp_path / "work"
    work.mkdir()
    assert crctl("plan", ACME, cwd=work).returncode == 0
    assert crctl("plan", accounts_dir(tmp_path), cwd=work).returncode == 0
    assert list(work.iterdir()) == []


# -- saved plans and crctl show -----------------------------------------------------------------

def test_show_renders_a_saved_plan_in_each_format(applied: Path, tmp_path: Path) -> None:
    path = copy_as(MODIFIED_ACME, tmp_path / "pr")
    outputs = {}
    for fmt in ("text", "json", "markdown"):
        saved = tmp_path / f"acme-{fmt}.plan"  # its own checksum (created_at differs)
        result = crctl("plan", path, "--format", fmt, "--out", saved, state=applied)
        assert result.returncode == 0, result.stderr
        outputs[fmt] = result.stdout
    assert json.loads(saved.read_text())["account"] == "acme"
    for fmt in ("text", "json", "markdown"):
        saved = tmp_path / f"acme-{fmt}.plan"
        shown = crctl("show", saved, "--format", fmt)  # no state directory needed
        assert shown.returncode == 0, shown.stderr
        if fmt == "json":
            assert json.loads(shown.stdout) == json.loads(saved.read_text())
            assert shown.stdout == saved.read_text()
        elif fmt == "text":
            assert shown.stdout == without_state_header(outputs[fmt])
        else:
            assert shown.stdout == outputs[fmt]
    assert crctl("show", tmp_path / "acme-text.plan").stdout == \
        without_state_header(outputs["text"])


def test_show_renders_a_directory_plan(tmp_path: Path) -> None:
    saved = tmp_path / "all.plan"
    plan = crctl("plan", accounts_dir(tmp_path), "--out", saved, state=tmp_path / "state")
    assert plan.returncode == 0
    shown = crctl("show", saved)
    assert shown.returncode == 0 and shown.stdout == without_state_header(plan.stdout)
    docs = json.loads(crctl("show", saved, "--format", "json").stdout)
    assert [d["account"] for d in docs] == ["acme", "globex"]


@pytest.mark.parametrize("edit", ["first_name", "summary", "serial", "created_at"])
def test_show_refuses_an_altered_plan(tmp_path: Path, edit: str) -> None:
    saved = tmp_path / "acme.plan"
    assert crctl("plan", ACME, "--out", saved, state=tmp_path / "state").returncode == 0
    doc = json.loads(saved.read_text())
    if edit == "first_name":
        add = next(a for a in doc["actions"] if a["action"] == "add_user")
        add["after"]["first_name"] = "Mallory"
    elif edit == "summary":
        doc["summary"]["enable"] = 0
    elif edit == "serial":
        doc["prior_state"]["serial"] = 7
    else:
        doc["created_at"] = "2020-01-01T00:00:00Z"
    saved.write_text(json.dumps(doc, indent=2))
    for fmt in ("text", "json", "markdown"):
        result = crctl("show", saved, "--format", fmt)
        assert result.returncode == 3, (result.stdout, result.stderr)
        assert "altered" in result.stderr and "checksum" in result.stderr
        assert result.stdout == ""


def test_show_accepts_a_reformatted_plan(tmp_path: Path) -> None:
    """The checksum is over the canonical JSON, not the file's bytes."""
    saved = tmp_path / "acme.plan"
    crctl("plan", ACME, "--out", saved, state=tmp_path / "state")
    doc = json.loads(saved.read_text())
    saved.write_text(json.dumps(doc, sort_keys=True))
    assert crctl("show", saved).returncode == 0


def test_show_of_a_non_plan_exits_1(tmp_path: Path) -> None:
    junk = tmp_path / "junk.plan"
    junk.write_text("{}")
    assert crctl("show", junk).returncode == 1
    junk.write_text("not json")
    assert crctl("show", junk).returncode == 1
    assert crctl("show", tmp_path / "missing.plan").returncode == 1
