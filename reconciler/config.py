"""Where the state is: `--state`, the environment, `crctl.toml`, or `.crctl` (DESIGN §3.1).

Precedence: command line, then environment (`CRCTL_STATE`, `CRCTL_STATE_DIR`), then the
nearest `crctl.toml` in the working directory or a parent (as git finds `.git`), then
`.crctl` in the working directory. A relative directory in `crctl.toml` is relative to
the file, so running crctl from a sub-directory uses the same state. A password in the
file is refused: config files live in git.
"""

from __future__ import annotations

import os
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import InputError
from reconciler.loader import printable

CONFIG_NAME = "crctl.toml"
DEFAULT_STATE = ".crctl"
KEYS = frozenset(("state", "pg_schema", "actor", "lock_lease"))
URL_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True, slots=True)
class Config:
    """The resolved settings, and where each came from (for error messages)."""

    state: str
    state_source: str
    pg_schema: str | None = None
    actor: str | None = None
    path: str | None = None  # the crctl.toml used, if any
    lock_lease: str | None = None  # PostgreSQL: how long a silent lock holder keeps it


def find_config(start: str | None = None) -> Path | None:
    """The nearest crctl.toml from `start` (default: the working directory) upwards."""
    here = Path(start or os.getcwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def read_config(path: Path) -> dict[str, Any]:
    shown = printable(str(path))
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise InputError(f"{shown}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{shown}: invalid TOML: {exc}") from None
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise InputError(f"{shown}: unknown key {printable(unknown[0])!s} (known: "
                         f"{', '.join(sorted(KEYS))})")
    for key, value in data.items():
        if not isinstance(value, str) or not value:
            raise InputError(f"{shown}: {key} must be a non-empty string")
    state = data.get("state")
    if state and state.startswith(URL_SCHEMES) and _has_password(state):
        raise InputError(f"{shown}: state must not contain a password (config files live in "
                         "git); use PGPASSWORD, ~/.pgpass, PGPASSFILE or PGSERVICEFILE")
    return data


def _has_password(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        return True
    query = urllib.parse.parse_qs(parts.query)
    return "password" in query


def resolve(cli_state: str | None, env: dict[str, str] | None = None,
            cwd: str | None = None) -> Config:
    """The state location and settings by the precedence of DESIGN §3.1."""
    env = dict(os.environ) if env is None else env
    found = find_config(cwd)
    data = read_config(found) if found else {}
    schema, actor = data.get("pg_schema"), data.get("actor")
    path, lease = (str(found) if found else None), data.get("lock_lease")
    if cli_state:
        return Config(cli_state, "--state", schema, actor, path, lease)
    for name in ("CRCTL_STATE", "CRCTL_STATE_DIR"):
        if env.get(name):
            return Config(env[name], name, schema, actor, path, lease)
    if found and data.get("state"):
        state = data["state"]
        if not state.startswith(URL_SCHEMES) and not os.path.isabs(state):
            state = str(found.parent / state)
        return Config(state, printable(str(found)), schema, actor, path, lease)
    return Config(DEFAULT_STATE, "default", schema, actor, path, lease)
