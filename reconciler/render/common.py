"""Wording shared by the text and markdown renderers.

Every string taken from a plan (names, dates, any edited `before`/`after` value) goes
through `quote`: `inert_text` for a terminal, `inert_markdown` for a PR comment, so a
hostile name can neither forge a line nor render a link.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from reconciler.inert import inert_text
from reconciler.model import product_name
from reconciler.plan import GROUP_SUMMARY_KEYS, Action, Identity, Kind, Plan

VERBS = {
    Kind.CREATE_ACCOUNT: "create account",
    Kind.UPDATE_ACCOUNT: "update account",
    Kind.REMOVE: "remove CR",
    Kind.DELETE_USER: "delete user",
    Kind.ADD_USER: "add user",
    Kind.UPDATE_USER: "update user",
    Kind.CHANGE: "change CR",
    Kind.ENABLE: "enable CR",
    Kind.DELETE_GROUP: "delete group",
    Kind.ADD_GROUP: "add group",
    Kind.UPDATE_GROUP: "update group",
    Kind.TERMINATE_ACCOUNT: "terminate account",
}
SIGNS = {Kind.CREATE_ACCOUNT: "+", Kind.UPDATE_ACCOUNT: "~", Kind.REMOVE: "-",
         Kind.DELETE_USER: "-", Kind.ADD_USER: "+", Kind.UPDATE_USER: "~", Kind.CHANGE: "~",
         Kind.ENABLE: "+", Kind.DELETE_GROUP: "-", Kind.ADD_GROUP: "+",
         Kind.UPDATE_GROUP: "~", Kind.TERMINATE_ACCOUNT: "-"}


def counted(n: int, noun: str) -> str:
    """'1 user', '2 users', '0 recordings': the plural for every count but 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def some_of(names: list[str], limit: int = 10) -> str:
    """'a, b, c' — or the first `limit` and 'and N more': a message about an MSP's
    10,000 accounts stays one readable line."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


Quote = Callable[[str], str]


def summary_line(plan: Plan, quote: Quote = inert_text) -> str:
    """The last line of a text plan, exactly as DESIGN §5 spells it."""
    account = quote(plan.account)
    if plan.terminates:
        counts = plan.actions[0].before or {}
        users, recordings = counts.get("users", 0), counts.get("recordings", 0)
        return (f"Plan: terminate account {account} ({counted(users, 'user')}, "
                f"{counted(recordings, 'recording')} will be deleted).")
    if not plan.has_changes:
        return f"No changes. Account {account} matches the desired state."
    s = plan.summary()
    return (f"Plan: {s['enable']} to enable, {s['change']} to change, {s['remove']} to "
            f"remove; {counted(s['add_user'], 'user')} to add, {s['update_user']} to "
            f"update, {s['delete_user']} to delete{group_clause(s, 'to ')}.")


def group_clause(counts: Mapping[str, int], to: str = "") -> str:
    """'; 1 group to add, 0 to update, 0 to delete' — only when `counts` has group
    actions (DESIGN §5), so every plan without groups reads as it always did."""
    adds, updates, deletes = (counts.get(k, 0) for k in GROUP_SUMMARY_KEYS)
    if not (adds or updates or deletes):
        return ""
    if to:
        return (f"; {counted(adds, 'group')} to add, {updates} to update, {deletes} to "
                "delete")
    return f"; {counted(adds, 'group')} added, {updates} updated, {deletes} deleted"


def summed(plans: list[Plan]) -> dict[str, int]:
    """The summary counts of several plans added up (the totals of a plan set)."""
    totals = dict.fromkeys(("enable", "change", "remove", "add_user", "update_user",
                            "delete_user", *GROUP_SUMMARY_KEYS), 0)
    for plan in plans:
        for key, count in plan.summary().items():
            if key in totals:
                totals[key] += count
    return totals


def set_summary_line(plans: list[Plan]) -> str:
    """The last line of a plan set (several paths or a directory): the totals of every
    account, or that none changes."""
    changed = [p for p in plans if p.has_changes]
    if not changed:
        n = len(plans)
        return (f"No changes. {counted(n, 'account')} {'matches' if n == 1 else 'match'} "
                "the desired state.")
    totals = summed(changed)
    terminating = sum(1 for p in changed if p.terminates)
    ending = f"; {counted(terminating, 'account')} to terminate" if terminating else ""
    return (f"Plan: {totals['enable']} to enable, {totals['change']} to change, "
            f"{totals['remove']} to remove; {counted(totals['add_user'], 'user')} to add, "
            f"{totals['update_user']} to update, {totals['delete_user']} to delete"
            f"{group_clause(totals, 'to ')}{ending}; in {counted(len(changed), 'account')}.")


def unchanged_line(plans: list[Plan]) -> str | None:
    """'12 accounts unchanged.' when a set has both changed and unchanged accounts (the
    unchanged ones are counted, not shown)."""
    unchanged = sum(1 for p in plans if not p.has_changes)
    if not unchanged or unchanged == len(plans):
        return None
    return f"{counted(unchanged, 'account')} unchanged."


def unmanaged_text(accounts: list[str], quote: Callable[[str], str] = str) -> str:
    """Accounts in the state that no file of the set declares: listed (the first
    NAMES_SHOWN), counted, and never touched by this plan."""
    names = ", ".join(quote(a) for a in accounts[:NAMES_SHOWN])
    more = len(accounts) - NAMES_SHOWN
    if more > 0:
        names += f" and {more} more (`crctl accounts` lists every account)"
    return (f"Not managed by these files ({counted(len(accounts), 'account')}, never "
            f"touched): {names}.")


NAMES_SHOWN = 20


def applied_text(counts: dict[str, int]) -> str:
    """'2 enabled, 1 changed, 1 removed; 1 user added, 3 updated, 0 deleted' (DESIGN §6)."""
    return (f"{counts.get('enable', 0)} enabled, {counts.get('change', 0)} changed, "
            f"{counts.get('remove', 0)} removed; {counted(counts.get('add_user', 0), 'user')} "
            f"added, {counts.get('update_user', 0)} updated, {counts.get('delete_user', 0)} "
            f"deleted{group_clause(counts)}")


def value(v: Any, quote: Quote = inert_text) -> str:
    """A field's value as shown in a plan: (none), [a, b], true/false or the text."""
    if v is None:
        return "(none)"
    if isinstance(v, list):
        return "[" + ", ".join(value(x, quote) for x in v) + "]"
    if isinstance(v, dict):  # a scoped role: {phone-manager: [Toronto]}, as YAML writes it
        return "{" + ", ".join(f"{quote(str(k))}: {value(x, quote)}"
                               for k, x in v.items()) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    return quote(str(v))


