"""The one way tests run the real `crctl` command line (`python -m reconciler`).

Every test module runs the CLI through `crctl(...)` (or `popen(...)` for a process it
talks to or races), so that all of them see the same environment:

- every inherited CRCTL_* variable is cleared (a developer's CRCTL_STATE, CRCTL_ACTOR or
  CRCTL_DEBUG never leaks into a test; an internal error shows as a user would see it);
- CRCTL_TODAY is pinned (TODAY unless `today=` says otherwise), NO_COLOR=1, COLUMNS is
  pinned (200 unless `columns=`; None leaves it unset, so the 100-column fallback applies);
- the actor, when given, goes through CRCTL_ACTOR;
- `state=` becomes `--state-dir STATE` (`--state URL` for a postgresql:// URL); the
  command runs in `cwd=` (default: the test's own working directory);
- stdin is /dev/null unless `input=` is given (a prompt never waits on a terminal);
- with check_clean (the default) neither stream may hold "Traceback" or "internal error".

`env=` is applied last, over all of the above.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TODAY = "2026-11-25"

Arg = str | os.PathLike[str]


def crctl_env(actor: str | None = None, today: str = TODAY,
              extra: Mapping[str, str] | None = None,
              columns: int | None = 200) -> dict[str, str]:
    """The environment of a crctl run (see the module docstring)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CRCTL_") and k not in ("COLUMNS", "LINES")}
    env["CRCTL_TODAY"] = today
    env["NO_COLOR"] = "1"
    if columns is not None:
        env["COLUMNS"] = str(columns)
    if actor is not None:
        env["CRCTL_ACTOR"] = actor
    env.update(extra or {})
    return env


def argv(*args: Arg, state: Arg | None = None) -> list[str]:
    """`python -m reconciler [--state-dir STATE] ARGS...`."""
    cmd = [sys.executable, "-m", "reconciler"]
    if state is not None:
        location = os.fspath(state)
        cmd += ["--state" if "://" in location else "--state-dir", location]
    return cmd + [os.fspath(a) for a in args]


def _umask(umask: int | None, max_open_files: int | None = None) -> Any:
    """The child's set-up: its umask and its limit of open files (`ulimit -n`)."""
    if umask is None and max_open_files is None:
        return None

    def setup() -> None:
        if umask is not None:
            os.umask(umask)
        if max_open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))
    return setup


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    """No traceback and no "internal error" on either stream."""
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream, stream
        assert "internal error" not in stream, stream


def crctl(*args: Arg, state: Arg | None = None, actor: str | None = None,
          cwd: Arg | None = None, env: Mapping[str, str] | None = None,
          input: str | None = None, today: str = TODAY, timeout: float = 300,
          check_clean: bool = True, columns: int | None = 200,
          umask: int | None = None,
          max_open_files: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run `crctl ARGS...` to the end and return the result (text)."""
    result = subprocess.run(
        argv(*args, state=state), cwd=cwd,
        env=crctl_env(actor, today, env, columns), input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
        preexec_fn=_umask(umask, max_open_files))
    if check_clean:
        assert_clean(result)
    return result


def popen(*args: Arg, state: Arg | None = None, actor: str | None = None,
          cwd: Arg | None = None, env: Mapping[str, str] | None = None,
          today: str = TODAY, stdin: Any = subprocess.DEVNULL,
          stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE,
          text: bool = True, columns: int | None = 200,
          umask: int | None = None) -> subprocess.Popen[Any]:
    """Start `crctl ARGS...`. With stdout=PIPE, read it (communicate) or a long plan blocks
    the run; the caller checks the streams (see assert_clean)."""
    return subprocess.Popen(argv(*args, state=state), cwd=cwd,
                            env=crctl_env(actor, today, env, columns), stdin=stdin,
                            stdout=stdout, stderr=stderr, text=text,
                            preexec_fn=_umask(umask))


def canonical_sha256(value: Any) -> str:
    """DESIGN §5's hash, computed here independently of crctl: sha256 of the canonical
    JSON (sorted keys, no spaces, UTF-8)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def resign(doc: dict[str, Any]) -> dict[str, Any]:
    """An edited plan document with its digest (if it has one) and checksum redone, as
    anyone who edits a plan file can: what crctl must still refuse is what the hashes
    cannot catch."""
    if "digest" in doc:
        doc["digest"] = canonical_sha256(
            {k: doc[k] for k in ("account", "prior_state", "actions", "mir") if k in doc})
    doc["checksum"] = canonical_sha256({k: v for k, v in doc.items() if k != "checksum"})
    return doc
