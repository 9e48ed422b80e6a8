"""Regressions of the account lifecycle: import --out, account name updates, `crctl schema`,
`users --filter` columns, duplicate accounts in validate, and the terminate actor message.

Black-box: every test runs the real `crctl` command (tests/helpers.run_crctl).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
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
    # the same file named twice is one file, not a duplicate
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
