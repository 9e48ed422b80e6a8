"""The command line: a thin click layer that parses, calls, and maps errors to exit codes.

Exit codes (DESIGN §4): 0 success, 1 error or invalid input, 2 changes present (with
--detailed-exitcode), 3 stale or altered plan, 4 locked, 5 safety limit, 6 actor not
allowed. Every CrctlError becomes its message on stderr and its exit code; nothing
prints a Python traceback unless CRCTL_DEBUG is set.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

import click

from reconciler import __version__
from reconciler.backends import Backend, open_backend
from reconciler.errors import CrctlError, Diagnostic, InputError, ValidationFailed
from reconciler.inert import inert_text
from reconciler.render.common import counted, some_of

if TYPE_CHECKING:
    from reconciler.model import CurrentAccount, DesiredAccount

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    """Global options (given before or after the command name), resolved on first use:
    command line, then environment, then crctl.toml, then the default (DESIGN §3.1)."""

    options: dict[str, str] = field(default_factory=dict)
    _backend: Backend | None = None

    @property
    def today(self) -> str:
        return today()

    def config(self) -> Any:
        from reconciler import config

        return config.resolve(self.options.get("state"))

    @property
    def actor(self) -> str | None:
        return (self.options.get("actor") or os.environ.get("CRCTL_ACTOR")
                or self.config().actor)

    def backend(self) -> Backend:
        if self._backend is None:
            from reconciler.service import parse_duration

            settings = self.config()
            lease = parse_duration(settings.lock_lease) if settings.lock_lease else None
            self._backend = open_backend(settings.state, pg_schema=settings.pg_schema,
                                         lock_lease=lease)
        return self._backend


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Store a global option wherever it was given (group or command); the last wins."""
    if value is not None:
        root = ctx.find_root()
        if root.obj is None:
            root.obj = Context()
        name = "state" if param.name in ("state", "state_dir") else str(param.name)
        root.obj.options[name] = value


def _remember_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """A global flag given anywhere (group or command) stays set."""
    if value:
        _remember(ctx, param, "1")


def global_options(func: F) -> F:
    """--state/--state-dir/--actor/--no-color, accepted before or after the command name."""
    func = click.option("--no-color", is_flag=True, expose_value=False,
                        callback=_remember_flag,
                        help="No colour, even if FORCE_COLOR or CLICOLOR_FORCE ask for it "
                             "(also: NO_COLOR=1).")(func)
    func = click.option("--actor", metavar="USER", expose_value=False, callback=_remember,
                        help="Who applies: a Decision Maker or Phone Manager "
                             "(env CRCTL_ACTOR; crctl.toml actor).")(func)
    func = click.option("--state-dir", metavar="DIR", expose_value=False,
                        callback=_remember, help="Same as --state, for a directory "
                                                 "(env CRCTL_STATE_DIR).")(func)
    func = click.option("--state", metavar="LOCATION", expose_value=False,
                        callback=_remember,
                        help="State: a directory or a postgresql:// URL (env CRCTL_STATE; "
                             "crctl.toml state; default .crctl).")(func)
    return func


def emit_json(data: Any) -> None:
    click.echo(for_stdout(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False)))


def for_stdout(json_text: str) -> str:
    """JSON as printed: as is, unless standard output's encoding (Latin-1, ASCII) cannot
    hold one of its characters; then the same JSON with \\u escapes (a backslash escape
    of the stream would not be JSON for characters beyond U+FFFF)."""
    try:
        json_text.encode(sys.stdout.encoding or "utf-8")
    except UnicodeEncodeError:
        end = "\n" if json_text.endswith("\n") else ""
        return json.dumps(json.loads(json_text), indent=2, ensure_ascii=True) + end
    return json_text


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
    """Colour for text plans: see reconciler/color.py for --no-color, NO_COLOR,
    FORCE_COLOR and CLICOLOR_FORCE."""
    from reconciler import color

    ctx = click.get_current_context(silent=True)
    given = ctx.find_root().obj if ctx is not None else None
    no_color = isinstance(given, Context) and "no_color" in given.options
    return color.enabled(no_color, os.environ,
                         sys.stdout is not None and sys.stdout.isatty())


def inert_lines(text: str) -> str:
    """Human output made of file values (reasons, locations, tags): each line inert."""
    return "".join(inert_text(line) + "\n" for line in text.splitlines())


def echo_human(text: str) -> None:
    """Print a text plan: with colour forced, click must keep the ANSI codes it would strip
    from a pipe (the text has none when colour is off)."""
    click.echo(text, nl=False, color=color_enabled())


