"""Workflows behind the commands: plan, apply (of files or saved plans), sync, terminate.

They tie the pure parts (validation, planner, safety, execute) to a backend and a clock;
the CLI only parses options, calls these, renders and maps errors to exit codes.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from reconciler import safety
from reconciler.applier import (
    Applier,
    Outcome,
    Prepared,
    activations,
    check_actor,
    check_actors,
    check_fresh,
)
from reconciler.backends.base import (
    AuditFilter,
    Backend,
    LockInfo,
    check_account_id,
    new_change,
)
from reconciler.errors import (
    CrctlError,
    InputError,
    SafetyLimitError,
    StalePlanError,
    ValidationFailed,
)
from reconciler.interrupts import deferred_interrupts
from reconciler.loader import printable
from reconciler.loadmany import load_files
from reconciler.model import CurrentAccount, DesiredAccount, Mirror
from reconciler.plan import MAX_PLAN_BYTES, Action, Kind, Plan
from reconciler.planner import make_plan
from reconciler.render.common import counted
from reconciler.runtime import default_who, now_iso
from reconciler.validate import duplicate_accounts, expand_paths, load_desired


@dataclass(frozen=True)
class Planned:
    """A plan with the state it was made from and the safety limits it breaks."""

    plan: Plan
    current: CurrentAccount
    mirror: Mirror
    violations: tuple[str, ...]


def load_all(paths: list[str], today: str, *,
             breaches_fatal: bool = True) -> list[DesiredAccount]:
    """Every desired file under `paths`; all problems of all files in one error.
    breaches_fatal=False: policy breaches are kept on each file, not refused (report)."""
    files = expand_paths(paths)
    if not files:
        raise InputError(f"no *.yaml or *.yml files in {printable(', '.join(paths))}")
    desired, diagnostics = [], []
    for loaded in load_files(files, lambda path: load_desired(
            path, today, breaches_fatal=breaches_fatal)):
        if isinstance(loaded, ValidationFailed):
            diagnostics.extend(loaded.diagnostics)
        else:
            desired.append(loaded)
    if diagnostics:
        raise ValidationFailed(diagnostics)
    duplicates = duplicate_accounts(desired)
    if duplicates:
        raise ValidationFailed(duplicates)
    return desired


def unmanaged(backend: Backend, planned: Iterable[DesiredAccount | Plan]) -> list[str]:
    """The accounts of the state that none of `planned` names: a plan set lists them as
    "not managed by these files" and never touches them (a file removed from the
    repository does not terminate its account: `terminate: true` does)."""
    named = {p.account for p in planned}
    return [a for a in backend.account_ids() if a not in named]


def plan_one(backend: Backend, desired: DesiredAccount, today: str) -> Planned:
    current = backend.read_account(desired.account)
    mirror = backend.read_mirror(desired.account)
    plan = make_plan(desired, current, mirror, today, created_at=now_iso())
    found = tuple(safety.violations(plan, current, plan.max_remove_pct,
                                    backend.tombstones(desired.account)))
    hook = policy_input(desired, plan, current)
    if found or hook is not None:
        plan = replace(plan, violations=found, policy_input=hook)
    return Planned(plan, current, mirror, found)


def policy_input(desired: DesiredAccount, plan: Plan, current: CurrentAccount
                 ) -> dict[str, Any] | None:
    """The plan's policy hook (Plan.policy_input), or None for a file without policies.
    A user an action names is described as the file has them (effective values), or as
    the state has them when the file deletes them."""
    rules = desired.rules
    if rules is None or not rules.policies:
        return None
    raw = desired.raw_policies
    users: dict[str, Any] = {}
    by_id = current.users
    for action in plan.actions:
        name = action.user
        if name is None or name in users:
            continue
        record: Any = desired.users.get(name)
        if record is None and action.user_id is not None:
            record = by_id.get(action.user_id)
        if record is None:
            continue
        users[name] = {"location": record["location"], "profile": record["profile"],
                       "roles": record["roles"], "tags": record["tags"],
                       "policies": [p.name for p in rules.applying(record)[1]]}
    return {"policies": raw, "users": users}


def enforce(planned: list[Planned], force: bool) -> None:
    """Exit 5 for the safety limits `planned` breaks, unless --force. A forced saved plan
    (`plan.forced`) carries the violations its reviewers saw: only others refuse it."""
    if force:
        return
    found: list[str] = []
    allowed: list[str] = []
    forced = False
    for p in planned:
        recorded = p.plan.violations if p.plan.forced else ()
        forced = forced or p.plan.forced
        allowed.extend(recorded)
        found.extend(v for v in p.violations if v not in recorded)
    if found:
        raise SafetyLimitError(safety.refusal(found, allowed if forced else None))


def expect_digest(plans: list[Plan], expected: str, *, as_list: bool) -> None:
    """`apply --expect DIGEST`: the fresh plan must be the reviewed one (exit 3 otherwise).

    Only the reviewed digest is known here, not its actions, so the refusal names what
    the fresh plan is, account by account (serial, digest, summary): set beside the
    reviewed comment, it shows which accounts moved on."""
    from reconciler.plan import identity, plan_set
    from reconciler.render.common import summary_line

    fresh = identity(plans, as_list=as_list)
    members = plan_set(plans) if as_list else plans[:1]
    digests = [p.digest for p in members]
    if fresh.matches_digest(expected, digests):
        return
    what = f"plan set of {counted(len(members), 'account')}" if as_list else "plan"
    lines: list[str] = [f"the fresh {what} has digest {fresh.digest}, not --expect "
             f"{printable(expected)}: the state or the desired files changed since the "
             "plan was reviewed. The fresh plan:"]
    for p in members[:EXPECT_ACCOUNTS]:
        serial = f"serial {p.serial}" if p.lineage else "new account"
        lines.append(f"  {p.account} ({serial}, digest {p.digest}): {summary_line(p)}")
    if len(members) > EXPECT_ACCOUNTS:
        lines.append(f"  ... and {len(members) - EXPECT_ACCOUNTS} more accounts")
    if not members:
        lines.append("  no account has changes")
    lines.append("Plan again, review the new plan, and apply with its digest.")
    raise StalePlanError("\n".join(lines))


EXPECT_ACCOUNTS = 20


def parse_duration(text: str) -> float:
    """'10s', '2m', '1m30s', '500ms', '1h' or plain seconds ('2.5')."""
    raw = text.strip().lower()
    value: float | None = None
    if _PLAIN_NUMBER.fullmatch(raw):
        value = float(raw)
    elif raw and _DURATION.fullmatch(raw):
        value = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(raw))
    if value is None or value != value or value == float("inf"):
        raise InputError(f"invalid duration {printable(text)!r}: use e.g. 10s, 2m, 1m30s or "
                         "500ms")
    return value


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PLAIN_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+")


def read_plan_file(path: str) -> bytes | None:
    """The bytes of the saved plan at `path`, or None if `path` is desired state.

    A saved plan is JSON; desired state is YAML (or a directory of it). The file is opened
    and read once: `apply /dev/stdin` or `apply <(...)` is a pipe, and what a sniff of its
    head took is gone for a second open. Only a plan is read whole (a large desired file
    is left to the YAML loader)."""
    if os.path.isdir(path) or path.endswith((".yaml", ".yml")):
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head.lstrip()[:1] not in (b"{", b"["):
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise InputError(
                        f"{printable(path)}: not a saved plan (JSON); desired state is read "
                        "from .yaml/.yml files or directories, not from a pipe")
                return None
            return head + fh.read(MAX_PLAN_BYTES - len(head))
    except OSError:
        return None  # the desired-state loader names the path and the reason


def wait_notice(account: str, holder: LockInfo | None, timeout: float) -> None:
    """Said once per account while a run waits for its lock (DESIGN §3.2, §6): who holds
    it and how long this run waits, so a CI log explains a pause before an exit 4."""
    who = holder.describe() if holder else "another process"
    print(printable(f"Waiting for the lock of account {account} (held by {who}) for up to "
                    f"{format_duration(timeout)} (--lock-timeout)..."),
          file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    """90.0 -> '1m30s', 10.0 -> '10s', 0.5 -> '500ms': as --lock-timeout takes them."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    if abs(seconds - whole) > 1e-9:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


