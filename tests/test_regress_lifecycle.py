"""Regressions of the account lifecycle: import --out, account name updates, `crctl schema`,
`users --filter` columns, duplicate accounts in validate, and the terminate actor message.

Black-box: every test runs the real `crctl` command (tests/helpers.run_crctl).
"""

from __future__ import annotations

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
