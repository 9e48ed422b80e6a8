"""Disk faults: corrupt or unreadable state files, a full disk, a read-only file system
(DESIGN §3, §6).

A damaged state file is an error naming the file (exit 1), never an empty account. A
write that fails (ENOSPC, EROFS, EIO) is a clear error with exit 1, the files it was
replacing are byte-identical, and no temporary file is left behind. Tests run as root, so
faults are injected in-process (os.write / os.replace / os.fsync / os.open patched for
paths inside the state directory only) and the command runs through reconciler.cli.main
with sys.argv patched.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.backends import local

REPO = Path(__file__).resolve().parent.parent
TODAY = "2026-11-25"
ACTOR = "user000000"
ACCOUNT = "acme"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("crctl_generate",
                                                  REPO / "benchmarks" / "generate.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


GEN = _generator()


# -- running crctl in this process --------------------------------------------------------------

def run_cli(cwd: Path, *args: str, actor: str | None = ACTOR) -> tuple[int, str, str]:
    """`crctl --state-dir CWD/state ARGS` through reconciler.cli.main (sys.argv patched)."""
    from reconciler import cli

    out, err = io.StringIO(), io.StringIO()
    keys = ("CRCTL_TODAY", "CRCTL_ACTOR", "NO_COLOR", "CRCTL_DEBUG", "CRCTL_STATE_DIR")
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    os.environ.update(CRCTL_TODAY=TODAY, NO_COLOR="1")
    for key in ("CRCTL_ACTOR", "CRCTL_DEBUG", "CRCTL_STATE_DIR"):
        os.environ.pop(key, None)
    if actor:
        os.environ["CRCTL_ACTOR"] = actor
    sys.argv = ["crctl", "--state-dir", str(cwd / "state"), *args]
    code: Any = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code
    finally:
        gc.enable()  # cli.main() turns the collector off for its short-lived process
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return (0 if code is None else code), out.getvalue(), err.getvalue()


def no_crash(code: int, out: str, err: str) -> None:
    for stream in (out, err):
        assert "Traceback" not in stream, stream
        assert "internal error" not in stream, stream


def snapshot(root: Path, *, backups: bool = False) -> dict[str, str]:
    """Every file under root -> sha256. Without `backups`, portal/*.backup is left out: a
    failed write may refresh it (a hard link to the unchanged account file)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            if name.endswith(".backup") and not backups:
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return found


def leftovers(state: Path, *, backups: bool = True) -> list[str]:
    """Temporary files left behind (`backups=False`: not counting .backup.tmp-*, a known
    bug pinned by its own test)."""
    return sorted(str(p.relative_to(state)) for p in state.rglob("*") if ".tmp-" in p.name
                  and (backups or ".backup.tmp-" not in p.name))


def fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


# -- the workspace ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """acme (40 users) applied; d2/acme.yaml changes 20% of them."""
    work = tmp_path_factory.mktemp("faults")
    users = GEN.make_users(40, seed=7)
    (work / "d1").mkdir()
    (work / "d2").mkdir()
    (work / "d1" / "acme.yaml").write_text(GEN.to_yaml(ACCOUNT, users))
    (work / "d2" / "acme.yaml").write_text(GEN.to_yaml(ACCOUNT, GEN.change(users, 20)))
    code, out, err = run_cli(work, "apply", "d1/acme.yaml", "--auto-approve")
    assert code == 0, err
    code, out, err = run_cli(work, "plan", "d2/acme.yaml", "--detailed-exitcode")
    assert code == 2, err
    (work / "state" / "terminated.jsonl").write_text(
        json.dumps({"account": "gone", "terminated_at": "2026-01-01T00:00:00Z"}) + "\n")
    return work


@pytest.fixture
def work(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "w"
    shutil.copytree(pristine, target)
    return target


def state_file(work: Path, kind: str) -> Path:
    return work / "state" / {"portal": f"portal/{ACCOUNT}.json", "mir": f"mir/{ACCOUNT}.json",
                             "audit": f"audit/{ACCOUNT}.jsonl",
                             "lock": f"locks/{ACCOUNT}.lock",
                             "terminated": "terminated.jsonl"}[kind]


def plan_fails_naming(work: Path, path: Path, *args: str) -> str:
    before = snapshot(work / "state")
    code, out, err = run_cli(work, *(args or ("plan", "d2/acme.yaml")))
    no_crash(code, out, err)
    assert code == 1, (code, out, err)
    assert str(path) in err or os.path.relpath(path, work) in err, err
    assert "No changes" not in out and "create account" not in out, out
    assert snapshot(work / "state") == before
    return err


# -- corrupt and unreadable state files -----------------------------------------------------

def _portal(work: Path) -> dict[str, Any]:
    return json.loads(state_file(work, "portal").read_text())


def _first_uid(doc: dict[str, Any], with_cr: bool = False) -> str:
    return next(uid for uid, u in doc["users"].items()
                if not with_cr or u["call_recording"] is not None)


GARBAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda raw: b"",
    "garbage-bytes": lambda raw: bytes(range(256)) * 4,
    "nul-bytes": lambda raw: b"\x00" * len(raw),
    "truncated-half": lambda raw: raw[: len(raw) // 2],
    "truncated-one-byte": lambda raw: raw[:-1],
    "trailing-garbage": lambda raw: raw + b"}",
    "json-null": lambda raw: b"null",
    "json-list": lambda raw: b"[]",
    "json-object-empty": lambda raw: b"{}",
    "json-string": lambda raw: b'"acme"',
    "deeply-nested": lambda raw: b"[" * 100_000 + b"]" * 100_000,
    "not-utf8": lambda raw: raw.replace(b'"', b"\xff", 1),
}


@pytest.mark.parametrize("kind", ["portal", "mir"])
@pytest.mark.parametrize("damage", sorted(GARBAGE))
def test_corrupt_state_file_is_an_error_naming_it(work: Path, kind: str, damage: str) -> None:
    path = state_file(work, kind)
    path.write_bytes(GARBAGE[damage](path.read_bytes()))
    plan_fails_naming(work, path)
    # apply refuses too, and leaves everything as it was
    plan_fails_naming(work, path, "apply", "d2/acme.yaml", "--auto-approve")


PORTAL_SHAPES: dict[str, Callable[[dict[str, Any]], None]] = {
    "other-account": lambda d: d.update(account="other"),
    "no-lineage": lambda d: d.pop("lineage"),
    "lineage-null": lambda d: d.update(lineage=None),
    "serial-string": lambda d: d.update(serial="3"),
    "serial-float": lambda d: d.update(serial=1.0),
    "serial-bool": lambda d: d.update(serial=True),
    "no-users": lambda d: d.pop("users"),
    "users-list": lambda d: d.update(users=list(d["users"].values())),
    "users-null": lambda d: d.update(users=None),
    "next-user-id-missing": lambda d: d.pop("next_user_id"),
    "user-not-object": lambda d: d["users"].update({_first_uid(d): "jdoe"}),
    "user-missing-email": lambda d: d["users"][_first_uid(d)].pop("email"),
    "user-missing-cr": lambda d: d["users"][_first_uid(d)].pop("call_recording"),
    "cr-not-object": lambda d: d["users"][_first_uid(d, True)].update(call_recording="x"),
    "cr-missing-status": lambda d: d["users"][_first_uid(d, True)]["call_recording"]
    .pop("status"),
}


@pytest.mark.parametrize("name", sorted(PORTAL_SHAPES))
def test_portal_file_of_the_wrong_shape(work: Path, name: str) -> None:
    doc = _portal(work)
    PORTAL_SHAPES[name](doc)
    state_file(work, "portal").write_text(json.dumps(doc))
    plan_fails_naming(work, state_file(work, "portal"))


PORTAL_BAD_VALUES: dict[str, Callable[[dict[str, Any]], None]] = {
    "username-int": lambda d: d["users"][_first_uid(d)].update(username=5),
    "username-list": lambda d: d["users"][_first_uid(d)].update(username=["a"]),
    "cr-product-bogus": lambda d: d["users"][_first_uid(d, True)]["call_recording"]
    .update(product="bogus"),
    "cr-product-int": lambda d: d["users"][_first_uid(d, True)]["call_recording"]
    .update(product=1),
}


@pytest.mark.parametrize("name", sorted(PORTAL_BAD_VALUES))
def test_portal_user_values_of_the_wrong_type(work: Path, name: str) -> None:
    doc = _portal(work)
    PORTAL_BAD_VALUES[name](doc)
    state_file(work, "portal").write_text(json.dumps(doc))
    plan_fails_naming(work, state_file(work, "portal"))


def test_next_user_id_that_would_reuse_ids_is_refused(work: Path) -> None:
    doc = _portal(work)
    doc["next_user_id"] = 2
    state_file(work, "portal").write_text(json.dumps(doc))
    names_before = {u["username"] for u in doc["users"].values()}
    code, out, err = run_cli(work, "apply", "d2/acme.yaml", "--auto-approve")
    no_crash(code, out, err)
    after = _portal(work)
    kept = names_before & {u["username"] for u in after["users"].values()}
    wanted = {line.strip()[:-1] for line in
              (work / "d2" / "acme.yaml").read_text().splitlines()
              if line.startswith("  user") and line.endswith(":")}
    lost = (names_before & wanted) - kept
    assert not lost, f"users overwritten by reused ids: {sorted(lost)[:5]}"
    assert code == 1, (code, out, err)


MIRROR_SHAPES: dict[str, Callable[[dict[str, Any]], None]] = {
    "other-account": lambda d: d.update(account="other"),
    "users-list": lambda d: d.update(users=[]),
    "users-missing": lambda d: d.pop("users"),
    "user-not-object": lambda d: d["users"].update(u1=5),
    "recordings-object": lambda d: d.update(recordings={}),
    "recordings-missing": lambda d: d.pop("recordings"),
}


@pytest.mark.parametrize("name", sorted(MIRROR_SHAPES))
def test_mirror_file_of_the_wrong_shape(work: Path, name: str) -> None:
    path = state_file(work, "mir")
    doc = json.loads(path.read_text())
    MIRROR_SHAPES[name](doc)
    path.write_text(json.dumps(doc))
    plan_fails_naming(work, path)


@pytest.mark.parametrize("kind", ["portal", "mir"])
def test_state_file_replaced_by_a_directory(work: Path, kind: str) -> None:
    path = state_file(work, kind)
    path.unlink()
    path.mkdir()
    (path / "x").write_text("not a state file")
    plan_fails_naming(work, path)
    plan_fails_naming(work, path, "apply", "d2/acme.yaml", "--auto-approve")


def test_lock_file_replaced_by_a_directory(work: Path) -> None:
    path = state_file(work, "lock")
    path.mkdir()
    before = snapshot(work / "state")
    code, out, err = run_cli(work, "apply", "d2/acme.yaml", "--auto-approve",
                             "--lock-timeout", "1s")
    no_crash(code, out, err)
    assert code == 1 and str(path) in err, (code, err)
    assert snapshot(work / "state") == before
    # plan takes no lock: it still works
    code, out, err = run_cli(work, "plan", "d2/acme.yaml")
    assert code == 0, err


def test_garbage_lock_file_does_not_block(work: Path) -> None:
    state_file(work, "lock").write_bytes(b"\x00garbage{")
    code, out, err = run_cli(work, "apply", "d2/acme.yaml", "--auto-approve",
                             "--lock-timeout", "1s")
    no_crash(code, out, err)
    assert code == 0, err


def test_terminated_jsonl_replaced_by_a_directory(work: Path) -> None:
    path = state_file(work, "terminated")
    path.unlink()
    path.mkdir()
    plan_fails_naming(work, path)


@pytest.mark.parametrize("content", [
    bytes(range(256)) * 8,
    b'\x00\x00garbage\n{"account": "acme", "terminated_at": "2026-01-01T00:00:00Z"}\n',
], ids=["garbage-bytes", "garbage-line-before-a-tombstone"])
def test_corrupt_terminated_jsonl_is_an_error(work: Path, content: bytes) -> None:
    path = state_file(work, "terminated")
    path.write_bytes(content)
    plan_fails_naming(work, path)


def test_torn_last_tombstone_line_is_tolerated(work: Path) -> None:
    """A crash mid-append may leave a torn last line: ignored, earlier lines still count."""
    path = state_file(work, "terminated")
    path.write_bytes(path.read_bytes() + b'{"account": "ac')
    code, out, err = run_cli(work, "plan", "d2/acme.yaml", "--detailed-exitcode")
    no_crash(code, out, err)
    assert code == 2, err


@pytest.mark.parametrize("error", [errno.EACCES, errno.EIO, errno.EMFILE])
@pytest.mark.parametrize("kind", ["portal", "mir", "terminated"])
def test_unreadable_state_file(work: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
                               error: int) -> None:
    """Root ignores modes, so the refusal is simulated at os.open."""
    target = str(state_file(work, kind))
    real_open = os.open

    def failing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) == target:
            raise OSError(error, os.strerror(error), target)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(local.os, "open", failing_open)
    err = plan_fails_naming(work, Path(target))
    assert os.strerror(error) in err or "cannot read" in err, err


# -- a full disk, a read-only file system, an I/O error while writing ---------------------

@contextlib.contextmanager
def inject(monkeypatch: pytest.MonkeyPatch, name: str, error: int,
           when: Callable[..., bool]) -> Iterator[list[str]]:
    """Make os.<name> raise OSError(error) whenever `when(*args)` is true."""
    real = getattr(os, name)
    hits: list[str] = []

    def faulty(*args: Any, **kwargs: Any) -> Any:
        if when(*args):
            hits.append(repr(args[:2]))
            raise OSError(error, os.strerror(error))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, faulty)
    try:
        yield hits
    finally:
        monkeypatch.setattr(os, name, real)


def _tmp_of(kind: str, state: Path) -> Callable[..., bool]:
    prefix = str(state_file_for(state, kind)) + ".tmp-"

    def when(fd: int, *rest: Any) -> bool:
        return fd_path(fd).startswith(prefix)
    return when


def state_file_for(state: Path, kind: str) -> Path:
    return state / {"portal": f"portal/{ACCOUNT}.json", "mir": f"mir/{ACCOUNT}.json"}[kind]


def apply_with_fault(work: Path, monkeypatch: pytest.MonkeyPatch, name: str, error: int,
                     when: Callable[..., bool]) -> tuple[int, str, str, list[str]]:
    with inject(monkeypatch, name, error, when) as hits:
        code, out, err = run_cli(work, "apply", "d2/acme.yaml", "--auto-approve")
    no_crash(code, out, err)
    assert hits, f"the fault on os.{name} was never triggered"
    return code, out, err, hits


def _converges(work: Path) -> None:
    """After the fault is gone: plan works, apply converges, and the next plan is clean."""
    code, out, err = run_cli(work, "plan", "d2/acme.yaml", "--detailed-exitcode")
    no_crash(code, out, err)
    # 0 or 2: the faults of the callers strike before or after the commit (and the plan
    # shows the change or the MIR drift still to repair); the apply below must converge
    assert code in (0, 2), err
    code, out, err = run_cli(work, "apply", "d2/acme.yaml", "--auto-approve")
    no_crash(code, out, err)
    assert code == 0, err
    code, out, err = run_cli(work, "plan", "d2/acme.yaml", "--detailed-exitcode")
    assert code == 0 and "No changes." in out, (out, err)
    assert not leftovers(work / "state", backups=False)
    for line in state_file(work, "audit").read_text().splitlines():
        json.loads(line)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
def test_disk_full_while_writing_the_account_file(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                  error: int) -> None:
    state = work / "state"
    before = snapshot(state)
    code, out, err, _ = apply_with_fault(work, monkeypatch, "write", error,
                                         _tmp_of("portal", state))
    assert code == 1, (code, out, err)
    assert str(state_file(work, "portal")) in err, err
    if error == errno.ENOSPC:
        assert "no space left" in err.lower() and "intact" in err, err
    assert "Apply complete" not in out
    assert snapshot(state) == before, "the previous state must be intact"
    assert leftovers(state) == []
    _converges(work)


@pytest.mark.parametrize("name,error", [("fsync", errno.EIO), ("fsync", errno.ENOSPC)])
def test_fsync_failure_on_the_account_file(work: Path, monkeypatch: pytest.MonkeyPatch,
                                           name: str, error: int) -> None:
    state = work / "state"
    before = snapshot(state)
    code, out, err, _ = apply_with_fault(work, monkeypatch, name, error,
                                         _tmp_of("portal", state))
    assert code == 1, (code, out, err)
    assert snapshot(state) == before
    assert leftovers(state) == []
    _converges(work)


def test_read_only_file_system_on_the_account_rename(work: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    state = work / "state"
    portal = str(state_file(work, "portal"))
    before = snapshot(state)
    code, out, err, _ = apply_with_fault(
        work, monkeypatch, "replace", errno.EROFS,
        lambda src, dst, *rest: os.fspath(dst) == portal)
    assert code == 1, (code, out, err)
    assert portal in err and "Read-only file system" in err, err
    # the account file and its mirror are untouched (the .backup may be refreshed: it
    # is a hard link to the unchanged account file)
    after = snapshot(state)
    for key in (f"portal/{ACCOUNT}.json", f"mir/{ACCOUNT}.json", f"audit/{ACCOUNT}.jsonl"):
        assert after.get(key) == before.get(key), key
    assert leftovers(state) == []
    _converges(work)


def test_read_only_file_system_leaves_no_temporary_files(work: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    state = work / "state"
    before = snapshot(state)
    code, out, err, _ = apply_with_fault(
        work, monkeypatch, "replace", errno.EROFS,
        lambda src, dst, *rest: os.fspath(dst).startswith(str(state)))
    assert code == 1, (code, out, err)
    assert "Read-only file system" in err, err
    assert leftovers(state) == [], leftovers(state)
    assert snapshot(state) == before


def test_failed_write_then_apply_leaves_no_backup_tmp(work: Path,
                                                      monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    state = work / "state"
    code, out, err, _ = apply_with_fault(work, monkeypatch, "write", errno.ENOSPC,
                                         _tmp_of("portal", state))
    assert code == 1, err
    assert leftovers(state) == []
    code, out, err = run_cli(work, "apply", "d2/acme.yaml", "--auto-approve")
    assert code == 0, err
    assert leftovers(state) == [], leftovers(state)


def test_disk_full_while_writing_the_mirror(work: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    """The new mirror is staged before the account file commits (DESIGN §3.2: one write);
    a full disk while staging it commits nothing and leaves no temporary file."""
    state = work / "state"
    mirror_before = state_file(work, "mir").read_bytes()
    portal_before = state_file(work, "portal").read_bytes()
    staged = str(state_file(work, "mir")) + ".next"
    code, out, err, _ = apply_with_fault(
        work, monkeypatch, "write", errno.ENOSPC,
        lambda fd, *rest: fd_path(fd).startswith(staged + ".tmp-"))
    assert code == 1, (code, out, err)
    assert staged in err and "no space left" in err.lower(), err
    assert state_file(work, "mir").read_bytes() == mirror_before
    assert state_file(work, "portal").read_bytes() == portal_before  # nothing committed
    assert leftovers(state) == []
    assert not os.path.exists(staged)
    _converges(work)


def test_disk_full_while_appending_the_audit_log(work: Path, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    state = work / "state"
    audit = str(state_file(work, "audit"))
    audit_before = state_file(work, "audit").read_bytes()
    code, out, err, _ = apply_with_fault(
        work, monkeypatch, "write", errno.ENOSPC, lambda fd, *rest: fd_path(fd) == audit)
    assert code == 1, (code, out, err)
    assert audit in err and "no space left" in err.lower(), err
    assert state_file(work, "audit").read_bytes() == audit_before
    assert leftovers(state) == []
    _converges(work)


def test_short_write_while_appending_the_audit_log(work: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    audit = str(state_file(work, "audit"))
    lines_before = len(state_file(work, "audit").read_text().splitlines())
    real_write = os.write

    def short_write(fd: int, data: Any) -> int:
        if fd_path(fd) == audit and len(data) > 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short_write)
    code, out, err = run_cli(work, "apply", "d2/acme.yaml", "--auto-approve")
    monkeypatch.setattr(os, "write", real_write)
    no_crash(code, out, err)
    lines = state_file(work, "audit").read_text().splitlines()
    for line in lines:
        json.loads(line)  # no torn line
    if code == 0:
        match = re.search(r"Apply complete: (\d+) enabled, (\d+) changed, (\d+) removed; "
                          r"(\d+) users? added, (\d+) updated, (\d+) deleted\.", out)
        assert match, out
        applied = sum(map(int, match.groups()))
        assert len(lines) - lines_before == applied, (len(lines), lines_before, applied)


def test_disk_full_while_writing_the_lock(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = work / "state"
    # the record is written once, into the holder file that each lock links to
    holders = os.path.join(os.path.dirname(state_file(work, "lock")), ".holder-")
    before = snapshot(state)
    code, out, err, _ = apply_with_fault(work, monkeypatch, "pwrite", errno.ENOSPC,
                                         lambda fd, *rest: fd_path(fd).startswith(holders))
    assert code == 1, (code, out, err)
    assert holders in err, err
    assert snapshot(state) == before


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_cannot_create_the_temporary_file(work: Path, monkeypatch: pytest.MonkeyPatch,
                                          error: int) -> None:
    state = work / "state"
    before = snapshot(state)
    prefix = str(state_file(work, "portal")) + ".tmp-"
    code, out, err, _ = apply_with_fault(
        work, monkeypatch, "open", error,
        lambda path, *rest: os.fspath(path).startswith(prefix))
    assert code == 1, (code, out, err)
    assert str(state_file(work, "portal")) in err, err
    assert snapshot(state) == before
    assert leftovers(state) == []


def test_disk_full_via_the_service_api(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same fault through reconciler.service.ApplyRun directly (no CLI)."""
    from reconciler.backends.local import LocalBackend
    from reconciler.errors import StateError
    from reconciler.service import ApplyRun

    state = work / "state"
    before = snapshot(state)
    run = ApplyRun(LocalBackend(str(state)), TODAY, ACTOR, force=False, lock_timeout=5)
    with inject(monkeypatch, "write", errno.ENOSPC, _tmp_of("portal", state)) as hits, \
            pytest.raises(StateError) as caught:
        run.from_desired([str(work / "d2" / "acme.yaml")], lambda plans: None, lambda: True)
    assert hits
    assert caught.value.exit_code == 1
    assert "no space left on device" in str(caught.value)
    assert snapshot(state) == before
    assert leftovers(state) == []
