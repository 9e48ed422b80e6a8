"""The planner: a pure function (desired, current, mirror, today) -> Plan.

Users are matched by username (or by `renamed_from` for a rename, which keeps the user
id), compared as whole records first (`==` on dicts, in C) and field by field only when
they differ, so the cost stays linear in the number of users and small per user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from reconciler import mirror as mir
from reconciler.model import (
    CR_FIELDS,
    DETAIL_FIELDS,
    CurrentAccount,
    DesiredAccount,
    Mirror,
    UserRecord,
    termination_counts,
)
from reconciler.plan import Action, Kind, Plan


def details(user: Mapping[str, Any]) -> dict[str, Any]:
    """A user record without its call recording (the subject of update_user).

    A Mapping: it takes a UserRecord and a plan's untrusted 'before' alike; the keys are
    DETAIL_FIELDS, not literals, which a TypedDict parameter would refuse."""
    return {f: user[f] for f in DETAIL_FIELDS}



def make_plan(desired: DesiredAccount, current: CurrentAccount, mirror: Mirror,
              today: str, *, created_at: str = "") -> Plan:
    """Every action that makes `current` match `desired`, in the order they apply.

    `desired` is validated (validate.desired_from_document), so the plan says its
    records are (`records_validated`): the applier does not check them a second time."""
    upserts, deletes = mir.drift(current.users, mirror.users, today)
    base = Plan(account=desired.account, desired_path=desired.path,
                desired_sha256=desired.sha256, lineage=current.lineage,
                serial=current.serial, max_remove_pct=desired.max_remove_pct,
                created_at=created_at, records_validated=True)
    if desired.terminate:
        if not current.exists:
            return base  # already gone (or never existed): nothing to do
        action = Action(Kind.TERMINATE_ACCOUNT, None, None,
                        termination_counts(current, mirror), None)
        return replace(base, actions=(action,))

    buckets: dict[Kind, list[Action]] = {kind: [] for kind in Kind}
    if not current.exists:
        buckets[Kind.CREATE_ACCOUNT].append(Action(
            Kind.CREATE_ACCOUNT, None, None, None,
            {"account": desired.account, "name": desired.name}))
    elif desired.name is not None and desired.name != current.name:
        # a file without `name:` leaves the name as it is: many files never declare one,
        # and dropping a name nobody wrote down would surprise (import writes it back)
        buckets[Kind.UPDATE_ACCOUNT].append(Action(
            Kind.UPDATE_ACCOUNT, None, None, {"name": current.name}, {"name": desired.name},
            ("name",)))

    by_name = current.by_username()
    seen: set[str] = set()
    for username, want in desired.users.items():
        uid = by_name.get(username)
        if uid is None and username in desired.renamed_from:
            uid = by_name.get(desired.renamed_from[username])
        if uid is None:
            buckets[Kind.ADD_USER].append(Action(
                Kind.ADD_USER, username, None, None, {**details(want), "call_recording": None}))
            if want["call_recording"] is not None:
                buckets[Kind.ENABLE].append(Action(
                    Kind.ENABLE, username, None, None, want["call_recording"]))
            continue
        seen.add(uid)
        have = current.users[uid]
        if want == have:
            continue
        _diff_user(uid, username, want, have, buckets)

    for uid, have in current.users.items():
        if uid in seen:
            continue
        if have["call_recording"] is not None:
            buckets[Kind.REMOVE].append(Action(
                Kind.REMOVE, have["username"], uid, have["call_recording"], None))
        buckets[Kind.DELETE_USER].append(Action(
            Kind.DELETE_USER, have["username"], uid, details(have), None))

    actions: list[Action] = []
    for kind in Kind:
        bucket = buckets[kind]
        bucket.sort(key=lambda a: a.user or "")
        actions.extend(bucket)
    return replace(base, actions=tuple(actions), mir_upsert=tuple(upserts),
                   mir_delete=tuple(deletes))


def _diff_user(uid: str, username: str, want: UserRecord, have: UserRecord,
               buckets: dict[Kind, list[Action]]) -> None:
    changed = tuple(f for f in DETAIL_FIELDS if want[f] != have[f])
    if changed:
        buckets[Kind.UPDATE_USER].append(Action(
            Kind.UPDATE_USER, username, uid, details(have), details(want), changed))
    want_cr, have_cr = want["call_recording"], have["call_recording"]
    if want_cr is None and have_cr is not None:
        buckets[Kind.REMOVE].append(Action(Kind.REMOVE, username, uid, have_cr, None))
    elif want_cr is not None and have_cr is None:
        buckets[Kind.ENABLE].append(Action(Kind.ENABLE, username, uid, None, want_cr))
    elif want_cr is not None and have_cr is not None:
        cr_changed = tuple(f for f in CR_FIELDS if want_cr[f] != have_cr[f])
        if cr_changed:  # a status-only difference is an activation, not a change
            buckets[Kind.CHANGE].append(Action(
                Kind.CHANGE, username, uid, have_cr, want_cr, cr_changed))
