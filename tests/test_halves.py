"""Parsing a big file in two processes gives exactly what one parse gives, or steps aside.

`halves.parse_in_halves` must never change what a file means: either its answer equals
the ordinary parse, or it returns None and the ordinary parse runs. These tests shrink
its size threshold so that small, tricky files take the two-process path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import REPO, crctl_env

from reconciler import halves, loader
from reconciler.errors import ValidationFailed


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("crctl_generate",
                                                  REPO / "benchmarks" / "generate.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


GEN = _generator()


def walk(raw: bytes) -> tuple[Any, bool]:
    return loader._walk_clean("t.yaml", raw)


def sequential(raw: bytes) -> Any:
    return walk(raw)[0]


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(halves, "MIN_BYTES", 0)
    # the split runs on two CPUs or more: these tests check its answers on any runner
    monkeypatch.setattr(halves, "usable_cores", lambda: 2)


def users_text(n: int, indent: int = 2) -> str:
    pad = " " * indent
    return "".join(f"{pad}u{i}:\n{pad}{pad}first_name: F{i}\n{pad}{pad}roles: [a, b]\n"
                   for i in range(n))


def test_a_plain_file_is_split_and_equal() -> None:
    raw = ("account: acme\nusers:\n" + users_text(40) + "safety:\n  max_remove_pct: 5\n").encode()
    data = halves.parse_in_halves(raw, walk)
    assert data is not None
    assert data == sequential(raw)
    assert list(data["users"]) == [f"u{i}" for i in range(40)]
    assert list(data) == ["account", "users", "safety"]
    if hasattr(signal, "pthread_sigmask"):  # held across the fork only
        assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


@pytest.mark.parametrize("indent", [1, 2, 4])
def test_any_indentation(indent: int) -> None:
    raw = ("account: acme\nusers:\n" + users_text(30, indent)).encode()
    data = halves.parse_in_halves(raw, walk)
    assert data == sequential(raw)
    assert data is not None


def test_no_trailing_newline_and_crlf() -> None:
    raw = ("account: acme\r\nusers:\r\n" + users_text(30).replace("\n", "\r\n")).encode()
    assert halves.parse_in_halves(raw.rstrip(b"\r\n"), walk) == sequential(raw)


@pytest.mark.parametrize("trap", [
    # a double-quoted scalar whose continuation line looks like a user key
    '  zz:\n    first_name: "Bob\n  alice: x"\n',
    # a single-quoted one
    "  zz:\n    first_name: 'Bob\n  alice: x'\n",
    # a flow sequence over several lines
    "  zz:\n    roles: [a,\n  b: c]\n",
    # a block scalar, then a key at the users' indentation (which ends it)
    "  zz:\n    note: |\n      text\n  alice: x\n",
    # a comment at column 0 inside the users block
    "# a comment\n  alice: x\n",
])
def test_traps_at_every_position_never_change_the_meaning(trap: str) -> None:
    head = "account: acme\nusers:\n"
    split = 0
    for at in range(0, 61, 2):
        raw = (head + users_text(at) + trap + users_text(60)[len(users_text(at)):]
               + "safety:\n  x: 1\n").encode()
        got = halves.parse_in_halves(raw, walk)
        if got is not None:
            split += 1
            assert got == sequential(raw), at
    assert split > 0  # the trap far from the cut does not stop the split


def test_a_duplicate_user_across_the_cut_falls_back_and_is_reported() -> None:
    raw = ("account: acme\nusers:\n" + users_text(40) + "  u0:\n    first_name: X\n").encode()
    assert halves.parse_in_halves(raw, walk) is None
    with pytest.raises(ValidationFailed) as info:
        loader.load_bytes("t.yaml", raw)
    assert any("duplicate key 'u0'" in d.message for d in info.value.diagnostics)


def test_a_problem_in_the_second_half_is_reported_with_its_real_line() -> None:
    lines = ["account: acme", "users:"] + users_text(40).splitlines()
    lines[102] = "    first_name: !!python/object:os.system x"
    raw = ("\n".join(lines) + "\n").encode()
    assert halves.parse_in_halves(raw, walk) is None
    with pytest.raises(ValidationFailed) as info:
        loader.load_bytes("t.yaml", raw)
    assert [d.line for d in info.value.diagnostics] == [103]


@pytest.mark.parametrize("text", [
    "users: {a: 1}\n",                       # a flow mapping: nothing to cut
    "users:\n- a\n- b\n",                    # a sequence at column 0
    "account: acme\n",                       # no users at all
    "users:\n  # only a comment\n",
])
def test_files_without_a_users_block_are_left_alone(text: str) -> None:
    assert halves.parse_in_halves(text.encode(), walk) is None


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.from_regex(r"\A[a-z][a-z0-9]{0,8}\Z"),
                       st.fixed_dictionaries({"first_name": names, "roles": st.lists(names)}),
                       min_size=2, max_size=30),
       st.sampled_from([None, 20, 80]), st.booleans())
def test_any_dumped_file_means_the_same(users: dict[str, Any], width: int | None,
                                        flow: bool) -> None:
    doc = {"account": "acme", "users": users, "tail": {"k": "v"}}
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=width,
                          default_flow_style=None if flow else False)
    raw = text.encode()
    got = halves.parse_in_halves(raw, walk)
    if got is not None:
        assert got == sequential(raw)


def test_load_bytes_takes_the_two_process_path_for_a_big_valid_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = halves.parse_in_halves

    def spy(raw: bytes, walk: halves.Walk) -> Any:
        calls.append(result := real(raw, walk))
        return result

    monkeypatch.setattr(halves, "parse_in_halves", spy)
    raw = ("account: acme\nusers:\n" + users_text(40)).encode()
    doc = loader.load_bytes("t.yaml", raw)
    assert calls and calls[0] is not None
    assert doc.data == sequential(raw)
    assert doc.sha256 == hashlib.sha256(raw).hexdigest()


# -- one core: no fork ----------------------------------------------------------------------

def no_fork(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    forks: list[str] = []

    def fork() -> int:
        forks.append("fork")
        raise AssertionError("forked on one CPU")

    monkeypatch.setattr(halves.os, "fork", fork)
    return forks


def test_one_usable_cpu_parses_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real usable_cores, and the real size threshold
    monkeypatch.setattr(halves, "MIN_BYTES", 0)
    monkeypatch.setattr(halves.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    forks = no_fork(monkeypatch)
    raw = ("account: acme\nusers:\n" + users_text(40)).encode()
    assert halves.usable_cores() == 1
    assert halves.parse_in_halves(raw, walk) is None  # the ordinary parse runs
    assert loader.load_bytes("t.yaml", raw).data == sequential(raw)
    assert forks == []


def test_without_an_affinity_mask_the_cpu_count_decides(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    monkeypatch.delattr(halves.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(halves.os, "cpu_count", lambda: 1)
    assert halves.usable_cores() == 1
    monkeypatch.setattr(halves.os, "cpu_count", lambda: None)  # unknown: assume one
    assert halves.usable_cores() == 1
    monkeypatch.setattr(halves.os, "cpu_count", lambda: 4)
    assert halves.usable_cores() == 4


def test_the_affinity_mask_wins_over_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    monkeypatch.setattr(halves.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(halves.os, "cpu_count", lambda: 8)
    assert halves.usable_cores() == 1
    monkeypatch.setattr(halves.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert halves.usable_cores() == 2


FORK_SPY = r"""
import os, sys
real_fork = os.fork

