"""State backends: where the portal account, the MIR mirror, the audit log, locks and
tombstones live. The planner never sees a backend; the CLI and applier do."""

from reconciler.backends.base import Backend, LockInfo
from reconciler.backends.local import LocalBackend

__all__ = ["Backend", "LockInfo", "LocalBackend"]
