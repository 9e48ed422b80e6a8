"""Whether human output is coloured: a terminal gets colour, a pipe or a file does not,
and the user can say otherwise in both directions.

Precedence, strongest first (documented in `crctl --help` and the README):
1. `--no-color`: never colour;
2. `NO_COLOR` set and not empty (no-color.org): never colour, even when a variable below
   asks for it: the user's "no" beats a CI template's "yes";
3. `FORCE_COLOR` set, not empty and not `0`/`false` (force-color.org; `0` is how Node's
   tools spell "no colour", so it does not force), or `CLICOLOR_FORCE` set and not `0`
   (bixense.com/clicolors): colour even when stdout is not a terminal, for CI logs that
   render ANSI (GitHub Actions, GitLab);
4. otherwise colour exactly when stdout is a terminal.
JSON and markdown are never coloured (they are read by programs, not terminals).
"""

from __future__ import annotations

from collections.abc import Mapping


def enabled(no_color_flag: bool, env: Mapping[str, str], stdout_is_tty: bool) -> bool:
    if no_color_flag or env.get("NO_COLOR"):
        return False
    if forced(env):
        return True
    return stdout_is_tty


def forced(env: Mapping[str, str]) -> bool:
    force = env.get("FORCE_COLOR", "")
    if force and force.strip().lower() not in ("0", "false"):
        return True
    clicolor = env.get("CLICOLOR_FORCE", "")
    return bool(clicolor) and clicolor.strip() != "0"
