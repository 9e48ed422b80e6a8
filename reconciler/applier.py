"""Executing a plan: checks, the new account state, the MIR mirror sync and the audit log.

`execute` is pure (plan + current state -> new state + audit entries) and refuses any
action that does not fit the current state, so a hand-edited plan file cannot do what
a plan could not. `Applier` wraps it in the lock, the writes and their order: account
file (the commit point), then audit log, then MIR mirror. A crash between them leaves
drift that the next plan shows and the next apply or sync repairs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any, NoReturn

from reconciler import mirror as mir
from reconciler.backends.base import AccountWrite, Backend, new_change
from reconciler.errors import ActorNotAllowedError, InputError, StalePlanError
from reconciler.interrupts import deferred_interrupts
from reconciler.model import (
    ACCOUNT_FIELDS,
    CR_FIELDS,
    CR_MANAGER_ROLES,
    DETAIL_FIELDS,
    GROUP_FIELDS,
    CallRecordingRecord,
    CurrentAccount,
    GroupRecord,
    Mirror,
    Role,
    UserRecord,
    account_roles,
    is_iso_date,
    managed_locations,
    status_on,
    termination_counts,
)
from reconciler.plan import ORDER, Action, Kind, Plan
from reconciler.render.common import applied_text, counted, some_of
from reconciler.runtime import now_iso


@dataclass
class Outcome:
    """What an apply did, for the closing line."""

    account: str
    counts: dict[str, int] = field(default_factory=dict)
    terminated: dict[str, int] | None = None
    mirror_upserts: int = 0
    mirror_deletes: int = 0
    serial: int = 0
    wrote: bool = False
    interrupted: bool = False  # Ctrl-C came while the commit ran (held back until it ended)

    def to_json(self) -> dict[str, Any]:
        """The documented `--format json` shape of an apply, sync or termination."""
        return {"account": self.account, "serial": self.serial, "wrote": self.wrote,
                "counts": dict(self.counts), "terminated": self.terminated,
                "mirror": {"upserted": self.mirror_upserts, "deleted": self.mirror_deletes}}


@dataclass(slots=True)
class Prepared:
    """An executed plan before it is written (`Applier.prepare`)."""

    outcome: Outcome
    state: CurrentAccount  # the account after the plan
    write: AccountWrite | None  # None: the account is unchanged (a MIR repair at most)


def complete_line(outcome: Outcome) -> str:
    if outcome.terminated is not None:
        t = outcome.terminated
        return (f"Apply complete: account {outcome.account} terminated ("
                f"{counted(t['users'], 'user')}, {counted(t['recordings'], 'recording')} "
                "deleted).")
    return f"Apply complete: {applied_text(outcome.counts)}."


# -- who may apply ----------------------------------------------------------------------

def check_actor(plan: Plan, current: CurrentAccount, actor: str | None,
                operation: str = "apply") -> None:
    """Only a Decision Maker or Phone Manager of the current account (of the desired file
    for a new account) may apply; only a Decision Maker may terminate. Exit 6 otherwise.

    `operation` is the command the user ran (apply, terminate): the message names it."""
    check_actors([(plan, current)], actor, operation)


def check_actors(plans: Iterable[tuple[Plan, CurrentAccount]], actor: str | None,
                 operation: str = "apply") -> None:
    """`check_actor` for several accounts at once: only those with actions need the actor
    (an unchanged account, or one with MIR mirror drift alone, asks nothing of anyone:
    a bot that manages the changed accounts of a repository may apply all of it). Every
    refused account is named in one exit 6, so the user fixes the roles in one go."""
    acting = [(p, c) for p, c in plans if p.actions]
    if not acting:
        return
    if not actor:
        what = ("a Decision Maker" if all(p.terminates for p, _ in acting)
                else "a Decision Maker or Phone Manager")
        names = some_of([p.account for p, _ in acting])
        whose = ("the account" if len(acting) == 1 else
                 f"each of the {len(acting)} accounts with changes ({names})")
        prefix = f"account {names}: " if len(acting) == 1 else ""
        raise ActorNotAllowedError(
            f"{prefix}{operation} needs an actor: pass --actor USER or set CRCTL_ACTOR to "
            f"{what} of {whose}")
    refused = [(p.account, why) for p, c in acting
               if (why := actor_refusal(p, c, actor)) is not None]
    if not refused:
        return
    if len(refused) == 1:
        account, why = refused[0]
        raise ActorNotAllowedError(f"account {account}: {why}; nothing was changed")
    raise ActorNotAllowedError(
        f"actor {actor!r} may not {operation} {len(refused)} of the "
        f"{counted(len(acting), 'account')} with changes; nothing was changed:\n"
        + "\n".join(f"  account {account}: {why}" for account, why in refused))


def actor_refusal(plan: Plan, current: CurrentAccount, actor: str) -> str | None:
    """Why `actor` may not apply `plan` to `current` (None: they may).

    A Decision Maker or account Phone Manager may apply every action (a termination: a
    Decision Maker only). A Phone Manager of some locations (DESIGN §1) may apply the
    actions on users whose location, before and after the plan, is one of theirs; every
    action they may not apply is listed, so the reviewer sees what to hand to an account
    manager."""
    roles = frozenset((Role.DECISION_MAKER,)) if plan.terminates else CR_MANAGER_ROLES
    what = "a Decision Maker" if plan.terminates else "a Decision Maker or Phone Manager"
    if current.exists:
        mine = [u["roles"] for u in current.users.values() if u["username"] == actor]
        where = "the current account"
    else:
        mine = [a.after["roles"] for a in plan.of_kind(Kind.ADD_USER)
                if a.user == actor and isinstance(a.after, dict)]
        where = "the desired file (the account does not exist yet)"
    held = mine[0] if mine else []
    if roles.intersection(account_roles(held)):
        return None
    places = managed_locations(held) if not plan.terminates else frozenset()
    if not places:
        return f"actor {actor!r} is not {what} in {where}"
    refused = location_refusals(plan, current, places)
    if not refused:
        return None
    shown = "; ".join(refused[:REFUSALS_SHOWN])
    if len(refused) > REFUSALS_SHOWN:
        shown += f"; and {len(refused) - REFUSALS_SHOWN} more"
    return (f"actor {actor!r} is a Phone Manager of {', '.join(sorted(places))} only, and "
            f"may not apply {counted(len(refused), 'action')} of the plan: {shown}")


REFUSALS_SHOWN = 20
ACCOUNT_LEVEL = frozenset((Kind.CREATE_ACCOUNT, Kind.UPDATE_ACCOUNT, Kind.DELETE_GROUP,
                           Kind.ADD_GROUP, Kind.UPDATE_GROUP, Kind.TERMINATE_ACCOUNT))


def location_refusals(plan: Plan, current: CurrentAccount,
                      places: frozenset[str]) -> list[str]:
    """The plan's actions a Phone Manager of `places` may not apply: account-level ones,
    and those on a user whose location before (in `current`) or after (the plan's
    add_user / update_user, else unchanged) is not one of `places`."""
    after_of: dict[str, Any] = {}
    for a in plan.actions:
        if a.action in (_ADD_USER, _UPDATE_USER) and isinstance(a.after, dict):
            after_of[a.user or ""] = a.after.get("location")
    refused: list[str] = []
    for a in plan.actions:
        if a.action in ACCOUNT_LEVEL:
            refused.append(f"{a.action} {a.subject}".rstrip() + " (account-level)")
            continue
        user = current.users.get(a.user_id or "")
        before = user["location"] if user is not None else None
        seen = [before] if user is not None else []
        if a.action is not _DELETE_USER:
            seen.append(after_of.get(a.user or "", before))
        outside = [loc for loc in seen if loc not in places]
        if outside:
            where = outside[0] if outside[0] is not None else "no location"
            refused.append(f"{a.action} {a.user} ({where})")
    return refused


# -- the pure part ----------------------------------------------------------------------

# The action kinds as module constants: on Python 3.11 `Kind.ADD_USER` is a lookup
# through the enum's metaclass (about 0.4 µs), paid several times per action of a plan
# that adds 100,000 users.
(_CREATE_ACCOUNT, _UPDATE_ACCOUNT, _REMOVE, _DELETE_USER, _ADD_USER, _UPDATE_USER, _CHANGE,
 _ENABLE, _DELETE_GROUP, _ADD_GROUP, _UPDATE_GROUP, _TERMINATE_ACCOUNT) = (
    Kind.CREATE_ACCOUNT, Kind.UPDATE_ACCOUNT, Kind.REMOVE, Kind.DELETE_USER, Kind.ADD_USER,
    Kind.UPDATE_USER, Kind.CHANGE, Kind.ENABLE, Kind.DELETE_GROUP, Kind.ADD_GROUP,
    Kind.UPDATE_GROUP, Kind.TERMINATE_ACCOUNT)
_GROUP_KINDS = frozenset((_DELETE_GROUP, _ADD_GROUP, _UPDATE_GROUP))

def execute(plan: Plan, current: CurrentAccount, today: str, actor: str, *, now: str,
            new_lineage: Callable[[], str] = lambda: str(uuid.uuid4())
            ) -> tuple[CurrentAccount, list[dict[str, Any]]]:
    """The account after `plan`, one audit entry per action, then one per pending service
    it finds due on `today` (activations).

    Pure: the clock (`today`, the audit time `now`) and new lineages come in as arguments,
    so a property test can run it on any state without touching the machine.

    Raises StalePlanError for any action that does not fit `current` (a plan for other
    users, duplicated or out-of-order actions): nothing is written then.
    """
    _check_sequence(plan)
    if plan.actions and not current.exists \
            and plan.actions[0].action is not _CREATE_ACCOUNT:
        _refuse(plan, plan.actions[0], "the account does not exist and the plan does not "
                "create it")
    users = dict(current.users)
    lineage, serial, name = current.lineage, current.serial, current.name
    time_zone = current.time_zone
    groups: dict[str, GroupRecord] = dict(current.groups)
    next_id = current.next_user_id
    new_ids: dict[str, str] = {}
    by_name = {u["username"]: uid for uid, u in users.items()}
    audit: list[dict[str, Any]] = []
    stamp = now
    # what the audit entries name the plan by: a saved plan's checksum (what `apply
    # PLANFILE --checksum` pinned), else the digest of the plan made and shown in this run
    # (what `--expect` pins; memoised by the display, while a checksum of a document
    # nobody saved would be one more pass over every action, for no reader)
    plan_checksum = plan.checksum or plan.digest
    # a rename is an update_user, applied after a remove of the same user that already
    # names the user by the new name (the plan shows each user under one name)
    renamed_to = {a.user_id: a.user for a in plan.of_kind(_UPDATE_USER)}

    for action in plan.actions:
        kind = action.action
        uid = action.user_id
        _check_sides(plan, action)
        if kind is _CREATE_ACCOUNT:
            if current.exists:
                _refuse(plan, action, "the account already exists")
            with_zone = isinstance(action.after, dict) and "time_zone" in action.after
            after = _expect_after(plan, action, CREATE_ZONE_FIELDS if with_zone
                                  else CREATE_FIELDS)
            if after["account"] != plan.account or not isinstance(after["name"],
                                                                    str | None):
                _refuse(plan, action, "its 'after' names another account")
            if with_zone:
                _check_zone(plan, action, after["time_zone"])
                time_zone = after["time_zone"]
            lineage = new_lineage()
            name = after["name"]
        elif kind is _UPDATE_ACCOUNT:
            if not current.exists:
                _refuse(plan, action, "the account does not exist")
            have: dict[str, Any] = {"name": name, "time_zone": time_zone}
            before = action.before
            if not isinstance(before, dict) or before != (
                    have if "time_zone" in before or time_zone is not None
                    else {"name": name}):
                _refuse(plan, action, "the account's name or time zone differs from the "
                        "plan's 'before'")
            after = _expect_after(plan, action, ACCOUNT_FIELDS if "time_zone" in before
                                  else ("name",))
            if not _valid_name(after["name"]):  # the planner never plans dropping a name
                _refuse(plan, action, "its 'after' name must be 1-200 characters without "
                        "control characters (as in a desired file)")
            if "time_zone" in after:
                _check_zone(plan, action, after["time_zone"])
                time_zone = after["time_zone"]
            name = after["name"]
        elif kind in _GROUP_KINDS:
            _execute_group(plan, action, groups, users, current.users, by_name)
        elif kind is _ADD_USER:
            if uid is not None or action.user in by_name:
                _refuse(plan, action, "the user already exists")
            after = _expect_after(plan, action, ADD_FIELDS)
            if after["call_recording"] is not None:
                _refuse(plan, action, "its 'after' must have call_recording: null (an "
                        "enable action turns CR on)")
            uid = f"u{next_id}"
            next_id += 1
            record = _user_record(after, None)
            users[uid] = record
            by_name[record["username"]] = uid
            new_ids[record["username"]] = uid
        else:
            if uid is None and kind is _ENABLE:
                uid = new_ids.get(action.user or "")
            if uid is None or uid not in users:
                _refuse(plan, action, "no such user in the current account")
            user = users[uid]
            if kind is not _UPDATE_USER and action.user != user["username"] and not (
                    kind is _REMOVE and renamed_to.get(uid) == action.user):
                _refuse(plan, action, f"user id {uid} is {user['username']!r}, not "
                        f"{action.user!r}")
            if kind is _REMOVE:
                _expect_cr(plan, action, user["call_recording"], action.before)
                users[uid] = {**user, "call_recording": None}
            elif kind is _DELETE_USER:
                _expect_details(plan, action, user)
                if user["call_recording"] is not None:
                    _refuse(plan, action, "its CR service must be removed first")
                del users[uid]
                by_name.pop(user["username"], None)
            elif kind is _UPDATE_USER:
                _expect_details(plan, action, user)
                after = _expect_after(plan, action, DETAIL_FIELDS)
                record = _user_record(after, user["call_recording"])
                if record["username"] != user["username"]:
                    by_name.pop(user["username"], None)
                    by_name[record["username"]] = uid
                users[uid] = record
            elif kind in (_CHANGE, _ENABLE):
                if kind is _ENABLE and user["call_recording"] is not None:
                    _refuse(plan, action, "CR is already enabled")
                if kind is _CHANGE:
                    _expect_cr(plan, action, user["call_recording"], action.before)
                after = _expect_after(plan, action, CR_AFTER_FIELDS)
                _check_cr_values(plan, action, after)
                cr = _cr_record(after, today)
                users[uid] = {**user, "call_recording": cr}
        audit.append({"time": stamp, "actor": actor, "account": plan.account,
                      "action": str(kind), "user": action.user, "user_id": uid,
                      "before": action.before, "after": action.after,
                      "plan_checksum": plan_checksum})
        if action.group is not None:
            audit[-1]["group"] = action.group

    due, activated = activations(plan.account, users, today, actor, stamp)
    users.update(due)
    audit.extend(activated)
    _check_result(plan, users)
    if groups:
        _check_groups(plan, groups, users)
    changed = bool(plan.actions) or users != current.users
    if changed:
        serial += 1
    return replace(current, lineage=lineage, serial=serial, name=name, next_user_id=next_id,
                   users=users, groups=groups, time_zone=time_zone), audit


def _execute_group(plan: Plan, action: Action, groups: dict[str, GroupRecord],
                   users: Mapping[str, UserRecord], before_users: Mapping[str, UserRecord],
                   by_name: Mapping[str, str]) -> None:
    """One group action on `groups` (members as user ids; the plan names them by
    username). Its 'before' must be the group as the plan's user actions left it: each
    member by their name now, a deleted member by their last name (as the planner shows
    them)."""
    group = action.group
    if group is None or action.user is not None or action.user_id is not None:
        _refuse(plan, action, "it must name a group and no user")
    kind = action.action
    have = groups.get(group)
    if kind is _ADD_GROUP:
        if have is not None:
            _refuse(plan, action, f"group {group!r} already exists")
    else:
        if have is None:
            _refuse(plan, action, f"no group {group!r} in the current account")

        def name_of(uid: str) -> str:
            user = users.get(uid) or before_users.get(uid)
            return user["username"] if user is not None else uid

        shown = {f: sorted(map(name_of, have[f])) for f in GROUP_FIELDS}
        if action.before != shown:
            _refuse(plan, action, f"group {group!r} differs from the plan's 'before'")
    if kind is _DELETE_GROUP:
        del groups[group]
        return
    after = _expect_after(plan, action, GROUP_FIELDS)
    record: dict[str, list[str]] = {}
    for f in GROUP_FIELDS:
        names = after[f]
        if not isinstance(names, list) or not all(type(n) is str for n in names) \
                or len(set(names)) != len(names):
            _refuse(plan, action, f"its 'after' {f} must be a list of distinct usernames")
        unknown = [n for n in names if n not in by_name]
        if unknown:
            _refuse(plan, action, f"its 'after' {f} names no user of the account: "
                    + ", ".join(repr(n) for n in unknown[:5]))
        record[f] = [by_name[n] for n in names]
    groups[group] = {"managers": record["managers"], "members": record["members"]}


def _check_groups(plan: Plan, groups: Mapping[str, GroupRecord],
                  users: Mapping[str, UserRecord]) -> None:
    """The groups after the plan name CR users only, none as manager and member of one
    group (DESIGN §2): a plan that deletes a member or removes their CR without dropping
    them from the group is refused before anything is written."""
    problems: list[str] = []
    for group, record in groups.items():
        for f in GROUP_FIELDS:
            for uid in record[f]:
                user = users.get(uid)
                if user is None:
                    problems.append(f"group {group!r} names user id {uid}, which no longer "
                                    "exists")
                elif user["call_recording"] is None:
                    problems.append(f"group {group!r} names {user['username']!r}, who has "
                                    "no CR")
        both = set(record["managers"]) & set(record["members"])
        problems.extend(f"{users[uid]['username']!r} is both manager and member of group "
                        f"{group!r}" for uid in sorted(both) if uid in users)
        if len(problems) >= 5:
            break
    if problems:
        raise InputError(f"account {plan.account}: the plan would break the account's rules: "
                         + "; ".join(problems[:5]))


def _check_zone(plan: Plan, action: Action, zone: Any) -> None:
    from reconciler.validate import time_zones

    known = time_zones()
    if type(zone) is not str or (known and zone not in known):
        _refuse(plan, action, f"its 'after' time_zone {zone!r} is not an IANA time zone")


def activations(account: str, users: dict[str, UserRecord], today: str, actor: str,
                stamp: str) -> tuple[dict[str, UserRecord], list[dict[str, Any]]]:
    """The pending services due on `today`, activated (the changed user records), and one
    `activate` audit entry each. An apply (after its plan's actions) and `crctl sync` both
    take activations from here: the same activation writes the same entries whichever
    command made it (DESIGN §6). The entries carry no plan checksum: no plan asked for
    them, the activation date did."""
    due = mir.activate_due(users, today)
    entries = [{"time": stamp, "actor": actor, "account": account, "action": "activate",
                "user": user["username"], "user_id": uid,
                "before": users[uid]["call_recording"], "after": user["call_recording"],
                "plan_checksum": None}
               for uid, user in due.items()]
    return due, entries


def _check_sequence(plan: Plan) -> None:
    if plan.terminates and len(plan.actions) != 1:
        raise StalePlanError(f"account {plan.account}: terminate_account must be the only "
                             "action of its plan")
    seen: set[tuple[Kind, str | None, str | None, str | None]] = set()
    last = -1
    for action in plan.actions:
        order = ORDER[action.action]
        if order < last:
            raise StalePlanError(f"account {plan.account}: plan actions are out of order "
                                 f"({action.action} for {action.user} comes too late)")
        last = order
        key = (action.action, action.user, action.user_id, action.group)
        if key in seen:
            subject = action.user if action.group is None else f"group {action.group}"
            raise StalePlanError(f"account {plan.account}: plan repeats {action.action} for "
                                 f"{subject}")
        seen.add(key)


def _user_record(details: Mapping[str, Any], cr: CallRecordingRecord | None) -> UserRecord:
    """A user record from a plan's 'after': its keys were checked by _expect_after (exactly
    the record's fields, so a C-level copy is the record, whatever fields a record has),
    its values are checked by check_records (_check_result) before anything is written."""
    record: Any = {**details, "call_recording": cr}
    return record


def _cr_record(after: Mapping[str, Any], today: str) -> CallRecordingRecord:
    """A CR service from a plan's checked 'after' (_expect_after: exactly the service's
    fields; _check_cr_values); its status is the one it has today, whatever the plan
    said."""
    record: Any = {**after, "status": status_on(after["activation_date"], today)}
    return record


def _refuse(plan: Plan, action: Action, why: str) -> NoReturn:
    who = f" for group {action.group}" if action.group is not None else \
        "" if action.user is None and action.user_id is None else \
        f" for user {action.user} ({action.user_id or 'new'})"
    raise StalePlanError(f"account {plan.account}: plan action {action.action}{who} does not "
                         f"fit the current state: {why}")


ADD_FIELDS = (*DETAIL_FIELDS, "call_recording")
CREATE_FIELDS = ("account", "name")
CREATE_ZONE_FIELDS = ("account", "name", "time_zone")
CR_AFTER_FIELDS = (*CR_FIELDS, "status")
NO_BEFORE = frozenset((Kind.CREATE_ACCOUNT, Kind.ADD_USER, Kind.ENABLE, Kind.ADD_GROUP))
NO_AFTER = frozenset((Kind.REMOVE, Kind.DELETE_USER, Kind.TERMINATE_ACCOUNT,
                      Kind.DELETE_GROUP))
# the fields whose differences an action's `changed` lists
CHANGED_FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.UPDATE_USER: DETAIL_FIELDS, Kind.CHANGE: CR_FIELDS,
    Kind.UPDATE_ACCOUNT: ACCOUNT_FIELDS, Kind.UPDATE_GROUP: GROUP_FIELDS}


def _check_sides(plan: Plan, action: Action) -> None:
    """What a reviewer reads must be all there is: no 'before' where nothing exists, no
    'after' where nothing remains, and `changed` listing exactly the fields that change."""
    kind = action.action
    if kind in NO_BEFORE and action.before is not None:
        _refuse(plan, action, "its 'before' must be null")
    if kind in NO_AFTER and action.after is not None:
        _refuse(plan, action, "its 'after' must be null")
    if kind in (_CREATE_ACCOUNT, _UPDATE_ACCOUNT) and (
            action.user is not None or action.user_id is not None):
        _refuse(plan, action, "it must not name a user")
    fields = CHANGED_FIELDS.get(kind)
    if fields is None:
        expected: tuple[str, ...] = ()
    elif isinstance(action.before, dict) and isinstance(action.after, dict):
        expected = tuple(f for f in fields if action.before.get(f) != action.after.get(f))
    else:
        return  # the before/after checks that follow refuse it
    if action.changed != expected:
        _refuse(plan, action, f"its 'changed' must list {', '.join(expected) or 'nothing'}")


def _valid_name(name: Any) -> bool:
    """An account name a desired file could hold (schemas/account.schema.json `text`)."""
    return isinstance(name, str) and 1 <= len(name) <= 200 \
        and not any(c < " " or "\x7f" <= c <= "\x9f" for c in name)


def _check_cr_values(plan: Plan, action: Action, cr: dict[str, Any]) -> None:
    """Values of a CR service that check_records (the desired-file schema) lets through."""
    date_ = cr["activation_date"]
    if date_ is not None and not is_iso_date(date_):
        _refuse(plan, action, f"activation_date {date_!r} is not a date such as 2026-12-01")
    if cr["status"] not in ("active", "pending"):
        _refuse(plan, action, "its status must be active or pending")


def _expect_after(plan: Plan, action: Action, fields: tuple[str, ...]) -> dict[str, Any]:
    """The action's 'after' with exactly `fields`: an extra key would be dropped silently
    yet recorded in the audit log, so it is refused."""
    after = action.after
    if not isinstance(after, dict) or after.keys() != _key_set(fields):
        _refuse(plan, action, f"its 'after' must have exactly {', '.join(fields)}")
    if action.action in (_ADD_USER, _UPDATE_USER) and after["username"] != action.user:
        _refuse(plan, action, "its 'after' names another user")
    return after


@cache
def _key_set(fields: tuple[str, ...]) -> frozenset[str]:
    """`fields` as a set, built once per tuple (not once per action of a big plan)."""
    return frozenset(fields)


def _expect_details(plan: Plan, action: Action, user: Mapping[str, Any]) -> None:
    if action.before != {f: user[f] for f in DETAIL_FIELDS}:
        _refuse(plan, action, "the user's details differ from the plan's 'before'")


def _expect_cr(plan: Plan, action: Action, have: Mapping[str, Any] | None,
               before: Mapping[str, Any] | None) -> None:
    if have is None or before is None or any(have.get(f) != before.get(f) for f in CR_FIELDS):
        _refuse(plan, action, "the CR service differs from the plan's 'before'")


def _check_result(plan: Plan, users: dict[str, UserRecord]) -> None:
    """The account after the plan must still obey the domain rules (DESIGN §1-2).

    The records a plan touches are checked in full (schema and per-user rules) unless the
    plan says they were validated in this run (`Plan.records_validated`: made by the
    planner from a validated desired file); at 100,000 added users that second check was
    a fifth of the apply. The rules over the whole account (uniqueness, a Decision Maker)
    always run: they are a few set operations, and they also cover the users the plan
    leaves alone."""
    from reconciler.validate import check_records

    touched: set[str] = set()
    if not plan.records_validated:
        added = {a.user for a in plan.actions if a.action is Kind.ADD_USER}
        touched = {a.user_id for a in plan.actions if a.user_id}
        if added:
            touched |= {uid for uid, u in users.items() if u["username"] in added}
    problems = check_records(users, touched)
    if problems:
        raise InputError(f"account {plan.account}: the plan would break the account's rules: "
                         + "; ".join(problems[:5]))


def check_fresh(plan: Plan, current: CurrentAccount,
                tombstones: list[dict[str, Any]] | None = None,
                mirror: Mirror | None = None) -> None:
    """A saved plan applies only to the exact state it was made from (exit 3 otherwise).

    A plan made before its account existed matches every state without the account, so
    the account's tombstones tell whether the account was created (by this plan or any
    other) and terminated since the plan was made: it is stale then, and --force does not
    change that (DESIGN §5: a saved plan applies at most once).

    A termination also deletes what the serial does not track (recordings that phones
    add to the MIR mirror), so its counts are compared with `mirror` too: the reviewer
    approved deleting exactly those.
    """
    if plan.terminates and mirror is not None and current.exists \
            and plan.lineage == current.lineage:
        check_termination_counts(plan, current, mirror)
    if plan.lineage != current.lineage or plan.serial != current.serial:
        then = f"lineage {plan.lineage or '(none: new account)'}, serial {plan.serial}"
        now = (f"lineage {current.lineage}, serial {current.serial}" if current.exists
               else "the account does not exist")
        raise StalePlanError(f"account {plan.account}: plan is stale: it was made from "
                             f"{then}, but now {now}; make a new plan")
    if current.exists or not plan.actions:
        return
    mine = lineage_for(plan) if plan.checksum else None
    made = _instant(plan.created_at)
    for tomb in tombstones or ():
        when = _instant(tomb.get("terminated_at"))
        if mine is not None and tomb.get("lineage") == mine:
            why = "this plan already created it once"
        elif made is not None and when is not None and when > made:
            why = "it was created and terminated after the plan was made"
        else:
            continue
        raise StalePlanError(
            f"account {plan.account}: plan is stale: it was made before the account existed,"
            f" but {why} (terminated {tomb.get('terminated_at', '(unknown time)')}); a saved "
            "plan applies at most once: make a new plan")


COUNT_NAMES = {"users": "users", "cr_users": "CR users", "recordings": "recordings"}


def check_termination_counts(plan: Plan, current: CurrentAccount, mirror: Mirror) -> None:
    """A terminate_account plan's counts (its `before`) must be what terminating deletes
    now. Recordings come without a serial bump, so a changed recordings count is stale;
    users and CR users cannot change without one, so on the plan's own serial a
    difference there is an edit (re-checksummed or not): altered."""
    now = termination_counts(current, mirror)
    for action in plan.of_kind(Kind.TERMINATE_ACCOUNT):
        then = action.before
        if not isinstance(then, dict) or then.keys() != now.keys() or not all(
                type(v) is int and v >= 0 for v in then.values()):
            raise StalePlanError(
                f"account {plan.account}: plan was altered: its terminate_account 'before' "
                f"must hold exactly the counts {', '.join(now)} (whole numbers)")
        changes = [f"{COUNT_NAMES[k]} {then[k]} → {now[k]}" for k in now if then[k] != now[k]]
        if not changes:
            continue
        if plan.serial == current.serial and any(then[k] != now[k]
                                                 for k in ("users", "cr_users")):
            raise StalePlanError(
                f"account {plan.account}: plan was altered: its termination counts do not "
                f"match the account it was made from (serial {plan.serial}): "
                f"{', '.join(changes)}")
        if plan.serial != current.serial:
            changes.insert(0, f"serial {plan.serial} → {current.serial}")
        raise StalePlanError(
            f"account {plan.account}: plan is stale: the account changed since the plan was "
            f"made ({', '.join(changes)}); make a new plan to see what terminating it "
            "deletes now")


def lineage_for(plan: Plan) -> str:
    """The lineage a creation plan gives its account: derived from a saved plan's checksum,
    so that the tombstone left by a termination shows the plan was applied already;
    random for a plan made in the same run (it cannot be applied twice)."""
    if plan.checksum:
        return str(uuid.uuid5(LINEAGE_NAMESPACE, f"{plan.account}:{plan.checksum}"))
    return str(uuid.uuid4())


LINEAGE_NAMESPACE = uuid.UUID("5b0f7c1e-3a55-4f43-9d0e-6a1c2f7d9b21")


def _instant(text: Any) -> datetime | None:
    """An ISO timestamp (plans and tombstones use UTC '...Z'), or None if it is not one."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- the orchestration --------------------------------------------------------------------

