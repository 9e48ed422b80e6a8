"""A directory apply writes its accounts in batches (LocalBackend.write_accounts: four
syncs of the file system per batch instead of nine fsyncs per account). Each account must
still be all-or-nothing, in order: a crash or a write error at any step leaves the
accounts before it committed (their audit entries and mirrors finished by the next locked
command) and it and those after it as they were, and nothing is written twice."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import crctl, crctl_env
from test_disk_faults import GEN, fd_path, leftovers, no_crash, run_cli

ACTOR = "user000000"
NAMES = [f"a{i}" for i in range(6)]
USERS = GEN.make_users(12, seed=3)
CHANGED = GEN.change(USERS, 25.0, seed=5)


def _tree(root: Path, users: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (root / f"{name}.yaml").write_text(GEN.to_yaml(name, users))
    return root


def _audit(state: Path, name: str) -> list[dict[str, Any]]:
    path = state / "audit" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() \
        else []


def _serial(state: Path, name: str) -> int:
    path = state / "portal" / f"{name}.json"
    return json.loads(path.read_bytes())["serial"] if path.exists() else 0


def _journals(state: Path) -> list[str]:
    return sorted(p.name for p in state.rglob("*")
                  if p.suffix in (".pending", ".next") or ".tmp-" in p.name)


def _converged(state: Path, desired: Path, serial: int, entries: dict[str, int]) -> None:
    """Every account at `serial` with exactly `entries[name]` audit entries of it (none
    lost, none twice), its mirror in place, nothing left over; plan sees no change."""
    r = crctl("apply", desired, "--auto-approve", state=state, actor=ACTOR)
    assert r.returncode == 0, r.stderr
    r = crctl("plan", desired, "--detailed-exitcode", state=state)
    assert r.returncode == 0, r.stdout[-2000:]
    for name in NAMES:
        assert _serial(state, name) == serial, name
        got = [e for e in _audit(state, name) if e["serial"] == serial]
        assert len(got) == entries[name], (name, len(got), entries[name])
        mirror = json.loads((state / "mir" / f"{name}.json").read_bytes())
        portal = json.loads((state / "portal" / f"{name}.json").read_bytes())
        assert set(mirror["users"]) == {uid for uid, u in portal["users"].items()
                                        if u["call_recording"]}
    assert _journals(state) == []


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Six accounts applied once (state) and changed by 25%; the entries each apply
    writes per account, measured on a clean run."""
    work = tmp_path_factory.mktemp("batch")
    base, changed = _tree(work / "base", USERS), _tree(work / "changed", CHANGED)
    clean = work / "clean"
    assert crctl("apply", base, "--auto-approve", state=clean, actor=ACTOR).returncode == 0
    state = work / "state"
    assert crctl("apply", base, "--auto-approve", state=state, actor=ACTOR).returncode == 0
    created = {n: len(_audit(clean, n)) for n in NAMES}
    assert crctl("apply", changed, "--auto-approve", state=clean, actor=ACTOR).returncode == 0
    updated = {n: len(_audit(clean, n)) - created[n] for n in NAMES}
    assert all(updated.values())
    return {"base": base, "changed": changed, "state": state, "created": created,
            "updated": updated}


# -- crashes at each step of a batch --------------------------------------------------------

CHILD = r"""
import os, sys
from reconciler.backends import files

point = os.environ["CRASH_POINT"]
real_write, real_replace, real_append = os.write, os.replace, files.append
real_sync, real_unlink = files.sync_filesystem, os.unlink
syncs = []

def die():
    os._exit(137)

def where(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""

def write(fd, data):
    if point == "mid-stage" and "/portal/a3.json.tmp-" in where(fd):
        real_write(fd, bytes(data[: len(data) // 2]))
        die()
    return real_write(fd, data)

def replace(src, dst, *args, **kwargs):
    dst = os.fspath(dst)
    if point == "mid-journals" and dst.endswith("/audit/a3.pending"):
        die()
    if point == "mid-commit" and dst.endswith("/portal/a3.json"):
        die()
    if point == "mid-mirrors" and dst.endswith("/mir/a3.json"):
        die()
    return real_replace(src, dst, *args, **kwargs)

def sync_filesystem(directory):
    syncs.append(directory)
    if point == f"sync-{len(syncs)}":
        die()
    real_sync(directory)

def append(path, text, **kwargs):
    if point == "mid-log" and path.endswith("/audit/a3.jsonl"):
        real_append(path, text[: len(text) // 2 + 1], **kwargs)
        die()
    real_append(path, text, **kwargs)

def unlink(path, *args, **kwargs):
    if point == "mid-cleanup" and os.fspath(path).endswith("/audit/a3.pending"):
        die()
    real_unlink(path, *args, **kwargs)

os.write, os.replace, os.unlink = write, replace, unlink
files.append, files.sync_filesystem = append, sync_filesystem
sys.argv = ["crctl", *sys.argv[1:]]
from reconciler.cli import main
main()
"""

