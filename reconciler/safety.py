"""Safety limits (DESIGN §5), checked at plan and at apply; only --force overrides them."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from reconciler.model import CurrentAccount
from reconciler.plan import Kind, Plan

MIN_USERS = 10  # below this, percentages of tiny accounts are noise
DEFAULT_MAX_REMOVE_PCT = 30
NAMES = 10  # users named in one sentence; the rest are counted


def violations(plan: Plan, current: CurrentAccount, max_remove_pct: int,
               tombstones: list[dict[str, Any]] | None = None) -> list[str]:
    """Why `plan` is refused, one sentence each (empty: it may go ahead).

    The sentences depend only on the plan and the state it applies to, so a forced plan's
    recorded violations compare equal to those found again at apply (same serial)."""
    if plan.terminates and len(plan.actions) == 1:  # else the applier refuses it (exit 3)
        return termination_violations(plan.account, current, max_remove_pct)
    found: list[str] = []
    users = len(current.users)
    cr_users = sum(1 for u in current.users.values() if u["call_recording"] is not None)
    removes = plan.of_kind(Kind.REMOVE)
    deletes = plan.of_kind(Kind.DELETE_USER)
    if users >= MIN_USERS:
        for count, total, what in ((len(removes), cr_users, "removes CR from"),
                                   (len(deletes), users, "deletes")):
            if total and count * 100 > max_remove_pct * total:
                found.append(
                    f"account {plan.account}: the plan {what} {count} of {total} "
                    f"{'CR users' if what.startswith('removes') else 'users'} "
                    f"({_share(count, total, max_remove_pct)}%), more than safety.max_remove_pct = "
                    f"{max_remove_pct}%")
    for action in removes:
        if action.before and action.before.get("prevent_remove"):
            found.append(
                f"account {plan.account}: user {action.user} has prevent_remove: true on its "
                "CR service; set prevent_remove: false and apply, then remove it")
    if tombstones and plan.of_kind(Kind.CREATE_ACCOUNT):
        when = tombstones[-1].get("terminated_at", "earlier")
        found.append(f"account {plan.account} was terminated ({when}); re-creating a "
                     "terminated account id needs --force")
    return found


def termination_violations(account: str, current: CurrentAccount,
                           max_remove_pct: int = DEFAULT_MAX_REMOVE_PCT) -> list[str]:
    """Terminating deletes every user and removes every CR service: it counts as removing
    100% (for an account of at least MIN_USERS users), and a prevent_remove service
    refuses it as it refuses its own removal (DESIGN §5)."""
    found: list[str] = []
    users = len(current.users)
    if users >= MIN_USERS and max_remove_pct < 100:
        cr_users = sum(1 for u in current.users.values() if u["call_recording"] is not None)
        found.append(
            f"account {account}: terminating it deletes all {users} users and removes CR "
            f"from all {cr_users} CR users (100%), more than safety.max_remove_pct = "
            f"{max_remove_pct}%")
    kept = sorted(u["username"] for u in current.users.values()
                  if u["call_recording"] is not None and u["call_recording"]["prevent_remove"])
    if kept:
        names = ", ".join(kept[:NAMES]) + (f" and {len(kept) - NAMES} more"
                                           if len(kept) > NAMES else "")
        found.append(
            f"account {account}: terminating it removes CR from "
            f"{'a user' if len(kept) == 1 else f'{len(kept)} users'} with prevent_remove: "
            f"true ({names}); set prevent_remove: false and apply first")
    return found


def _share(count: int, total: int, limit: int) -> str:
    """count/total as a percentage with as few decimals as show it above `limit`.

    Rounding to whole percents would print 301 of 1,000 as "30%, more than 30%".
    Exact: `count * 100 > limit * total` holds, so some number of decimals shows it.
    """
    share = Fraction(count * 100, total)
    for digits in range(0, 12):
        text = f"{float(share):.{digits}f}"
        if Fraction(text) > limit:
            return text
    return f"{float(share):.12f}"  # pragma: no cover - beyond any real account size


def refusal(found: list[str], forced: list[str] | None = None) -> str:
    """The exit-5 message. `forced`: the violations a forced saved plan recorded, which
    are allowed; `found` are those beyond them."""
    lines = "\n".join(f"  - {v}" for v in found)
    if forced is None:
        return f"Refused by a safety limit:\n{lines}\nReview the plan; rerun with --force " \
               "to override."
    past = f"past {len(forced)} other limit(s) only" if forced else "past no limit"
    return (f"Refused by a safety limit not recorded in the forced plan:\n{lines}\n"
            f"The plan was forced {past}; make a new plan and review it, or rerun with "
            "--force to override.")
