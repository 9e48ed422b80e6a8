"""`crctl users ACCOUNT --access-report` as text, json or csv: one row per CR user, who
they can hear and why (the Reach list of reconciler/access.py).

Text is for terminals: every name passes through inert_text. JSON is exact (its escaping
is already inert) and CSV is userlist's (RFC 4180, guarded against formulas), so both keep
the values as stored, like `users --format json|csv`.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.access import GROUP_PREFIX, VIA_ALL, VIA_OWN, Reach
from reconciler.inert import inert_text
from reconciler.userlist import cell_width, csv_text

CSV_COLUMNS = ("username", "access", "can_hear", "via")
HEADERS = ("Username", "Access", "Can hear")


def as_json(reaches: list[Reach]) -> str:
    """[{username, access, can_hear: [usernames], via: ["all" | "own" | "group:NAME"]}]."""
    doc: list[dict[str, Any]] = [
        {"username": r.username, "access": r.access, "can_hear": list(r.can_hear),
         "via": list(r.via)} for r in reaches]
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def as_csv(reaches: list[Reach]) -> str:
    """can_hear and via as space-separated lists (usernames and group names hold no
    spaces)."""
    return csv_text(CSV_COLUMNS, [[r.username, r.access, " ".join(r.can_hear), " ".join(r.via)]
                                  for r in reaches])


def _heard(reach: Reach) -> str:
    if reach.via == (VIA_ALL,):
        return f"every CR user ({len(reach.can_hear)})"
    return ", ".join(reach.can_hear) if reach.can_hear else "nobody"


def _why(reach: Reach) -> str:
    """The reasons in parentheses: own, the groups managed; or why an own-group user
    hears nobody. Nothing for all and none (the access says it)."""
    if reach.ungrouped_on_demand:
        reasons = ["On-Demand and in no recording group"]
    else:
        reasons = [VIA_OWN] if VIA_OWN in reach.via else []
    groups = [v[len(GROUP_PREFIX):] for v in reach.via if v.startswith(GROUP_PREFIX)]
    if groups:
        reasons.append("manages " + ", ".join(groups))
    return f"  ({'; '.join(reasons)})" if reasons else ""


def as_text(reaches: list[Reach]) -> str:
    """Username and access in aligned columns, then who they hear and why, in full (a
    list is never cut short: it is the answer)."""
    rows = [(inert_text(r.username), inert_text(r.access), inert_text(_heard(r) + _why(r)))
            for r in reaches]
    widths = [max([cell_width(HEADERS[i])] + [cell_width(row[i]) for row in rows])
              for i in range(2)]

    def line(cells: tuple[str, str, str]) -> str:
        padded = [c + " " * (w - cell_width(c)) for c, w in zip(cells, widths, strict=False)]
        return "  ".join([*padded, cells[2]]).rstrip()

    return "\n".join([line(HEADERS), *map(line, rows)]) + "\n"
