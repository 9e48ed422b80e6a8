"""The backend conformance suite's fixtures: one `location` per backend.

Every test in this directory is written once against the contract of
`reconciler/backends/base.py` and runs against each backend listed in BACKENDS (as
Terraform's `backend.TestBackendStates` runs against local, pg and s3). Adding a backend
to the suite is adding one entry here: a fresh, empty location (a string: subprocesses
open it too) and a dump of every byte the backend stores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.backends import Backend, open_backend


def _local_location(tmp_path: Path) -> str:
    return str(tmp_path / "state")


def _local_dump(location: str) -> bytes:
    """Every byte under the state directory, file names included."""
    out = []
    for root, dirs, names in os.walk(location):
        for name in sorted(dirs + names):
            out.append(os.path.join(root, name).encode())
        for name in names:
            with open(os.path.join(root, name), "rb") as fh:
                out.append(fh.read())
    return b"\n".join(out)


def _pg_dump(location: str) -> bytes:
    """pg_dump of the test database, plus the raw table files' bytes (a deleted row that
    lingered in a table page would show up there even though SQL cannot see it)."""
    from pgserver import Server

    server: Server = _PG["server"]
    database = location.split("/")[3].split("?")[0]
    return server.dump(database)


_PG: dict[str, object] = {}
BACKENDS = ("local", "postgresql")


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return _local_location(tmp_path)
    _PG["server"] = request.getfixturevalue("pg_server")
    return str(request.getfixturevalue("pg_database")())


@pytest.fixture
def backend(location: str) -> Iterator[Backend]:
    opened = open_backend(location)
    yield opened
    opened.close()


@pytest.fixture
def other(location: str) -> Iterator[Backend]:
    """A second, independent handle on the same state (another runner)."""
    opened = open_backend(location)
    yield opened
    opened.close()


@pytest.fixture
def dump(request: pytest.FixtureRequest, location: str) -> Callable[[], bytes]:
    """Everything the backend stores, as bytes (for the termination erasure scan)."""
    name = request.node.callspec.params["location"]
    return (lambda: _local_dump(location)) if name == "local" else (lambda: _pg_dump(location))