def cr_text(cr: Mapping[str, Any] | None, quote: Quote = inert_text) -> str:
    """MiCloud Connect MIR Always-On (pending until 2026-12-01)."""
    if not cr:
        return "(none)"
    text = quote(product_name(cr["product"]))
    if cr.get("status") == "pending":
        text += f" (pending until {value(cr.get('activation_date'), quote)})"
    elif cr.get("activation_date"):
        text += f" (from {value(cr['activation_date'], quote)})"
    if cr.get("prevent_remove"):
        text += ", prevent_remove"
    if cr.get("access") not in (None, "none"):
        text += f", access {value(cr['access'], quote)}"
    return text


def changes_text(action: Action, sep: str = "; ", quote: Quote = inert_text,
                 arrow: str = "->") -> str:
    """`field: old -> new` for each changed field of an update or change."""
    before, after = action.before or {}, action.after or {}
    parts = []
    for name in action.changed:
        old, new = before.get(name), after.get(name)
        if name == "product":
            old, new = _product(old), _product(new)
        parts.append(f"{quote(name)}: {value(old, quote)} {arrow} {value(new, quote)}")
    return sep.join(parts)


def group_changes(action: Action, quote: Quote = inert_text, sep: str = "; ") -> str:
    """`members: +kli -bob` for each changed list of an update_group."""
    before, after = action.before or {}, action.after or {}
    parts = []
    for name in action.changed:
        old, new = _names(before.get(name)), _names(after.get(name))
        moves = [f"+{quote(n)}" for n in sorted(new - old)] + \
            [f"-{quote(n)}" for n in sorted(old - new)]
        parts.append(f"{quote(name)}: {' '.join(moves) or '(reordered)'}")
    return sep.join(parts)


