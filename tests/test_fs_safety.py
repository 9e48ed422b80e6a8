"""Filesystem safety of the state directory (DESIGN §3, backends/local.py).

State and lock files are never followed through symlinks planted in the state directory:
after any command, a target outside the state directory is byte-identical (and nothing
new appears beside it), and the command fails clearly or refuses. New directories are
0700 and new files 0600 (they hold personal data), whatever the umask.
Everything runs through the real command line in a subprocess.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import support
from support import REPO

ACTOR = "user000000"
crctl = partial(support.crctl, actor=ACTOR, timeout=30)


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("crctl_generate",
                                                  REPO / "benchmarks" / "generate.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


GEN = _generator()


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 / 'dir' / 'link:target' of everything under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                out[rel] = "dir"
            else:
                with open(path, "rb") as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


# -- the workspace --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("fssafety")
    users = GEN.make_users(20, seed=11)
    for name, data in (("d1", users), ("d2", GEN.change(users, 25, seed=3))):
        (work / name).mkdir()
        (work / name / "acme.yaml").write_text(GEN.to_yaml("acme", data))
    r = crctl("apply", "d1/acme.yaml", "--auto-approve", state=work / "state", cwd=work)
    assert r.returncode == 0, r.stderr
    return work


@pytest.fixture
def work(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "w"
    shutil.copytree(pristine, target, symlinks=True)
    (target / "outside").mkdir()
    return target


STATE_FILES = {
    "portal": "portal/acme.json",
    "mir": "mir/acme.json",
    "audit": "audit/acme.jsonl",
    "lock": "locks/acme.lock",
    "backup": "portal/acme.json.backup",
    "terminated": "terminated.jsonl",
}

COMMANDS: dict[str, tuple[str, ...]] = {
    "plan": ("plan", "d2/acme.yaml"),
    "apply": ("apply", "d2/acme.yaml", "--auto-approve", "--lock-timeout", "2s"),
    "sync": ("sync", "acme", "--lock-timeout", "2s"),
    "users": ("users", "acme"),
    "import": ("import", "acme"),
    "terminate": ("terminate", "acme", "--confirm", "acme", "--force",  # prevent_remove
                  "--lock-timeout", "2s"),
    "force-unlock": ("force-unlock", "acme", "00000000-0000-0000-0000-000000000000"),
}


def plant(work: Path, kind: str, *, dangling: bool = False) -> Path:
    """Replace state file `kind` by a symlink to a file outside the state directory."""
    link = work / "state" / STATE_FILES[kind]
    target = work / "outside" / f"{kind}.target"
    if not dangling:
        source = link if link.exists() else None
        if source is not None and source.is_file():
            shutil.copy(source, target)
        else:
            target.write_text(json.dumps({"secret": "outside the state dir"}) + "\n")
    if link.exists() or link.is_symlink():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return target


def check_outside_untouched(work: Path, before: dict[str, str], r: Any) -> None:
    assert tree(work / "outside") == before, (
        "a file outside the state directory was changed or created", r.stdout, r.stderr)


# -- planted symlinks to files ----------------------------------------------------------------

@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", ["portal", "mir", "lock", "audit", "backup", "terminated"])
def test_symlinked_state_file_is_never_followed(work: Path, kind: str, command: str) -> None:
    plant(work, kind)
    before = tree(work / "outside")
    r = crctl(*COMMANDS[command], state=work / "state", cwd=work)
    check_outside_untouched(work, before, r)
    if r.returncode != 0:
        assert r.stderr.startswith("Error: "), r.stderr
    # reading a symlinked account or mirror file must be refused, not followed
    reads = {"portal": {"plan", "apply", "sync", "users", "import", "terminate"},
             "mir": {"plan", "apply", "sync", "terminate"}}.get(kind, set())
    if command in reads:
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "symbolic link" in r.stderr, r.stderr
    if kind == "lock" and command in ("apply", "sync", "terminate"):
        assert r.returncode == 1 and "symbolic link" in r.stderr, r.stderr
    if kind == "terminated" and command in ("plan", "apply"):
        assert r.returncode == 1 and "symbolic link" in r.stderr, r.stderr


@pytest.mark.parametrize("kind", ["portal", "mir", "audit", "lock", "terminated"])
def test_dangling_symlink_is_not_created_through(work: Path, kind: str) -> None:
    """A symlink to a file that does not exist yet: nothing may appear at its target."""
    shutil.rmtree(work / "state")
    (work / "state").mkdir(mode=0o700)
    plant(work, kind, dangling=True)
    before = tree(work / "outside")
    for command in ("plan", "apply", "terminate"):
        r = crctl(*COMMANDS[command], state=work / "state", cwd=work)
        check_outside_untouched(work, before, r)
    assert not (work / "outside" / f"{kind}.target").exists()


def test_symlinked_audit_log_fails_clearly_and_the_mirror_is_never_half_written(
        work: Path) -> None:
    """The audit log is appended after the account file is committed: the apply fails
    clearly, and the next plan still works (it shows the MIR drift to repair)."""
    plant(work, "audit")
    before = tree(work / "outside")
    r = crctl(*COMMANDS["apply"], state=work / "state", cwd=work)
    check_outside_untouched(work, before, r)
    assert r.returncode == 1 and "symbolic link" in r.stderr, r.stderr
    r = crctl("plan", "d2/acme.yaml", "--detailed-exitcode", state=work / "state", cwd=work)
    assert r.returncode == 2, r.stdout + r.stderr  # the MIR drift (or the change) remains


def test_plan_out_through_a_symlink_is_refused(work: Path) -> None:
    target = work / "outside" / "plan.target"
    target.write_text("precious\n")
    (work / "plan.json").symlink_to(target)
    before = tree(work / "outside")
    r = crctl("plan", "d2/acme.yaml", "--out", "plan.json", state=work / "state", cwd=work)
    check_outside_untouched(work, before, r)
    assert r.returncode == 1 and "plan.json" in r.stderr, r.stderr


def test_hard_linked_account_file_target_is_not_modified(work: Path) -> None:
    """A hard link planted as the account file: the atomic rename replaces the name, the
    other link (outside) keeps its bytes."""
    portal = work / "state" / "portal" / "acme.json"
    outside = work / "outside" / "hardlink.json"
    shutil.copy(portal, outside)
    portal.unlink()
    os.link(outside, portal)
    before = tree(work / "outside")
    r = crctl(*COMMANDS["apply"], state=work / "state", cwd=work)
    assert r.returncode == 0, r.stderr
    check_outside_untouched(work, before, r)


# -- planted symlinks to directories ----------------------------------------------------------

@pytest.mark.parametrize("command", ["plan", "apply", "sync", "users", "import", "terminate"])
@pytest.mark.parametrize("kind", ["portal", "mir", "audit", "locks"])
def test_symlinked_state_directory_is_refused(work: Path, kind: str, command: str) -> None:
    real = work / "state" / kind
    outside = work / "outside" / kind
    shutil.move(str(real), str(outside))
    real.symlink_to(outside, target_is_directory=True)
    before = tree(work / "outside")
    r = crctl(*COMMANDS[command], state=work / "state", cwd=work)
    check_outside_untouched(work, before, r)
    refusing = {"portal": {"plan", "apply", "sync", "users", "import", "terminate"},
                "mir": {"plan", "apply", "sync", "terminate"},
                "audit": {"apply"},
                "locks": {"apply", "sync", "terminate"}}[kind]
    if command in refusing:
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "symbolic link" in r.stderr, r.stderr


def test_symlinked_directory_when_the_account_is_new(work: Path) -> None:
    """portal/ is a symlink and the account does not exist yet: apply must not create the
    account file through it."""
    shutil.rmtree(work / "state")
    (work / "state").mkdir(mode=0o700)
    (work / "outside" / "portal").mkdir()
    (work / "state" / "portal").symlink_to(work / "outside" / "portal")
    before = tree(work / "outside")
    r = crctl("apply", "d1/acme.yaml", "--auto-approve", state=work / "state", cwd=work)
    check_outside_untouched(work, before, r)
    assert r.returncode == 1 and "symbolic link" in r.stderr, r.stderr


def test_terminate_with_a_symlinked_tombstone_file_deletes_nothing(work: Path) -> None:
    plant(work, "terminated")
    before_outside = tree(work / "outside")
    r = crctl(*COMMANDS["terminate"], state=work / "state", cwd=work)
    check_outside_untouched(work, before_outside, r)
    assert r.returncode == 1, r.stderr
    assert (work / "state" / "portal" / "acme.json").exists(), "account deleted anyway"


def test_fifo_planted_as_the_account_file_does_not_hang(work: Path) -> None:
    portal = work / "state" / "portal" / "acme.json"
    portal.unlink()
    os.mkfifo(portal)
    try:
        r = crctl("plan", "d2/acme.yaml", state=work / "state", cwd=work, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("crctl plan hung on a FIFO planted as the account file")
    assert r.returncode == 1, r.stderr


# -- modes ---------------------------------------------------------------------------------------

def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_new_state_directories_and_files_are_private(tmp_path: Path) -> None:
    """With umask 0, everything crctl creates is still 0700 / 0600."""
    work = tmp_path
    (work / "d").mkdir()
    users = GEN.make_users(12, seed=5)
    (work / "d" / "acme.yaml").write_text(GEN.to_yaml("acme", users))
    (work / "d2").mkdir()
    (work / "d2" / "acme.yaml").write_text(GEN.to_yaml("acme", GEN.change(users, 30)))
    r = crctl("apply", "d/acme.yaml", "--auto-approve", state=work / "state", cwd=work, umask=0)
    assert r.returncode == 0, r.stderr
    # the second apply makes the backup
    r = crctl("apply", "d2/acme.yaml", "--auto-approve", state=work / "state", cwd=work, umask=0)
    assert r.returncode == 0, r.stderr
    state = work / "state"
    for directory in (state, state / "portal", state / "mir", state / "audit",
                      state / "locks"):
        assert mode(directory) == 0o700, (directory, oct(mode(directory)))
    for name in ("portal/acme.json", "portal/acme.json.backup", "mir/acme.json",
                 "audit/acme.jsonl"):
        assert mode(state / name) == 0o600, (name, oct(mode(state / name)))
    r = crctl("plan", "d/acme.yaml", "--out", "acme.plan", state=work / "state", cwd=work, umask=0)
    assert r.returncode == 0, r.stderr
    assert mode(work / "acme.plan") == 0o600
    r = crctl("terminate", "acme", "--confirm", "acme", "--force", state=work / "state",
              cwd=work, umask=0)
    assert r.returncode == 0, r.stderr
    assert mode(state / "terminated.jsonl") == 0o600


def test_lock_file_is_private_while_held(tmp_path: Path) -> None:
    """The lock exists only during apply: hold it at the confirmation prompt and look."""
    work = tmp_path
    (work / "d").mkdir()
    (work / "d" / "acme.yaml").write_text(GEN.to_yaml("acme", GEN.make_users(12, seed=5)))
    proc = support.popen("apply", "d/acme.yaml", state=work / "state", cwd=work, actor=ACTOR,
                         stdin=subprocess.PIPE, umask=0)
    lock = work / "state" / "locks" / "acme.lock"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (lock.exists() and lock.stat().st_size):
            time.sleep(0.02)
        assert lock.exists(), "the lock file never appeared"
        assert mode(lock) == 0o600, oct(mode(lock))
        assert mode(lock.parent) == 0o700
        holder = json.loads(lock.read_text())
        assert set(holder) >= {"id", "who", "operation", "created"}
    finally:
        out, err = proc.communicate("no\n", timeout=30)
    assert proc.returncode == 1, (out, err)
    assert not (work / "state" / "portal" / "acme.json").exists()


def test_plan_out_over_an_existing_file_is_private(work: Path) -> None:
    out = work / "old.plan"
    out.write_text("{}")
    os.chmod(out, 0o644)
    r = crctl("plan", "d2/acme.yaml", "--out", "old.plan", state=work / "state", cwd=work)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["account"] == "acme"
    assert mode(out) == 0o600, oct(mode(out))
