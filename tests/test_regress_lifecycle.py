"""Regressions of the account lifecycle: import --out, account name updates, `crctl schema`,
`users --filter` columns, duplicate accounts in validate, and the terminate actor message.

Black-box: every test runs the real `crctl` command (tests/helpers.run_crctl).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import support
from helpers import EXAMPLES, assert_no_traceback, run_crctl

ACTOR = {"CRCTL_ACTOR": "jdoe", "NO_COLOR": "1"}


def crctl(state: Path, *args: str | os.PathLike[str], cwd: Path | None = None,
          env: dict[str, str] | None = None):
    result = run_crctl("--state-dir", state, *args, cwd=cwd or state.parent,
                       env={"NO_COLOR": "1", **(env or {})})
    assert_no_traceback(result)
    return result


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory holding examples/acme.yaml, applied once (copied per test)."""
    state = tmp_path_factory.mktemp("applied") / "state"
    result = crctl(state, "apply", EXAMPLES / "acme.yaml", "--auto-approve", env=ACTOR)
    assert result.returncode == 0, result.stderr
    return state


@pytest.fixture
def state(applied: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(applied, copy, symlinks=True)
    return copy


# -- 12d: terminate without an actor ----------------------------------------------------

def test_terminate_without_actor_names_terminate_and_decision_maker(state: Path) -> None:
    result = crctl(state, "terminate", "acme", "--confirm", "acme")
    assert result.returncode == 6, result.stderr
    assert ("terminate needs an actor: pass --actor USER or set CRCTL_ACTOR to a Decision "
            "Maker of the account") in result.stderr
    assert "apply needs" not in result.stderr
    assert "Phone Manager" not in result.stderr


# -- 12b: users --filter takes the JSON keys --------------------------------------------

@pytest.mark.parametrize(("column", "value"), [
    ("full_name", "jane doe"), ("phone_number", "+16135550101"), ("extension", "2101"),
    ("product", "always-on"), ("username", "jdoe"), ("email", "jane.doe@"),
    ("status", "active"), ("name", "Jane"), ("phone", "5550101"), ("FULL_NAME", "Jane"),
])
def test_users_filter_accepts_every_json_key_and_the_old_aliases(
        applied: Path, column: str, value: str) -> None:
    result = crctl(applied, "users", "acme", "--filter", f"{column}={value}",
                   "--filter", "full_name=Jane", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert [r["username"] for r in json.loads(result.stdout)] == ["jdoe"]


def test_users_filter_unknown_column_lists_the_json_keys(applied: Path) -> None:
    result = crctl(applied, "users", "acme", "--filter", "bogus=1")
    assert result.returncode == 1
    for key in ("full_name", "phone_number", "extension", "product", "username", "email",
                "status"):
        assert key in result.stderr


# -- 12c: validate and plan agree on an account declared twice ---------------------------

def test_validate_refuses_an_account_declared_twice_in_a_directory_like_plan(
        tmp_path: Path) -> None:
    accounts = tmp_path / "accounts"
    accounts.mkdir()
    shutil.copy(EXAMPLES / "acme.yaml", accounts / "acme.yaml")
    shutil.copy(EXAMPLES / "acme.yaml", accounts / "acme.yml")
    expected = ("accounts/acme.yml:5:10: error: account: account acme is also declared "
                "in accounts/acme.yaml")
    validated = crctl(tmp_path / "state", "validate", "accounts", cwd=tmp_path)
    assert validated.returncode == 1, validated.stdout
    assert expected in validated.stderr.splitlines()
    planned = crctl(tmp_path / "state", "plan", "accounts", cwd=tmp_path)
    assert planned.returncode == 1 and planned.stdout == ""
    assert expected in planned.stderr.splitlines()


def test_validate_refuses_an_account_declared_in_two_named_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy(EXAMPLES / "acme.yaml", tmp_path / "acme.yaml")
    shutil.copy(EXAMPLES / "acme.yaml", tmp_path / "sub" / "acme.yaml")
    result = crctl(tmp_path / "state", "validate", "acme.yaml", "sub/acme.yaml",
                   cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert ("sub/acme.yaml:5:10: error: account: account acme is also declared in "
            "acme.yaml") in result.stderr.splitlines()
    # the same file named twice is one file, not a duplicate (sub/ goes: "." is read
    # recursively and would hold the duplicate)
    shutil.rmtree(tmp_path / "sub")
    again = crctl(tmp_path / "state", "validate", ".", "acme.yaml", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


# -- 6: import --out is atomic, private, never through a symlink, no clobber -------------

def run_import(state: Path, out: Path, *extra: str, umask: int | None = None,
               preexec: object = None) -> subprocess.CompletedProcess[str]:
    """`crctl import acme --out OUT`, optionally under a file size limit (preexec)."""
    if preexec is None:
        return support.crctl("import", "acme", "--out", out, *extra, state=state,
                             umask=umask)
    result = subprocess.run(support.argv("import", "acme", "--out", out, *extra, state=state),
                            env=support.crctl_env(), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=preexec)  # type: ignore[arg-type]
    support.assert_clean(result)
    return result


def imported_text(state: Path) -> str:
    result = support.crctl("import", "acme", state=state)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_out_creates_directories_and_a_private_file(state: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "repo" / "accounts" / "acme.yaml"
    result = run_import(state, out, umask=0)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"Wrote {out}.\n"
    assert out.read_text(encoding="utf-8") == imported_text(state)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert os.listdir(out.parent) == ["acme.yaml"]  # no temporary file left


def test_import_out_refuses_an_existing_file_without_force(state: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "acme.yaml"
    out.write_text("# edited by hand\n")
    out.chmod(0o644)
    keep = tmp_path / "hard-link"
    os.link(out, keep)
    refused = run_import(state, out)
    assert refused.returncode == 1
    assert refused.stderr == f"Error: {out}: already exists; pass --force to overwrite it\n"
    assert out.read_text() == "# edited by hand\n"
    forced = run_import(state, out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.read_text(encoding="utf-8") == imported_text(state)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # not the old file's 0644
    assert keep.read_text() == "# edited by hand\n"  # replaced by a rename, not rewritten
    assert sorted(os.listdir(tmp_path)) == ["acme.yaml", "hard-link", "state"]


@pytest.mark.parametrize("force", [False, True])
def test_import_out_never_writes_through_a_symlink(state: Path, tmp_path: Path,
                                                   force: bool) -> None:
    target = tmp_path / "target.txt"
    target.write_text("precious\n")
    link = tmp_path / "acme.yaml"
    link.symlink_to(target)
    dangling = tmp_path / "dangling.yaml"
    dangling.symlink_to(tmp_path / "nowhere.yaml")
    flags = ("--force",) if force else ()
    for out in (link, dangling):
        result = run_import(state, out, *flags)
        assert result.returncode == 1, result.stderr
        assert result.stderr == (f"Error: {out}: is a symbolic link; refusing to write "
                                 "through it (remove it, or choose another file)\n")
        assert out.is_symlink()
    assert target.read_text() == "precious\n"
    assert not (tmp_path / "nowhere.yaml").exists()
    assert sorted(os.listdir(tmp_path)) == ["acme.yaml", "dangling.yaml", "state",
                                            "target.txt"]


def test_import_out_a_failed_write_keeps_the_previous_file(state: Path,
                                                           tmp_path: Path) -> None:
    """A file size limit makes the write fail for real (tests run as root, so a read-only
    directory would not): the previous file stays, no temporary file is left."""
    out = tmp_path / "out" / "acme.yaml"
    out.parent.mkdir()
    out.write_text("# the previous file\n")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))  # Python ignores SIGXFSZ

    result = run_import(state, out, "--force", preexec=small_files)
    assert result.returncode == 1
    assert result.stderr == (f"Error: {out}: cannot write: File too large; the previous "
                             "file is unchanged\n")
    assert out.read_text() == "# the previous file\n"
    assert os.listdir(out.parent) == ["acme.yaml"]


def test_import_out_under_a_file_is_refused_and_writes_nothing(state: Path,
                                                               tmp_path: Path) -> None:
    blocker = tmp_path / "accounts"
    blocker.write_text("not a directory\n")
    out = blocker / "acme.yaml"
    result = run_import(state, out)
    assert result.returncode == 1
    assert result.stderr == (f"Error: {out}: cannot create its directory {blocker}: "
                             "File exists; nothing was written\n")
    assert blocker.read_text() == "not a directory\n"


# -- 7: a changed account name is planned as update_account and applied -------------------

def renamed_acme(where: Path, name_line: str) -> Path:
    text = (EXAMPLES / "acme.yaml").read_text(encoding="utf-8")
    assert "\nname: Acme Corporation\n" in text
    where.mkdir(parents=True, exist_ok=True)
    path = where / "acme.yaml"
    path.write_text(text.replace("\nname: Acme Corporation\n", name_line), encoding="utf-8")
    return path


def test_a_changed_account_name_is_planned_applied_and_audited(state: Path,
                                                               tmp_path: Path) -> None:
    path = renamed_acme(tmp_path, "\nname: Acme Inc.\n")
    planned = support.crctl("plan", path, "--format", "json", state=state)
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(planned.stdout)
    assert doc["actions"] == [{"action": "update_account", "user": None, "user_id": None,
                               "before": {"name": "Acme Corporation",
                                          "time_zone": "America/Toronto"},
                               "after": {"name": "Acme Inc.", "time_zone": "America/Toronto"},
                               "changed": ["name"]}]
    text = support.crctl("plan", path, "--detailed-exitcode", state=state)
    assert text.returncode == 2, text.stderr
    shown = [" ".join(line.split()) for line in text.stdout.splitlines() if "~" in line]
    assert shown == ["~ update account name: Acme Corporation -> Acme Inc."]
    markdown = support.crctl("plan", path, "--format", "markdown", state=state)
    assert "| Account to update | 1 |" in markdown.stdout
    assert "| (the account) | name: Acme Corporation -&gt; Acme Inc. |" in markdown.stdout

    saved = tmp_path / "rename.plan"
    assert support.crctl("plan", path, "--out", saved, state=state).returncode == 0
    applied = support.crctl("apply", saved, state=state, actor="jdoe")
    assert applied.returncode == 0, applied.stderr
    portal = json.loads((state / "portal" / "acme.json").read_text())
    assert (portal["name"], portal["serial"]) == ("Acme Inc.", 2)
    accounts = support.crctl("accounts", "--format", "json", state=state)
    assert [(a["account"], a["name"]) for a in json.loads(accounts.stdout)] == \
        [("acme", "Acme Inc.")]
    table = support.crctl("accounts", state=state).stdout.splitlines()
    assert table[-2].split()[:2] == ["ACCOUNT", "NAME"]
    assert table[-1].startswith("acme     Acme Inc.")
    audit = support.crctl("audit", "acme", "--action", "update_account", "--format", "json",
                          state=state)
    [entry] = json.loads(audit.stdout)
    assert (entry["before"], entry["after"], entry["serial"]) == \
        ({"name": "Acme Corporation", "time_zone": "America/Toronto"},
         {"name": "Acme Inc.", "time_zone": "America/Toronto"}, 2)
    again = support.crctl("plan", path, "--detailed-exitcode", state=state)
    assert again.returncode == 0, again.stdout
    assert "No changes." in again.stdout


def test_a_file_without_a_name_keeps_the_name_and_the_import_round_trips(
        state: Path, tmp_path: Path) -> None:
    path = renamed_acme(tmp_path, "\n")
    planned = support.crctl("plan", path, "--detailed-exitcode", state=state)
    assert planned.returncode == 0, planned.stdout
    assert "No changes." in planned.stdout
    renamed = renamed_acme(tmp_path / "renamed", "\nname: \"Acme: the #1 'yes' Co\"\n")
    applied = support.crctl("apply", renamed, "--auto-approve", state=state, actor="jdoe")
    assert applied.returncode == 0, applied.stderr
    assert "Acme Corporation -> Acme: the #1 'yes' Co" in applied.stdout
    imported = tmp_path / "imported" / "acme.yaml"
    assert support.crctl("import", "acme", "--out", imported, state=state).returncode == 0
    assert "\nname: \"Acme: the #1 'yes' Co\"\n" in imported.read_text()
    again = support.crctl("plan", imported, "--detailed-exitcode", state=state)
    assert again.returncode == 0, again.stdout


@pytest.mark.parametrize(("side", "value", "why"), [
    ("before", {"name": "Someone Else"}, "the account's name or time zone differs from the plan's "
                                         "'before'"),
    ("after", {"name": "Evil\u001b[2J"}, "its 'after' name must be 1-200 characters without "
                                         "control characters (as in a desired file)"),
    ("after", {"name": None}, "its 'after' name must be 1-200 characters"),
    ("after", {"name": "Acme Inc.", "safety": 0}, "its 'after' must have exactly name, "
                                                  "time_zone"),
    ("changed", [], "its 'changed' must list name"),
])
def test_a_forged_update_account_plan_is_refused(state: Path, tmp_path: Path, side: str,
                                                 value: object, why: str) -> None:
    first = renamed_acme(tmp_path, "\nname: Acme Inc.\n")
    saved = tmp_path / "rename.plan"
    assert support.crctl("plan", first, "--out", saved, state=state).returncode == 0
    edited = json.loads(saved.read_text())
    first.unlink()  # no desired file to re-plan from: the applier's own check refuses it
    action = edited["actions"][0]
    # a forger keeps the time zone (unchanged) and edits the name
    action[side] = {**action[side], **value} if isinstance(value, dict) else value
    # re-signed, as a forger would: the digest (DESIGN §5), then the checksum
    part = {k: edited[k] for k in ("account", "prior_state", "actions", "mir")}
    edited["digest"] = hashlib.sha256(json.dumps(
        part, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    body = {k: v for k, v in edited.items() if k != "checksum"}
    edited["checksum"] = hashlib.sha256(json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    saved.write_text(json.dumps(edited))
    refused = support.crctl("apply", saved, state=state, actor="jdoe")
    assert refused.returncode == 3, refused.stderr
    assert f"plan action update_account does not fit the current state: {why}" in \
        refused.stderr
    assert json.loads((state / "portal" / "acme.json").read_text())["serial"] == 1


# -- 12a: `crctl schema account|plan`, and the schema hint import writes -------------------

@pytest.mark.parametrize("which", ["account", "plan"])
def test_schema_prints_the_json_schema_crctl_validates_with(which: str,
                                                             tmp_path: Path) -> None:
    result = support.crctl("schema", which, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shipped = support.REPO / "reconciler" / "schemas" / f"{which}.schema.json"
    assert result.stdout == shipped.read_text(encoding="utf-8")
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert not list(tmp_path.iterdir())  # no state, nothing written


def test_schema_help_says_how_to_keep_a_copy_and_a_wrong_name_is_refused() -> None:
    helped = support.crctl("schema", "--help")
    assert helped.returncode == 0
    assert "crctl schema account > account.schema.json" in helped.stdout
    assert "# yaml-language-server: $schema=" in helped.stdout
    refused = support.crctl("schema", "accounts")
    assert refused.returncode == 1
    assert "'accounts' is not one of 'account', 'plan'" in refused.stderr


def test_the_schema_copy_import_points_to_validates_the_imported_file(
        state: Path, tmp_path: Path) -> None:
    """Following the imported file's header: the schema saved with `crctl schema account`
    accepts the imported file, read as an editor reads it (YAML 1.2 core schema: true
    and false are booleans, dates and quoted digits are strings)."""
    import jsonschema
    import yaml

    def core(node: object) -> object:
        if isinstance(node, dict):
            return {k: core(v) for k, v in node.items()}
        if isinstance(node, list):
            return [core(v) for v in node]
        return {"true": True, "false": False}.get(node, node)  # type: ignore[call-overload]

    text = imported_text(state)
    assert ("# Editor validation: save the schema once with `crctl schema account > "
            "account.schema.json`,") in text.splitlines()
    assert "$schema=../" not in text
    schema = json.loads(support.crctl("schema", "account").stdout)
    data = core(yaml.load(text, Loader=yaml.BaseLoader))  # noqa: S506 - strings only
    jsonschema.Draft202012Validator(schema).validate(data)


def test_plan_out_refuses_what_is_not_a_regular_file_and_its_own_input(tmp_path: Path) -> None:
    """`plan --out` replaced whatever was at the path: a device or FIFO (as root,
    `--out /dev/null` turned the device into a file of personal data), or the desired
    file being planned. Each is refused (exit 1) and left as it was; `--out ''` too."""
    desired = tmp_path / "acme.yaml"
    shutil.copy(EXAMPLES / "acme.yaml", desired)
    before = desired.read_bytes()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    state = tmp_path / "state"
    for target, says in ((fifo, "not a regular file"),
                         (desired, "one of the desired files being planned"),
                         ("", "an empty path names no file")):
        result = crctl(state, "plan", desired, "--out", target)
        assert result.returncode == 1, (target, result.stdout, result.stderr)
        assert says in result.stderr, result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert desired.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acme.yaml", "pipe"]


def test_a_closed_stdout_is_no_internal_error(tmp_path: Path) -> None:
    """`crctl plan … >&-`: no stdout at all (sys.stdout is None) is no internal error."""
    result = subprocess.run(
        ["sh", "-c", '"$0" -m reconciler --state-dir "$1" plan "$2" >&-', sys.executable,
         str(tmp_path / "state"), str(EXAMPLES / "acme.yaml")],
        env=support.crctl_env(), capture_output=True, text=True, timeout=60)
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