@contextmanager
def locked(backend: Backend, accounts: list[str], actor: str | None, operation: str,
           timeout: float) -> Iterator[LockInfo]:
    """Hold the locks of `accounts` (sorted by the backend, so two runs never wait on
    each other in a cycle)."""
    def notice(account: str, holder: LockInfo | None) -> None:
        wait_notice(account, holder, timeout)

    with backend.lock(accounts, default_who(actor), operation, timeout, notice) as info:
        yield info


class ApplyRun:
    """One `crctl apply`: plans (or loads) under the lock, confirms, executes."""

    def __init__(self, backend: Backend, today: str, actor: str | None, force: bool,
                 lock_timeout: float):
        self.backend = backend
        self.today = today
        self.actor = actor
        self.force = force
        self.lock_timeout = lock_timeout
        self.committed: list[Outcome] = []  # what is written, whatever happens next
        self.to_apply: list[str] = []  # the accounts with changes, once confirmed

    def from_desired(self, paths: list[str], show: Callable[[list[Plan]], None],
                     confirm: Callable[[], bool], expect: str | None = None,
                     as_list: bool = False,
                     loaded: Callable[[list[DesiredAccount]], None] | None = None
                     ) -> list[Outcome]:
        """`expect`: the digest the fresh plan must have (of the plan set when `as_list`);
        `loaded`: called with the files once validated, before the lock (their warnings
        are shown before the plan)."""
        desired = load_all(paths, self.today)
        if loaded is not None:
            loaded(desired)
        accounts = [d.account for d in desired]
        with locked(self.backend, accounts, self.actor, "apply", self.lock_timeout):
            planned = [plan_one(self.backend, d, self.today) for d in desired]
            check_actors([(p.plan, p.current) for p in planned], self.actor)
            if expect is not None:
                expect_digest([p.plan for p in planned], expect, as_list=as_list)
            show([p.plan for p in planned])  # a refused plan too: the log shows it
            enforce(planned, self.force)
            if not any(p.plan.has_changes for p in planned):
                return []
            if not confirm():
                raise CrctlError("Apply cancelled.")
            return self._apply_all(planned)

    def from_plan_file(self, plans: list[Plan],
                       show: Callable[[list[Plan]], None]) -> list[Outcome]:
        for p in plans:
            check_account_id(p.account)
        check_distinct_accounts(plans)
        with locked(self.backend, [p.account for p in plans], self.actor, "apply",
                    self.lock_timeout):
            planned = []
            for p in plans:
                current = self.backend.read_account(p.account)
                mirror = self.backend.read_mirror(p.account)
                tombstones = self.backend.tombstones(p.account)
                check_fresh(p, current, tombstones, mirror)
                found = safety.violations(p, current, p.max_remove_pct, tombstones)
                planned.append(Planned(p, current, mirror, tuple(found)))
            check_actors([(p.plan, p.current) for p in planned], self.actor)
            for p in plans:
                self._check_not_altered(p)
            show(plans)
            enforce(planned, self.force)
            return self._apply_all(planned)

    def _check_not_altered(self, plan: Plan) -> None:
        """If the desired file the plan names is still there unchanged, the plan's actions
        must be exactly what it yields: a plan edited by hand (with its checksum redone)
        is refused."""
        path, digest = plan.desired_path, plan.desired_sha256
        if not path or not digest or not os.path.isfile(path):
            return
        try:
            with open(path, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() != digest:
                    return  # the file moved on since; the plan's own checks still apply
        except OSError:
            return  # unreadable (permissions, I/O): as if gone; the plan's checks apply
        try:
            desired = load_desired(path, self.today)
        except ValidationFailed:
            return
        replanned = plan_one(self.backend, desired, self.today).plan
        if plan.max_remove_pct != replanned.max_remove_pct:
            raise StalePlanError(
                f"account {plan.account}: plan was altered: its safety.max_remove_pct is "
                f"{plan.max_remove_pct}, but {path} (unchanged since planning) sets "
                f"{replanned.max_remove_pct}")
        mine = [_comparable(a) for a in plan.actions]
        theirs = [_comparable(a) for a in replanned.actions]
        if mine != theirs:
            raise StalePlanError(
                f"account {plan.account}: plan was altered: its actions differ from what "
                f"{path} (unchanged since planning) yields:\n{_differences(theirs, mine)}")

    def _apply_all(self, planned: list[Planned]) -> list[Outcome]:
        """Apply in order. Accounts that only change are written in batches
        (`Backend.write_accounts`: an MSP's 10,000 accounts with a few syncs per batch
        instead of nine fsyncs each); a termination or a MIR repair is written alone,
        after the batch before it. A batch is bounded in accounts and users, so memory
        stays that of a few accounts."""
        changing = [p for p in planned if p.plan.has_changes]
        self.to_apply = [p.plan.account for p in changing]
        applier = Applier(self.backend, self.today, self.actor or "")
        outcomes: list[Outcome] = []
        batch: list[Prepared] = []
        users = 0
        for p in changing:
            if p.plan.terminates:
                self._write_batch(batch)
                users = 0
                outcomes.append(self._apply(p))
                continue
            prepared = applier.prepare(p.plan, p.current, p.mirror)
            outcomes.append(prepared.outcome)
            if prepared.write is None:
                self._write_batch(batch)
                users = 0
                with deferred_interrupts(reraise=False) as held:
                    applier.sync_mirror(prepared.state, p.mirror, prepared.outcome)
                self._committed(prepared.outcome, held.interrupted)
                continue
            batch.append(prepared)
            users += len(prepared.state.users)
            if len(batch) >= BATCH_ACCOUNTS or users >= BATCH_USERS:
                self._write_batch(batch)
                users = 0
        self._write_batch(batch)
        return outcomes

    def _write_batch(self, batch: list[Prepared]) -> None:
        """Commit the prepared writes (and empty the list); Ctrl-C is held back until the
        batch is whole, then stops the run."""
        if not batch:
            return
        writes = [p.write for p in batch if p.write is not None]

        def committed(index: int) -> None:
            batch[index].outcome.wrote = True
            self.committed.append(batch[index].outcome)

        with deferred_interrupts(reraise=False) as held:
            self.backend.write_accounts(writes, committed)
        batch.clear()
        if held.interrupted:
            raise KeyboardInterrupt  # after the commit: the next account is not started

    def _committed(self, outcome: Outcome, interrupted: bool) -> None:
        if outcome.wrote or outcome.terminated is not None:
            self.committed.append(outcome)
        if interrupted:
            raise KeyboardInterrupt  # after the commit: the next account is not started

    def _apply(self, planned: Planned) -> Outcome:
        applier = Applier(self.backend, self.today, self.actor or "")
        outcome = applier.apply(planned.plan, planned.current, planned.mirror)
        self._committed(outcome, outcome.interrupted)
        return outcome


BATCH_ACCOUNTS = 100  # accounts written together (Backend.write_accounts)
BATCH_USERS = 50_000  # or fewer, when they are big: a batch holds their new states


def check_distinct_accounts(plans: list[Plan]) -> None:
    """A plan set names each account once (DESIGN §5). Two plans of one account are made
    from the same serial, so the second would fail after the first committed: half a
    set applied. Refused whole, before any lock is taken or anything written (exit 3)."""
    first: dict[str, int] = {}
    for index, plan in enumerate(plans, start=1):
        if plan.account in first:
            raise StalePlanError(
                f"account {plan.account}: the plan set names it twice (plans "
                f"{first[plan.account]} and {index}); nothing was applied: make a new plan")
        first[plan.account] = index


def _comparable(action: Action) -> dict[str, Any]:
    """An action as JSON without the CR `status`: that follows from the activation date and
    the day of planning (a plan made before the date and applied after it is not altered);
    the applier sets the status for the day it applies."""
    doc = action.to_json()
    for side in ("before", "after"):
        cr = doc[side]
        if action.action in CR_KINDS and isinstance(cr, dict) and "status" in cr:
            doc[side] = {k: v for k, v in cr.items() if k != "status"}
    return doc


CR_KINDS = frozenset((Kind.REMOVE, Kind.CHANGE, Kind.ENABLE))


def _differences(expected: list[dict[str, Any]], found: list[dict[str, Any]],
                 limit: int = 5) -> str:
    """The first few differing actions, one line each (linear; no whole-document diff)."""
    def name(a: dict[str, Any] | None) -> str:
        if a is None:
            return "(none)"
        who = a["user"] or a["user_id"]
        return f"{a['action']} for {who}" if who else str(a["action"])

    lines: list[str] = []
    for index in range(max(len(expected), len(found))):
        want = expected[index] if index < len(expected) else None
        have = found[index] if index < len(found) else None
        if want == have:
            continue
        if len(lines) == limit:
            lines.append("  ... and more")
            break
        if want is not None and have is not None and name(want) == name(have):
            fields = _changed_fields(want, have)
            lines.append(f"  action {index + 1} ({name(have)}): its "
                         f"{', '.join(fields)} {'differs' if len(fields) == 1 else 'differ'}")
        else:
            lines.append(f"  action {index + 1}: the plan has {name(have)}, the file yields "
                         f"{name(want)}")
    return "\n".join(lines)


def _changed_fields(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Field-level detail of one action that differs (DeepDiff on two small dicts only:
    over whole plans it would be quadratic-ish and slow, see DESIGN §7). Imported here:
    only a refused plan pays for importing it."""
    from deepdiff import DeepDiff

    paths = DeepDiff(expected, found).affected_paths
    return [_PATH_PART.sub(lambda m: f".{m[1]}" if m[1] else m[0], p)[len("root."):]
            for p in paths] or ["content"]


_PATH_PART = re.compile(r"\['([^'\]]*)'\]|\[\d+\]")


def sync(backend: Backend, account: str, today: str, actor: str | None,
         lock_timeout: float) -> Outcome:
    """Activate due pending services and make the MIR mirror match the portal."""
    check_account_id(account)
    with locked(backend, [account], actor, "sync", lock_timeout):
        current = read_existing(backend, account)
        mirror = backend.read_mirror(account)
        who = actor or "crctl sync"
        applier = Applier(backend, today, who, "sync")
        outcome = Outcome(account=account, serial=current.serial)
        due, entries = activations(account, current.users, today, who, now_iso())
        state = current
        if due:
            state = replace(current, serial=current.serial + 1,
                            users={**current.users, **due})
            backend.write_account(state, current.lineage, current.serial, entries,
                                  applier.mirror_for(state, mirror, outcome),
                                  new_change(who, "sync"))
            outcome.counts = {"activate": len(due)}
            outcome.wrote = True
        else:
            applier.sync_mirror(state, mirror, outcome)
        outcome.serial = state.serial
        return outcome


def state_as_of(backend: Backend, account: str, day: str | None
                ) -> tuple[CurrentAccount, list[dict[str, Any]]]:
    """The account as it was at the end of `day` (its last version on or before it; the
    current one when that is the newest) and its audit entries up to then, oldest first;
    day None: the current state and the whole log. An account with no version by then is
    an error: there is nothing to report on."""
    account = check_account_id(account)
    if day is None:
        return read_existing(backend, account), list(backend.audit(account))
    versions = [v for v in backend.history(account)
                if v.time is not None and v.time[:10] <= day]
    if not versions:
        raise InputError(f"account {account} has no version on or before {day} in "
                         f"{describe(backend)}")
    current = backend.read_account(account)
    if versions[-1].serial != current.serial:
        current = backend.read_account(account, versions[-1].serial)
    audit = list(backend.audit(account, AuditFilter(until=day)))
    return current, audit


def factored(source: CurrentAccount, explicit: str, today: str) -> str:
    """`import --factor`: the account with proposed `defaults`, proven to plan exactly as
    the explicit import does (the same effective users, so no changes), else an error."""
    from reconciler.importer import factor_defaults, to_yaml
    from reconciler.loader import load_bytes
    from reconciler.validate import desired_from_document

    defaults = factor_defaults(source)
    if not defaults:
        sys.stderr.write("No default would save lines: the import is explicit.\n")
        return explicit
    text = to_yaml(source, defaults)
    name = f"{source.account}.yaml"
    mirror = Mirror(source.account)
    plans = [make_plan(desired_from_document(load_bytes(name, t.encode()), today), source,
                       mirror, today) for t in (explicit, text)]
    if plans[1].actions != plans[0].actions:  # pragma: no cover - a bug in factoring
        raise InputError(f"the factored import of {source.account} would plan changes; "
                         "use the explicit import (without --factor)")
    saved = explicit.count("\n") - text.count("\n")
    sys.stderr.write(f"{len(defaults)} default(s) proposed; the file is {saved} lines "
                     "shorter and plans as the explicit import does.\n")
    return text


def read_existing(backend: Backend, account: str) -> CurrentAccount:
    current = backend.read_account(check_account_id(account))
    if not current.exists:
        raise InputError(f"account {account} does not exist in {describe(backend)}")
    return current


def terminate(backend: Backend, account: str, confirm: str, today: str, actor: str | None,
              lock_timeout: float, force: bool = False) -> Outcome:
    """Terminate now: Decision Maker only; deletes the account, its MIR mirror with every
    recording, its audit log, backups and lock, and leaves a tombstone.

    The safety limits of a planned termination apply (exit 5 unless `force`): removing
    100% of an account of 10 users or more, and any prevent_remove service. The state
    keeps no safety settings, so the limit is the default max_remove_pct."""
    check_account_id(account)
    if confirm != account:
        raise InputError(f"--confirm must repeat the account id: --confirm {account}")
    with locked(backend, [account], actor, "terminate", lock_timeout):
        current = read_existing(backend, account)
        mirror = backend.read_mirror(account)
        plan = Plan(account=account, desired_path=None, desired_sha256=None,
                    lineage=current.lineage, serial=current.serial, actions=(
                        Action(Kind.TERMINATE_ACCOUNT, None, None, None, None),))
        check_actor(plan, current, actor, "terminate")
        found = tuple(safety.termination_violations(account, current))
        enforce([Planned(plan, current, mirror, found)], force)
        return Applier(backend, today, actor or "", "terminate").apply(plan, current, mirror)


def describe(backend: Backend) -> str:
    return backend.location