ENVIRONMENT = {
    "CRCTL_STATE": "The state, as --state: a directory or a postgresql:// URL.",
    "CRCTL_STATE_DIR": "A state directory, as --state-dir.",
    "PG*": "For a postgresql:// state, libpq's PGHOST, PGPORT, PGDATABASE, PGUSER, "
           "PGPASSWORD, PGPASSFILE, PGSERVICE, PGSERVICEFILE, PGSSLMODE and the others: "
           "what the URL leaves out, and the password (never in the URL).",
    "CRCTL_ACTOR": "Who runs the command, as --actor (crctl.toml: actor).",
    "USER": "Names the lock holder (USER@host) when there is no actor.",
    "GITHUB_*, CI_JOB_URL": "The CI job recorded with the lock, so that a waiting run names "
                            "it (GITHUB_ACTIONS, GITHUB_SERVER_URL, GITHUB_REPOSITORY, "
                            "GITHUB_RUN_ID; GITLAB_CI, CI_JOB_URL).",
    "CRCTL_TODAY": "An ISO date that replaces today: rehearse activation dates.",
    "NO_COLOR": "Set and not empty: no colour (wins over FORCE_COLOR).",
    "FORCE_COLOR": "Set (and not 0): colour even when stdout is not a terminal (CI logs).",
    "CLICOLOR_FORCE": "Set (and not 0): as FORCE_COLOR.",
    "CRCTL_DEBUG": "Set: a crash shows its Python traceback (to report a bug).",
}
STATE_ENV = ("CRCTL_STATE", "CRCTL_STATE_DIR", "PG*")
LOCK_ENV = ("CRCTL_ACTOR", "USER", "GITHUB_*, CI_JOB_URL")
COLOR_ENV = ("NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE")
TODAY_ENV = ("CRCTL_TODAY",)
# What each command reads (crctl --help lists them all; a command not named here reads
# CRCTL_DEBUG only).
COMMAND_ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "validate": TODAY_ENV,
    "explain": TODAY_ENV,
    "report": STATE_ENV + TODAY_ENV,
    "plan": STATE_ENV + TODAY_ENV + COLOR_ENV,
    "show": COLOR_ENV,
    "apply": STATE_ENV + LOCK_ENV + TODAY_ENV + COLOR_ENV,
    "sync": STATE_ENV + LOCK_ENV + TODAY_ENV,
    "terminate": STATE_ENV + LOCK_ENV + TODAY_ENV,
    "migrate-state": STATE_ENV + LOCK_ENV,
    **{name: STATE_ENV for name in ("users", "import", "accounts", "history", "audit",
                                    "force-unlock", "init")},
}


def _environment_help(formatter: click.HelpFormatter, names: tuple[str, ...]) -> None:
    formatter.write_paragraph()
    formatter.write_text("Environment:")
    with formatter.indentation():
        formatter.write_dl([(name, ENVIRONMENT[name]) for name in (*names, "CRCTL_DEBUG")])


class CrctlCommand(click.Command):
    """A command whose --help ends with the environment variables it reads."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        _environment_help(formatter, COMMAND_ENVIRONMENT.get(self.name or "", ()))


class OrderedGroup(click.Group):
    """Lists commands in workflow order, not alphabetically; every command's help lists
    its environment."""

    command_class = CrctlCommand

    def list_commands(self, ctx: click.Context) -> list[str]:
        known = [c for c in COMMAND_ORDER if c in self.commands]
        return known + sorted(c for c in self.commands if c not in COMMAND_ORDER)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        _environment_help(formatter, tuple(n for n in ENVIRONMENT if n != "CRCTL_DEBUG"))
        formatter.write_paragraph()
        formatter.write_text("Configuration: the nearest crctl.toml (state, pg_schema, actor, "
                             "lock_lease).")


COMMAND_ORDER = ("validate", "plan", "show", "apply", "explain", "report", "sync", "users",
                 "import", "accounts",
                 "history", "audit", "terminate", "force-unlock", "init", "migrate-state",
                 "schema")


@click.group(cls=OrderedGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="crctl")
@global_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Manage MiCloud Connect Call Recording as code.

    Declare users and their CR product in YAML, review `crctl plan`, then `crctl apply`.

    \b
    Examples:
      crctl validate accounts/
      crctl plan accounts/acme.yaml --out acme.plan
      crctl apply acme.plan
      crctl users acme --filter product=always-on

    Colour: on a terminal; --no-color or NO_COLOR turn it off, FORCE_COLOR or
    CLICOLOR_FORCE turn it on in a pipe (CI logs); NO_COLOR wins.
    """
    if ctx.obj is None:
        ctx.obj = Context()


@cli.command()
@global_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(), metavar="PATH...")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: {valid, files, errors: [{path, line, column, field, message}], "
                   "warnings: [same keys]}.")
