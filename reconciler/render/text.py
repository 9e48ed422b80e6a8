"""Plain-text plans for terminals and CI logs (`+`/`~`/`-` lines, full product names).

Every string from the plan is inert (reconciler.inert): one action is one line, and no
name can move the cursor, recolour the terminal or forge a `+ enable CR` line.
"""

from __future__ import annotations

import click

from reconciler.applier import Outcome, complete_line
from reconciler.inert import inert_text
from reconciler.plan import Identity, Plan
from reconciler.render.common import (
    SIGNS,
    VERBS,
    all_violations,
    applied_text,
    counted,
    describe,
    identity_lines,
    set_summary_line,
    summary_line,
    unchanged_line,
    unmanaged_text,
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
    users = [inert_text(a.subject) for a in plan.actions]
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
            lines.append(inert_text(f"  ~ upsert {change.subject}: {change.reason}"))
        for change in plan.mir_delete:
            where = f" ({change.user_id})" if change.group is None else ""
            lines.append(inert_text(f"  - delete {change.subject}{where}: {change.reason}"))
    lines.append("")
    lines.extend(footer or ())
    lines.append(click.style(summary_line(plan), bold=True) if color else summary_line(plan))
    return "\n".join(lines) + "\n"


def render_all(plans: list[Plan], *, color: bool = False,
               ident: Identity | None = None) -> str:
    """The safety limits broken first, then every account; the digest (and a saved plan's
    checksum) above a single plan's summary line, or after the last account of a set."""
    head = _violations(plans, color)
    if ident is None:
        return head + "\n".join(render(p, color=color) for p in plans)
    if not ident.is_set:
        return head + render(plans[0], color=color, footer=identity_lines(ident))
    body = "\n".join(render(p, color=color) for p in plans)
    if not plans:
        body = "No changes. The plan set holds no account with changes.\n"
    return head + body + "\n" + "\n".join(identity_lines(ident)) + "\n"


def render_set(plans: list[Plan], *, unmanaged: list[str] | None = None,
               color: bool = False, ident: Identity | None = None) -> str:
    """A plan set (several paths or a directory, DESIGN §4): the safety limits broken
    first, the accounts with changes in full; the unchanged ones counted on one line, the
    accounts of the state that no file declares on another; the totals line; then the
    set's digest (and a saved set's checksum)."""
    if not plans:  # a saved set without accounts
        return render_all(plans, color=color, ident=ident)
    parts = [render(p, color=color) for p in plans if p.has_changes]
    tail = [line for line in (unchanged_line(plans),
                              unmanaged_text(unmanaged, inert_text) if unmanaged else None)
            if line]
    last = set_summary_line(plans)
    tail.append(click.style(last, bold=True) if color else last)
    text = _violations(plans, color) + "\n".join([*parts, "\n".join(tail) + "\n"])
    if ident is not None:
        text += "\n" + "\n".join(identity_lines(ident)) + "\n"
    return text


def _violations(plans: list[Plan], color: bool) -> str:
    """The safety limits broken, before anything else."""
    found, forced = all_violations(plans)
    if not found:
        return ""
    title = violations_title(len(found), forced) + ":"
    return "\n".join([click.style(title, fg="red", bold=True) if color else title,
                      *(inert_text(f"  - {v}") for v in found)]) + "\n\n"


def apply_lines(outcomes: list[Outcome], *, as_set: bool) -> list[str]:
    """The end of an apply: the MIR mirror repairs, then `Apply complete: ...` (one
    account) or one line per changed account and the totals `in N accounts` (a set)."""
    lines = [f"MIR mirror of {o.account}: {o.mirror_upserts} upserted, {o.mirror_deletes} "
             "deleted." for o in outcomes if o.mirror_upserts or o.mirror_deletes]
    if not as_set:
        return lines + [complete_line(o) for o in outcomes]
    totals: dict[str, int] = {}
    terminated = 0
    for o in outcomes:
        if o.terminated is not None:
            terminated += 1
            lines.append(f"{o.account}: terminated ({counted(o.terminated['users'], 'user')}"
                         f", {counted(o.terminated['recordings'], 'recording')} deleted).")
            continue
        lines.append(f"{o.account}: {applied_text(o.counts)}.")
        for key, n in o.counts.items():
            totals[key] = totals.get(key, 0) + n
    ending = f"; {counted(terminated, 'account')} terminated" if terminated else ""
    lines.append(f"Apply complete: {applied_text(totals)}{ending}; in "
                 f"{counted(len(outcomes), 'account')}.")
    return lines
