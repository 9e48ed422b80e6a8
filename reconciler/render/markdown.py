"""Markdown plans for pull-request comments.

Layout: per account a summary table, then removals and deletions called out, then the
details folded in <details> blocks. GitHub refuses comments over 65,536 characters, so
the essentials (tables, call-outs, summary lines) are laid out first and detail rows
are added while they fit; rows are never cut, and a note says how many were left out
and where to see them (`crctl show PLANFILE`).
"""

from __future__ import annotations

from reconciler.inert import inert_markdown, markdown_code
from reconciler.plan import Action, Identity, Kind, Plan, identity
from reconciler.render.common import (
    all_violations,
    counted,
    describe,
    identity_lines,
    set_summary_line,
    summary_line,
    summed,
    unchanged_line,
    unmanaged_text,
    violations_title,
)

LIMIT = 65_536
RESERVE = 400  # room for the truncation note
CALLOUT_NAMES = 20
SECTIONS = (
    (Kind.UPDATE_ACCOUNT, "Account to update"),
    (Kind.REMOVE, "CR to remove"),
    (Kind.DELETE_USER, "Users to delete"),
    (Kind.ADD_USER, "Users to add"),
    (Kind.UPDATE_USER, "Users to update"),
    (Kind.CHANGE, "CR to change"),
    (Kind.ENABLE, "CR to enable"),
    (Kind.DELETE_GROUP, "Recording groups to delete"),
    (Kind.ADD_GROUP, "Recording groups to add"),
    (Kind.UPDATE_GROUP, "Recording groups to update"),
)


ARROW = "-&gt;"  # "->" written so that no renderer reads its ">" as HTML


def final_line(plan: Plan) -> str:
    """The text plan's last line, with the account id inert as markdown."""
    return summary_line(plan, inert_markdown)


def _head(plan: Plan) -> list[str]:
    out = [f"### crctl plan: {markdown_code(plan.account)}", ""]
    if plan.terminates:
        out += ["> [!CAUTION]",
                f"> **{final_line(plan)}** The account, all its users, the MIR "
                "mirror and **all recordings** are deleted.", ""]
        return out
    if not plan.has_changes:
        return out  # the bold last line says it
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
    if plan.of_kind(Kind.UPDATE_ACCOUNT):
        out.append("| Account to update | 1 |")
    out += _group_rows(s)
    out.append("")
    emptied = [a for a in plan.of_kind(Kind.DELETE_GROUP)
               if isinstance(a.before, dict) and (a.before.get("members")
                                                  or a.before.get("managers"))]
    if emptied:
        out += ["> [!CAUTION]",
                f"> **{counted(len(emptied), 'recording group')} with members to delete:** "
                f"{_names([a.subject for a in emptied])}. Its managers no longer hear its "
                "members' recordings.", ""]
    for kind, label in ((Kind.REMOVE, "CR removed from"), (Kind.DELETE_USER, "Deleted")):
        actions = plan.of_kind(kind)
        if actions:
            out += ["> [!WARNING]",
                    f"> **{label} {counted(len(actions), 'user')}:** "
                    f"{_names([a.user or '' for a in actions])}. Recordings are kept.", ""]
    return out


def _group_rows(counts: dict[str, int]) -> list[str]:
    """The summary table's group rows: only when there are group actions (as the text
    footer's group clause)."""
    if not any(counts.get(k) for k in ("add_group", "update_group", "delete_group")):
        return []
    return [f"| Recording groups to add | {counts.get('add_group', 0)} |",
            f"| Recording groups to update | {counts.get('update_group', 0)} |",
            f"| Recording groups to delete | {counts.get('delete_group', 0)} |"]


def _row(action: Action) -> str:
    """One table row: names in a code span or escaped, so none renders or ends the cell."""
    who = markdown_code(action.subject, in_table=True) if action.subject else "(the account)"
    return f"| {who} | {describe(action, inert_markdown, ARROW)} |"