def _names(v: Any) -> set[str]:
    """A group list as a set of strings (an edited plan's odd value as its text)."""
    return {str(n) for n in v} if isinstance(v, list) else set() if v is None else {str(v)}


def _product(v: Any) -> Any:
    """A product's full name; any other value (an edited plan's) as it is."""
    try:
        return product_name(v)
    except (ValueError, TypeError):
        return v


def describe(action: Action, quote: Quote = inert_text, arrow: str = "->") -> str:
    """The one-line detail of an action, after its verb and user."""
    kind = action.action
    if kind is Kind.CREATE_ACCOUNT:
        after = action.after or {}
        return value(after.get("account"), quote) + (
            f" ({value(after['name'], quote)})" if after.get("name") else "") + (
            f", time zone {value(after['time_zone'], quote)}" if after.get("time_zone")
            else "")
    if kind is Kind.TERMINATE_ACCOUNT:
        c = action.before or {}
        return (f"{counted(c.get('users', 0), 'user')}, "
                f"{counted(c.get('cr_users', 0), 'CR service')}, "
                f"{counted(c.get('recordings', 0), 'recording')} and the MIR mirror will be "
                "deleted")
    if kind is Kind.REMOVE:
        return f"{cr_text(action.before, quote)} (recordings are kept)"
    if kind is Kind.ENABLE:
        return cr_text(action.after, quote)
    if kind in (Kind.ADD_GROUP, Kind.DELETE_GROUP):
        g = (action.after if kind is Kind.ADD_GROUP else action.before) or {}
        return (f"managers {value(g.get('managers'), quote)}, "
                f"members {value(g.get('members'), quote)}")
    if kind is Kind.UPDATE_GROUP:
        return group_changes(action, quote)
    if kind in (Kind.ADD_USER, Kind.DELETE_USER):
        u = (action.after if kind is Kind.ADD_USER else action.before) or {}
        return (f"{quote(str(u.get('first_name')))} {quote(str(u.get('last_name')))}, "
                f"ext {quote(str(u.get('extension')))}, {quote(str(u.get('profile')))}")
    return changes_text(action, quote=quote, arrow=arrow)


def all_violations(plans: list[Plan]) -> tuple[list[str], bool]:
    """Every safety limit the plans break, and whether all plans that break one were
    forced (made with --force)."""
    found = [v for p in plans for v in p.violations]
    forced = all(p.forced for p in plans if p.violations)
    return found, forced


def violations_title(count: int, forced: bool) -> str:
    """The heading of the violations called out before a plan (text and markdown)."""
    limits = "safety limit" if count == 1 else f"{count} safety limits"
    if forced:
        return f"Forced past {'a ' if count == 1 else ''}{limits} (planned with --force)"
    return f"Refused by {'a ' if count == 1 else ''}{limits} (--force overrides)"


def identity_lines(ident: Identity) -> list[str]:
    """`Digest: ...` (of the plan set, when it is one) and the saved plan's `Checksum:`."""
    of = f" of the plan set ({counted(ident.accounts or 0, 'account')})" \
        if ident.is_set else ""
    lines = [f"Digest{of}: {ident.digest}"]
    if ident.checksum:
        lines.append(f"Checksum{of}: {ident.checksum} (saved plan)")
    return lines