@click.option("--strict", is_flag=True, help="Exit 1 when there is any warning as well.")
def validate(paths: tuple[str, ...], fmt: str, strict: bool) -> None:
    """Check desired-state files offline (directories: every *.yaml / *.yml below them).

    Prints every problem of every file as PATH:LINE:COL: error: FIELD: message and
    exits 1 if there is any; exits 0 when all files are valid. Lints of valid files
    (such as an On-Demand user in no recording group) print as PATH:LINE:COL: warning:
    FIELD: message on stderr and do not change the exit status, unless --strict.

    \b
    Examples:
      crctl validate accounts/acme.yaml
      crctl validate --strict accounts/
    """
    from reconciler.loadmany import load_files
    from reconciler.validate import duplicate_accounts, expand_paths, load_desired

    files = expand_paths(list(paths))
    if not files:
        raise InputError(f"no *.yaml or *.yml files in {inert_text(', '.join(paths))}")
    failed: list[ValidationFailed] = []
    loaded = []
    day = today()
    for result in load_files(files, lambda path: load_desired(path, day)):
        if isinstance(result, ValidationFailed):
            failed.append(result)
        else:
            loaded.append(result)
    failed.extend(ValidationFailed([d]) for d in duplicate_accounts(loaded))
    diagnostics = [d for f in failed for d in f.diagnostics]
    warnings = [w for d in loaded for w in d.warnings]
    refused = bool(failed) or (strict and bool(warnings))
    if fmt == "json":
        def listed(found: list[Diagnostic]) -> list[dict[str, Any]]:
            return [{"path": d.path, "line": d.line, "column": d.column, "field": d.field,
                     "message": d.message} for d in found]

        emit_json({"valid": not refused, "files": len(files), "errors": listed(diagnostics),
                   "warnings": listed(warnings)})
        sys.exit(EXIT_ERROR if refused else 0)
    # one list in file and line order: a file's warnings beside its errors
    for diagnostic in sorted([*diagnostics, *warnings],
                             key=lambda d: (d.path, d.line, d.column)):
        click.echo(str(diagnostic), err=True)
    noted = f"; {counted(len(warnings), 'warning')}" if warnings else ""
    if failed:
        click.echo(f"{len(diagnostics)} problem(s) in {len(failed)} of {len(files)} "
                   f"file(s){noted}.", err=True)
        sys.exit(EXIT_ERROR)
    noun = "file is" if len(files) == 1 else "files are"
    if refused:
        click.echo(f"{len(files)} {noun} valid, but with {counted(len(warnings), 'warning')}"
                   f" in {len({w.path for w in warnings})} file(s); --strict refuses "
                   "warnings.", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(f"{len(files)} {noun} valid{noted.replace(';', ',')}.")


def echo_warnings(desired: Iterable[DesiredAccount]) -> None:
    """The lints of loaded files, on stderr (stdout stays the plan: json/markdown parse)."""
    for d in desired:
        for warning in d.warnings:
            click.echo(str(warning), err=True)


FORMATS = click.Choice(["text", "json", "markdown"])
LOCK_TIMEOUT_HELP = ("How long to wait for the account lock (e.g. 1s, 2m, 1m30s); then exit "
                     "4 naming the holder.")


def backend_of(ctx: Context) -> Backend:
    """The backend the global options, environment or crctl.toml name."""
    return ctx.backend()


def state_header(backend: Backend) -> str:
    """The first line of human output of a command that read the state (DESIGN §3.1)."""
    empty = "" if backend.exists() else " (empty: nothing applied here yet)"
    return inert_text(f"State: {backend.location}{empty}") + "\n"


def is_set(paths: tuple[str, ...]) -> bool:
    """Several paths or a directory make a plan set (DESIGN §5), even of one account: its
    shape does not depend on how many files the directory holds today."""
    return len(paths) > 1 or any(os.path.isdir(p) for p in paths)


def render(plans: list, fmt: str, *, as_list: bool, docs: list | None = None,
           saved: bool = False, loaded: bool = False, unmanaged: list[str] | None = None
           ) -> str:
    """A plan (or plan set) in `fmt`. `docs`: its documents when already made; `saved`:
    the plan is a saved one, so text and markdown show its checksum beside the digest;
    `loaded`: read from a saved file (see plan.identity); `unmanaged`: the state's
    accounts that none of the files declares (a set only; JSON has no place for them:
    see plan)."""
    from reconciler.plan import dumps, identity

    if fmt == "json":
        return for_stdout(dumps(plans, as_list=as_list, docs=docs))
    ident = identity(plans, as_list=as_list, docs=docs, saved=saved, loaded=loaded)
    if fmt == "markdown":
        from reconciler.render import markdown

        if as_list:
            return markdown.render_set(plans, unmanaged, ident)
        return markdown.render_all(plans, ident)
    from reconciler.render import text

    if as_list:
        return text.render_set(plans, unmanaged=unmanaged, color=color_enabled(), ident=ident)
    return text.render_all(plans, color=color_enabled(), ident=ident)


@cli.command()
@global_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(), metavar="PATH...")
@click.option("--out", "out", type=click.Path(dir_okay=False), metavar="PLANFILE",
              help="Save the plan (JSON) for `crctl apply PLANFILE`.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True,
              help="text for terminals and logs; json: the plan document (a list for "
                   "several paths or a directory); markdown: a pull-request comment.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when there are no changes, 2 when there are.")
@click.option("--force", is_flag=True,
              help="Override the safety limits; the plan records them (forced) and applies "
                   "without a second --force.")
@click.pass_obj
def plan(ctx: Context, paths: tuple[str, ...], out: str | None, fmt: str,
         detailed_exitcode: bool, force: bool) -> None:
    """Show what apply would change; never writes to the state directory.

    Each PATH is an account file or a directory (every *.yaml / *.yml below it, hidden
    ones skipped). Several paths or a directory make a plan set: accounts with changes
    are shown, unchanged ones counted, and the state's accounts that no file declares
    are listed as not managed by these files (never touched). The output shows the
    plan's digest (for `apply PATH --expect DIGEST`) and, with --out, the saved plan's
    checksum (for `apply PLANFILE --checksum SHA256`). A plan that breaks a safety limit
    (more than safety.max_remove_pct removals, a termination, a prevent_remove service)
    is printed (and saved) in full with the violations first, then exits 5, unless
    --force, which records them in the plan (`forced`).

    \b
    Examples:
      crctl plan accounts/acme.yaml
      crctl plan accounts/ --format markdown > plan.md
      crctl plan accounts/acme.yaml --out acme.plan --detailed-exitcode
    """
    from reconciler import service

    backend = backend_of(ctx)
    desired = service.load_all(list(paths), today())
    echo_warnings(desired)
    planned = [service.plan_one(backend, d, today()) for d in desired]
    if force:
        for p in planned:
            for violation in p.violations:
                click.echo(inert_text(f"Warning: {violation} (overridden by --force)"),
                           err=True)
    plans = [replace(p.plan, forced=True) if force else p.plan for p in planned]
    as_list = is_set(paths)
    docs = None
    unmanaged = service.unmanaged(backend, desired) if as_list else []
    if out is not None:
        from reconciler.plan import documents, dumps, save

        docs = documents(plans, as_list=as_list)
        save(out, dumps(plans, as_list=as_list, docs=docs), [d.path for d in desired])
    if fmt == "text":
        click.echo(state_header(backend), nl=False)
    output = render(plans, fmt, as_list=as_list, docs=docs, saved=bool(out),
                    unmanaged=unmanaged)
    if fmt == "text":
        echo_human(output)
    else:
        click.echo(output, nl=False)
    if fmt == "json" and unmanaged:
        # the plan set is a JSON list of plan documents (what --out saves and apply reads):
        # the accounts it does not manage are said beside it, not inside it
        from reconciler.render.common import unmanaged_text

        click.echo(unmanaged_text(unmanaged), err=True)
    service.enforce(planned, force)  # after the plan: reviewers see what is refused
    if detailed_exitcode and any(p.has_changes for p in plans):
        sys.exit(2)


