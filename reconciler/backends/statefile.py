"""The account and mirror documents as stored: their shape, checked fast, and their
encoding. Shared by every backend, so a damaged record reads the same way wherever it is
kept: an error naming the place, the user and the field, never an empty account or a
crash further down (sorting usernames, Product(value), ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, compress, repeat
from operator import eq, gt, itemgetter
from typing import Any

from reconciler.errors import StateError
from reconciler.model import (
    ACCESS_LEVELS,
    PRODUCTS,
    CurrentAccount,
    Mirror,
    Profile,
    Role,
    Status,
    is_iso_date,
)

STATE_FORMAT = 1
USER_KEYS = frozenset(("username", "first_name", "last_name", "email", "extension",
                       "phone_number", "profile", "location", "roles", "tags",
                       "call_recording"))
CR_KEYS = frozenset(("product", "activation_date", "prevent_remove", "access", "status"))
# Fields a state written by an earlier crctl lacks, and the value they had there.
USER_DEFAULTS: dict[str, Any] = {"tags": []}
CR_DEFAULTS: dict[str, Any] = {"access": "none"}


def account_document(state: CurrentAccount,
                     change: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stored form of an account (the local account file; PostgreSQL's history)."""
    doc: dict[str, Any] = {
        "format_version": STATE_FORMAT,
        "account": state.account,
        "name": state.name,
        "lineage": state.lineage,
        "serial": state.serial,
        "next_user_id": state.next_user_id,
        "users": state.users,
        "recording_groups": state.groups,
        "recording_settings": {"time_zone": state.time_zone},
    }
    if change is not None:
        doc["change"] = change
    return doc


def decode_account(where: str, account: str, data: Any) -> CurrentAccount:
    """A stored account document, checked (StateError naming `where` if damaged)."""
    upgrade_users(data)
    check_portal(where, account, data)
    settings = data.get("recording_settings") or {}
    return CurrentAccount(account=account, lineage=data["lineage"], serial=data["serial"],
                          name=data.get("name"), next_user_id=data["next_user_id"],
                          users=data["users"], groups=data.get("recording_groups") or {},
                          time_zone=settings.get("time_zone"))


def upgrade_users(data: Any) -> None:
    """Fill in the fields that a state written by an earlier crctl lacks (USER_DEFAULTS,
    CR_DEFAULTS) in place, so it reads as it did then. The common case (a current state)
    costs one C-level pass: a column of key membership per field."""
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        return
    records = [u for u in users.values() if isinstance(u, dict)]
    for key, value in USER_DEFAULTS.items():
        if not all(map(dict.__contains__, records, repeat(key))):
            for user in records:
                if key not in user:
                    user[key] = type(value)(value)
    services = [cr for u in records if isinstance(cr := u.get("call_recording"), dict)]
    for key, value in CR_DEFAULTS.items():
        if not all(map(dict.__contains__, services, repeat(key))):
            for cr in services:
                cr.setdefault(key, value)


def mirror_document(mirror: Mirror) -> dict[str, Any]:
    return {"format_version": STATE_FORMAT, "account": mirror.account,
            "users": mirror.users, "groups": mirror.groups, "recordings": mirror.recordings}


def decode_mirror(where: str, account: str, data: Any) -> Mirror:
    if not (isinstance(data, dict) and data.get("account") == account
            and isinstance(data.get("users"), dict)
            and {dict}.issuperset(map(type, data["users"].values()))
            and isinstance(data.get("recordings"), list)):
        raise StateError(f"{where}: corrupt MIR mirror file (expected account {account!r}, "
                         "users and recordings); restore it from your last good copy, or "
                         "delete it and run `crctl sync` (recordings in it are lost then)")
    return Mirror(account=account, users=data["users"], recordings=data["recordings"],
                  groups=data.get("groups") or {})


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# One encoder for every audit line: json.dumps would build a new one per call, which is a
# third of the cost when a new account adds 100,000 users (same output as json.dumps).
audit_line = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


PROFILES = frozenset(p.value for p in Profile)
ROLES = frozenset(r.value for r in Role)
STATUSES = frozenset(s.value for s in Status)
STR_FIELDS = ("username", "first_name", "last_name", "email", "extension")
OPTIONAL_FIELDS = ("phone_number", "location")
FIELD_ORDER = (*STR_FIELDS, "profile", *OPTIONAL_FIELDS, "roles", "tags", "call_recording")
_FIELDS = itemgetter(*FIELD_ORDER)
_AT_PROFILE = FIELD_ORDER.index("profile")
_AT_OPTIONAL = tuple(FIELD_ORDER.index(f) for f in OPTIONAL_FIELDS)
_AT_ROLES = FIELD_ORDER.index("roles")
_AT_TAGS = FIELD_ORDER.index("tags")
_AT_CR = FIELD_ORDER.index("call_recording")
_CR_VALUES = itemgetter("product", "activation_date", "prevent_remove", "status", "access")
_STR_OR_NONE = frozenset((str, type(None)))
_STR = frozenset((str,))
# the types each field of FIELD_ORDER may have, and those of _CR_VALUES
FIELD_TYPES: tuple[frozenset[Any], ...]
FIELD_TYPES = (*[_STR] * len(STR_FIELDS), _STR, *[_STR_OR_NONE] * len(OPTIONAL_FIELDS),
               frozenset((list,)), frozenset((list,)), frozenset((dict, type(None))))