class Applier:
    """Writes an executed plan through a backend, in crash-safe order."""

    def __init__(self, backend: Backend, today: str, actor: str, operation: str = "apply"):
        self.backend = backend
        self.today = today
        self.actor = actor
        self.operation = operation

    def apply(self, plan: Plan, current: CurrentAccount, mirror: Mirror) -> Outcome:
        if plan.terminates:
            outcome = Outcome(account=plan.account, counts=plan.summary(),
                              serial=current.serial)
            _check_sequence(plan)  # terminate_account must be alone (execute checks others)
            return self._terminate(plan, current, mirror, outcome)
        prepared = self.prepare(plan, current, mirror)
        outcome, write = prepared.outcome, prepared.write
        with deferred_interrupts(reraise=False) as held:
            if write is not None:
                self.backend.write_account(write.state, write.expected_lineage,
                                           write.expected_serial, write.audit, write.mirror,
                                           write.change)
                outcome.wrote = True
            else:
                self.sync_mirror(prepared.state, mirror, outcome)
        outcome.interrupted = held.interrupted
        return outcome

    def prepare(self, plan: Plan, current: CurrentAccount, mirror: Mirror) -> Prepared:
        """Execute a plan that does not terminate: its outcome and the one write that
        commits it (the account, its audit entries and the new MIR mirror together, one
        compare-and-swap: DESIGN §3.2), or no write when the account stays as it is."""
        outcome = Outcome(account=plan.account, counts=plan.summary(), serial=current.serial)
        new_state, audit = execute(plan, current, self.today, self.actor, now=now_iso(),
                                   new_lineage=lambda: lineage_for(plan))
        outcome.serial = new_state.serial
        if new_state.serial == current.serial:
            return Prepared(outcome, new_state, None)
        return Prepared(outcome, new_state, AccountWrite(
            new_state, current.lineage, current.serial, audit,
            self.mirror_for(new_state, mirror, outcome),
            new_change(self.actor, self.operation)))

    def mirror_for(self, state: CurrentAccount, mirror: Mirror,
                   outcome: Outcome | None = None) -> Mirror | None:
        """The MIR mirror `state` implies on this day, or None if `mirror` already is it;
        counts the upserts and deletes into `outcome`."""
        expected = mir.project(state.users, self.today)
        groups = mir.project_groups(state.groups, expected.keys())
        if expected == mirror.users and groups == mirror.groups:
            return None
        if outcome is not None:
            outcome.mirror_upserts = sum(1 for k, v in expected.items()
                                         if mirror.users.get(k) != v) + sum(
                1 for k, v in groups.items() if mirror.groups.get(k) != v)
            outcome.mirror_deletes = sum(1 for k in mirror.users if k not in expected) + sum(
                1 for k in mirror.groups if k not in groups)
        return Mirror(state.account, expected, mirror.recordings, groups)

    def sync_mirror(self, state: CurrentAccount, mirror: Mirror, outcome: Outcome) -> None:
        """Repair the MIR mirror alone (the portal is already right)."""
        new_mirror = self.mirror_for(state, mirror, outcome)
        if new_mirror is not None:
            self.backend.write_mirror(new_mirror)

    def _terminate(self, plan: Plan, current: CurrentAccount, mirror: Mirror,
                   outcome: Outcome) -> Outcome:
        counts = termination_counts(current, mirror)
        if plan.actions[0].before is not None:  # a saved or shown plan: exactly its counts
            check_termination_counts(plan, current, mirror)
        # tombstone first, then the deletion: a tombstone that cannot be written stops the
        # termination before anything is deleted
        with deferred_interrupts(reraise=False) as held:
            self.backend.terminate(plan.account, {
                "account": plan.account, "terminated_at": now_iso(), "actor": self.actor,
                "lineage": current.lineage, "deleted": counts})
        outcome.interrupted = held.interrupted
        outcome.terminated = counts
        return outcome