def fork():
    sys.stderr.write("crctl-test: fork\n")
    sys.stderr.flush()
    return real_fork()

os.fork = fork
sys.argv = ["crctl", *sys.argv[1:]]
from reconciler.cli import main
main()
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_a_big_plan_pinned_to_one_cpu_does_not_fork_and_plans_the_same(
        tmp_path: Path) -> None:
    """`taskset -c 0 crctl plan` of a file past the size threshold: one process, and the
    same plan as with every CPU (where the file is parsed in two)."""
    users = GEN.make_users(25_000, seed=3)
    desired = tmp_path / "big.yaml"
    desired.write_text(GEN.to_yaml("big", users), encoding="utf-8")
    assert desired.stat().st_size > halves.MIN_BYTES

    def plan(pinned: bool) -> subprocess.CompletedProcess[str]:
        def one_cpu() -> None:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

        return subprocess.run(
            [sys.executable, "-c", FORK_SPY, "--state-dir", str(tmp_path / "state"), "plan",
             str(desired)], env=crctl_env(), capture_output=True, text=True, timeout=300,
            stdin=subprocess.DEVNULL, preexec_fn=one_cpu if pinned else None)

    pinned = plan(True)
    assert pinned.returncode == 0, pinned.stderr
    assert "crctl-test: fork" not in pinned.stderr
    assert "25000 users to add" in pinned.stdout, pinned.stdout[-500:]
    if len(os.sched_getaffinity(0)) >= 2:
        free = plan(False)
        assert free.returncode == 0, free.stderr
        assert "crctl-test: fork" in free.stderr  # the spy sees the two-process parse
        assert free.stdout == pinned.stdout
