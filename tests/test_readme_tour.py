"""The README's tour ("A tour: plan → apply → users") shows what crctl prints.

Each `$ crctl ...` line of the tour's block runs in a fresh directory holding a copy of
examples/, one after the other on one state, on a day after the example's activation
date (2026-12-01: the tour shows the service active, as a reader running it now sees).
What the README abbreviates is matched as a terminal shows it: `... (the same plan)`
stands for the previous plan, the prompt line ends with the `yes` the user typed, and
the state directory is the README's `/home/me/crctl/.crctl`.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from support import EXAMPLES, REPO, crctl_env

AFTER_ACTIVATION = "2026-12-02"
README_STATE = "/home/me/crctl/.crctl"
PROMPT = "Apply these actions? Only 'yes' will be accepted: "


def tour() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each `$ ` line of the tour's text block."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## A tour: plan → apply → users\n", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    for _, lines in steps:
        while lines and not lines[-1]:
            lines.pop()
    return steps


def run(command: str, cwd: Path) -> list[str]:
    """The command as a terminal shows it: stdout and stderr in order, `yes` typed."""
    args = shlex.split(command)
    assert args[0] == "crctl"
    env = crctl_env(today=AFTER_ACTIVATION, columns=100,
                    extra={"PYTHONUNBUFFERED": "1"})
    result = subprocess.run([sys.executable, "-m", "reconciler", *args[1:]], cwd=cwd,
                            env=env, input="yes\n", stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=120)
    assert result.returncode == 0, result.stdout
    shown = result.stdout.replace(PROMPT, PROMPT + "yes\n")
    shown = shown.replace(str(cwd / ".crctl"), README_STATE)
    return shown.rstrip("\n").splitlines()


def test_the_tour_prints_what_the_readme_shows(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    previous: list[str] = []
    steps = tour()
    assert [c for c, _ in steps] == ["crctl plan examples/acme.yaml",
                                     "crctl --actor jdoe apply examples/acme.yaml",
                                     "crctl users acme"]
    for command, expected in steps:
        shown = run(command, tmp_path)
        if "... (the same plan)" in expected:
            at = expected.index("... (the same plan)")
            expected = expected[:at] + previous + [""] + expected[at + 1:]
        assert shown == expected, "\n".join(shown)
        previous = shown
