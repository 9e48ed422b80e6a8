"""`crctl users ACCOUNT --access-report`: who can hear whose recordings (DESIGN §1, wave 2:
MIR Record Management Access none | own-group | all, and Call Recording Groups).

The pure function on an account with overlapping groups, then the command line."""

from __future__ import annotations

from reconciler.access import Reach, access_report
from reconciler.model import CurrentAccount, GroupRecord, UserRecord


def user(username: str, product: str | None = "always-on",
         access: str = "none") -> UserRecord:
    return {
        "username": username, "first_name": username.title(), "last_name": "Test",
        "email": f"{username}@example.com", "extension": "2100", "phone_number": None,
        "profile": "Elite", "location": None, "roles": [], "tags": [],
        "call_recording": None if product is None else {
            "product": product, "activation_date": None, "prevent_remove": False,
            "access": access, "status": "active"},
    }


def account(users: dict[str, UserRecord], groups: dict[str, GroupRecord]) -> CurrentAccount:
    return CurrentAccount("acme", lineage="l", serial=1, users=users, groups=groups)


def overlapping() -> CurrentAccount:
    """u1 boss: all. u2 mona: own-group, manages sales, is a member of support.
    u3 kli: on-demand own-group, member of sales and support. u4 zed: always-on,
    own-group, member of sales. u5 odie: on-demand own-group in no group.
    u6 nora: access none, manages support. u7 lobby: no CR (named in no group).
    u8 pete: on-demand own-group, manages support (a manager is in a group too)."""
    users = {
        "u1": user("boss", access="all"),
        "u2": user("mona", access="own-group"),
        "u3": user("kli", "on-demand", "own-group"),
        "u4": user("zed", access="own-group"),
        "u5": user("odie", "on-demand", "own-group"),
        "u6": user("nora", access="none"),
        "u7": user("lobby", None),
        "u8": user("pete", "on-demand", "own-group"),
    }
    groups: dict[str, GroupRecord] = {
        "sales": {"managers": ["u2"], "members": ["u3", "u4"]},
        "support": {"managers": ["u6", "u8"], "members": ["u2", "u3"]},
    }
    return account(users, groups)


def by_name(reaches: list[Reach]) -> dict[str, Reach]:
    return {r.username: r for r in reaches}


def test_one_entry_per_cr_user_in_username_order() -> None:
    names = [r.username for r in access_report(overlapping())]
    assert names == ["boss", "kli", "mona", "nora", "odie", "pete", "zed"]  # no lobby


def test_all_hears_every_cr_user() -> None:
    boss = by_name(access_report(overlapping()))["boss"]
    assert boss.access == "all"
    assert boss.can_hear == ("boss", "kli", "mona", "nora", "odie", "pete", "zed")
    assert boss.via == ("all",)


def test_none_hears_nobody_not_even_themselves_even_as_a_manager() -> None:
    nora = by_name(access_report(overlapping()))["nora"]
    assert nora.can_hear == () and nora.via == ()


def test_manager_of_one_group_and_member_of_another() -> None:
    mona = by_name(access_report(overlapping()))["mona"]
    # own, plus the members of sales; being a member of support gives nothing more
    assert mona.can_hear == ("kli", "mona", "zed")
    assert mona.via == ("own", "group:sales")


def test_on_demand_member_of_two_groups_hears_only_their_own() -> None:
    kli = by_name(access_report(overlapping()))["kli"]
    assert kli.can_hear == ("kli",) and kli.via == ("own",)
    assert not kli.ungrouped_on_demand


def test_always_on_own_group_hears_their_own() -> None:
    zed = by_name(access_report(overlapping()))["zed"]
    assert zed.can_hear == ("zed",) and zed.via == ("own",)


def test_on_demand_in_no_group_hears_nobody() -> None:
    odie = by_name(access_report(overlapping()))["odie"]
    assert odie.can_hear == () and odie.via == ()
    assert odie.ungrouped_on_demand


def test_on_demand_manager_is_in_a_group() -> None:
    pete = by_name(access_report(overlapping()))["pete"]
    assert pete.can_hear == ("kli", "mona", "pete")
    assert pete.via == ("own", "group:support")


def test_members_without_cr_or_unknown_ids_have_no_recordings() -> None:
    users = {"u1": user("mgr", access="own-group"), "u2": user("gone", None)}
    groups: dict[str, GroupRecord] = {"g": {"managers": ["u1"], "members": ["u2", "u9"]}}
    (mgr,) = access_report(account(users, groups))
    assert mgr.can_hear == ("mgr",) and mgr.via == ("own", "group:g")


def test_empty_account() -> None:
    assert access_report(account({}, {})) == []


def test_every_all_user_shares_one_list() -> None:
    users = {f"u{i}": user(f"n{i:03d}", access="all") for i in range(50)}
    reaches = access_report(account(users, {}))
    assert len({id(r.can_hear) for r in reaches}) == 1
    assert reaches[0].can_hear == tuple(sorted(u["username"] for u in users.values()))


