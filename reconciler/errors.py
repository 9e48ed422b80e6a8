"""One exception type per documented exit status (DESIGN §4).

The CLI maps these to exit codes in one place; everything below it raises them with a
message that already names the file, account or user concerned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CrctlError(Exception):
    """Base: an error the user can act on. Exit status 1."""

    exit_code = 1


class InputError(CrctlError):
    """Invalid input: a desired-state file, a plan file, an option. Exit 1."""


class StateError(CrctlError):
    """The state directory is corrupt, unreadable or unwritable. Exit 1."""


class StalePlanError(CrctlError):
    """A saved plan no longer matches the state, or was altered. Exit 3."""

    exit_code = 3


class LockedError(CrctlError):
    """The account is locked by someone else. Exit 4."""

    exit_code = 4


class SafetyLimitError(CrctlError):
    """A safety limit refuses the plan; `--force` overrides. Exit 5."""

    exit_code = 5


class ActorNotAllowedError(CrctlError):
    """The actor is not a Decision Maker or Phone Manager. Exit 6."""

    exit_code = 6


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One located problem in an input file: `PATH:LINE:COL: SEVERITY: FIELD: message`.

    severity "error" (the file is refused) or "warning" (a lint, DESIGN §2: printed, never
    a change of exit status, except under `validate --strict`)."""

    path: str
    line: int  # 1-based
    column: int  # 1-based
    field: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return (f"{self.path}:{self.line}:{self.column}: {self.severity}: {self.field}: "
                f"{self.message}")


class ValidationFailed(InputError):
    """Carries every diagnostic found in one run, so the user fixes them all at once."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.path, d.line, d.column))
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its diagnostics (the loading child sends it so), not its message."""
        return (ValidationFailed, (self.diagnostics,))
