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
from reconciler.backends.base import Backend
from reconciler.errors import CrctlError, InputError, ValidationFailed
from reconciler.loader import printable
from reconciler.render.common import counted

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
    from reconciler.validate import duplicate_accounts, expand_paths, load_desired

    files = expand_paths(list(paths))
    if not files:
        raise InputError(f"no *.yaml or *.yml files in {printable(', '.join(paths))}")
    failed: list[ValidationFailed] = []
    loaded = []
    for path in files:
        try:
            loaded.append(load_desired(path, today()))
        except ValidationFailed as exc:
            failed.append(exc)
    failed.extend(ValidationFailed([d]) for d in duplicate_accounts(loaded))
    if failed:
        diagnostics = [d for f in failed for d in f.diagnostics]
        for diagnostic in diagnostics:
            click.echo(str(diagnostic), err=True)
        click.echo(f"{len(diagnostics)} problem(s) in {len(failed)} of {len(files)} file(s).",
                   err=True)
        sys.exit(EXIT_ERROR)
    noun = "file is" if len(files) == 1 else "files are"
    click.echo(f"{len(files)} {noun} valid.")


FORMATS = click.Choice(["text", "json", "markdown"])


def backend_of(ctx: Context) -> Backend:
    """The embedded default backend: the local state directory."""
    from reconciler.backends.local import LocalBackend

    return LocalBackend(ctx.state_dir)


def render(plans: list, fmt: str, *, as_list: bool) -> str:
    if fmt == "json":
        from reconciler.plan import dumps

        return dumps(plans, as_list=as_list)
    if fmt == "markdown":
        from reconciler.render.markdown import render_all

        return render_all(plans)
    from reconciler.render.text import render_all as render_text

    return render_text(plans, color=color_enabled())


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--out", "out", type=click.Path(dir_okay=False), metavar="PLANFILE",
              help="Save the plan (JSON) for `crctl apply PLANFILE`.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when there are no changes, 2 when there are.")
@click.option("--force", is_flag=True, help="Override the safety limits.")
@click.pass_obj
def plan(ctx: Context, path: str, out: str | None, fmt: str, detailed_exitcode: bool,
         force: bool) -> None:
    """Show what apply would change; never writes to the state directory.

    PATH is an account file or a directory of them. Refused with exit 5 when a safety
    limit is hit (more than safety.max_remove_pct removals, or a prevent_remove service),
    unless --force.

    \b
    Examples:
      crctl plan accounts/acme.yaml
      crctl plan accounts/ --format markdown > plan.md
      crctl plan accounts/acme.yaml --out acme.plan --detailed-exitcode
    """
    from reconciler import service

    backend = backend_of(ctx)
    desired = service.load_all([path], today())
    planned = [service.plan_one(backend, d, today()) for d in desired]
    if force:
        for p in planned:
            for violation in p.violations:
                click.echo(f"Warning: {violation} (overridden by --force)", err=True)
    service.enforce(planned, force)
    plans = [p.plan for p in planned]
    as_list = os.path.isdir(path)
    if out:
        from reconciler.plan import dumps, save

        save(out, dumps(plans, as_list=as_list))
    click.echo(render(plans, fmt, as_list=as_list), nl=False)
    if detailed_exitcode and any(p.has_changes for p in plans):
        sys.exit(2)


