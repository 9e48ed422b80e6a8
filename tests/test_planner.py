"""The planner (DESIGN §5): action kinds and their order, renames, activation dates, MIR
mirror drift, termination and the safety limits.

State is set up with the real command line (`crctl apply --auto-approve`); plans are made
in-process through the same service call `crctl plan` uses (fast, and the plan document
is the contract), and through `crctl plan` itself wherever an exit status matters.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, TODAY, crctl

from reconciler import service
from reconciler.backends.local import LocalBackend
from reconciler.plan import ORDER, Kind
from reconciler.render.common import summary_line
from reconciler.validate import load_desired

ACME = REPO / "examples" / "acme.yaml"
ACTOR = "jdoe"


# -- helpers (self-contained: other test files have their own) ------------------------------

def person(first: str, last: str, ext: str, *, profile: str = "Elite",
           roles: list[str] | None = None, product: str | None = None,
           activation_date: str | None = None, prevent_remove: bool | None = None,
           email: str | None = None, phone: str | None = None, location: str | None = None,
           renamed_from: str | None = None) -> dict[str, Any]:
    """One user as written in a desired-state file."""
    user: dict[str, Any] = {}
    if renamed_from:
        user["renamed_from"] = renamed_from
    user.update(first_name=first, last_name=last,
                email=email or f"{first.lower()}.{last.lower()}@acme.example",
                extension=ext, profile=profile)
    if phone:
        user["phone_number"] = phone
    if location:
        user["location"] = location
    if roles:
        user["roles"] = roles
    if product:
        cr: dict[str, Any] = {"product": product}
        if activation_date:
            cr["activation_date"] = activation_date
        if prevent_remove is not None:
            cr["prevent_remove"] = prevent_remove
        user["call_recording"] = cr
    return user


def base_users() -> dict[str, dict[str, Any]]:
    return {
        "jdoe": person("Jane", "Doe", "2101", roles=["decision-maker"], product="always-on",
                       phone="+16135550101", location="Ottawa"),
        "asmith": person("Alice", "Smith", "2102", profile="Premier", roles=["phone-manager"],
                         product="on-demand", location="Ottawa"),
        "bsmith": person("Bob", "Smith", "2103", profile="Essentials", product="on-demand",
                         location="Toronto"),
        "cjones": person("Carl", "Jones", "2104", profile="Telephony"),
        "lobby": person("Front", "Desk", "2199", profile="Courtesy"),
    }


def team(size: int, *, with_cr: int | None = None) -> dict[str, dict[str, Any]]:
    """jdoe (Decision Maker) plus users m01, m02, ...; the first `with_cr` have CR."""
    with_cr = size if with_cr is None else with_cr
    users = {"jdoe": person("Jane", "Doe", "2000", roles=["decision-maker"],
                            product="always-on" if with_cr else None)}
    for i in range(1, size):
        users[f"m{i:02d}"] = person(f"Member{i}", "Team", f"{3000 + i}",
                                    product="on-demand" if i < with_cr else None)
    return users


class World:
    """A scratch account `acme`: desired files, a state directory, plans and applies."""

    def __init__(self, root: Path, account: str = "acme"):
        self.root = root
        self.account = account
        self.state = root / "state"
        self.count = 0

    def write(self, users: dict[str, Any] | None, **top: Any) -> Path:
        self.count += 1
        directory = self.root / f"desired{self.count}"
        directory.mkdir()
        doc: dict[str, Any] = {"account": self.account}
        if "name" in top:
            doc["name"] = top.pop("name")
        if "max_remove_pct" in top:
            doc["safety"] = {"max_remove_pct": top.pop("max_remove_pct")}
        if users is not None:
            doc["users"] = users
        doc.update(top)
        path = directory / f"{self.account}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path

    def apply(self, users: dict[str, Any] | None, *, today: str = TODAY, force: bool = False,
              **top: Any) -> subprocess.CompletedProcess[str]:
        args = ["apply", self.write(users, **top), "--auto-approve"]
        if force:
            args.append("--force")
        result = crctl(*args, state=self.state, actor=ACTOR, today=today)
        assert result.returncode == 0, result.stderr
        return result

    def planned(self, users: dict[str, Any] | None, *, today: str = TODAY,
                **top: Any) -> service.Planned:
        desired = load_desired(str(self.write(users, **top)), today)
        return service.plan_one(LocalBackend(str(self.state)), desired, today)

    def doc(self, users: dict[str, Any] | None, *, today: str = TODAY,
            **top: Any) -> dict[str, Any]:
        planned = self.planned(users, today=today, **top)
        assert not planned.violations, planned.violations
        return planned.plan.to_document()

    def plan_cli(self, users: dict[str, Any] | None, *args: str, today: str = TODAY,
                 **top: Any) -> subprocess.CompletedProcess[str]:
        return crctl("plan", self.write(users, **top), *args, state=self.state, today=today)

    def portal(self) -> dict[str, Any]:
        return json.loads((self.state / "portal" / f"{self.account}.json").read_text())

    def mirror(self) -> dict[str, Any]:
        return json.loads((self.state / "mir" / f"{self.account}.json").read_text())

    def write_mirror(self, data: dict[str, Any]) -> None:
        (self.state / "mir" / f"{self.account}.json").write_text(json.dumps(data))

    def uid(self, username: str) -> str:
        return next(uid for uid, u in self.portal()["users"].items()
                    if u["username"] == username)


def kinds(doc: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(a["action"], a["user"]) for a in doc["actions"]]


def action(doc: dict[str, Any], kind: str, user: str | None) -> dict[str, Any]:
    found = [a for a in doc["actions"] if a["action"] == kind and a["user"] == user]
    assert len(found) == 1, (kind, user, kinds(doc))
    return found[0]


def assert_ordered(doc: dict[str, Any]) -> None:
    order = [ORDER[Kind(a["action"])] for a in doc["actions"]]
    assert order == sorted(order), kinds(doc)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def acme(world: World) -> World:
    """`acme` applied from base_users() on TODAY."""
    world.apply(base_users(), name="Acme Corporation")
    return world


# -- a new account ----------------------------------------------------------------------------

def test_new_account_creates_then_adds_then_enables(tmp_path: Path) -> None:
    desired = load_desired(str(ACME), TODAY)
    plan = service.plan_one(LocalBackend(str(tmp_path / "state")), desired, TODAY).plan
    doc = plan.to_document()
    assert kinds(doc) == [
        ("create_account", None),
        ("add_user", "asmith"), ("add_user", "bob.smith"), ("add_user", "jdoe"),
        ("add_user", "lobby"),
        ("enable", "asmith"), ("enable", "bob.smith"), ("enable", "jdoe"),
        ("add_group", None),
    ]
    create = doc["actions"][0]
    assert create["after"] == {"account": "acme", "name": "Acme Corporation",
                               "time_zone": "America/Toronto"}
    assert create["before"] is None and create["user_id"] is None
    for a in doc["actions"][1:]:
        assert a["user_id"] is None  # nobody exists yet
        assert a["before"] is None
    add = action(doc, "add_user", "jdoe")
    assert add["after"]["call_recording"] is None  # CR comes with the enable that follows
    assert add["after"]["roles"] == ["decision-maker"]
    enable = action(doc, "enable", "jdoe")
    assert enable["after"] == {"product": "always-on", "activation_date": None,
                               "prevent_remove": True, "access": "all", "status": "active"}
    assert doc["prior_state"] == {"lineage": None, "serial": 0}
    assert doc["summary"] == {"enable": 3, "change": 0, "remove": 0, "add_user": 4,
                              "update_user": 0, "delete_user": 0, "terminate_account": 0,
                              "delete_group": 0, "add_group": 1, "update_group": 0}
    assert not (tmp_path / "state").exists()


def test_applied_account_plans_no_changes(acme: World) -> None:
    planned = acme.planned(base_users(), name="Acme Corporation")
    assert planned.plan.actions == ()
    assert not planned.plan.has_changes
    assert planned.plan.serial == 1 and planned.plan.lineage == acme.portal()["lineage"]
    assert summary_line(planned.plan) == "No changes. Account acme matches the desired state."


# -- every kind, in order ---------------------------------------------------------------------

def test_every_action_kind_in_apply_order(acme: World) -> None:
    users = base_users()
    del users["lobby"]                                              # delete_user
    del users["asmith"]["call_recording"]                           # remove
    users["jdoe"]["location"] = "Montreal"                          # update_user
    users["bsmith"]["call_recording"]["product"] = "always-on"      # change
    users["cjones"]["call_recording"] = {"product": "on-demand"}    # enable (existing user)
    users["dlee"] = person("Dana", "Lee", "2105", product="always-on")  # add_user + enable
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [
        ("remove", "asmith"),
        ("delete_user", "lobby"),
        ("add_user", "dlee"),
        ("update_user", "jdoe"),
        ("change", "bsmith"),
        ("enable", "cjones"), ("enable", "dlee"),
    ]
    assert_ordered(doc)
    remove = action(doc, "remove", "asmith")
    assert remove["user_id"] == acme.uid("asmith")
    assert remove["before"]["product"] == "on-demand" and remove["after"] is None
    delete = action(doc, "delete_user", "lobby")
    assert delete["user_id"] == acme.uid("lobby") and delete["after"] is None
    assert delete["before"]["first_name"] == "Front"
    assert "call_recording" not in delete["before"]
    assert action(doc, "enable", "cjones")["user_id"] == acme.uid("cjones")
    assert action(doc, "enable", "dlee")["user_id"] is None
    assert doc["summary"] == {"enable": 2, "change": 1, "remove": 1, "add_user": 1,
                              "update_user": 1, "delete_user": 1, "terminate_account": 0}
    assert doc["prior_state"]["serial"] == 1


def test_actions_of_a_kind_are_sorted_by_username(acme: World) -> None:
    users = base_users()
    for name in ("zed", "amy", "mike"):
        users[name] = person(name.title(), "New", str(2300 + len(users)), product="on-demand")
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("add_user", "amy"), ("add_user", "mike"), ("add_user", "zed"),
                          ("enable", "amy"), ("enable", "mike"), ("enable", "zed")]


def test_new_user_with_cr_is_added_before_enabled(acme: World) -> None:
    users = base_users()
    users["dlee"] = person("Dana", "Lee", "2105", profile="Telephony", product="on-demand",
                           roles=["phone-manager"])
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("add_user", "dlee"), ("enable", "dlee")]
    add, enable = doc["actions"]
    assert add["after"]["call_recording"] is None and add["after"]["profile"] == "Telephony"
    assert enable["before"] is None
    assert enable["after"]["product"] == "on-demand" and enable["after"]["status"] == "active"


def test_update_user_lists_the_changed_fields(acme: World) -> None:
    users = base_users()
    u = users["asmith"]
    u["email"] = "alice@acme.example"
    u["extension"] = "2202"
    u["location"] = "Kingston"
    u["roles"] = ["decision-maker", "phone-manager"]
    u["last_name"] = "Smyth"
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("update_user", "asmith")]
    update = doc["actions"][0]
    assert update["user_id"] == acme.uid("asmith")
    assert update["changed"] == ["last_name", "email", "extension", "location", "roles"]
    assert update["before"]["email"] == "alice.smith@acme.example"
    assert update["after"]["email"] == "alice@acme.example"
    assert update["after"]["roles"] == ["decision-maker", "phone-manager"]
    # details only: the CR service is the subject of remove/change/enable
    assert "call_recording" not in update["before"] and "call_recording" not in update["after"]
    assert set(update["before"]) == set(update["after"])


def test_clearing_an_optional_field_is_an_update(acme: World) -> None:
    users = base_users()
    del users["jdoe"]["phone_number"]
    doc = acme.doc(users, name="Acme Corporation")
    update = action(doc, "update_user", "jdoe")
    assert update["changed"] == ["phone_number"]
    assert update["before"]["phone_number"] == "+16135550101"
    assert update["after"]["phone_number"] is None


@pytest.mark.parametrize(("edit", "changed"), [
    ({"product": "always-on"}, ["product"]),
    ({"prevent_remove": True}, ["prevent_remove"]),
    ({"product": "always-on", "prevent_remove": True}, ["product", "prevent_remove"]),
])
def test_change_of_product_or_flag(acme: World, edit: dict[str, Any],
                                   changed: list[str]) -> None:
    users = base_users()
    users["bsmith"]["call_recording"].update(edit)
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("change", "bsmith")]
    change = doc["actions"][0]
    assert change["changed"] == changed
    assert change["user_id"] == acme.uid("bsmith")
    assert change["before"]["product"] == "on-demand"
    for key, value in edit.items():
        assert change["after"][key] == value


def test_change_of_activation_date_of_a_pending_service(world: World) -> None:
    users = base_users()
    users["bsmith"]["call_recording"]["activation_date"] = "2026-12-01"
    world.apply(users)
    assert world.portal()["users"][world.uid("bsmith")]["call_recording"]["status"] == "pending"
    users["bsmith"]["call_recording"]["activation_date"] = "2026-12-15"
    doc = world.doc(users)
    assert kinds(doc) == [("change", "bsmith")]
    change = doc["actions"][0]
    assert change["changed"] == ["activation_date"]
    assert change["before"]["activation_date"] == "2026-12-01"
    assert change["after"]["activation_date"] == "2026-12-15"
    assert change["after"]["status"] == "pending"
    # moving it to today activates it now
    users["bsmith"]["call_recording"]["activation_date"] = TODAY
    change = world.doc(users)["actions"][0]
    assert change["changed"] == ["activation_date"] and change["after"]["status"] == "active"


def test_remove_keeps_the_user(acme: World) -> None:
    users = base_users()
    del users["bsmith"]["call_recording"]
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("remove", "bsmith")]
    assert doc["actions"][0]["before"]["product"] == "on-demand"


def test_deleting_a_cr_user_removes_cr_first(acme: World) -> None:
    users = base_users()
    del users["bsmith"]
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("remove", "bsmith"), ("delete_user", "bsmith")]
    uid = acme.uid("bsmith")
    assert [a["user_id"] for a in doc["actions"]] == [uid, uid]


def test_profile_downgrade_with_cr_removal(acme: World) -> None:
    """Elite -> Courtesy in the same plan as removing CR: the removal goes first, the file
    validates, and the plan applies."""
    users = base_users()
    users["jdoe"]["profile"] = "Courtesy"
    del users["jdoe"]["call_recording"]
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("remove", "jdoe"), ("update_user", "jdoe")]
    update = doc["actions"][1]
    assert update["changed"] == ["profile"]
    assert (update["before"]["profile"], update["after"]["profile"]) == ("Elite", "Courtesy")
    result = acme.apply(users, name="Acme Corporation")
    assert "1 removed; 0 users added, 1 updated" in result.stdout
    record = acme.portal()["users"][acme.uid("jdoe")]
    assert record["profile"] == "Courtesy" and record["call_recording"] is None
    assert acme.uid("jdoe") not in acme.mirror()["users"]
    assert acme.planned(users, name="Acme Corporation").plan.actions == ()


def test_profile_downgrade_keeping_cr_is_invalid(acme: World) -> None:
    users = base_users()
    users["jdoe"]["profile"] = "Courtesy"
    result = acme.plan_cli(users)
    assert result.returncode == 1
    assert "Elite, Premier, Essentials or Telephony" in result.stderr


# -- renames ----------------------------------------------------------------------------------

def test_rename_keeps_the_user_id(acme: World) -> None:
    uid = acme.uid("bsmith")
    users = base_users()
    users["bob.smith"] = {"renamed_from": "bsmith", **users.pop("bsmith")}
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("update_user", "bob.smith")]
    update = doc["actions"][0]
    assert update["user_id"] == uid
    assert update["changed"] == ["username"]
    assert (update["before"]["username"], update["after"]["username"]) == ("bsmith",
                                                                             "bob.smith")
    acme.apply(users, name="Acme Corporation")
    portal = acme.portal()["users"]
    assert portal[uid]["username"] == "bob.smith"
    assert portal[uid]["call_recording"]["product"] == "on-demand"  # CR service kept
    assert acme.mirror()["users"][uid]["username"] == "bob.smith"
    assert "bsmith" not in {u["username"] for u in portal.values()}
    # renamed_from is still in the file: nothing more to do
    again = acme.planned(users, name="Acme Corporation").plan
    assert again.actions == () and not again.has_changes


def test_rename_with_other_changes(acme: World) -> None:
    uid = acme.uid("bsmith")
    users = base_users()
    renamed = {"renamed_from": "bsmith", **users.pop("bsmith")}
    renamed["email"] = "bob@acme.example"
    renamed["call_recording"]["product"] = "always-on"
    users["bob.smith"] = renamed
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("update_user", "bob.smith"), ("change", "bob.smith")]
    assert [a["user_id"] for a in doc["actions"]] == [uid, uid]
    assert doc["actions"][0]["changed"] == ["username", "email"]
    assert doc["actions"][1]["changed"] == ["product"]


def test_renamed_from_an_unknown_user_adds_the_user(acme: World) -> None:
    users = base_users()
    users["eve"] = person("Eve", "Green", "2106", renamed_from="nobody")
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("add_user", "eve")]


# -- activation dates -------------------------------------------------------------------------

@pytest.mark.parametrize(("date", "status"), [
    ("2026-12-01", "pending"),   # future
    (TODAY, "active"),           # today
    ("2026-01-15", "active"),    # past
])
def test_enable_status_follows_the_activation_date(acme: World, date: str,
                                                   status: str) -> None:
    users = base_users()
    users["cjones"]["call_recording"] = {"product": "always-on", "activation_date": date}
    doc = acme.doc(users, name="Acme Corporation")
    assert kinds(doc) == [("enable", "cjones")]
    assert doc["actions"][0]["after"] == {"product": "always-on", "activation_date": date,
                                          "prevent_remove": False, "access": "none",
                                              "status": status}


def test_today_comes_from_crctl_today(acme: World) -> None:
    users = base_users()
    users["cjones"]["call_recording"] = {"product": "always-on", "activation_date": "2026-12-01"}
    path = acme.write(users, name="Acme Corporation")
    statuses = {}
    for today in ("2026-11-30", "2026-12-01"):
        result = crctl("plan", path, "--format", "json", state=acme.state, today=today)
        assert result.returncode == 0, result.stderr
        statuses[today] = json.loads(result.stdout)["actions"][0]["after"]["status"]
    assert statuses == {"2026-11-30": "pending", "2026-12-01": "active"}


def test_pending_service_reaches_its_date(world: World) -> None:
    users = base_users()
    users["cjones"]["call_recording"] = {"product": "always-on", "activation_date": "2026-12-01"}
    world.apply(users)
    uid = world.uid("cjones")
    assert world.portal()["users"][uid]["call_recording"]["status"] == "pending"
    assert uid not in world.mirror()["users"]  # in the MIR mirror from that date only
    # the day before: nothing to do
    assert not world.planned(users, today="2026-11-30").plan.has_changes
    # on the date: no action, but MIR mirror drift that counts as a change
    plan = world.planned(users, today="2026-12-01").plan
    assert plan.actions == ()
    assert plan.has_changes
    assert [(m.user_id, m.username, m.reason) for m in plan.mir_upsert] == [
        (uid, "cjones", "activation date reached")]
    assert plan.mir_delete == ()
    result = world.plan_cli(users, "--detailed-exitcode", today="2026-12-01")
    assert result.returncode == 2, result.stderr
    assert "activation date reached" in result.stdout
    # applying on the date activates it and fills the mirror; then nothing is left to do
    world.apply(users, today="2026-12-03")
    assert world.portal()["users"][uid]["call_recording"]["status"] == "active"
    assert world.mirror()["users"][uid]["product"] == "always-on"
    assert not world.planned(users, today="2026-12-03").plan.has_changes


# -- MIR mirror drift -------------------------------------------------------------------------

def test_mirror_drift_is_planned(acme: World) -> None:
    mirror = acme.mirror()
    asmith, jdoe = acme.uid("asmith"), acme.uid("jdoe")
    del mirror["users"][asmith]
    mirror["users"][jdoe]["full_name"] = "Janet Doe"
    mirror["users"]["u99"] = {"username": "ghost", "full_name": "Ghost User",
                              "email": "ghost@acme.example", "extension": "2999",
                              "phone_number": None, "product": "always-on"}
    acme.write_mirror(mirror)
    plan = acme.planned(base_users(), name="Acme Corporation").plan
    assert plan.actions == ()
    assert plan.has_changes
    doc = plan.to_document()
    assert doc["mir"]["upsert"] == [
        {"user_id": asmith, "username": "asmith", "reason": "missing from the MIR mirror"},
        {"user_id": jdoe, "username": "jdoe", "reason": "out of date: full_name"},
    ]
    assert doc["mir"]["delete"] == [
        {"user_id": "u99", "username": "ghost", "reason": "CR not live in the portal"}]
    assert doc["summary"] == dict.fromkeys(doc["summary"], 0)


def test_mirror_drift_alongside_actions(acme: World) -> None:
    mirror = acme.mirror()
    del mirror["users"][acme.uid("asmith")]
    acme.write_mirror(mirror)
    users = base_users()
    del users["asmith"]["call_recording"]  # the missing entry goes anyway
    users["cjones"]["call_recording"] = {"product": "on-demand"}
    plan = acme.planned(users, name="Acme Corporation").plan
    assert [(a.action, a.user) for a in plan.actions] == [(Kind.REMOVE, "asmith"),
                                                         (Kind.ENABLE, "cjones")]
    # drift is measured against the current portal, independent of the actions
    assert [m.username for m in plan.mir_upsert] == ["asmith"]


# -- termination ------------------------------------------------------------------------------

def test_terminate_is_a_lone_action(acme: World) -> None:
    mirror = acme.mirror()
    mirror["recordings"] = [{"id": f"r{i}", "user_id": acme.uid("jdoe")} for i in range(3)]
    del mirror["users"][acme.uid("asmith")]  # drift does not matter when terminating
    acme.write_mirror(mirror)
    users = base_users()
    users["new"] = person("New", "User", "2400")
    plan = acme.planned(users, terminate=True).plan
    doc = plan.to_document()
    assert kinds(doc) == [("terminate_account", None)]
    assert doc["actions"][0]["before"] == {"users": 5, "cr_users": 3, "recordings": 3}
    assert doc["summary"]["terminate_account"] == 1
    assert sum(doc["summary"].values()) == 1
    assert doc["mir"] == {"upsert": [], "delete": []}
    assert summary_line(plan) == ("Plan: terminate account acme (5 users, 3 recordings will "
                                  "be deleted).")


def test_terminate_without_users_key(acme: World) -> None:
    plan = acme.planned(None, terminate=True).plan
    assert [a.action for a in plan.actions] == [Kind.TERMINATE_ACCOUNT]


def test_terminate_of_a_missing_account_has_no_changes(world: World) -> None:
    plan = world.planned(None, terminate=True).plan
    assert plan.actions == () and not plan.has_changes
    result = world.plan_cli(None, "--detailed-exitcode", terminate=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == (
        "No changes. Account acme matches the desired state.")
    assert not world.state.exists()


def test_terminate_plan_of_one_user(world: World) -> None:
    world.apply({"jdoe": person("Jane", "Doe", "2101", roles=["decision-maker"])})
    result = world.plan_cli(None, "--detailed-exitcode", terminate=True)
    assert result.returncode == 2
    assert result.stdout.rstrip().splitlines()[-1] == (
        "Plan: terminate account acme (1 user, 0 recordings will be deleted).")


# -- safety limits ----------------------------------------------------------------------------

def without_cr(users: dict[str, Any], *names: str) -> dict[str, Any]:
    users = copy.deepcopy(users)
    for name in names:
        users[name].pop("call_recording", None)
    return users


def test_removing_cr_from_too_many_users_is_refused(world: World) -> None:
    users = team(10)
    world.apply(users)
    desired = without_cr(users, "m01", "m02", "m03", "m04")
    result = world.plan_cli(desired)
    assert result.returncode == 5, result.stderr
    assert result.stdout.startswith("State: ")  # printed in full for review (DESIGN §5)
    assert "Refused by a safety limit" in result.stdout
    err = result.stderr
    assert "safety.max_remove_pct" in err
    assert "4 of 10 CR users" in err and "40%" in err and "30%" in err
    assert "--force" in err
    assert "acme" in err
    forced = world.plan_cli(desired, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Plan: 0 to enable, 0 to change, 4 to remove;" in forced.stdout
    assert "safety.max_remove_pct" in forced.stderr  # still said, as a warning
    assert world.plan_cli(desired, "--force", "--detailed-exitcode").returncode == 2
    # exactly 30% is not more than 30%
    assert world.plan_cli(without_cr(users, "m01", "m02", "m03"),
                          "--detailed-exitcode").returncode == 2


def test_deleting_too_many_users_is_refused(world: World) -> None:
    users = team(12, with_cr=1)  # only jdoe has CR
    world.apply(users)
    desired = {k: v for k, v in users.items() if k not in ("m01", "m02", "m03", "m04")}
    result = world.plan_cli(desired)
    assert result.returncode == 5, result.stderr
    assert "deletes 4 of 12 users" in result.stderr and "33%" in result.stderr
    assert "safety.max_remove_pct" in result.stderr and "--force" in result.stderr
    assert "CR users" not in result.stderr  # no CR removed
    forced = world.plan_cli(desired, "--force", "--detailed-exitcode")
    assert forced.returncode == 2, forced.stderr
    assert forced.stdout.rstrip().endswith("0 users to add, 0 to update, 4 to delete.")


def test_share_of_cr_users_counts_on_its_own(world: World) -> None:
    """12 users of whom 3 have CR: removing 1 is 33% of the CR users."""
    users = team(12, with_cr=3)
    world.apply(users)
    planned = world.planned(without_cr(users, "m01"))
    assert len(planned.violations) == 1
    assert "removes CR from 1 of 3 CR users (33%)" in planned.violations[0]


def test_deleting_cr_users_counts_against_both_limits(world: World) -> None:
    users = team(10)
    world.apply(users)
    desired = {k: v for k, v in users.items() if k not in ("m01", "m02", "m03", "m04")}
    found = "\n".join(world.planned(desired).violations)
    assert "removes CR from 4 of 10 CR users (40%)" in found
    assert "deletes 4 of 10 users (40%)" in found


def test_small_accounts_have_no_percentage_limit(world: World) -> None:
    users = team(9)
    world.apply(users)
    desired = without_cr(users, *[f"m{i:02d}" for i in range(1, 9)])
    del desired["m08"]
    result = world.plan_cli(desired, "--detailed-exitcode")
    assert result.returncode == 2, result.stderr
    assert "8 to remove" in result.stdout and "1 to delete" in result.stdout


@pytest.mark.parametrize(("pct", "removed", "refused"), [
    (50, 5, False),
    (50, 6, True),
    (10, 1, False),
    (10, 2, True),
    (0, 1, True),
])
def test_custom_max_remove_pct(world: World, pct: int, removed: int, refused: bool) -> None:
    users = team(10)
    world.apply(users, max_remove_pct=pct)
    desired = without_cr(users, *[f"m{i:02d}" for i in range(1, removed + 1)])
    result = world.plan_cli(desired, max_remove_pct=pct)
    if refused:
        assert result.returncode == 5, result.stdout
        assert f"safety.max_remove_pct = {pct}%" in result.stderr
        assert f"{removed} of 10 CR users" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert f"{removed} to remove" in result.stdout


def test_prevent_remove_refuses_removal(world: World) -> None:
    users = base_users()
    users["bsmith"]["call_recording"]["prevent_remove"] = True
    world.apply(users)
    desired = without_cr(users, "bsmith")
    result = world.plan_cli(desired)
    assert result.returncode == 5, result.stdout
    assert "user bsmith has prevent_remove: true" in result.stderr
    assert "--force" in result.stderr
    # deleting the user removes the service too
    gone = {k: v for k, v in users.items() if k != "bsmith"}
    assert "user bsmith" in world.plan_cli(gone).stderr
    assert world.plan_cli(gone).returncode == 5
    # apply checks it as well
    applied = crctl("apply", world.write(desired), "--auto-approve", state=world.state,
                    actor=ACTOR)
    assert applied.returncode == 5 and "bsmith" in applied.stderr
    assert world.portal()["serial"] == 1
    # --force overrides it
    assert world.plan_cli(desired, "--force").returncode == 0


def test_prevent_remove_is_cleared_then_removed(world: World) -> None:
    users = base_users()
    users["bsmith"]["call_recording"]["prevent_remove"] = True
    world.apply(users)
    cleared = copy.deepcopy(users)
    cleared["bsmith"]["call_recording"]["prevent_remove"] = False
    doc = world.doc(cleared)
    assert kinds(doc) == [("change", "bsmith")]
    assert doc["actions"][0]["changed"] == ["prevent_remove"]
    world.apply(cleared)
    desired = without_cr(users, "bsmith")
    result = world.plan_cli(desired, "--detailed-exitcode")
    assert result.returncode == 2, result.stderr
    world.apply(desired)
    assert world.portal()["users"][world.uid("bsmith")]["call_recording"] is None


def test_prevent_remove_in_the_desired_file_only_does_not_block(acme: World) -> None:
    """The flag that counts is the *current* service's."""
    users = base_users()
    del users["bsmith"]["call_recording"]
    planned = acme.planned(users, name="Acme Corporation")
    assert planned.violations == ()


