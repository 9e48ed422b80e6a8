"""Who can hear whose recordings: MIR Record Management Access applied to an account
(DESIGN §1, wave 2). Pure: an account in, one `Reach` per CR user out; no I/O.

The rules, as the product defines them:
- only CR users have recordings, and only CR users reach any;
- access `none` (the default): nobody's, not even their own;
- access `all`: every CR user's recordings in the account;
- access `own-group`: their own recordings — an On-Demand user only while a member or a
  manager of some recording group ("an On-Demand user must be in a group to reach their
  recordings") — and those of the members of every group they manage.

Linear: one pass over the groups builds a user -> managed groups index and the set of
grouped users; `all` users share one precomputed list of every CR user.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model import Access, CurrentAccount, Product

# `via` entries: why a user reaches what they reach. Group names follow the username
# pattern ([a-z0-9][a-z0-9._-]*), so the ':' of "group:NAME" never clashes with a name.
VIA_ALL = "all"
VIA_OWN = "own"
GROUP_PREFIX = "group:"


@dataclass(frozen=True, slots=True)
class Reach:
    """What one CR user can hear.

    `can_hear`: the usernames whose recordings they reach, sorted. `via`: why — "all"
    (access all), "own" (their own recordings) and "group:NAME" for each group they manage
    with own-group access (sorted by name); empty for nobody. `ungrouped_on_demand`: an
    own-group On-Demand user in no recording group, who therefore does not reach even
    their own recordings."""

    username: str
    access: str
    product: str
    can_hear: tuple[str, ...]
    via: tuple[str, ...]
    ungrouped_on_demand: bool = False


def access_report(account: CurrentAccount) -> list[Reach]:
    """One Reach per CR user of `account`, in username order."""
    cr_names = {uid: user["username"] for uid, user in account.users.items()
                if user["call_recording"] is not None}
    managed: dict[str, list[str]] = {}
    grouped: set[str] = set()
    for name, group in account.groups.items():
        for uid in group["managers"]:
            managed.setdefault(uid, []).append(name)
        grouped.update(group["managers"])
        grouped.update(group["members"])
    everyone: tuple[str, ...] | None = None  # every CR user, built once if anyone has all

    out = []
    for uid, username in sorted(cr_names.items(), key=lambda item: item[1]):
        cr = account.users[uid]["call_recording"]
        assert cr is not None
        access, product = cr["access"], cr["product"]
        can_hear: tuple[str, ...] = ()
        via: tuple[str, ...] = ()
        ungrouped = False
        if access == Access.ALL:
            if everyone is None:
                everyone = tuple(sorted(cr_names.values()))
            can_hear, via = everyone, (VIA_ALL,)
        elif access == Access.OWN_GROUP:
            heard: set[str] = set()
            reasons: list[str] = []
            if product != Product.ON_DEMAND or uid in grouped:
                heard.add(username)
                reasons.append(VIA_OWN)
            else:
                ungrouped = True
            for name in sorted(managed.get(uid, ())):
                reasons.append(GROUP_PREFIX + name)
                heard.update(cr_names[m] for m in account.groups[name]["members"]
                             if m in cr_names)
            can_hear, via = tuple(sorted(heard)), tuple(reasons)
        # any other access (none): nobody, not even themselves
        out.append(Reach(username, access, product, can_hear, via, ungrouped))
    return out
