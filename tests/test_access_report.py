"""`crctl users ACCOUNT --access-report`: who can hear whose recordings (DESIGN §1, wave 2:
MIR Record Management Access none | own-group | all, and Call Recording Groups).

The pure function on an account with overlapping groups, then the command line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import user_yaml
from support import crctl

from reconciler import accessreport
from reconciler.access import Reach, access_report
from reconciler.backends import open_backend
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


def test_text_shows_names_from_the_state_inert() -> None:
    """Group names in the state are not checked on read: an ESC or a newline in one must
    not reach the terminal (or forge a line)."""
    reach = Reach("mona", "own-group", "always-on", ("kli", "mona"),
                  ("own", "group:sa\x1b[2J\nboss  all  every CR user"))
    text = accessreport.as_text([reach])
    assert "\x1b" not in text and text.count("\n") == 2
    assert "manages sa\\x1b[2J\\nboss  all  every CR user)" in text


def test_every_all_user_shares_one_list() -> None:
    users = {f"u{i}": user(f"n{i:03d}", access="all") for i in range(50)}
    reaches = access_report(account(users, {}))
    assert len({id(r.can_hear) for r in reaches}) == 1
    assert reaches[0].can_hear == tuple(sorted(u["username"] for u in users.values()))




# -- the command line ---------------------------------------------------------------------

def cr(product: str, access: str | None = None) -> str:
    return ("    call_recording:\n"
            f"      product: {product}\n"
            + (f"      access: {access}\n" if access else ""))


ACCOUNT_YAML = ("account: acme\nusers:\n"
                + user_yaml("boss", extension="2101", roles="decision-maker",
                            extra=cr("always-on", "all"))
                + user_yaml("mona", extension="2102", extra=cr("always-on", "own-group"))
                + user_yaml("kli", extension="2103", extra=cr("on-demand", "own-group"))
                + user_yaml("zed", extension="2104", extra=cr("always-on", "own-group"))
                + user_yaml("odie", extension="2105", extra=cr("on-demand", "own-group"))
                + user_yaml("nora", extension="2106", extra=cr("always-on"))
                + user_yaml("lobby", extension="2107")
                + user_yaml("pete", extension="2108", extra=cr("on-demand", "own-group")))
# Stored straight into the state (as user ids, like the portal keeps them): apply does not
# carry group actions yet (issue 13).
GROUPS = {"sales": {"managers": ["mona"], "members": ["kli", "zed"]},
          "support": {"managers": ["nora", "pete"], "members": ["kli", "mona"]}}

EXPECTED_JSON = [
    {"username": "boss", "access": "all",
     "can_hear": ["boss", "kli", "mona", "nora", "odie", "pete", "zed"], "via": ["all"]},
    {"username": "kli", "access": "own-group", "can_hear": ["kli"], "via": ["own"]},
    {"username": "mona", "access": "own-group", "can_hear": ["kli", "mona", "zed"],
     "via": ["own", "group:sales"]},
    {"username": "nora", "access": "none", "can_hear": [], "via": []},
    {"username": "odie", "access": "own-group", "can_hear": [], "via": []},
    {"username": "pete", "access": "own-group", "can_hear": ["kli", "mona", "pete"],
     "via": ["own", "group:support"]},
    {"username": "zed", "access": "own-group", "can_hear": ["zed"], "via": ["own"]},
]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("access-report")
    path = root / "acme.yaml"
    path.write_text(ACCOUNT_YAML, encoding="utf-8")
    result = crctl("apply", path, "--auto-approve", state=root / "state", actor="boss")
    assert result.returncode == 0, result.stderr + result.stdout
    backend = open_backend(str(root / "state"))
    current = backend.read_account("acme")
    ids = current.by_username()
    groups: dict[str, GroupRecord] = {
        name: {"managers": sorted(ids[u] for u in group["managers"]),
               "members": sorted(ids[u] for u in group["members"])}
        for name, group in GROUPS.items()}
    backend.write_account(replace(current, serial=current.serial + 1, groups=groups),
                          current.lineage, current.serial)
    backend.close()
    return root / "state"


def test_json_is_exact(state: Path) -> None:
    result = crctl("users", "acme", "--access-report", "--format", "json", state=state)
    assert result.returncode == 0, result.stderr
    assert result.stdout == json.dumps(EXPECTED_JSON, indent=2) + "\n"
    assert [list(entry) for entry in json.loads(result.stdout)] == \
        [["username", "access", "can_hear", "via"]] * len(EXPECTED_JSON)


def test_csv_has_a_header_and_one_row_per_cr_user(state: Path) -> None:
    result = crctl("users", "acme", "--access-report", "--format", "csv", state=state)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "username,access,can_hear,via"
    assert lines[1:] == [
        "boss,all,boss kli mona nora odie pete zed,all",
        "kli,own-group,kli,own",
        "mona,own-group,kli mona zed,own group:sales",
        "nora,none,,",
        "odie,own-group,,",
        "pete,own-group,kli mona pete,own group:support",
        "zed,own-group,zed,own",
    ]


def test_text_one_line_per_cr_user(state: Path) -> None:
    result = crctl("users", "acme", "--access-report", state=state)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "Username  Access     Can hear\n"
        "boss      all        every CR user (7)\n"
        "kli       own-group  kli  (own)\n"
        "mona      own-group  kli, mona, zed  (own; manages sales)\n"
        "nora      none       nobody\n"
        "odie      own-group  nobody  (On-Demand and in no recording group)\n"
        "pete      own-group  kli, mona, pete  (own; manages support)\n"
        "zed       own-group  zed  (own)\n")
    assert result.stderr == "7 CR users.\n"


def test_filters_choose_the_rows_not_who_is_heard(state: Path) -> None:
    result = crctl("users", "acme", "--access-report", "--format", "json",
                   "--filter", "username=mona", state=state)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [EXPECTED_JSON[2]]


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_unknown_account_is_the_same_error_as_users(state: Path, fmt: str) -> None:
    plain = crctl("users", "initech", "--format", fmt, state=state)
    report = crctl("users", "initech", "--access-report", "--format", fmt, state=state)
    assert report.returncode == plain.returncode == 1
    assert report.stdout == plain.stdout == ""
    assert report.stderr == plain.stderr
    assert "initech" in report.stderr