def test_recreating_a_terminated_account_needs_force(acme: World) -> None:
    end = crctl("apply", acme.write(None, terminate=True), "--auto-approve",
                state=acme.state, actor=ACTOR)
    assert end.returncode == 0, end.stderr
    again = acme.write(base_users(), name="Acme Corporation")
    result = crctl("plan", again, state=acme.state)
    assert result.returncode == 5
    assert "terminated" in result.stderr and "--force" in result.stderr
    forced = crctl("plan", again, "--force", "--detailed-exitcode", state=acme.state)
    assert forced.returncode == 2, forced.stderr
    lines = forced.stdout.splitlines()
    assert lines[1].startswith("Forced past a safety limit")  # called out first (DESIGN §5)
    assert lines[lines.index("Account acme (new)") + 1].startswith("  + create account")


def test_refusal_shows_a_share_above_the_limit() -> None:
    from reconciler import safety
    from reconciler.model import CurrentAccount
    from reconciler.plan import Action, Plan

    cr = {"product": "on-demand", "activation_date": None, "prevent_remove": False,
          "status": "active"}
    users = {f"u{i}": {"username": f"m{i}", "call_recording": cr} for i in range(1, 1001)}
    current = CurrentAccount("acme", lineage="l", serial=1, next_user_id=1001,
                             users=users)  # type: ignore[arg-type]
    removes = tuple(Action(Kind.REMOVE, f"m{i}", f"u{i}", cr, None) for i in range(1, 302))
    plan = Plan(account="acme", desired_path=None, desired_sha256=None, lineage="l",
                serial=1, actions=removes)
    found = safety.violations(plan, current, 30)
    assert len(found) == 1 and "301 of 1000 CR users" in found[0]
    shown = float(found[0].split("CR users (", 1)[1].split("%", 1)[0])
    assert shown > 30, found[0]
