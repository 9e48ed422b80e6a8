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

from reconciler.model import CurrentAccount, RoleEntry

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


def to_yaml(account: CurrentAccount) -> str:
    """The account as a desired-state file that plans to no changes."""
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
        cr = user["call_recording"]
        if cr is not None:
            lines.append("    call_recording:")
            lines.append(f"      product: {cr['product']}")
            if cr["activation_date"]:
                lines.append(f"      activation_date: {cr['activation_date']}")
            if cr["prevent_remove"]:
                lines.append("      prevent_remove: true")
            if cr["access"] != "none":
                lines.append(f"      access: {cr['access']}")
    return "\n".join(lines) + "\n"


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
