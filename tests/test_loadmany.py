"""Loading many files on two cores (reconciler/loadmany.py) gives exactly what loading
them one by one gives: the same accounts and the same diagnostics in file order, and
every error raised by this process when the child cannot answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import crctl
from test_disk_faults import GEN

from reconciler import loadmany
from reconciler.errors import InputError, ValidationFailed
from reconciler.model import DesiredAccount
from reconciler.validate import load_desired

TODAY = "2026-11-25"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """40 accounts of 60 users (over loadmany's thresholds); two of them invalid."""
    root = tmp_path_factory.mktemp("many")
    users = GEN.make_users(60, seed=2)
    paths = []
    for i in range(40):
        text = GEN.to_yaml(f"acct{i:02d}", users)
        if i in (7, 33):  # one in each half
            text = text.replace("profile: Elite", "profile: Platinum", 1)
        path = root / f"acct{i:02d}.yaml"
        path.write_text(text)
        paths.append(str(path))
    return paths


def _load(path: str) -> DesiredAccount:
    return load_desired(path, TODAY)


def _shown(results: list[DesiredAccount | ValidationFailed]) -> list[object]:
    return [[str(d) for d in r.diagnostics] if isinstance(r, ValidationFailed) else r
            for r in results]


def test_two_processes_load_what_one_loads(tree: list[str]) -> None:
    if loadmany.usable_cores() < 2:
        pytest.skip("one CPU: the files are loaded in this process only")
    assert sum(os.path.getsize(p) for p in tree) >= loadmany.MIN_BYTES
    parent = os.getpid()
    in_child: list[bool] = []

    def load(path: str) -> DesiredAccount:
        in_child.append(os.getpid() != parent)
        return _load(path)

    split = loadmany.load_files(tree, load)
    serial = [loadmany._one(p, _load) for p in tree]
    assert _shown(split) == _shown(serial)
    assert [type(r) for r in split].count(ValidationFailed) == 2
    assert len(in_child) < len(tree)  # the child's calls are not counted here


def test_a_child_that_dies_is_replaced_by_loading_here(tree: list[str]) -> None:
    parent = os.getpid()

    def load(path: str) -> DesiredAccount:
        if os.getpid() != parent:
            os._exit(9)
        return _load(path)

    assert _shown(loadmany.load_files(tree, load)) == \
        _shown([loadmany._one(p, _load) for p in tree])


def test_an_error_in_the_childs_half_is_raised_here(tree: list[str]) -> None:
    """An unreadable file in the second half: the child gives up, this process loads it
    and raises the ordinary error."""
    def load(path: str) -> DesiredAccount:
        if path == tree[-1]:
            raise InputError(f"{path}: cannot read")
        return _load(path)

    with pytest.raises(InputError, match="cannot read"):
        loadmany.load_files(tree, load)


def test_an_error_in_our_half_does_not_wait_for_the_child(tree: list[str]) -> None:
    parent = os.getpid()

    def load(path: str) -> DesiredAccount:
        if os.getpid() != parent:
            import time

            time.sleep(60)  # the child would keep the run waiting a minute
        if path == tree[2]:
            raise InputError("ours")
        return _load(path)

    import time

    started = time.monotonic()
    with pytest.raises(InputError, match="ours"):
        loadmany.load_files(tree, load)
    assert time.monotonic() - started < 30


def test_validate_of_a_directory_reports_the_same_on_one_core(tree: list[str]) -> None:
    """`crctl validate DIR` split over two processes and pinned to one CPU (no split)
    print the same errors, in file order."""
    import shutil
    import subprocess
    import sys

    if shutil.which("taskset") is None:
        pytest.skip("taskset is not installed")
    directory = Path(tree[0]).parent
    both = crctl("validate", directory)
    assert both.returncode == 1
    pinned = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "reconciler",
                             "validate", str(directory)], capture_output=True, text=True,
                            env={**os.environ, "CRCTL_TODAY": TODAY, "NO_COLOR": "1"})
    assert (pinned.returncode, pinned.stdout, pinned.stderr) == \
        (both.returncode, both.stdout, both.stderr)
    errors = [line for line in both.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 2 and "acct07.yaml" in errors[0] and "acct33.yaml" in errors[1]


def test_the_pickled_answer_carries_a_failed_file(tree: list[str]) -> None:
    """What marshal cannot carry goes pickled whole ("P"): a file that failed validation
    must come back as its diagnostics, not be lost (the half loaded again)."""
    answers = [loadmany._one(p, _load) for p in tree[:10]]
    assert any(isinstance(a, ValidationFailed) for a in answers)
    import pickle

    payload = b"P" + pickle.dumps(answers)
    assert _shown(loadmany._decode(payload)) == _shown(answers)


def test_interrupts_are_held_only_across_the_fork(tree: list[str]) -> None:
    """SIGINT is held while forking (a Ctrl-C must not unwind this process's stack in the
    child) and given back after: a Ctrl-C still stops crctl."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):
        pytest.skip("no signal masks here")
    loadmany.load_files(tree, _load)
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
