"""The backend conformance suite's fixtures: one `location` per backend.

Every test in this directory is written once against the contract of
`reconciler/backends/base.py` and runs against each backend listed in BACKENDS (as
Terraform's `backend.TestBackendStates` runs against local, pg and s3). Adding a backend
to the suite is adding one entry here: a function that returns a fresh, empty location
(string: subprocesses open it too) and one that returns every byte the backend stores.
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


BACKENDS: dict[str, tuple[Callable[[Path], str], Callable[[str], bytes]]] = {
    "local": (_local_location, _local_dump),
}


@pytest.fixture(params=sorted(BACKENDS))
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    make, _ = BACKENDS[request.param]
    return make(tmp_path)


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
    return lambda: BACKENDS[name][1](location)
