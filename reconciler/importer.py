"""`crctl import`: the current account as desired-state YAML.

Written by hand rather than with yaml.dump so the output is stable and reads like the
examples: fixed key order, the schema comments, extensions and phone numbers quoted,
anything that could be read as something else double-quoted. Planning the output right
away shows no changes (tests check the round trip).

No `# yaml-language-server: $schema=...` line: any relative path in it would point
nowhere in the user's repository (the schema ships inside crctl). The header says how to
get a copy (`crctl schema account`) and the line to add once it is in place.

Safety limits are not written: the state does not keep the desired file's `safety`
block (DESIGN §3.3 lists it, no backend stores it yet), so there is nothing to import;
an imported file plans with the default limits and shows no changes either way.
"""

from __future__ import annotations

import json
import re

from reconciler.model import CR_PROFILES, CurrentAccount, RoleEntry, UserRecord

PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9 ._@+/'()-]*$")
RESERVED = frozenset(("y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"))
SCHEMA_HINT = (
    "# Editor validation: save the schema once with `crctl schema account > "
    "account.schema.json`,",
    "# then add the line `# yaml-language-server: $schema=PATH/account.schema.json` here.",
)


def scalar(text: str) -> str:
    """`text` as a YAML scalar our loader reads back as exactly `text`."""
    if PLAIN.match(text) and not text.endswith(" ") and text.lower() not in RESERVED \
            and ": " not in text and " #" not in text:
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    # YAML treats these as line breaks or refuses them even inside double quotes.
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in quoted)


def _escape(c: str) -> str:
    """A YAML double-quoted escape: \\u reads exactly 4 hex digits, \\U exactly 8."""
    n = ord(c)
    return f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}"


def _role(role: RoleEntry) -> str:
    """A role entry in flow style: `phone-manager` or `{phone-manager: [Ottawa, ...]}`."""
    if type(role) is str:
        return role
    assert isinstance(role, dict)
    return ", ".join(f"{{{key}: [{', '.join(map(scalar, places))}]}}"
                     for key, places in role.items())


CRKey = tuple[str, bool, str]  # product, prevent_remove, access: what a default can give


def factor_defaults(account: CurrentAccount) -> dict[str, CRKey]:
    """`import --factor`: per location, the CR settings a `defaults` entry should give.

    A location gets a default when it saves lines: the users with its most common
    settings drop their call_recording block (3-5 lines each), while its eligible users
    without CR then need `call_recording: null` (1 line) and the default costs 3-5.
    Users without a location, and activation dates, always stay explicit."""
    by_location: dict[str, dict[CRKey, int]] = {}
    without: dict[str, int] = {}
    for user in account.users.values():
        place = user["location"]
        if place is None or user["profile"] not in CR_PROFILES:
            continue
        cr = user["call_recording"]
        if cr is None:
            without[place] = without.get(place, 0) + 1
            continue
        key = (cr["product"], cr["prevent_remove"], cr["access"])
        counts = by_location.setdefault(place, {})
        counts[key] = counts.get(key, 0) + 1
    out: dict[str, CRKey] = {}
    for place, counts in sorted(by_location.items()):
        key, same = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        block = 2 + key[1] + (key[2] != "none")
        if same * block > without.get(place, 0) + block + 2:
            out[place] = key
    return out


def _default_lines(defaults: dict[str, CRKey]) -> list[str]:
    lines = ["defaults:"]
    for place, (product, prevent_remove, access) in defaults.items():
        lines += [f"  - match: {{location: {scalar(place)}}}", "    call_recording:",
                  f"      product: {product}"]
        if prevent_remove:
            lines.append("      prevent_remove: true")
        if access != "none":
            lines.append(f"      access: {access}")
    return lines


def to_yaml(account: CurrentAccount, defaults: dict[str, CRKey] | None = None) -> str:
    """The account as a desired-state file that plans to no changes; with `defaults`
    (from factor_defaults), CR settings a location's default gives are left to it."""
    defaults = defaults or {}
    lines = [f"# Imported from the current state of account {account.account} "
             f"(serial {account.serial}).",
             *SCHEMA_HINT,
             f"account: {account.account}"]
    if account.name:
        lines.append(f"name: {scalar(account.name)}")
    if account.time_zone:
        lines += ["recording_settings:", f"  time_zone: {scalar(account.time_zone)}"]
    if account.groups:
        lines += _groups(account)
    if defaults:
        lines += _default_lines(defaults)
    users = sorted(account.users.values(), key=lambda u: u["username"])
    lines.append("users:" if users else "users: {}")
    for user in users:
        lines.append(f"  {user['username']}:")
        for key in ("first_name", "last_name", "email"):
            lines.append(f"    {key}: {scalar(user[key])}")
        lines.append(f"    extension: {json.dumps(user['extension'])}")
        if user["phone_number"]:
            lines.append(f"    phone_number: {json.dumps(user['phone_number'])}")
        lines.append(f"    profile: {user['profile']}")
        if user["location"]:
            lines.append(f"    location: {scalar(user['location'])}")
        if user["roles"]:
            lines.append(f"    roles: [{', '.join(map(_role, user['roles']))}]")
        if user["tags"]:
            lines.append(f"    tags: [{', '.join(user['tags'])}]")
        lines += _cr_lines(user, defaults.get(user["location"] or "")
                           if user["profile"] in CR_PROFILES else None)
    return "\n".join(lines) + "\n"


def _cr_lines(user: UserRecord, given: CRKey | None) -> list[str]:
    """The user's call_recording block; `given`: what a default of their location gives
    them (then only what differs is written, and no CR is an explicit null)."""
    cr = user["call_recording"]
    if cr is None:
        return ["    call_recording: null"] if given is not None else []
    if given is not None and (cr["product"], cr["prevent_remove"], cr["access"]) == given:
        if not cr["activation_date"]:
            return []
        return ["    call_recording:", f"      activation_date: {cr['activation_date']}"]
    lines = ["    call_recording:", f"      product: {cr['product']}"]
    if cr["activation_date"]:
        lines.append(f"      activation_date: {cr['activation_date']}")
    if cr["prevent_remove"] or given is not None:
        lines.append(f"      prevent_remove: {'true' if cr['prevent_remove'] else 'false'}")
    if cr["access"] != "none" or given is not None:
        lines.append(f"      access: {cr['access']}")
    return lines


def _groups(account: CurrentAccount) -> list[str]:
    """`recording_groups`, members by username (the state holds user ids); group names
    and usernames follow one pattern, so they need no quoting."""
    name = {uid: u["username"] for uid, u in account.users.items()}
    lines = ["recording_groups:"]
    for group, record in sorted(account.groups.items()):
        lines.append(f"  {group}:")
        for f in ("managers", "members"):
            names = sorted(name.get(uid, uid) for uid in record[f])
            lines.append(f"    {f}: [{', '.join(names)}]")
    return lines
