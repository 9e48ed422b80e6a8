"""State backends: where the portal accounts, the MIR mirrors, the audit log, locks and
tombstones live (DESIGN §3). The contract is `base.py`; `open_backend` is the only place
that knows which backends exist, so nothing outside this package does."""

from __future__ import annotations

from reconciler.backends.base import Backend, LockInfo, check_account_id

__all__ = ["Backend", "LockInfo", "check_account_id", "is_url", "open_backend"]

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: str) -> bool:
    """Whether a state location names a database rather than a directory."""
    return location.startswith(URL_SCHEMES)


def open_backend(location: str, *, pg_schema: str | None = None,
                 lock_lease: float | None = None) -> Backend:
    """The backend a `--state` location names: a `postgresql://` (or `postgres://`) URL
    -> PostgreSQL; anything else -> a local state directory."""
    if is_url(location):
        try:
            from reconciler.backends.postgres import PostgresBackend
        except ModuleNotFoundError as exc:
            if exc.name != "reconciler.backends.postgres":
                raise
            from reconciler.errors import InputError

            raise InputError("this version of crctl has no PostgreSQL backend; use a state "
                             "directory") from None
        return PostgresBackend(location, schema=pg_schema or "crctl",
                               lock_lease=60.0 if lock_lease is None else lock_lease)
    from reconciler.backends.local import LocalBackend

    return LocalBackend(location)
