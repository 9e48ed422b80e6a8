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
    ACCOUNT_FIELDS,
    CR_FIELDS,
    DETAIL_FIELDS,
    GROUP_FIELDS,
    CurrentAccount,
    DesiredAccount,
    GroupRecord,
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
        created: dict[str, Any] = {"account": desired.account, "name": desired.name}
        if desired.time_zone is not None:
            created["time_zone"] = desired.time_zone
        buckets[Kind.CREATE_ACCOUNT].append(Action(
            Kind.CREATE_ACCOUNT, None, None, None, created))
    else:
        update = _account_update(desired, current)
        if update is not None:
            buckets[Kind.UPDATE_ACCOUNT].append(update)

    by_name = current.by_username()
    seen: dict[str, str] = {}  # user id -> the username the desired file gives it
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
        seen[uid] = username
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

    if current.groups or desired.groups or mirror.groups:
        _plan_groups(desired, current, seen, buckets)
        group_upserts, group_deletes = mir.group_drift(current, mirror, today)
        upserts.extend(group_upserts)
        deletes.extend(group_deletes)

    actions: list[Action] = []
    for kind in Kind:
        bucket = buckets[kind]
        bucket.sort(key=lambda a: a.user or a.group or "")
        actions.extend(bucket)
    return replace(base, actions=tuple(actions), mir_upsert=tuple(upserts),
                   mir_delete=tuple(deletes))


def _account_update(desired: DesiredAccount, current: CurrentAccount) -> Action | None:
    """update_account for the name and the time zone (recording_settings.time_zone).

    A file without `name:` (or without a time zone) leaves it as it is: many files never
    declare one, and dropping a value nobody wrote down would surprise (import writes it
    back). `time_zone` is part of the action only when the account has or gets one, so a
    rename of an account without a time zone plans as it always did."""
    before: dict[str, Any] = {"name": current.name}
    after: dict[str, Any] = {"name": current.name if desired.name is None else desired.name}
    if current.time_zone is not None or desired.time_zone is not None:
        before["time_zone"] = current.time_zone
        after["time_zone"] = current.time_zone if desired.time_zone is None \
            else desired.time_zone
    changed = tuple(f for f in ACCOUNT_FIELDS if f in before and before[f] != after[f])
    if not changed:
        return None
    return Action(Kind.UPDATE_ACCOUNT, None, None, before, after, changed)


def _plan_groups(desired: DesiredAccount, current: CurrentAccount, kept: dict[str, str],
                 buckets: dict[Kind, list[Action]]) -> None:
    """delete_group / add_group / update_group, members named by username.

    Stored groups hold user ids, so a renamed user stays in their groups; a group's
    `before` names each member as the plan leaves them (the new name of a renamed user,
    the last name of a deleted one). A member who is deleted or loses CR in this plan is
    dropped from their groups in the same plan, also when the file does not manage groups
    (no `recording_groups` key: the groups stay as they are otherwise)."""
    def name_of(uid: str) -> str:
        name = kept.get(uid)
        return name if name is not None else current.users[uid]["username"] \
            if uid in current.users else uid

    def stays(uid: str) -> bool:
        name = kept.get(uid)
        return name is not None and desired.users[name]["call_recording"] is not None

    have: dict[str, GroupRecord] = {}
    for group, record in current.groups.items():
        have[group] = {"managers": sorted(map(name_of, record["managers"])),
                       "members": sorted(map(name_of, record["members"]))}
    if desired.groups is not None:
        want = desired.groups
    else:
        want = {group: {"managers": sorted(name_of(u) for u in record["managers"] if stays(u)),
                        "members": sorted(name_of(u) for u in record["members"] if stays(u))}
                for group, record in current.groups.items()}
    for group, before in have.items():
        after = want.get(group)
        if after is None:
            buckets[Kind.DELETE_GROUP].append(Action(
                Kind.DELETE_GROUP, None, None, before, None, group=group))
        elif after != before:
            changed = tuple(f for f in GROUP_FIELDS if after[f] != before[f])
            buckets[Kind.UPDATE_GROUP].append(Action(
                Kind.UPDATE_GROUP, None, None, before, after, changed, group=group))
    for group, after in want.items():
        if group not in have:
            buckets[Kind.ADD_GROUP].append(Action(
                Kind.ADD_GROUP, None, None, None, after, group=group))


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
