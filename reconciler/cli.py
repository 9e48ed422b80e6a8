"""The command line: a thin click layer that parses, calls, and maps errors to exit codes.

Exit codes (DESIGN §4): 0 success, 1 error or invalid input, 2 changes present (with
--detailed-exitcode), 3 stale or altered plan, 4 locked, 5 safety limit, 6 actor not
allowed. Every CrctlError becomes its message on stderr and its exit code; nothing
prints a Python traceback unless CRCTL_DEBUG is set.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from datetime import date

import click

from reconciler import __version__
from reconciler.errors import CrctlError, InputError, ValidationFailed

EXIT_ERROR = 1


@dataclass
class Context:
    """Global options, resolved once."""

    state_dir: str
    actor: str | None

    @property
    def today(self) -> str:
        return today()


def today() -> str:
    """Today as an ISO date, or CRCTL_TODAY (for rehearsing activation dates and tests)."""
    value = os.environ.get("CRCTL_TODAY")
    if not value:
        return date.today().isoformat()
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InputError(f"CRCTL_TODAY={value!r} is not an ISO date such as 2026-12-01") from None


def color_enabled() -> bool:
    return "NO_COLOR" not in os.environ and sys.stdout.isatty()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="crctl")
@click.option("--state-dir", envvar="CRCTL_STATE_DIR", default=".crctl", show_default=True,
              metavar="DIR", help="State directory (env CRCTL_STATE_DIR).")
@click.option("--actor", envvar="CRCTL_ACTOR", metavar="USER",
              help="Who applies: a Decision Maker or Phone Manager (env CRCTL_ACTOR).")
@click.pass_context
def cli(ctx: click.Context, state_dir: str, actor: str | None) -> None:
    """Manage MiCloud Connect Call Recording as code.

    Declare users and their CR product in YAML, review `crctl plan`, then `crctl apply`.

    \b
    Examples:
      crctl validate accounts/
      crctl plan accounts/acme.yaml --out acme.plan
      crctl apply acme.plan
      crctl users acme --filter product=always-on
    """
    ctx.obj = Context(state_dir=state_dir, actor=actor)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def validate(paths: tuple[str, ...]) -> None:
    """Check desired-state files offline (directories: every *.yaml / *.yml).

    Prints every problem of every file as PATH:LINE:COL: error: FIELD: message and
    exits 1 if there is any; exits 0 when all files are valid.

    \b
    Examples:
      crctl validate accounts/acme.yaml
      crctl validate accounts/
    """
    from reconciler.validate import expand_paths, load_desired

    files = expand_paths(list(paths))
    if not files:
        raise InputError(f"no *.yaml or *.yml files in {', '.join(paths)}")
    failed: list[ValidationFailed] = []
    for path in files:
        try:
            load_desired(path, today())
        except ValidationFailed as exc:
            failed.append(exc)
    if failed:
        diagnostics = [d for f in failed for d in f.diagnostics]
        for diagnostic in diagnostics:
            click.echo(str(diagnostic), err=True)
        click.echo(f"{len(diagnostics)} problem(s) in {len(failed)} of {len(files)} file(s).",
                   err=True)
        sys.exit(EXIT_ERROR)
    noun = "file is" if len(files) == 1 else "files are"
    click.echo(f"{len(files)} {noun} valid.")


def main() -> None:
    """Entry point: run click without its own exit handling, then map errors to codes."""
    gc.disable()  # a short-lived process building millions of objects: no cycles to collect
    try:
        code = cli.main(standalone_mode=False, prog_name="crctl")
    except CrctlError as exc:
        message = str(exc)
        if message:
            click.echo(message if isinstance(exc, ValidationFailed) else f"Error: {message}",
                       err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_ERROR)  # usage errors are invalid input (exit 2 means "changes")
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - last resort: never a traceback for users
        if os.environ.get("CRCTL_DEBUG"):
            raise
        click.echo(f"Error: internal error ({type(exc).__name__}: {exc}); "
                   "rerun with CRCTL_DEBUG=1 for details and please report it", err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)