# the point: which accounts hold the new version right after the crash (in process: the
# page cache is the file system), before any recovery
POINTS = {
    "mid-stage": [],  # a temporary file of a3 torn: nothing renamed yet
    "sync-1": [],  # every temporary file written, none in place
    "mid-journals": [],  # journals of a0-a2 in place, no account file yet
    "sync-2": [],
    "mid-commit": ["a0", "a1", "a2"],  # a3's commit point never reached
    "sync-3": NAMES,  # all committed, before their logs and mirrors
    "mid-log": NAMES,  # a3's log append torn
    "mid-mirrors": NAMES,
    "sync-4": NAMES,
    "mid-cleanup": NAMES,  # a3's journal still there, finished already
}


@pytest.mark.parametrize("creating", [True, False], ids=["new", "changed"])
@pytest.mark.parametrize("point", list(POINTS))
def test_a_crash_at_any_step_of_a_batch(trees: dict[str, Any], tmp_path: Path,
                                        point: str, creating: bool) -> None:
    state = tmp_path / "state"
    if creating:
        desired, serial, entries = trees["base"], 1, trees["created"]
    else:
        import shutil

        shutil.copytree(trees["state"], state)
        desired, serial, entries = trees["changed"], 2, trees["updated"]
    r = subprocess.run([sys.executable, "-c", CHILD, "--state-dir", str(state), "apply",
                        str(desired), "--auto-approve"],
                       env=crctl_env(ACTOR, extra={"CRASH_POINT": point}),
                       capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 137, (point, r.returncode, r.stdout, r.stderr)
    new = [n for n in NAMES if _serial(state, n) == serial]
    assert new == POINTS[point], (point, new)
    for name in NAMES:  # an account not committed is exactly as it was
        if name not in new:
            assert _serial(state, name) == serial - 1
            assert all(e["serial"] < serial for e in _audit(state, name))
    _converged(state, desired, serial, entries)


# -- a write error in the middle of a batch ---------------------------------------------------

def test_a_full_disk_in_the_middle_of_a_batch(trees: dict[str, Any], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC on a3's account file: a0-a2 are applied whole, a3-a5 not at all, the error
    names the file, no temporary file or journal is left, and the rerun converges."""
    work = tmp_path
    state = work / "state"
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if "/portal/a3.json.tmp-" in fd_path(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    code, out, err = run_cli(work, "apply", str(trees["base"]), "--auto-approve")
    monkeypatch.setattr(os, "write", real_write)
    no_crash(code, out, err)
    assert code == 1, (code, out, err)
    assert str(state / "portal" / "a3.json") in err and "no space left" in err.lower(), err
    assert [n for n in NAMES if _serial(state, n)] == ["a0", "a1", "a2"]
    for name in ("a0", "a1", "a2"):
        assert len(_audit(state, name)) == trees["created"][name]
        assert (state / "mir" / f"{name}.json").exists()
    for name in ("a3", "a4", "a5"):
        assert not (state / "audit" / f"{name}.jsonl").exists()
        assert not (state / "mir" / f"{name}.json").exists()
    assert leftovers(state) == [] and _journals(state) == []
    _converged(state, trees["base"], 1, trees["created"])



def test_a_state_with_another_mount_inside_is_written_with_fsyncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """syncfs of the state's root flushes only its file system: when audit/ or mir/ is
    another mount, the batch is written account by account with fsyncs instead."""
    from backends.test_conformance import _batch

    from reconciler.backends import files
    from reconciler.backends.local import LocalBackend

    state = tmp_path / "state"
    state.mkdir()
    assert files.one_file_system(str(state), [str(state / "audit"), str(state / "x" / "y")])
    assert not files.one_file_system(str(state), ["/proc/self"])
    backend = LocalBackend(str(state))
    flushed: list[str] = []
    monkeypatch.setattr(files, "sync_filesystem", flushed.append)
    backend.write_accounts(_batch(["acme", "beta"]), lambda index: None)
    assert flushed  # one file system: the batch path
    flushed.clear()
    monkeypatch.setattr(files, "one_file_system", lambda root, dirs: False)
    committed: list[int] = []
    backend.write_accounts(_batch(["gamma", "delta"]), committed.append)
    assert flushed == [] and committed == [0, 1]
    assert LocalBackend(str(state)).read_account("delta").serial == 1
    assert _journals(state) == []
