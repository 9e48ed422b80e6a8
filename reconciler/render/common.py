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
from reconciler.plan import Action, Identity, Kind, Plan

VERBS = {
    Kind.CREATE_ACCOUNT: "create account",
    Kind.UPDATE_ACCOUNT: "update account",
    Kind.REMOVE: "remove CR",
    Kind.DELETE_USER: "delete user",
    Kind.ADD_USER: "add user",
    Kind.UPDATE_USER: "update user",
    Kind.CHANGE: "change CR",
    Kind.ENABLE: "enable CR",
    Kind.TERMINATE_ACCOUNT: "terminate account",
}
SIGNS = {Kind.CREATE_ACCOUNT: "+", Kind.UPDATE_ACCOUNT: "~", Kind.REMOVE: "-",
         Kind.DELETE_USER: "-", Kind.ADD_USER: "+", Kind.UPDATE_USER: "~", Kind.CHANGE: "~",
         Kind.ENABLE: "+",
         Kind.TERMINATE_ACCOUNT: "-"}


def counted(n: int, noun: str) -> str:
    """'1 user', '2 users', '0 recordings': the plural for every count but 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
            f"update, {s['delete_user']} to delete.")


def value(v: Any, quote: Quote = inert_text) -> str:
    """A field's value as shown in a plan: (none), [a, b], true/false or the text."""
    if v is None:
        return "(none)"
    if isinstance(v, list):
        return "[" + ", ".join(quote(str(x)) for x in v) + "]"
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
            f" ({value(after['name'], quote)})" if after.get("name") else "")
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
