"""Helpers for the apply, locking and crash tests: run crctl, write accounts, read state.

Everything goes through the real command line (`python -m reconciler`, tests/support.py)
unless a test says otherwise.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import support
import yaml
from support import REPO, TODAY, crctl, crctl_env

__all__ = ["COMPLETE_RE", "EXAMPLE_ACME", "REPO", "TODAY", "account_yaml", "acme_top", "acme_users",
           "apply_ok", "audit", "complete_line", "crctl", "crctl_env", "files_of", "lock_path",
           "mirror", "popen", "portal", "run", "save_plan", "snapshot", "user_id",
           "wait_for_lock", "write_account", "write_acme", "write_mirror"]

EXAMPLE_ACME = REPO / "examples" / "acme.yaml"

COMPLETE_RE = (r"^Apply complete: (\d+) enabled, (\d+) changed, (\d+) removed; "
               r"(\d+) users? added, (\d+) updated, (\d+) deleted"
               r"(?:; \d+ groups? added, \d+ updated, \d+ deleted)?\.$")


def run(state: Path | str, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    """`crctl --state-dir STATE ARGS...` (support.crctl: the actor through CRCTL_ACTOR)."""
    return crctl(*args, state=state, **kw)


def popen(state: Path | str, *args: str, **kw: Any) -> subprocess.Popen:
    """Start `crctl --state-dir STATE ARGS...` (support.popen)."""
    return support.popen(*args, state=state, **kw)


def apply_ok(state: Path | str, path: Path | str, actor: str = "jdoe", *extra: str,
             today: str = TODAY) -> subprocess.CompletedProcess:
    """Apply a desired file (or a saved plan) and insist that it succeeds."""
    args = ["apply", str(path), *extra]
    if not str(path).endswith(".json"):
        args.append("--auto-approve")
    result = run(state, *args, actor=actor, today=today)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def save_plan(state: Path | str, desired: Path | str, out: Path | str,
              today: str = TODAY) -> dict[str, Any]:
    result = run(state, "plan", str(desired), "--out", str(out), "--force", today=today)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return json.loads(Path(out).read_text(encoding="utf-8"))


# -- desired-state files ------------------------------------------------------------------

def acme_users() -> dict[str, dict[str, Any]]:
    """The users of examples/acme.yaml as plain dicts (bob.smith without renamed_from)."""
    return copy.deepcopy({
        "jdoe": {"first_name": "Jane", "last_name": "Doe", "email": "jane.doe@acme.example",
                 "extension": "2101", "phone_number": "+16135550101", "profile": "Elite",
                 "location": "Ottawa", "roles": ["decision-maker"],
                 "call_recording": {"product": "always-on", "prevent_remove": True,
                                    "access": "all"}},
        "asmith": {"first_name": "Alice", "last_name": "Smith",
                   "email": "alice.smith@acme.example", "extension": "2102",
                   "phone_number": "+16135550102", "profile": "Premier",
                   "location": "Ottawa", "roles": ["phone-manager"],
                   "call_recording": {"product": "on-demand", "access": "own-group"}},
        "bob.smith": {"first_name": "Bob", "last_name": "Smith",
                      "email": "bob.smith@acme.example", "extension": "2103",
                      "profile": "Essentials", "location": "Toronto",
                      "roles": [{"phone-manager": ["Toronto"]}],
                      "call_recording": {"product": "on-demand",
                                         "activation_date": "2026-12-01"}},
        "lobby": {"first_name": "Front", "last_name": "Desk", "email": "lobby@acme.example",
                  "extension": "2199", "profile": "Courtesy"},
    })


def acme_top() -> dict[str, Any]:
    """The account-level sections of examples/acme.yaml (time zone, recording groups), so a
    file built from `acme_users()` plans no changes against the applied example."""
    return {"recording_settings": {"time_zone": "America/Toronto"},
            "recording_groups": {"sales": {"managers": ["asmith"], "members": ["bob.smith"]}}}


def write_acme(directory: Path, users: dict[str, dict[str, Any]], **top: Any) -> Path:
    """`write_account` of "acme" with the example's account-level sections unless `top`
    overrides them (pass `recording_groups=None` to leave the groups out)."""
    return write_account(directory, "acme", users, **{**acme_top(), **top})


def account_yaml(account: str, users: dict[str, dict[str, Any]], **top: Any) -> str:
    """YAML text of a desired-state file; None values and empty role lists are left out."""
    clean: dict[str, Any] = {}
    for name, user in users.items():
        entry = {k: v for k, v in user.items() if v is not None and v != []}
        cr = entry.get("call_recording")
        if isinstance(cr, dict):
            entry["call_recording"] = {k: v for k, v in cr.items() if v is not None}
        clean[name] = entry
    doc: dict[str, Any] = {"account": account}
    doc.update({k: v for k, v in top.items() if v is not None})
    doc["users"] = clean
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)


def write_account(directory: Path, account: str, users: dict[str, dict[str, Any]],
                  **top: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{account}.yaml"
    path.write_text(account_yaml(account, users, **top), encoding="utf-8")
    return path


# -- the state directory --------------------------------------------------------------------

def snapshot(state: Path | str) -> dict[str, str]:
    """Every file (sha256) and directory below `state`, by relative path."""
    root = Path(state)
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def files_of(state: Path | str) -> list[str]:
    return sorted(k for k, v in snapshot(state).items() if v != "dir")


def portal(state: Path | str, account: str = "acme") -> dict[str, Any]:
    return json.loads((Path(state) / "portal" / f"{account}.json").read_text("utf-8"))


def mirror(state: Path | str, account: str = "acme") -> dict[str, Any]:
    return json.loads((Path(state) / "mir" / f"{account}.json").read_text("utf-8"))


def write_mirror(state: Path | str, doc: dict[str, Any], account: str = "acme") -> None:
    (Path(state) / "mir" / f"{account}.json").write_text(json.dumps(doc), "utf-8")


def audit(state: Path | str, account: str = "acme") -> list[dict[str, Any]]:
    path = Path(state) / "audit" / f"{account}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def user_id(state: Path | str, username: str, account: str = "acme") -> str:
    ids = [uid for uid, u in portal(state, account)["users"].items()
           if u["username"] == username]
    assert len(ids) == 1, (username, ids)
    return ids[0]


def lock_path(state: Path | str, account: str = "acme") -> Path:
    return Path(state) / "locks" / f"{account}.lock"


def wait_for_lock(state: Path | str, account: str = "acme", proc: subprocess.Popen | None = None,
                  timeout: float = 30) -> dict[str, Any]:
    """Wait until the account's lock file exists and holds the holder's JSON."""
    path = lock_path(state, account)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before taking the lock: {proc.returncode}, "
                                 f"{proc.communicate()}")
        try:
            data = json.loads(path.read_text("utf-8"))
            if isinstance(data, dict) and data.get("id"):
                return data
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout}s")


def complete_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, stdout
    return lines[-1]
