"""Fixtures shared by every test module: the PostgreSQL server of the session.

The server is real (tests/pgserver.py starts one with initdb and pg_ctl); it is started
once, on first use, and stopped at the end. Without server binaries the PostgreSQL tests
are skipped on a developer's machine and fail in CI (CI=true or CRCTL_REQUIRE_PG=1).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgserver  # noqa: E402

_databases = itertools.count(1)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Byte-compile crctl's modules once. Most tests run the real command line as a new
    process; where PYTHONDONTWRITEBYTECODE is set (CI images), each of those thousands
    of processes would otherwise compile every module from source again."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "reconciler"),
                           quiet=1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if pgserver.required():
            pytest.fail("psycopg is not installed (pip install -e '.[test]')")
        pytest.skip("psycopg is not installed")
    try:
        server = pgserver.start()
    except (RuntimeError, OSError) as exc:
        if pgserver.required():
            pytest.fail(f"PostgreSQL is required in CI and could not start: {exc}")
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_database(pg_server: pgserver.Server) -> Callable[[], str]:
    """Makes a fresh, empty database and returns its URL (one per call)."""
    def make() -> str:
        name = f"t{next(_databases)}"
        pg_server.psql(f"CREATE DATABASE {name}", database="postgres")
        return pg_server.url_for(name)
    return make