@cli.command()
@click.argument("planfile", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
def show(planfile: str, fmt: str) -> None:
    """Render a saved plan (refuses an altered one with exit 3).

    \b
    Example:
      crctl show acme.plan --format markdown
    """
    from reconciler.plan import load

    plans = load(planfile)
    click.echo(render(plans, fmt, as_list=len(plans) > 1 or _is_list(planfile)), nl=False)


def _is_list(planfile: str) -> bool:
    with open(planfile, "rb") as fh:
        return fh.read(64).lstrip()[:1] == b"["


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Override the safety limits.")
@click.option("--checksum", metavar="SHA256",
              help="With a saved plan: the checksum it must have (from the reviewed plan).")
@click.option("--lock-timeout", default="10s", show_default=True, metavar="DURATION",
              help="How long to wait for the account lock (e.g. 1s, 2m).")
@click.pass_obj
def apply(ctx: Context, path: str, auto_approve: bool, force: bool, checksum: str | None,
          lock_timeout: str) -> None:
    """Apply desired state (PATH: file or directory) or exactly a saved plan (PLANFILE).

    With PATH: plans, shows the plan and asks for 'yes' unless --auto-approve. With a
    saved PLANFILE: no prompt (the reviewed plan is the approval); refused with exit 3
    when stale (the account changed since) or altered (checksum). Needs an actor who is
    a Decision Maker or Phone Manager of the account (exit 6 otherwise).

    \b
    Examples:
      crctl --actor jdoe apply accounts/acme.yaml
      CRCTL_ACTOR=jdoe crctl apply acme.plan --checksum 3f5a...
    """
    from reconciler import service
    from reconciler.applier import complete_line

    timeout = service.parse_duration(lock_timeout)
    run = service.ApplyRun(backend_of(ctx), today(), ctx.actor, force, timeout)

    def show_plans(plans: list) -> None:
        click.echo(render(plans, "text", as_list=False), nl=False)

    if service.is_plan_file(path):
        from reconciler.plan import load

        outcomes = run.from_plan_file(load(path, checksum), show_plans)
    else:
        if checksum:
            raise InputError("--checksum applies to a saved plan, not to a desired-state file")
        outcomes = run.from_desired([path], show_plans, lambda: _confirm(auto_approve))
    if not outcomes:
        click.echo("No changes.")
        return
    for outcome in outcomes:
        if outcome.mirror_upserts or outcome.mirror_deletes:
            click.echo(f"MIR mirror of {outcome.account}: {outcome.mirror_upserts} upserted, "
                       f"{outcome.mirror_deletes} deleted.")
        click.echo(complete_line(outcome))


def _confirm(auto_approve: bool) -> bool:
    if auto_approve:
        return True
    click.echo("")
    try:
        answer = click.prompt("Apply these actions? Only 'yes' will be accepted",
                              default="", show_default=False, prompt_suffix=": ")
    except click.exceptions.Abort:
        raise InputError("Apply cancelled: no answer (no terminal?); use --auto-approve or "
                         "apply a saved plan in CI") from None
    return answer.strip() == "yes"


@cli.command()
@click.argument("account")
@click.option("--lock-timeout", default="10s", show_default=True, metavar="DURATION")
@click.pass_obj
def sync(ctx: Context, account: str, lock_timeout: str) -> None:
    """Re-sync the MIR mirror from the portal and activate due pending services.

    \b
    Example:
      CRCTL_TODAY=2026-12-01 crctl sync acme
    """
    from reconciler import service

    outcome = service.sync(backend_of(ctx), account, today(), ctx.actor,
                           service.parse_duration(lock_timeout))
    activated = outcome.counts.get("activate", 0)
    click.echo(f"Sync complete: {counted(activated, 'pending service')} "
               f"activated; MIR mirror {outcome.mirror_upserts} upserted, "
               f"{outcome.mirror_deletes} deleted.")


@cli.command("force-unlock")
@click.argument("account")
@click.argument("lock_id")
@click.pass_obj
def force_unlock(ctx: Context, account: str, lock_id: str) -> None:
    """Remove an account's lock left by a run that is gone (the id must match).

    \b
    Example:
      crctl force-unlock acme 6f1c2a4e-...
    """
    from reconciler.backends.base import check_account_id

    holder = backend_of(ctx).force_unlock(check_account_id(account), lock_id)
    click.echo(f"Removed {holder.describe()}.")


@cli.command()
@click.argument("account")
@click.option("--search", metavar="TEXT", help="Case-insensitive substring of any column.")
@click.option("--filter", "filters", multiple=True, metavar="COLUMN=VALUE",
              help="Per column, named as in --format json (full_name, phone_number, "
                   "extension, product, username, email, status; name and phone are aliases); "
                   "repeat to combine with AND. product takes on-demand, always-on or the "
                   "full name.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.pass_obj
def users(ctx: Context, account: str, search: str | None, filters: tuple[str, ...],
          fmt: str) -> None:
    """The Call Recording user list: Full Name, Phone Number, Extension, Product.

    \b
    Examples:
      crctl users acme
      crctl users acme --search smith --filter product=on-demand
      crctl users acme --format csv > cr-users.csv
    """
    import shutil

    from reconciler import service, userlist

    parsed = userlist.parse_filters(filters)
    current = service.read_existing(backend_of(ctx), account)
    selected = userlist.select(userlist.rows(current), search, parsed)
    if fmt == "json":
        click.echo(userlist.as_json(selected), nl=False)
    elif fmt == "csv":
        click.echo(userlist.as_csv(selected), nl=False)
    else:
        width = shutil.get_terminal_size((100, 24)).columns
        click.echo(userlist.as_table(selected, width), nl=False)
        click.echo(f"{counted(len(selected), 'CR user')}.", err=True)


@cli.command("import")
@click.argument("account")
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write to FILE instead of standard output.")
@click.pass_obj
def import_(ctx: Context, account: str, out: str | None) -> None:
    """Write the current account as desired-state YAML (planning it shows no changes).

    \b
    Example:
      crctl import acme --out accounts/acme.yaml
    """
    from reconciler import service
    from reconciler.importer import to_yaml

    text = to_yaml(service.read_existing(backend_of(ctx), account))
    if out:
        try:
            with open(out, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise InputError(f"{out}: cannot write: {exc.strerror}") from None
        click.echo(f"Wrote {out}.", err=True)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.argument("account")
@click.option("--confirm", required=True, metavar="ACCOUNT",
              help="Repeat the account id to confirm.")
@click.option("--lock-timeout", default="10s", show_default=True, metavar="DURATION")
@click.pass_obj
def terminate(ctx: Context, account: str, confirm: str, lock_timeout: str) -> None:
    """Terminate an account now: delete every user, the MIR mirror and ALL recordings.

    Decision Maker only. Leaves a tombstone without personal data in terminated.jsonl;
    re-creating the account id later needs `crctl apply --force`.

    \b
    Example:
      crctl --actor jdoe terminate acme --confirm acme
    """
    from reconciler import service

    outcome = service.terminate(backend_of(ctx), account, confirm, today(), ctx.actor,
                                service.parse_duration(lock_timeout))
    deleted = outcome.terminated or {}
    click.echo(f"Terminated account {account}: {counted(deleted.get('users', 0), 'user')}, "
               f"{counted(deleted.get('cr_users', 0), 'CR service')} and "
               f"{counted(deleted.get('recordings', 0), 'recording')} deleted, with the MIR "
               "mirror, audit log and backups.")


def main() -> None:
    """Entry point: run click without its own exit handling, then map errors to codes."""
    gc.disable()  # a short-lived process building millions of objects: no cycles to collect
    try:
        code = cli.main(standalone_mode=False, prog_name="crctl")
    except CrctlError as exc:
        # Paths and ids in messages may come from hostile names: one inert line each.
        message = "\n".join(printable(line) for line in str(exc).split("\n"))
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
