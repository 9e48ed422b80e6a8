"""The MIR mirror: a pure projection of the portal, and the drift between the two.

The MIR portal holds every user whose CR service is live, with the details it shows
(full name, phone number, extension, product) and the recordings phones made. crctl
never creates or deletes recordings; it only keeps the user entries in line with the
portal. No I/O and no clock here: `today` is passed in.
"""

from __future__ import annotations

from typing import Any

from reconciler.model import UserRecord
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
