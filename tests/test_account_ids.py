"""Account ids are checked against ^[a-z0-9][a-z0-9-]{0,62}$ before any path is built from
them: on the command line (users, import, sync, terminate, force-unlock) and in saved plan
files (apply PLANFILE, show PLANFILE). A bad id is exit 1, and nothing is created or
changed anywhere: not in the state directory, not beside it, not at an absolute path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import EXAMPLES, crctl

# The ids of the issue, then more of the same kind (checked with fewer commands).
BAD_IDS = ["../x", "/etc/passwd", "ACME", "a/b", "a" * 200, ""]
MORE_BAD_IDS = ["../../escape", "-acme", "a" * 64, "acme.json", "..", "acme x", "acmé",
                "acme/../globex"]
LOCK_ID = "6f1c2a4e-0000-4000-8000-000000000000"


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (directories as None) with its content."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = None if path.is_dir() and not path.is_symlink() else (
            path.read_bytes() if path.is_file() else b"<special>")
    return out


def plan_checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def with_account(doc: dict[str, Any], account: str) -> dict[str, Any]:
    """A saved plan whose account was edited, with its digest and checksum redone to
    match."""
    edited = {**doc, "account": account}
    edited.pop("checksum", None)
    part = {k: edited[k] for k in ("account", "prior_state", "actions", "mir")}
    edited["digest"] = hashlib.sha256(json.dumps(
        part, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    edited["checksum"] = plan_checksum(edited)
    return edited


def outside_paths(account: str, world: Path) -> list[Path]:
    """Where a careless implementation would write for `account`, outside `world` (what is
    inside it is compared file by file)."""
    paths = []
    for suffix in (".json", ".json.backup", ".jsonl", ".lock"):
        for kind in ("portal", "mir", "audit", "locks"):
            candidate = Path(os.path.normpath(
                os.path.join(world, "work", "state", kind, account + suffix)))
            if not candidate.is_relative_to(world):
                paths.append(candidate)
    return paths


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tmp/work/{accounts,state} with acme and globex applied; tests run in tmp/work."""
    root = tmp_path_factory.mktemp("ids")
    work = root / "work"
    accounts = work / "accounts"
    accounts.mkdir(parents=True)
    for name, actor in (("acme", "jdoe"), ("globex", "hank")):
        shutil.copy(EXAMPLES / f"{name}.yaml", accounts / f"{name}.yaml")
        result = crctl("apply", accounts / f"{name}.yaml", "--auto-approve",
                       state=work / "state", actor=actor)
        assert result.returncode == 0, result.stderr
    return root


def command_lines(account: str, out: Path, *, full: bool = True) -> list[list[str]]:
    """Each command with `account`; options first and `--` before an id that starts with
    '-' (as a careful script would write it), so that the id itself reaches crctl."""
    sep = ["--"] if account.startswith("-") else []
    commands = [
        ["users", *sep, account],
        ["import", "--out", str(out), *sep, account],
        ["sync", *sep, account],
        ["terminate", "--confirm", account, *sep, account],
        ["force-unlock", *sep, account, LOCK_ID],
    ]
    if full:
        commands += [["users", "--format", "json", *sep, account], ["import", *sep, account]]
    return commands


def run_all(state: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Each command in the state's parent folder: what it writes beside the state shows."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: crctl(*args, state=state, actor="jdoe",
                                                cwd=state.parent), commands))


@pytest.mark.parametrize("account", BAD_IDS + MORE_BAD_IDS, ids=lambda a: repr(a)[:24])
def test_bad_account_id_on_the_command_line(world: Path, account: str) -> None:
    state = world / "work" / "state"
    out = world / "work" / "imported.yaml"
    before = tree(world)
    commands = command_lines(account, out, full=account in BAD_IDS)
    for args, result in zip(commands, run_all(state, commands), strict=True):
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "invalid account id" in result.stderr, (args, result.stderr)
        assert result.stdout == "", (args, result.stdout)
    assert tree(world) == before, "something was created or changed"
    for path in outside_paths(account, world):
        assert not path.exists(), path


def test_absolute_account_id_outside_the_state_dir(world: Path) -> None:
    """An absolute path as account id: nothing is written there."""
    target = world / "elsewhere" / "victim"
    state = world / "work" / "state"
    before = tree(world)
    commands = command_lines(str(target), world / "work" / "imported.yaml", full=False)
    for args, result in zip(commands, run_all(state, commands), strict=True):
        assert result.returncode == 1, (args, result.stderr)
        assert "invalid account id" in result.stderr
    assert not (world / "elsewhere").exists()
    assert tree(world) == before
    for suffix in (".json", ".lock", ".jsonl"):
        assert not Path("/etc/passwd" + suffix).exists()


def test_bad_account_id_does_not_create_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    commands = command_lines("../x", tmp_path / "out.yaml", full=False)
    for result in run_all(state, commands):
        assert result.returncode == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("account", ["a", "0", "a-", "a" * 63, "acme-2", "9lives"])
def test_good_account_ids_are_accepted(world: Path, account: str) -> None:
    """Valid ids that do not exist: an ordinary 'does not exist', not 'invalid'."""
    state = world / "work" / "state"
    before = tree(world)
    for cmd in (["users", account], ["import", account]):
        result = crctl(*cmd, state=state)
        assert result.returncode == 1
        assert "invalid account id" not in result.stderr, result.stderr
        assert "does not exist" in result.stderr, result.stderr
    assert tree(world) == before


def test_existing_accounts_still_work(world: Path) -> None:
    state = world / "work" / "state"
    assert crctl("users", "acme", state=state).returncode == 0
    assert crctl("import", "globex", state=state).returncode == 0


