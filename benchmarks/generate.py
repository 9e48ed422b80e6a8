"""Seeded generator of synthetic accounts for the benchmark (and for tests).

`generate(n, seed)` gives a desired-state YAML text of n users, about 40% with CR, one
Decision Maker; `change(text_users, pct)` a copy where pct% of the users changed (a mix
of product changes, detail edits, CR removed or enabled, users added and deleted).
"""

from __future__ import annotations

import argparse
import random
from typing import Any

PROFILES_CR = ("Elite", "Premier", "Essentials", "Telephony")
CITIES = ("Ottawa", "Toronto", "Kanata", "Montreal", "Vancouver")


def make_users(n: int, seed: int = 1, cr_share: float = 0.4) -> dict[str, dict[str, Any]]:
    rng = random.Random(seed)
    users: dict[str, dict[str, Any]] = {}
    for i in range(n):
        name = f"user{i:06d}"
        user: dict[str, Any] = {
            "first_name": f"First{i}",
            "last_name": f"Last{rng.randrange(10_000)}",
            "email": f"{name}@big.example",
            "extension": str(100_000 + i),
            "phone_number": f"+1613{5_000_000 + i}",
            "profile": rng.choice(PROFILES_CR) if rng.random() < 0.9 else "Courtesy",
            "location": rng.choice(CITIES),
        }
        if i == 0:
            user["roles"] = ["decision-maker"]
            user["profile"] = "Elite"
        if user["profile"] != "Courtesy" and rng.random() < cr_share:
            user["call_recording"] = {"product": rng.choice(("always-on", "on-demand"))}
        users[name] = user
    return users


def change(users: dict[str, dict[str, Any]], pct: float, seed: int = 2) -> dict[str, Any]:
    """A copy with pct% of users changed; user000000 (the Decision Maker) is kept."""
    rng = random.Random(seed)
    out = {k: {**v} for k, v in users.items()}
    names = list(out)[1:]
    count = max(1, int(len(out) * pct / 100))
    next_id = len(out)
    for name in rng.sample(names, min(count, len(names))):
        kind = rng.randrange(5)
        user = out[name]
        if kind == 0 and "call_recording" in user:
            product = user["call_recording"]["product"]
            user["call_recording"] = {
                "product": "on-demand" if product == "always-on" else "always-on"}
        elif kind == 1:
            user["location"] = "Halifax"
        elif kind == 2 and "call_recording" in user:
            del user["call_recording"]
        elif kind == 3 and user["profile"] != "Courtesy" and "call_recording" not in user:
            user["call_recording"] = {"product": "always-on"}
        elif kind == 4:
            del out[name]
            new = f"user{next_id:06d}"
            out[new] = {**user, "email": f"{new}@big.example",
                        "extension": str(100_000 + next_id)}
            next_id += 1
        else:
            user["last_name"] = user["last_name"] + "x"
    return out


def to_yaml(account: str, users: dict[str, dict[str, Any]]) -> str:
    lines = [f"account: {account}", "safety:", "  max_remove_pct: 100", "users:"]
    for name, u in users.items():
        lines.append(f"  {name}:")
        lines.append(f"    first_name: {u['first_name']}")
        lines.append(f"    last_name: {u['last_name']}")
        lines.append(f"    email: {u['email']}")
        lines.append(f"    extension: \"{u['extension']}\"")
        lines.append(f"    phone_number: \"{u['phone_number']}\"")
        lines.append(f"    profile: {u['profile']}")
        lines.append(f"    location: {u['location']}")
        if u.get("roles"):
            lines.append(f"    roles: [{', '.join(u['roles'])}]")
        if u.get("tags"):
            lines.append(f"    tags: [{', '.join(u['tags'])}]")
        if u.get("call_recording"):
            lines.append("    call_recording:")
            lines.append(f"      product: {u['call_recording']['product']}")
            if u["call_recording"].get("access"):
                lines.append(f"      access: {u['call_recording']['access']}")
    return "\n".join(lines) + "\n"


# -- the wave-2 shapes: recording groups, defaults and policies -------------------------

def with_groups(users: dict[str, dict[str, Any]], size: int = 1000) -> str:
    """Put the CR users in recording groups of `size` members, each managed by the CR
    user before them (given own-group access, as a real manager has); returns the
    `recording_groups:` section. Users are changed in place (their CR access)."""
    cr = [n for n, u in users.items() if u.get("call_recording")]
    size = min(size, max(1, len(cr) // 10))  # a small account still gets some groups
    lines = ["recording_groups:"]
    for number, start in enumerate(range(0, len(cr) - size, size + 1)):
        manager, members = cr[start], cr[start + 1:start + 1 + size]
        users[manager]["call_recording"] = {**users[manager]["call_recording"],
                                            "access": "own-group"}
        lines += [f"  g{number:03d}:", f"    managers: [{manager}]",
                  f"    members: [{', '.join(members)}]"]
    return "\n".join(lines) + "\n"


def with_rules(users: dict[str, dict[str, Any]], count: int = 20) -> str:
    """`count` defaults and `count` policies that every user meets: CR users carry one of
    `count` tags, each policy requires CR of its tag's users, each default adjusts the
    access of one location and profile (no product: it never enables anyone). Returns the
    `defaults:` and `policies:` sections; users are changed in place (their tags)."""
    for name, user in users.items():  # by the user's number: a 1% change stays 1%
        if user.get("call_recording"):
            user["tags"] = [f"t{int(name[4:]) % count:02d}"]
        else:
            user.pop("tags", None)
    pairs = [(c, p) for c in CITIES for p in PROFILES_CR][:count]
    lines = ["defaults:"]
    for city, profile in pairs:
        lines += [f"  - match: {{location: {city}, profile: {profile}}}",
                  "    call_recording: {access: own-group}"]
    lines.append("policies:")
    for t in range(count):
        lines += [f"  p{t:02d}:", f"    description: tag t{t:02d} is recorded",
                  f"    match: {{tags: [t{t:02d}]}}", "    require: {product: any}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("users", type=int)
    parser.add_argument("--account", default="big")
    parser.add_argument("--changed-pct", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    users = make_users(args.users, args.seed)
    if args.changed_pct:
        users = change(users, args.changed_pct)
    print(to_yaml(args.account, users), end="")


if __name__ == "__main__":
    main()
