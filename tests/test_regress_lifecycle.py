"""Regressions of the account lifecycle: import --out, account name updates, `crctl schema`,
`users --filter` columns, duplicate accounts in validate, and the terminate actor message.

Black-box: every test runs the real `crctl` command (tests/helpers.run_crctl).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
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