def render_set(plans: list[Plan], unmanaged: list[str] | None = None,
               ident: Identity | None = None) -> str:
    """A plan set's comment (several paths or a directory): the preamble (marker,
    violations, digest), the accounts with changes as `render_all` lays them out, then
    the unchanged accounts counted, the accounts that no file declares, and the totals
    line; all of it under the size limit."""
    if ident is None:
        ident = identity(plans, as_list=True)
    if not plans:  # a saved set without accounts
        return render_all(plans, ident)
    notes = [f"_{line}_" for line in (unchanged_line(plans),) if line]
    if unmanaged:
        notes.append(f"**{unmanaged_text(unmanaged, markdown_code)}**")
    notes.append(f"**{set_summary_line(plans)}**")
    ending = "\n" + "\n\n".join(notes) + "\n"
    preamble = _preamble(plans, ident)
    changed = [p for p in plans if p.has_changes]
    if not changed:
        return preamble + f"### crctl plan: {counted(len(plans), 'account')}\n" + ending
    return preamble + _accounts(changed, LIMIT - len(preamble) - len(ending)) + ending


def render_all(plans: list[Plan], ident: Identity | None = None) -> str:
    """One comment for all plans, under GitHub's size limit, rows never cut.

    The preamble comes first and is never dropped: the marker line bots find the sticky
    comment by, the safety limits broken (`> [!CAUTION]`) and the digest (and a saved
    plan's checksum) reviewers pin. Then every account's summary table, call-outs and
    final line; detail rows are added while they fit. When even those essentials of
    every account do not fit (a directory of hundreds of accounts), the accounts become
    an overview instead: see `_overview`.
    """
    if ident is None:
        ident = identity(plans, as_list=len(plans) != 1)
    preamble = _preamble(plans, ident)
    return preamble + _accounts(plans, LIMIT - len(preamble))


def _preamble(plans: list[Plan], ident: Identity) -> str:
    out = [f"<!-- crctl-plan digest={ident.digest} -->"]
    found, forced = all_violations(plans)
    if found:
        out += ["> [!CAUTION]", f"> **{inert_markdown(violations_title(len(found), forced))}:**"]
        used = 0
        for index, violation in enumerate(found):
            line = f"> - {inert_markdown(violation)}"
            if used + len(line) > VIOLATIONS_BUDGET:
                out.append(f"> - ... and {len(found) - index} more; `crctl show PLANFILE` "
                           "lists them all")
                break
            out.append(line)
            used += len(line) + 1
        out.append("")
    out += [*(f"`{line}`" for line in identity_lines(ident)), "", ""]
    return "\n".join(out)


VIOLATIONS_BUDGET = 16_000  # the rest of the comment keeps room for the accounts


def _accounts(plans: list[Plan], limit: int) -> str:
    heads = ["\n".join(_head(p)) for p in plans]
    tails = [f"**{final_line(p)}**\n" for p in plans]
    if not plans:
        return "No changes. The plan set holds no account with changes.\n"
    # Each account is head + "\n" + [body + "\n"] + tail; accounts are joined by "\n".
    essentials = sum(len(h) + 1 + len(t) for h, t in zip(heads, tails, strict=True))
    essentials += len(plans) - 1
    if len(plans) > 1 and essentials > limit - RESERVE:
        return _overview(plans, heads, tails, limit)
    budget = limit - RESERVE - essentials
    omitted = 0
    bodies: list[str] = []
    for plan in plans:
        # A section costs its length plus one newline: the one joining it to the next
        # section, or the one after the body.
        parts: list[str] = []
        for kind, label in SECTIONS:
            actions = plan.of_kind(kind)
            if not actions:
                continue
            opening = (f"<details><summary>{label} ({len(actions)})</summary>\n\n"
                       "| User | Details |\n|---|---|\n")
            closing = "\n</details>\n"
            used = len(opening) + len(closing) + 1
            if budget < used:
                omitted += len(actions)
                continue
            rows: list[str] = []
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
                    + "".join(f"- {markdown_code(m.subject)}: "
                              f"{inert_markdown(m.reason)}\n"
                              for m in drift) + "\n</details>\n")
            if len(text) + 1 <= budget:
                parts.append(text)
                budget -= len(text) + 1
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


