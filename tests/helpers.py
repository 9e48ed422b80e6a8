"""Shared test helpers: run the real `crctl` command line, read `# expect:` annotations."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import support
from support import EXAMPLES, REPO, TODAY, assert_clean

__all__ = ["EXAMPLES", "INVALID", "REPO", "TODAY", "assert_no_traceback", "expectations",
           "run_crctl", "user_yaml"]

INVALID = EXAMPLES / "invalid"


def run_crctl(*args: str | os.PathLike[str], cwd: str | os.PathLike[str],
              env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`crctl ARGS...` in `cwd` (support.crctl); the caller checks for a traceback."""
    return support.crctl(*args, cwd=cwd, env=env, timeout=timeout, check_clean=False)


assert_no_traceback = assert_clean


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