CR_TYPES: tuple[frozenset[Any], ...]
CR_TYPES = (_STR, _STR_OR_NONE, frozenset((bool,)), _STR, _STR)
USER_ID = re.compile(r"u([0-9]+)\Z")


def check_portal(path: str, account: str, data: Any) -> None:
    """A damaged file is an error naming the file, the user and the field, never an empty
    account or a TypeError further down (sorting usernames, Product(value), ...).

    It runs on every read of up to 100,000 users, so the common case is one C-level pass
    per column (itemgetter, map(type), set membership; no Python loop per user, no
    JSON Schema); only a file found damaged is walked user by user to name the problem.
    """
    problem = _top_problem(account, data)
    if problem is None and not _users_ok(data["users"], data["next_user_id"]):
        problem = _user_problem(data["users"], data["next_user_id"])
    if problem is not None:
        raise StateError(f"{path}: corrupt account file: {problem}; restore it from its "
                         ".backup or from your last good copy")


def _top_problem(account: str, data: Any) -> str | None:
    """The first problem of the account file's top level, or None. The messages are
    built only for a file that has one (a directory of 10,000 accounts reads 10,000)."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {shown(data)}"
    get = data.get
    checks: tuple[tuple[bool, Callable[[], str]], ...] = (
        (get("account") == account,
         lambda: f"account is {shown(get('account'))}, expected {account!r}"),
        (isinstance(get("lineage"), str) and data["lineage"] != "",
         lambda: f"lineage must be a non-empty string, got {shown(get('lineage'))}"),
        (type(get("serial")) is int and data["serial"] >= 0,
         lambda: f"serial must be a whole number, got {shown(get('serial'))}"),
        (type(get("next_user_id")) is int and data["next_user_id"] >= 1,
         lambda: "next_user_id must be a positive whole number, got "
                 f"{shown(get('next_user_id'))}"),
        (type(get("name")) in _STR_OR_NONE,
         lambda: f"name must be a string, got {shown(get('name'))}"),
        (isinstance(get("users"), dict),
         lambda: f"users must be an object keyed by user id, got {shown(get('users'))}"),
    )
    return next((why() for ok, why in checks if not ok), None)


def _users_ok(users: dict[str, Any], next_id: int) -> bool:
    """The fast check (see check_portal): True if every user record is well formed.

    One itemgetter pass pulls the ten fields of every user into a flat list (KeyError: a
    missing field; TypeError: a user that is not an object). The types of each user's
    fields, grouped into one tuple per user by zip, collapse into a set of a handful of
    distinct signatures, checked once each; strided slices of the flat list are the
    columns whose values must be in a set (profile, roles, the CR service's)."""
    count = len(FIELD_ORDER)
    try:
        flat = list(chain.from_iterable(map(_FIELDS, users.values())))
        signatures = set(zip(*[map(type, flat)] * count, strict=True))
        if not all(map(_fits, signatures, repeat(FIELD_TYPES))):
            return False
        services = flat[_AT_CR::count]
        present = list(filter(None, services))  # drops None, and {}: counted below
        roles = list(chain.from_iterable(flat[_AT_ROLES::count]))
        scoped = [r for r in roles if type(r) is dict] if dict in set(map(type, roles)) \
            else []
        if scoped:
            roles = [r for r in roles if type(r) is not dict]
        if not (PROFILES.issuperset(flat[_AT_PROFILE::count])
                and ROLES.issuperset(roles) and all(map(_scoped_role_ok, scoped))
                and {str}.issuperset(map(type, chain.from_iterable(flat[_AT_TAGS::count])))
                and len(present) + services.count(None) == len(services)):
            return False
        values = list(chain.from_iterable(map(_CR_VALUES, present)))
        width = len(CR_TYPES)
        signatures = set(zip(*[map(type, values)] * width, strict=True))
        if not all(map(_fits, signatures, repeat(CR_TYPES))):
            return False
        dates = set(values[1::width])
        dates.discard(None)
        if not (PRODUCTS.issuperset(values[0::width])
                and STATUSES.issuperset(values[3::width])
                and ACCESS_LEVELS.issuperset(values[4::width])
                and all(map(is_iso_date, dates))):
            return False
    except (KeyError, TypeError):  # a missing key; an unhashable value in a set check
        return False
    return not any(True for _ in _reused_ids(users, next_id))


def _scoped_role_ok(role: Any) -> bool:
    """{"phone-manager": [locations]}: a location Phone Manager's role entry."""
    places = role.get(Role.PHONE_MANAGER.value) if role.keys() == {
        Role.PHONE_MANAGER.value} else None
    return type(places) is list and bool(places) and {str}.issuperset(map(type, places))


def _fits(types: tuple[Any, ...], allowed: tuple[frozenset[Any], ...]) -> bool:
    return all(map(frozenset.__contains__, allowed, types))


def _reused_ids(users: Iterable[str], next_id: int) -> Iterator[str]:
    """User ids `u<n>` with n >= next_id: an added user would get (overwrite) them.

    Such an id is longer than f"u{next_id}", or as long and not sorting before it; the
    lengths are compared in C (map, compress), and the few keys left are parsed."""
    limit = f"u{next_id}"
    keys = list(users)
    lengths = list(map(len, keys))
    longest = max(lengths, default=0)
    if longest < len(limit):
        return
    candidates = chain(
        filter(limit.__le__, compress(keys, map(eq, lengths, repeat(len(limit))))),
        compress(keys, map(gt, lengths, repeat(len(limit)))) if longest > len(limit) else ())
    for uid in candidates:
        match = USER_ID.match(uid)
        if match and int(match.group(1)) >= next_id:
            yield uid


def _user_problem(users: dict[str, Any], next_id: int) -> str:
    """The first damaged user and field, in words (the slow path: only for a bad file)."""
    for uid, user in users.items():
        if not isinstance(user, dict):
            return f"user {uid}: expected an object, got {shown(user)}"
        name = user.get("username")
        who = f"user {uid} ({name})" if isinstance(name, str) else f"user {uid}"
        missing = sorted(USER_KEYS - user.keys())
        if missing:
            return f"{who}: missing field {', '.join(missing)}"
        for field in STR_FIELDS:
            if type(user[field]) is not str:
                return f"{who}: {field} must be a string, got {shown(user[field])}"
        for field in OPTIONAL_FIELDS:
            if type(user[field]) not in _STR_OR_NONE:
                return f"{who}: {field} must be a string or null, got {shown(user[field])}"
        if not _member(user["profile"], PROFILES):
            return f"{who}: profile must be one of {', '.join(sorted(PROFILES))}, got " \
                   f"{shown(user['profile'])}"
        roles = user["roles"]
        if type(roles) is not list or not all(
                _member(r, ROLES) or (type(r) is dict and _scoped_role_ok(r)) for r in roles):
            return f"{who}: roles must be a list of {', '.join(sorted(ROLES))} or " \
                   f"{{phone-manager: [locations]}}, got {shown(roles)}"
        tags = user["tags"]
        if type(tags) is not list or not all(type(t) is str for t in tags):
            return f"{who}: tags must be a list of strings, got {shown(tags)}"
        problem = _service_problem(user["call_recording"])
        if problem:
            return f"{who}: call_recording{problem}"
    for uid in _reused_ids(users, next_id):
        return (f"next_user_id is {next_id} but user id {uid} exists: the next added users "
                "would overwrite existing ones")
    return "unexpected content in users"


def _service_problem(cr: Any) -> str | None:
    if cr is None:
        return None
    if type(cr) is not dict:
        return f" must be an object or null, got {shown(cr)}"
    missing = sorted(CR_KEYS - cr.keys())
    if missing:
        return f": missing field {', '.join(missing)}"
    if not _member(cr["product"], PRODUCTS):
        return f".product must be one of {', '.join(sorted(PRODUCTS))}, got " \
               f"{shown(cr['product'])}"
    if not _member(cr["status"], STATUSES):
        return f".status must be one of {', '.join(sorted(STATUSES))}, got " \
               f"{shown(cr['status'])}"
    if not _member(cr["access"], ACCESS_LEVELS):
        return f".access must be one of {', '.join(sorted(ACCESS_LEVELS))}, got " \
               f"{shown(cr['access'])}"
    if type(cr["prevent_remove"]) is not bool:
        return f".prevent_remove must be true or false, got {shown(cr['prevent_remove'])}"
    when = cr["activation_date"]
    if when is not None and not (type(when) is str and is_iso_date(when)):
        return f".activation_date must be an ISO date (YYYY-MM-DD) or null, got {shown(when)}"
    return None


def _member(value: Any, allowed: frozenset[str]) -> bool:
    return type(value) is str and value in allowed


def shown(value: Any) -> str:
    """A short description of a JSON value for an error message (never the whole file)."""
    if isinstance(value, dict):
        return f"an object of {len(value)} key{'' if len(value) == 1 else 's'}"
    if isinstance(value, list) and not (
            len(value) <= 5 and {str, int, float, bool, type(None)}.issuperset(map(type, value))):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."