@cli.command()
@global_options
@click.argument("planfile", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True,
              help="text, json (the plan document as saved) or markdown (a pull-request comment).")
def show(planfile: str, fmt: str) -> None:
    """Render a saved plan (refuses an altered one with exit 3).

    \b
    Example:
      crctl show acme.plan --format markdown
    """
    from reconciler.plan import load_file

    plans, is_set = load_file(planfile)
    output = render(plans, fmt, as_list=is_set, saved=True, loaded=True)
    if fmt == "text":
        echo_human(output)
    else:
        click.echo(output, nl=False)


@cli.command()
@global_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(), metavar="PATH...")
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Override the safety limits.")
@click.option("--checksum", metavar="SHA256",
              help="With a saved plan: the checksum it must have (from the reviewed plan; "
                   "a plan set's checksum for a plan of several accounts).")
@click.option("--expect", metavar="DIGEST",
              help="With desired state: apply only if the fresh plan's digest (a plan "
                   "set's, for a directory) is DIGEST, the one reviewed; exit 3 otherwise.")
@click.option("--lock-timeout", default="10s", show_default=True, metavar="DURATION",
              help=LOCK_TIMEOUT_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: the outcome as JSON (implies no prompt "
                                      "output; combine with --auto-approve).")
@click.pass_obj
def apply(ctx: Context, paths: tuple[str, ...], auto_approve: bool, force: bool,
          checksum: str | None, expect: str | None, lock_timeout: str, fmt: str) -> None:
    """Apply desired state (PATH...: files, directories) or exactly a saved plan (PLANFILE).

    With PATH...: plans as `crctl plan` does, shows the plan and asks for 'yes' unless
    --auto-approve. With a saved PLANFILE: no prompt (the reviewed plan is the approval);
    refused with exit 3 when stale (the account changed since) or altered (checksum).
    Every account with actions needs an actor who is a Decision Maker or Phone Manager
    of it; unchanged accounts need nothing (exit 6 names every account refused).

    A saved plan made with --force applies without a second --force while the safety
    limits it breaks are the ones it recorded.

    \b
    Examples:
      crctl --actor jdoe apply accounts/acme.yaml
      CRCTL_ACTOR=jdoe crctl apply acme.plan --checksum 3f5a...
      CRCTL_ACTOR=ci-bot crctl apply accounts/ --auto-approve --expect 9c1e...
    """
    from reconciler import service

    timeout = service.parse_duration(lock_timeout)
    backend = backend_of(ctx)
    run = service.ApplyRun(backend, today(), ctx.actor, force, timeout)

    # each path is opened once: a saved plan may be a pipe (apply /dev/stdin)
    found = [(p, raw) for p in paths if (raw := service.read_plan_file(p)) is not None]
    if found and len(paths) > 1:
        raise InputError(f"{inert_text(found[0][0])} is a saved plan: apply takes one saved "
                         "plan, or desired-state files and directories, not both")
    saved = bool(found)
    as_list = is_set(paths)  # for a saved plan: whether the file is a plan set
    shown = Shown(as_set=as_list and not saved)

    def show_plans(plans: list) -> None:
        """Under the lock, before the prompt: the plan, and what the report needs."""
        shown.as_set = shown.as_set or as_list or len(plans) != 1
        shown.unchanged = [p.account for p in plans if not p.has_changes]
        if shown.as_set and not saved:
            shown.unmanaged = service.unmanaged(backend, plans)
        if fmt == "json":
            return
        click.echo(state_header(backend), nl=False)
        echo_human(render(plans, "text", as_list=shown.as_set, saved=saved, loaded=saved,
                          unmanaged=shown.unmanaged))

    try:
        if found:
            from reconciler.plan import parse_file

            if expect:
                raise InputError("--expect applies to desired state (it re-plans); a saved "
                                 "plan is pinned with --checksum")
            path, raw = found[0]
            plans, as_list = parse_file(path, raw, checksum)
            outcomes = run.from_plan_file(plans, show_plans)
        else:
            if checksum:
                raise InputError("--checksum applies to a saved plan, not to a desired-state "
                                 "file")
            outcomes = run.from_desired(list(paths), show_plans,
                                        lambda: _confirm(auto_approve), expect=expect,
                                        as_list=as_list, loaded=echo_warnings)
    except KeyboardInterrupt:
        if not run.committed:
            raise  # nothing written: exit 130
        outcomes, interrupted = run.committed, True
    except BrokenPipeError:
        _silence(sys.stdout)
        if not run.committed:  # the plan could not be shown: nothing was written
            raise CrctlError("the output was closed before anything was applied; nothing "
                             "was changed") from None
        _output_closed(run.committed, run.to_apply)
        return
    else:
        interrupted = False
    try:
        _report_apply(outcomes, fmt, shown)
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        _output_closed(outcomes, run.to_apply)
        return
    if interrupted:
        applied = some_of([f"{o.account} (serial {o.serial})" for o in outcomes])
        done = {o.account for o in outcomes}
        left = [a for a in run.to_apply if a not in done]
        if not left:
            click.echo(f"Interrupted, but the apply had committed: {applied}.", err=True)
            return
        click.echo(f"Interrupted after committing {applied}; not applied: "
                   f"{some_of(left)}. Plan again to see what is left.", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _silence(stream: Any) -> None:
    """Point a stream whose reader went away at /dev/null: what is still buffered for it
    is dropped, instead of failing Python's last flush (which makes the exit status 120)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _output_closed(outcomes: list[Any], to_apply: list[str]) -> None:
    """The reader of stdout went away after the commit (`crctl apply ... | head -1`): the
    state is written, so this is no error (DESIGN §4: exit 0); stderr says what was
    applied, if it is still open."""
    _silence(sys.stdout)
    applied = some_of([f"{o.account} (serial {o.serial})" for o in outcomes])
    done = {o.account for o in outcomes}
    left = [a for a in to_apply if a not in done]
    message = f"The output was closed, but the apply had committed: {applied}."
    if left:  # not reached today (nothing is printed between two accounts' commits)
        message += f" Not applied: {some_of(left)}. Plan again to see what is left."
    try:
        click.echo(message, err=True)
    except OSError:
        _silence(sys.stderr)
    if left:
        sys.exit(EXIT_ERROR)


@dataclass
class Shown:
    """What an apply showed: a set or one account, and the accounts it left alone."""

    as_set: bool
    unchanged: list[str] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)


def _report_apply(outcomes: list[Any], fmt: str, shown: Shown) -> None:
    from reconciler.render.text import apply_lines

    if fmt == "json":
        emit_json({"applied": [o.to_json() for o in outcomes], "changed": bool(outcomes),
                   "unchanged": shown.unchanged, "unmanaged": shown.unmanaged})
        return
    if not outcomes:
        click.echo("No changes.")
        return
    for line in apply_lines(outcomes, as_set=shown.as_set):
        click.echo(line)


def _confirm(auto_approve: bool) -> bool:
    """The prompt, read by hand: click.prompt turns Ctrl-C into the same Abort as a
    missing terminal, and Ctrl-C must exit 130 (nothing was written)."""
    if auto_approve:
        return True
    click.echo("")
    click.echo("Apply these actions? Only 'yes' will be accepted: ", nl=False)
    sys.stdout.flush()
    answer = sys.stdin.readline() if sys.stdin is not None else ""
    if not answer:
        raise InputError("Apply cancelled: no answer (no terminal?); use --auto-approve or "
                         "apply a saved plan in CI")
    return answer.strip() == "yes"


@cli.command()
@global_options
@click.argument("account")
@click.option("--lock-timeout", default="10s", show_default=True, metavar="DURATION",
              help=LOCK_TIMEOUT_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: the outcome {account, serial, wrote, counts, terminated, mirror}.")
@click.pass_obj
def sync(ctx: Context, account: str, lock_timeout: str, fmt: str) -> None:
    """Re-sync the MIR mirror from the portal and activate due pending services.

    \b
    Example:
      CRCTL_TODAY=2026-12-01 crctl sync acme
    """
    from reconciler import service

    outcome = service.sync(backend_of(ctx), account, today(), ctx.actor,
                           service.parse_duration(lock_timeout))
    if fmt == "json":
        emit_json(outcome.to_json())
        return
    activated = outcome.counts.get("activate", 0)
    click.echo(f"Sync complete: {counted(activated, 'pending service')} "
               f"activated; MIR mirror {outcome.mirror_upserts} upserted, "
               f"{outcome.mirror_deletes} deleted.")


@cli.command("force-unlock")
@global_options
@click.argument("account")
@click.argument("lock_id")
@click.option("--force", is_flag=True,
              help="Remove the lock even though its holder is alive (PostgreSQL: ends the "
                   "holder's session).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: {removed: the holder of the removed lock}.")
@click.pass_obj
def force_unlock(ctx: Context, account: str, lock_id: str, force: bool, fmt: str) -> None:
    """Remove an account's lock whose holder is gone (the id must match).

    Refused with exit 4 while the holder is alive, unless --force.

    \b
    Example:
      crctl force-unlock acme 6f1c2a4e-...
    """
    from reconciler.backends.base import check_account_id

    holder = backend_of(ctx).force_unlock(check_account_id(account), lock_id, force)
    if fmt == "json":
        emit_json({"removed": holder.to_json()})
        return
    click.echo(inert_text(f"Removed {holder.describe()}."))


@cli.command()
@global_options
@click.argument("account")
@click.option("--search", metavar="TEXT", help="Case-insensitive substring of any column.")
@click.option("--filter", "filters", multiple=True, metavar="COLUMN=VALUE",
              help="Per column, named as in --format json (full_name, phone_number, "
                   "extension, product, username, email, status, access; name and phone "
                   "are aliases); "
                   "repeat to combine with AND. product takes on-demand, always-on or the "
                   "full name.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True,
              help="table for terminals; json (keys full_name, phone_number, extension, "
                   "product, username, email, status, access) or csv, for scripts.")
@click.option("--access-report", is_flag=True,
              help="Who can hear whose recordings: per CR user, their access and the "
                   "usernames whose recordings they reach, with why (json: [{username, "
                   "access, can_hear, via}]). --search and --filter choose the rows.")
@click.pass_obj
def users(ctx: Context, account: str, search: str | None, filters: tuple[str, ...],
          fmt: str, access_report: bool) -> None:
    """The Call Recording user list: Full Name, Phone Number, Extension, Product.

    \b
    Examples:
      crctl users acme
      crctl users acme --search smith --filter product=on-demand
      crctl users acme --format csv > cr-users.csv
      crctl users acme --access-report
    """
    import shutil

    from reconciler import service, userlist

    parsed = userlist.parse_filters(filters)
    current = service.read_existing(backend_of(ctx), account)
    selected = userlist.select(userlist.rows(current), search, parsed)
    if access_report:
        users_access_report(current, selected if search or parsed else None, fmt)
        return
    if fmt == "json":
        click.echo(for_stdout(userlist.as_json(selected)), nl=False)
    elif fmt == "csv":
        click.echo(userlist.as_csv(selected), nl=False)
    else:
        width = shutil.get_terminal_size((100, 24)).columns
        click.echo(userlist.as_table(selected, width), nl=False)
        click.echo(f"{counted(len(selected), 'CR user')}.", err=True)


def users_access_report(current: CurrentAccount, selected: list[dict[str, str]] | None,
                        fmt: str) -> None:
    """`users --access-report`: the rows of `selected` (None: every CR user); who they
    hear is always worked out over the whole account."""
    from reconciler import accessreport
    from reconciler.access import access_report

    reaches = access_report(current)
    if selected is not None:
        shown = {row["username"] for row in selected}
        reaches = [r for r in reaches if r.username in shown]
    if fmt == "json":
        click.echo(for_stdout(accessreport.as_json(reaches)), nl=False)
    elif fmt == "csv":
        click.echo(accessreport.as_csv(reaches), nl=False)
    else:
        click.echo(accessreport.as_text(reaches), nl=False)
        click.echo(f"{counted(len(reaches), 'CR user')}.", err=True)


@cli.command()
@global_options
@click.argument("path", type=click.Path(dir_okay=False))
@click.argument("username")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: {account, path, user, full_name, attributes, call_recording: "
                   "{FIELD: {value, from, line}} or null, no_call_recording, policies: "
                   "[{name, description, requires, status, breaches, exception}]}.")
def explain(path: str, username: str, fmt: str) -> None:
    """Why a user has the Call Recording they have, and which policies they meet.

    Prints the user's effective CR settings, where each field came from (the user's
    own line or the default that gave it), and every policy that matches them: met,
    waived (by which exception, until when) or broken. Works offline; a file whose
    only problems are policy breaches is explained, not refused.

    \b
    Example:
      crctl explain accounts/acme.yaml jdoe
    """
    from reconciler.compliance import explain as explain_user
    from reconciler.compliance import explain_text
    from reconciler.loader import load_file
    from reconciler.policy import ABSENT
    from reconciler.validate import desired_from_document

    doc = load_file(path, strict=False)
    raw_users = doc.data.get("users") if type(doc.data) is dict else None
    raw = raw_users.get(username) if type(raw_users) is dict else None
    own = raw.get("call_recording", ABSENT) if type(raw) is dict else ABSENT
    own = dict(own) if type(own) is dict else own  # validation completes the record
    desired = desired_from_document(doc, today(), breaches_fatal=False)
    if username not in desired.users:
        import difflib

        renamed = {old: new for new, old in desired.renamed_from.items()}
        if username in renamed:
            raise InputError(inert_text(
                f"{path}: no user {username!r}: it was renamed to {renamed[username]!r} "
                "(explain the new username)"))
        hint = difflib.get_close_matches(username, list(desired.users), n=1)
        raise InputError(inert_text(
            f"{path}: no user {username!r}" + (f" (did you mean {hint[0]!r}?)" if hint
                                               else "")))
    data = explain_user(doc, desired, username, own, today())
    if fmt == "json":
        emit_json(data)
        return
    click.echo(inert_lines(explain_text(data)), nl=False)


@cli.command()
@global_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(), metavar="PATH...")
@click.option("--as-of", "as_of", metavar="DATE",
              help="Report on the state as it was at the end of this ISO date (its last "
                   "version on or before it), with the exceptions valid that day. "
                   "Default: today, the current state.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv", "markdown"]),
              default="text", show_default=True,
              help="json: {as_of, accounts: [{account, path, serial, policies: [{name, "
                   "description, requires, in_scope, compliant, waived, breaking}]}], "
                   "sha256}.")
@click.pass_obj
def report(ctx: Context, paths: tuple[str, ...], as_of: str | None, fmt: str) -> None:
    """Compliance evidence: the files' policies against the current state.

    Per policy: the users in scope, those compliant and since when (from the audit
    log), those waived (with the exception) and those breaking it. It reads the
    state, not the files' users, so a change made outside them (by hand in the portal,
    or by another file) shows up here. The sha256 is that of the report's canonical
    JSON without its own key: a printed report can be checked against the JSON.

    \b
    Examples:
      crctl report accounts/
      crctl report accounts/acme.yaml --as-of 2026-12-31 --format markdown > evidence.md
    """
    from reconciler import service
    from reconciler.compliance import AccountEvidence, report_markdown, report_rows, report_text
    from reconciler.compliance import report as make_report
    from reconciler.model import is_iso_date

    day = today()
    if as_of is not None:
        if not is_iso_date(as_of):
            raise InputError(f"--as-of {inert_text(as_of)}: expected an ISO date such as "
                             "2026-12-01")
        day = as_of
    desired = service.load_all(list(paths), day, breaches_fatal=False)
    backend = backend_of(ctx)
    evidence = [AccountEvidence(d, *service.state_as_of(backend, d.account, as_of))
                for d in desired]
    data = make_report(evidence, day)
    if fmt == "json":
        emit_json(data)
    elif fmt == "csv":
        from reconciler import userlist
        from reconciler.compliance import REPORT_COLUMNS

        click.echo(userlist.csv_text(REPORT_COLUMNS, report_rows(data)), nl=False)
    elif fmt == "markdown":
        from reconciler.inert import inert_markdown

        click.echo(report_markdown(data, lambda v: inert_markdown(str(v))), nl=False)
    else:
        click.echo(state_header(backend), nl=False)
        click.echo(inert_lines(report_text(data)), nl=False)


@cli.command("import")
@global_options
@click.argument("account")
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write to FILE instead of standard output: atomically, mode 0600, "
                   "creating its directories; never through a symlink.")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.option("--serial", type=click.IntRange(min=1), metavar="N",
              help="An older version (see `crctl history ACCOUNT`).")
@click.option("--factor", is_flag=True,
              help="Propose `defaults` (one per location, where it saves lines) instead of "
                   "every user's call_recording; checked by planning the result.")
@click.pass_obj
def import_(ctx: Context, account: str, out: str | None, force: bool,
            serial: int | None, factor: bool) -> None:
    """Write the current account as desired-state YAML (planning it shows no changes).

    An existing FILE is replaced only with --force; a failed write leaves it as it was.

    \b
    Examples:
      crctl import acme --out accounts/acme.yaml
      crctl import acme --factor --out accounts/acme.yaml
    """
    from reconciler import service
    from reconciler.importer import to_yaml

    backend = backend_of(ctx)
    current = service.read_existing(backend, account)
    source = current if serial is None else backend.read_account(account, serial)
    text = to_yaml(source)
    if factor:
        text = service.factored(source, text, today())
    if out:
        from reconciler.outfile import write_private

        write_private(out, text, force=force)
        click.echo(f"Wrote {inert_text(out)}.", err=True)
    else:
        click.echo(text, nl=False)


@cli.command()
@global_options
@click.argument("account")
@click.option("--confirm", required=True, metavar="ACCOUNT",
              help="Repeat the account id to confirm.")
@click.option("--force", is_flag=True,
              help="Override the safety limits (an account of 10 users or more, a "
                   "prevent_remove service).")
@click.option("--lock-timeout", default="10s", show_default=True, metavar="DURATION",
              help=LOCK_TIMEOUT_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: the outcome {account, serial, wrote, counts, terminated, mirror}.")
@click.pass_obj
def terminate(ctx: Context, account: str, confirm: str, force: bool, lock_timeout: str,
              fmt: str) -> None:
    """Terminate an account now: delete every user, the MIR mirror and ALL recordings.

    Decision Maker only. Terminating counts as removing 100%: refused with exit 5 for an
    account of 10 users or more (safety.max_remove_pct) or with a prevent_remove service,
    unless --force. Leaves a tombstone without personal data in terminated.jsonl;
    re-creating the account id later needs `crctl apply --force`.

    \b
    Example:
      crctl --actor jdoe terminate acme --confirm acme
    """
    from reconciler import service

    outcome = service.terminate(backend_of(ctx), account, confirm, today(), ctx.actor,
                                service.parse_duration(lock_timeout), force)
    if fmt == "json":
        emit_json(outcome.to_json())
        return
    deleted = outcome.terminated or {}
    click.echo(f"Terminated account {account}: {counted(deleted.get('users', 0), 'user')}, "
               f"{counted(deleted.get('cr_users', 0), 'CR service')} and "
               f"{counted(deleted.get('recordings', 0), 'recording')} deleted, with the MIR "
               "mirror, audit log and backups.")


@cli.command()
@global_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: [{account, users, cr_users, serial, last_change}].")
@click.pass_obj
def accounts(ctx: Context, fmt: str) -> None:
    """Every account in the state: id, name, users, CR users, serial, last change.

    \b
    Example:
      crctl accounts --format json
    """
    backend = backend_of(ctx)
    found = backend.accounts()
    if fmt == "json":
        emit_json([a.to_json() for a in found])
        return
    click.echo(state_header(backend), nl=False)
    rows = [("ACCOUNT", "NAME", "USERS", "CR USERS", "SERIAL", "LAST CHANGE")]
    rows += [(a.account, inert_text(a.name or "-"), str(a.users), str(a.cr_users),
              str(a.serial), a.last_change or "-") for a in found]
    click.echo(_table(rows), nl=False)
    click.echo(f"{counted(len(found), 'account')}.", err=True)


@cli.command()
@global_options
@click.argument("account")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: [{serial, time, actor, operation, counts, readable}].")
@click.pass_obj
def history(ctx: Context, account: str, fmt: str) -> None:
    """The account's versions: serial, time, actor, operation, action counts.

    Versions marked readable can be written out with `crctl import ACCOUNT --serial N`.

    \b
    Example:
      crctl history acme
    """
    from reconciler import service

    backend = backend_of(ctx)
    service.read_existing(backend, account)
    versions = backend.history(account)
    if fmt == "json":
        emit_json([v.to_json() for v in versions])
        return
    click.echo(state_header(backend), nl=False)
    rows = [("SERIAL", "TIME", "ACTOR", "OPERATION", "ACTIONS", "READABLE")]
    rows += [(str(v.serial), v.time or "-", inert_text(v.actor or "-"), v.operation or "-",
              ", ".join(f"{n} {k}" for k, n in sorted(v.counts.items())) or "-",
              "yes" if v.readable else "no") for v in versions]
    click.echo(_table(rows), nl=False)


AUDIT_COLUMNS = ("time", "serial", "actor", "operation", "action", "user", "user_id")


def _audit_cell(entry: dict[str, Any], column: str) -> Any:
    """An audit entry's value for a table column: a group action's entry names its group
    in the user column (`group sales`), as the plan lists it."""
    if column == "user" and entry.get("user") is None and entry.get("group") is not None:
        return f"group {entry['group']}"
    return entry.get(column)


@cli.command()
@global_options
@click.argument("account")
@click.option("--user", metavar="USERNAME", help="Only entries of this user.")
@click.option("--since", metavar="DATE", help="Only entries on or after this ISO date.")
@click.option("--until", metavar="DATE", help="Only entries on or before this ISO date.")
@click.option("--action", "actions", multiple=True, metavar="KIND",
              help="Only these actions (repeat): enable, change, remove, add_user, ...")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text",
              show_default=True,
              help="json: the entries as stored; csv: the columns of the text table.")
@click.pass_obj
def audit(ctx: Context, account: str, user: str | None, since: str | None,
          until: str | None, actions: tuple[str, ...], fmt: str) -> None:
    """The audit entries of an account, oldest first, filtered.

    \b
    Examples:
      crctl audit acme --user jdoe
      crctl audit acme --since 2026-11-01 --action remove --format csv
    """
    from reconciler.backends.base import AuditFilter, check_account_id
    from reconciler.model import is_iso_date

    for name, value in (("--since", since), ("--until", until)):
        if value is not None and not is_iso_date(value):
            raise InputError(f"{name} {inert_text(value)!s}: expected an ISO date such as "
                             "2026-12-01")
    backend = backend_of(ctx)
    entries = list(backend.audit(check_account_id(account), AuditFilter(
        user=user, since=since, until=until, actions=frozenset(actions))))
    if fmt == "json":
        emit_json(entries)
        return
    if fmt == "csv":
        from reconciler import userlist

        click.echo(userlist.csv_text(AUDIT_COLUMNS, [
            [_cell(_audit_cell(e, c)) for c in AUDIT_COLUMNS] for e in entries]), nl=False)
        return
    click.echo(state_header(backend), nl=False)
    rows = [tuple(c.upper() for c in AUDIT_COLUMNS)]
    rows += [tuple(inert_text(_cell(_audit_cell(e, c))) or "-" for c in AUDIT_COLUMNS)
             for e in entries]
    click.echo(_table(rows), nl=False)
    click.echo(f"{counted(len(entries), 'entry')}." if len(entries) == 1
               else f"{len(entries)} entries.", err=True)


@cli.command()
@global_options
@click.argument("which", type=click.Choice(["account", "plan"]), metavar="account|plan")
def schema(which: str) -> None:
    """Print a JSON Schema (2020-12): of desired-state files, or of plan documents.

    Keep a copy in your repository and point your editor at it (the YAML language server,
    as in VS Code, reads a `# yaml-language-server: $schema=PATH` comment line):

    \b
    Examples:
      crctl schema account > account.schema.json
      # then, in accounts/acme.yaml:
      # yaml-language-server: $schema=../account.schema.json
      crctl schema plan > plan.schema.json
    """
    from importlib import resources

    text = resources.files("reconciler").joinpath("schemas", f"{which}.schema.json")\
        .read_text("utf-8")
    click.echo(text, nl=not text.endswith("\n"))


@cli.command()
@global_options
@click.option("--print-sql", is_flag=True,
              help="Print the SQL (DDL and the GRANTs of a reader and a writer role) "
                   "instead of running it.")
@click.pass_obj
def init(ctx: Context, print_sql: bool) -> None:
    """Create or migrate the state (idempotent; safe to run concurrently).

    \b
    Examples:
      crctl init --state postgresql://crctl@db.example.com/crctl
      crctl init --state postgresql://crctl@db.example.com/crctl --print-sql > crctl.sql
    """
    backend = backend_of(ctx)
    if print_sql:
        sql = backend.ddl()
        if sql is None:
            raise InputError(f"the state {inert_text(backend.location)} is a directory: it "
                             "has no SQL (--print-sql is for a postgresql:// state)")
        click.echo(sql, nl=False)
        return
    backend.init()
    click.echo(inert_text(f"Initialized the state {backend.location}."))


@cli.command("migrate-state")
@global_options
@click.option("--to", "to", required=True, metavar="LOCATION",
              help="The state to copy to: a directory or a postgresql:// URL.")
@click.option("--lock-timeout", default="10s", show_default=True, metavar="DURATION",
              help=LOCK_TIMEOUT_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: {accounts, versions, audit_entries, recordings, tombstones, "
                   "verified}.")
@click.pass_obj
def migrate_state(ctx: Context, to: str, lock_timeout: str, fmt: str) -> None:
    """Copy every account, its history, MIR mirror, audit log and tombstones to another
    state; verify the copy; leave this one untouched. Refused if the target already
    holds one of the accounts.

    \b
    Example:
      crctl --state .crctl migrate-state --to postgresql://crctl@db.example.com/crctl
    """
    from reconciler import service
    from reconciler.migrate import migrate

    source = backend_of(ctx)
    target = open_backend(to, pg_schema=ctx.config().pg_schema)
    try:
        report = migrate(source, target, ctx.actor, service.parse_duration(lock_timeout))
    finally:
        target.close()
    if fmt == "json":
        emit_json(report.to_json())
        return
    entries = "1 audit entry" if report.audit_entries == 1 else \
        f"{report.audit_entries} audit entries"
    click.echo(inert_text(
        f"Copied {counted(len(report.accounts), 'account')} ("
        f"{counted(report.versions, 'version')}, {entries}, "
        f"{counted(report.recordings, 'recording')}) and "
        f"{counted(report.tombstones, 'tombstone')} from {source.location} to "
        f"{target.location}; the copy is verified."))


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned columns, two spaces apart; every cell inert (values come from the
    state, which an edited plan may have filled with control characters)."""
    rows = [tuple(inert_text(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                   + "\n" for r in rows)


def _show_what_the_terminal_cannot() -> None:
    """A name the terminal's encoding cannot show (Latin-1, ASCII) is printed as a
    backslash escape (\\u5c71), never a UnicodeEncodeError after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main() -> None:
    """Entry point: run click without its own exit handling, then map errors to codes."""
    gc.disable()  # a short-lived process building millions of objects: no cycles to collect
    _show_what_the_terminal_cannot()
    try:
        code = cli.main(standalone_mode=False, prog_name="crctl")
    except CrctlError as exc:
        # Paths and ids in messages may come from hostile names: one inert line each.
        message = "\n".join(inert_text(line) for line in str(exc).split("\n"))
        if message:
            click.echo(message if isinstance(exc, ValidationFailed) else f"Error: {message}",
                       err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            click.echo("Interrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        # Usage errors quote what was typed (a command, an option, a path): inert too.
        text = "\n".join(inert_text(line) for line in exc.format_message().split("\n"))
        shown = (click.UsageError(text, exc.ctx) if isinstance(exc, click.UsageError)
                 else click.ClickException(text))
        shown.show()
        sys.exit(EXIT_ERROR)  # usage errors are invalid input (exit 2 means "changes")
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - last resort: never a traceback for users
        if os.environ.get("CRCTL_DEBUG"):
            raise
        click.echo(inert_text(f"Error: internal error ({type(exc).__name__}: {exc}); "
                              "rerun with CRCTL_DEBUG=1 for details and please report it"),
                   err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)
