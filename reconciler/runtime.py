"""What a run knows of its surroundings: the time, fresh ids, who and where it runs.

Kept out of the backends and the pure core: the planner and `execute` get these values
passed in; the workflows (service.py) and the backends call these functions, so every
backend stamps the same clock and names a lock holder the same way.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime


def now_iso() -> str:
    """The current UTC time, to the second, as in every file crctl writes."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    """A fresh random id (lock ids, run ids, lineages)."""
    return str(uuid.uuid4())


def host_name() -> str:
    return socket.gethostname()


def default_who(actor: str | None) -> str:
    """`actor@host`: how a lock holder is named to whoever waits for it."""
    return f"{actor or os.environ.get('USER') or 'unknown'}@{host_name()}"


def ci_job_url(env: dict[str, str] | None = None) -> str | None:
    """The CI job's URL when the environment says it (GitHub Actions, GitLab CI), so a
    waiting run can point at the holder's log."""
    env = dict(os.environ) if env is None else env
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_RUN_ID"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        repo = env.get("GITHUB_REPOSITORY", "")
        if repo:
            return f"{server}/{repo}/actions/runs/{env['GITHUB_RUN_ID']}"
    if env.get("GITLAB_CI") == "true" and env.get("CI_JOB_URL"):
        return env["CI_JOB_URL"]
    return None
