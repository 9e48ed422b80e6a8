"""Markdown plans for pull-request comments.

Layout: per account a summary table, then removals and deletions called out, then the
details folded in <details> blocks. GitHub refuses comments over 65,536 characters, so
the essentials (tables, call-outs, summary lines) are laid out first and detail rows
are added while they fit; rows are never cut, and a note says how many were left out
and where to see them (`crctl show PLANFILE`).
"""

from __future__ import annotations

from reconciler.plan import Action, Kind, Plan
from reconciler.render.common import describe, summary_line

LIMIT = 65_536
RESERVE = 400  # room for the truncation note
CALLOUT_NAMES = 20
SECTIONS = (
    (Kind.REMOVE, "CR to remove"),
    (Kind.DELETE_USER, "Users to delete"),
    (Kind.ADD_USER, "Users to add"),
    (Kind.UPDATE_USER, "Users to update"),
    (Kind.CHANGE, "CR to change"),
    (Kind.ENABLE, "CR to enable"),
)


def cell(text: str) -> str:
    """Make text safe inside a table cell (pipes, HTML, line breaks)."""
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace(">", "&gt;").replace("\n", " ").replace("`", "\\`"))


def _head(plan: Plan) -> list[str]:
    out = [f"### crctl plan: `{plan.account}`", ""]
    if plan.terminates:
        out += ["> [!CAUTION]",
                f"> **{cell(summary_line(plan))}** The account, all its users, the MIR "
                "mirror and **all recordings** are deleted.", ""]
        return out
    if not plan.has_changes:
        return out + [summary_line(plan), ""]
    s = plan.summary()
    out += ["| Action | Count |", "|---|---:|",
            f"| CR to enable | {s['enable']} |", f"| CR to change | {s['change']} |",
            f"| CR to remove | {s['remove']} |", f"| Users to add | {s['add_user']} |",
            f"| Users to update | {s['update_user']} |",
            f"| Users to delete | {s['delete_user']} |"]
    drift = len(plan.mir_upsert) + len(plan.mir_delete)
    if drift:
        out.append(f"| MIR mirror drift | {drift} |")
    if plan.of_kind(Kind.CREATE_ACCOUNT):
        out.append("| Account to create | 1 |")
    out.append("")
    for kind, label in ((Kind.REMOVE, "CR removed from"), (Kind.DELETE_USER, "Deleted")):
        actions = plan.of_kind(kind)
        if actions:
            names = ", ".join(f"`{a.user}`" for a in actions[:CALLOUT_NAMES])
            more = f" and {len(actions) - CALLOUT_NAMES} more" if len(
                actions) > CALLOUT_NAMES else ""
            out += ["> [!WARNING]",
                    f"> **{label} {len(actions)} user{'s' if len(actions) != 1 else ''}:** "
                    f"{names}{more}. Recordings are kept.", ""]
    return out


def _row(action: Action) -> str:
    return f"| `{cell(action.user or '')}` | {cell(describe(action))} |"


def render_all(plans: list[Plan]) -> str:
    """One comment for all plans, under GitHub's size limit, rows never cut."""
    heads = ["\n".join(_head(p)) for p in plans]
    tails = [f"**{summary_line(p)}**\n" for p in plans]
    budget = LIMIT - RESERVE - sum(len(h) + len(t) + 2 for h, t in zip(heads, tails, strict=True))
    omitted = 0
    bodies: list[str] = []
    for plan in plans:
        parts: list[str] = []
        for kind, label in SECTIONS:
            actions = plan.of_kind(kind)
            if not actions:
                continue
            opening = (f"<details><summary>{label} ({len(actions)})</summary>\n\n"
                       "| User | Details |\n|---|---|\n")
            closing = "\n</details>\n"
            if budget < len(opening) + len(closing):
                omitted += len(actions)
                continue
            rows: list[str] = []
            used = len(opening) + len(closing)
            for action in actions:
                row = _row(action) + "\n"
                if used + len(row) > budget:
                    omitted += len(actions) - len(rows)
                    break
                rows.append(row)
                used += len(row)
            budget -= used
            parts.append(opening + "".join(rows) + closing)
        drift = [*plan.mir_upsert, *plan.mir_delete]
        if drift:
            text = (f"<details><summary>MIR mirror drift ({len(drift)})</summary>\n\n"
                    + "".join(f"- `{cell(m.username or m.user_id)}`: {cell(m.reason)}\n"
                              for m in drift) + "\n</details>\n")
            if len(text) <= budget:
                parts.append(text)
                budget -= len(text)
            else:
                omitted += len(drift)
        bodies.append("\n".join(parts))
    out = []
    for head, body, tail in zip(heads, bodies, tails, strict=True):
        out.append(head + "\n" + (body + "\n" if body else "") + tail)
    text = "\n".join(out)
    if omitted:
        text += (f"\n_{omitted} detail rows are not shown to stay under GitHub's comment "
                 "size limit; run `crctl show PLANFILE` on the saved plan for all of them._\n")
    return text
