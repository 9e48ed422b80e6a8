"""Plain-text plans for terminals and CI logs (`+`/`~`/`-` lines, full product names).

Every string from the plan is inert (reconciler.inert): one action is one line, and no
name can move the cursor, recolour the terminal or forge a `+ enable CR` line.
"""

from __future__ import annotations

import click

from reconciler.inert import inert_text
from reconciler.plan import Identity, Plan
from reconciler.render.common import (
    SIGNS,
    VERBS,
    all_violations,
    describe,
    identity_lines,
    summary_line,
    violations_title,
)

COLORS = {"+": "green", "~": "yellow", "-": "red"}


def render(plan: Plan, *, color: bool = False, footer: list[str] | None = None) -> str:
    """One account; `footer` lines (its identity) go just above the summary line, which
    stays the last line (DESIGN §5)."""
    lines: list[str] = []
    header = f"Account {inert_text(plan.account)}"
    header += f" (serial {plan.serial})" if plan.lineage else " (new)"
    lines.append(click.style(header, bold=True) if color else header)
    users = [inert_text(a.user or "") for a in plan.actions]
    width = max(map(len, users), default=0)
    for action, user in zip(plan.actions, users, strict=True):
        sign = SIGNS[action.action]
        verb = VERBS[action.action]
        who = user.ljust(width)
        # The wording itself is printable, so the whole line made inert once is every
        # value made inert (and one check per line instead of one per value).
        line = inert_text(f"  {sign} {verb:<17} {who}  {describe(action, str)}".rstrip())
        lines.append(click.style(line, fg=COLORS[sign]) if color else line)
    if plan.mir_upsert or plan.mir_delete:
        n = len(plan.mir_upsert) + len(plan.mir_delete)
        lines.append("")
        lines.append(f"MIR mirror drift ({n} {'entry' if n == 1 else 'entries'}; apply or "
                     "`crctl sync` repairs it):")
        for change in plan.mir_upsert:
            lines.append(inert_text(f"  ~ upsert {change.username or change.user_id}: "
                                    f"{change.reason}"))
        for change in plan.mir_delete:
            lines.append(inert_text(f"  - delete {change.username or change.user_id} "
                                    f"({change.user_id}): {change.reason}"))
    lines.append("")
    lines.extend(footer or ())
    lines.append(click.style(summary_line(plan), bold=True) if color else summary_line(plan))
    return "\n".join(lines) + "\n"


def render_all(plans: list[Plan], *, color: bool = False,
               ident: Identity | None = None) -> str:
    """The safety limits broken first, then every account; the digest (and a saved plan's
    checksum) above a single plan's summary line, or after the last account of a set."""
    found, forced = all_violations(plans)
    head = ""
    if found:
        title = violations_title(len(found), forced) + ":"
        head = "\n".join([click.style(title, fg="red", bold=True) if color else title,
                          *(inert_text(f"  - {v}") for v in found)]) + "\n\n"
    if ident is None:
        return head + "\n".join(render(p, color=color) for p in plans)
    if not ident.is_set:
        return head + render(plans[0], color=color, footer=identity_lines(ident))
    body = "\n".join(render(p, color=color) for p in plans)
    if not plans:
        body = "No changes. The plan set holds no account with changes.\n"
    return head + body + "\n" + "\n".join(identity_lines(ident)) + "\n"