OVERVIEW_RESERVE = 3_000  # the closing note, with up to CALLOUT_NAMES account names


def _overview(plans: list[Plan], heads: list[str], tails: list[str], limit: int) -> str:
    """The comment for more accounts than fit: totals of all accounts first, terminations
    and removals called out by account, then whole account sections (table, call-outs,
    final line; no details) while they fit, and a note naming the accounts left out.

    Sections are picked by risk (terminations, then removals and deletions, then other
    changes, then accounts without changes) and shown in the order given.
    """
    top = _totals(plans)
    budget = limit - OVERVIEW_RESERVE - len(top)
    by_risk = sorted(range(len(plans)), key=lambda i: _risk(plans[i]))
    shown: set[int] = set()
    for i in by_risk:
        cost = len(heads[i]) + 1 + len(tails[i]) + 1  # and the "\n" joining it
        if cost <= budget:
            shown.add(i)
            budget -= cost
    sections = [heads[i] + "\n" + tails[i] for i in range(len(plans)) if i in shown]
    left = [p.account for i, p in enumerate(plans) if i not in shown]
    text = "\n".join([top, *sections])
    rows = sum(len(p.actions) + len(p.mir_upsert) + len(p.mir_delete) for p in plans)
    missing = f"{len(left)} of {len(plans)} accounts ({_names(left)}) and " if left else ""
    return text + (f"\n_{missing}the {rows} detail rows are not shown to stay under "
                   "GitHub's comment size limit; run `crctl show PLANFILE --format text` on "
                   "the saved plan for all of them, or `crctl plan` on one account's "
                   "file._\n")


def _risk(plan: Plan) -> int:
    if plan.terminates:
        return 0
    if plan.of_kind(Kind.REMOVE) or plan.of_kind(Kind.DELETE_USER):
        return 1
    return 2 if plan.has_changes else 3


def _names(accounts: list[str]) -> str:
    """`a`, `b` and 3 more: at most CALLOUT_NAMES names."""
    names = ", ".join(markdown_code(a) for a in accounts[:CALLOUT_NAMES])
    more = len(accounts) - CALLOUT_NAMES
    return f"{names} and {more} more" if more > 0 else names


def _totals(plans: list[Plan]) -> str:
    """The summary table of all accounts together, and their call-outs."""
    totals = summed(plans)
    drift = sum(len(p.mir_upsert) + len(p.mir_delete) for p in plans)
    changed = [p.account for p in plans if p.has_changes]
    created = [p.account for p in plans if p.of_kind(Kind.CREATE_ACCOUNT)]
    terminated = [p.account for p in plans if p.terminates]
    out = [f"### crctl plan: {len(plans)} accounts", "",
           "| Action | All accounts |", "|---|---:|",
           f"| Accounts with changes | {len(changed)} |",
           f"| Accounts to create | {len(created)} |",
           f"| Accounts to terminate | {len(terminated)} |",
           f"| CR to enable | {totals['enable']} |", f"| CR to change | {totals['change']} |",
           f"| CR to remove | {totals['remove']} |", f"| Users to add | {totals['add_user']} |",
           f"| Users to update | {totals['update_user']} |",
           f"| Users to delete | {totals['delete_user']} |", *_group_rows(totals)]
    if drift:
        out.append(f"| MIR mirror drift | {drift} |")
    out.append("")
    if terminated:
        out += ["> [!CAUTION]",
                f"> **{counted(len(terminated), 'account')} to terminate:** "
                f"{_names(terminated)}. Their users, MIR mirror and **all "
                "recordings** are deleted.", ""]
    removing = [p.account for p in plans
                if p.of_kind(Kind.REMOVE) or p.of_kind(Kind.DELETE_USER)]
    if removing:
        out += ["> [!WARNING]",
                f"> **CR removed from {counted(totals['remove'], 'user')} and "
                f"{counted(totals['delete_user'], 'user')} deleted in "
                f"{counted(len(removing), 'account')}:** {_names(removing)}. Recordings are "
                "kept.", ""]
    return "\n".join(out)