# -- account ids in saved plan files -----------------------------------------------------------

@pytest.fixture(scope="module")
def new_account_plan(world: Path) -> dict[str, Any]:
    """A saved plan that would create account zeta (not applied)."""
    work = world / "work"
    desired = work / "new" / "zeta.yaml"
    desired.parent.mkdir()
    desired.write_text((EXAMPLES / "globex.yaml").read_text().replace(
        "account: globex", "account: zeta"))
    planfile = work / "zeta.plan"
    result = crctl("plan", desired, "--out", planfile, state=work / "state")
    assert result.returncode == 0, result.stderr
    doc = json.loads(planfile.read_text())
    assert doc["checksum"] == plan_checksum(doc)  # the recipe used below is the real one
    planfile.unlink()
    return doc


@pytest.fixture(scope="module")
def existing_account_plan(world: Path) -> dict[str, Any]:
    """A saved plan that would change the existing account acme (not applied)."""
    work = world / "work"
    desired = work / "changed" / "acme.yaml"
    desired.parent.mkdir()
    desired.write_text((EXAMPLES / "acme.yaml").read_text().replace(
        "location: Toronto", "location: Kanata"))
    planfile = work / "acme-change.plan"
    result = crctl("plan", desired, "--out", planfile, state=work / "state")
    assert result.returncode == 0, result.stderr
    doc = json.loads(planfile.read_text())
    planfile.unlink()
    return doc


PLAN_CASES = [(account, which) for account in BAD_IDS
              for which in ("new_account_plan", "existing_account_plan")] + \
    [(account, "new_account_plan") for account in ("../../escape", "a" * 64, "-acme")]


@pytest.mark.parametrize(("account", "which"), PLAN_CASES,
                         ids=lambda a: repr(a)[:24] if "_plan" not in a else a[:3])
def test_bad_account_id_in_a_saved_plan(world: Path, request: pytest.FixtureRequest,
                                        which: str, account: str) -> None:
    doc = request.getfixturevalue(which)
    work = world / "work"
    planfile = work / "edited.plan"
    planfile.write_text(json.dumps(with_account(doc, account), indent=2))
    try:
        before = tree(world)
        commands = [["show", str(planfile)], ["apply", str(planfile)]]
        for args, result in zip(commands, run_all(work / "state", commands), strict=True):
            assert result.returncode == 1, (args, result.stdout, result.stderr)
            assert "account" in result.stderr, result.stderr
            assert "Apply complete" not in result.stdout
        assert tree(world) == before
        for path in outside_paths(account, world):
            assert not path.exists(), path
    finally:
        planfile.unlink()


def test_bad_account_id_in_a_directory_plan_stops_every_account(
        world: Path, new_account_plan: dict[str, Any]) -> None:
    """A list plan with one bad account: nothing is applied, not even the good one."""
    work = world / "work"
    planfile = work / "list.plan"
    planfile.write_text(json.dumps([new_account_plan, with_account(new_account_plan, "../x")]))
    try:
        before = tree(world)
        for args in (["show", str(planfile)], ["apply", str(planfile)]):
            result = crctl(*args, state=work / "state", actor="hank", cwd=work)
            assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert tree(world) == before
        assert not (work / "state" / "portal" / "zeta.json").exists()
    finally:
        planfile.unlink()


def test_the_unedited_plan_is_valid(world: Path, new_account_plan: dict[str, Any]) -> None:
    """Control: the same plan with its own account shows fine (so the refusals above are
    about the account id, not about the recomputed checksum)."""
    work = world / "work"
    planfile = work / "control.plan"
    planfile.write_text(json.dumps(with_account(new_account_plan, "zeta")))
    try:
        result = crctl("show", planfile, state=work / "state")
        assert result.returncode == 0, result.stderr
        assert "zeta" in result.stdout
    finally:
        planfile.unlink()


def test_bad_account_id_in_a_desired_file(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts"
    accounts.mkdir()
    path = accounts / "ACME.yaml"
    path.write_text((EXAMPLES / "acme.yaml").read_text().replace("account: acme",
                                                                   "account: ACME"))
    state = tmp_path / "state"
    for args in (["validate", path], ["plan", path], ["apply", path, "--auto-approve"]):
        result = crctl(*args, state=state, actor="jdoe", cwd=tmp_path)
        assert result.returncode == 1, (args, result.stderr)
    assert not state.exists()
    assert list(tmp_path.iterdir()) == [accounts]


# -- a trailing newline --------------------------------------------------------------------------

def test_account_id_with_a_trailing_newline_on_the_command_line(world: Path) -> None:
    state = world / "work" / "state"
    commands = command_lines("acme\n", world / "work" / "imported.yaml")
    for args, result in zip(commands, run_all(state, commands), strict=True):
        assert result.returncode == 1, (args, result.stderr)
        assert "invalid account id" in result.stderr, (args, result.stderr)


def test_account_id_with_a_trailing_newline_in_a_saved_plan(
        tmp_path: Path, new_account_plan: dict[str, Any]) -> None:
    state = tmp_path / "state"
    planfile = tmp_path / "nl.plan"
    planfile.write_text(json.dumps(with_account(new_account_plan, "zeta\n")))
    result = crctl("apply", planfile, state=state, actor="hank", cwd=tmp_path)
    created = sorted(p.name for p in state.rglob("*") if p.is_file()) if state.exists() else []
    assert created == [], created
    assert result.returncode == 1, (result.stdout, result.stderr)
    result = crctl("show", planfile, state=state, cwd=tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
