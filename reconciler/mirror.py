"""The MIR mirror: a pure projection of the portal, and the drift between the two.

The MIR portal holds every user whose CR service is live, with the details it shows
(full name, phone number, extension, product) and the recordings phones made. crctl
never creates or deletes recordings; it only keeps the user entries in line with the
portal. No I/O and no clock here: `today` is passed in.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from reconciler.model import CurrentAccount, GroupRecord, Mirror, UserRecord
from reconciler.plan import MirrorChange


def mirror_entry(user: UserRecord) -> dict[str, Any]:
    cr = user["call_recording"]
    assert cr is not None
    return {
        "username": user["username"],
        "full_name": f"{user['first_name']} {user['last_name']}",
        "email": user["email"],
        "extension": user["extension"],
        "phone_number": user["phone_number"],
        "product": cr["product"],
        "access": cr["access"],
    }


def is_live(user: UserRecord, today: str) -> bool:
    """Active, or pending with its activation date reached (due: sync activates it)."""
    cr = user["call_recording"]
    if cr is None:
        return False
    date = cr["activation_date"]
    return cr["status"] == "active" or (date is not None and date <= today)


def project(users: dict[str, UserRecord], today: str) -> dict[str, dict[str, Any]]:
    """The mirror's `users` as the portal implies them on `today`, keyed by user id."""
    return {uid: mirror_entry(u) for uid, u in users.items() if is_live(u, today)}


def drift(users: dict[str, UserRecord], mirror_users: dict[str, dict[str, Any]],
          today: str) -> tuple[list[MirrorChange], list[MirrorChange]]:
    """(upserts, deletes) that bring the mirror in line with the portal."""
    expected = project(users, today)
    upserts: list[MirrorChange] = []
    for uid, entry in expected.items():
        have = mirror_users.get(uid)
        if have == entry:
            continue
        user = users[uid]
        if have is None:
            cr = user["call_recording"]
            reason = ("activation date reached" if cr and cr["status"] == "pending"
                      else "missing from the MIR mirror")
        else:
            fields = sorted(k for k in entry if have.get(k) != entry[k])
            reason = "out of date: " + ", ".join(fields) if fields else "out of date"
        upserts.append(MirrorChange(uid, entry["username"], reason))
    deletes = [
        MirrorChange(uid, str(entry.get("username", "")) if isinstance(entry, dict) else "",
                     "CR not live in the portal")
        for uid, entry in mirror_users.items() if uid not in expected
    ]
    upserts.sort(key=lambda m: m.username)
    deletes.sort(key=lambda m: (m.username, m.user_id))
    return upserts, deletes


def activate_due(users: dict[str, UserRecord], today: str) -> dict[str, UserRecord]:
    """Users whose pending service is due, with status active (new records)."""
    out: dict[str, UserRecord] = {}
    for uid, user in users.items():
        cr = user["call_recording"]
        if cr is not None and cr["status"] == "pending" and is_live(user, today):
            out[uid] = {**user, "call_recording": {**cr, "status": "active"}}
    return out


def project_groups(groups: dict[str, GroupRecord],
                   live: Container[str]) -> dict[str, GroupRecord]:
    """The mirror's recording groups: the portal's, with the members and managers the MIR
    portal holds (a pending user is not in MIR yet, so not in its groups either)."""
    return {name: {"managers": [u for u in g["managers"] if u in live],
                   "members": [u for u in g["members"] if u in live]}
            for name, g in groups.items()}


def live_ids(users: dict[str, UserRecord], today: str) -> set[str]:
    return {uid for uid, u in users.items() if is_live(u, today)}


def group_drift(current: CurrentAccount, mirror: Mirror, today: str
                ) -> tuple[list[MirrorChange], list[MirrorChange]]:
    """(upserts, deletes) of recording groups that bring the mirror in line."""
    if not current.groups and not mirror.groups:
        return [], []
    expected = project_groups(current.groups, live_ids(current.users, today))
    upserts = [MirrorChange("", "", "missing from the MIR mirror" if name not in mirror.groups
                            else "out of date: " + ", ".join(
                                f for f in ("managers", "members")
                                if mirror.groups[name].get(f) != group[f]), group=name)
               for name, group in sorted(expected.items()) if mirror.groups.get(name) != group]
    deletes = [MirrorChange("", "", "no such group in the portal", group=name)
               for name in sorted(mirror.groups) if name not in expected]
    return upserts, deletes
