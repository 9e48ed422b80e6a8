"""A real PostgreSQL server for the tests: initdb + pg_ctl on a private directory, a unix
socket in a short directory, fsync off. Started once per test session (conftest.py).

Debian's server binaries live in /usr/lib/postgresql/*/bin; initdb refuses to run as
root, so as root it runs through `runuser -u postgres`. When no server is installed the
PostgreSQL tests are skipped — except in CI (CI=true or CRCTL_REQUIRE_PG=1), where a
missing server fails the run instead of hiding the tests.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def find_bindir() -> str | None:
    explicit = os.environ.get("CRCTL_PG_BINDIR")
    if explicit:
        return explicit
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("CRCTL_REQUIRE_PG") == "1"


@dataclass
class Server:
    bindir: str
    base: str  # owns data/, socket dir, log
    socket_dir: str
    port: int = 5432

    @property
    def url(self) -> str:
        """Superuser URL (the `postgres` role) of the `crctl` test database."""
        return f"postgresql://postgres@/crctl?host={self.socket_dir}&port={self.port}"

    def url_for(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@/{database}?host={self.socket_dir}&port={self.port}"

    def psql(self, sql: str, database: str = "crctl") -> str:
        result = subprocess.run(
            [os.path.join(self.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At",
             "-h", self.socket_dir, "-p", str(self.port), "-U", "postgres", "-d", database,
             "-c", sql], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
        return result.stdout

    def dump(self, database: str = "crctl") -> bytes:
        """pg_dump of the whole database (what an attacker with a backup would read)."""
        result = subprocess.run(
            [os.path.join(self.bindir, "pg_dump"), "-h", self.socket_dir, "-p", str(self.port),
             "-U", "postgres", database], capture_output=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(result.stderr.decode())
        return result.stdout

    def stop(self) -> None:
        _as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D",
                      os.path.join(self.base, "data"), "-m", "immediate", "-w", "stop"],
                     check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def _as_postgres(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120,
                          stdin=subprocess.DEVNULL)


def start() -> Server:
    """Start a fresh server (about a second); raises RuntimeError if none can be had."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql)")
    base = tempfile.mkdtemp(prefix="crpg-", dir="/tmp")  # short: socket paths max ~107 bytes
    os.chmod(base, 0o755)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data, sock, log = (os.path.join(base, n) for n in ("data", "s", "log"))
    _as_postgres(["mkdir", "-p", sock])
    try:
        _as_postgres([os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres",
                      "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
    except subprocess.CalledProcessError:
        _as_postgres([os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres",
                      "--auth=trust", "-E", "UTF8", "--locale=C"])
    options = f"-k {sock} -c listen_addresses='' -c fsync=off -c full_page_writes=off " \
              "-c synchronous_commit=off"
    started = _as_postgres([os.path.join(bindir, "pg_ctl"), "-D", data, "-l", log, "-o",
                            options, "-w", "-t", "60", "start"], check=False)
    if started.returncode != 0:
        text = Path(log).read_text() if os.path.exists(log) else ""
        raise RuntimeError(f"pg_ctl start failed: {started.stderr}{text[-2000:]}")
    server = Server(bindir=bindir, base=base, socket_dir=sock)
    deadline = time.monotonic() + 30
    while True:
        try:
            server.psql("SELECT 1", database="postgres")
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    server.psql("CREATE DATABASE crctl", database="postgres")
    return server
