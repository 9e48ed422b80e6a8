"""Shared test helpers: run the real `crctl` command line, read `# expect:` annotations."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
INVALID = EXAMPLES / "invalid"
TODAY = "2026-11-25"


def run_crctl(*args: str | os.PathLike[str], cwd: str | os.PathLike[str],
              env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `crctl ARGS...` as a user would (`python -m reconciler`).

    CRCTL_TODAY is pinned; CRCTL_DEBUG is cleared so that an internal error shows up as
    the user would see it (and trips the "no traceback" assertions).
    """
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("CRCTL_DEBUG", "CRCTL_STATE_DIR", "CRCTL_ACTOR")}
    full_env["CRCTL_TODAY"] = TODAY
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *map(os.fspath, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream, stream
        assert "internal error" not in stream, stream


EXPECT = re.compile(r"^# expect: (\d+):(\d+): (\S+): (.+)$")


@dataclass(frozen=True)
class Expectation:
    line: int
    column: int
    field: str
    message: str

    def matches(self, path: str, stderr_line: str) -> bool:
        prefix = f"{path}:{self.line}:{self.column}: error: {self.field}: "
        return stderr_line.startswith(prefix) and self.message in stderr_line[len(prefix):]

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.field}: {self.message}"


def expectations(path: Path) -> list[Expectation]:
    """The `# expect: LINE:COL: FIELD: message` lines at the top of an example file."""
    out = []
    for raw in path.read_bytes().splitlines():
        line = raw.decode("utf-8", "replace")
        if not line.startswith("#"):
            break
        if line.startswith("# expect:"):
            match = EXPECT.match(line)
            assert match, f"{path.name}: malformed annotation {line!r}"
            out.append(Expectation(int(match[1]), int(match[2]), match[3], match[4]))
    return out


def user_yaml(name: str, *, extension: str, roles: str = "", email: str | None = None,
              extra: str = "") -> str:
    """One valid user entry (indented for `users:`)."""
    return (
        f"  {name}:\n"
        f"    first_name: First {name}\n"
        f"    last_name: Last\n"
        f"    email: {email or name + '@example.com'}\n"
        f'    extension: "{extension}"\n'
        f"    profile: Elite\n"
        + (f"    roles: [{roles}]\n" if roles else "")
        + extra
    )
