"""Apply validates a record once (issue 15): a plan made in this run from a desired file
validated in this run is not schema-checked again, a saved plan (untrusted input) is
checked in full, and the rules over the whole account run for both.

In-process (the pure `execute`), because the difference is which checks run, not what a
user sees: the user-visible side (hostile plan files refused) is tests/test_hostile_plans.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support import TODAY

from reconciler import applier, validate
from reconciler import plan as plans
from reconciler.errors import InputError
from reconciler.model import CurrentAccount, Mirror
from reconciler.plan import Kind
from reconciler.planner import make_plan

NOW = "2026-11-25T12:00:00Z"
ACCOUNT = "acme"


def desired_file(tmp_path: Path) -> Path:
    path = tmp_path / f"{ACCOUNT}.yaml"
    path.write_text(
        "account: acme\n"
        "users:\n"
        "  jdoe:\n"
        "    first_name: Jane\n    last_name: Doe\n    email: jdoe@acme.example\n"
        "    extension: '2001'\n    profile: Premier\n    roles: [decision-maker]\n"
        "    call_recording: {product: always-on}\n"
        "  bob:\n"
        "    first_name: Bob\n    last_name: Ng\n    email: bob@acme.example\n"
        "    extension: '2002'\n    profile: Elite\n", encoding="utf-8")
    return path


@pytest.fixture
def schema_checks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The records that check_records puts through the schema (its `_desired_form`)."""
    seen: list[Any] = []
    real = validate._desired_form

    def spy(record: Any) -> Any:
        seen.append(record)
        return real(record)

    monkeypatch.setattr(validate, "_desired_form", spy)
    return seen


def fresh_plan(tmp_path: Path) -> plans.Plan:
    desired = validate.load_desired(str(desired_file(tmp_path)), TODAY)
    return make_plan(desired, CurrentAccount(ACCOUNT), Mirror(ACCOUNT), TODAY, created_at=NOW)


def saved_and_loaded(plan: plans.Plan, tmp_path: Path) -> plans.Plan:
    path = tmp_path / "plan.json"
    path.write_text(plans.dumps([plan], as_list=False), encoding="utf-8")
    return plans.load(str(path))[0]


def test_a_plan_made_from_a_validated_file_is_not_checked_twice(
        tmp_path: Path, schema_checks: list[Any]) -> None:
    plan = fresh_plan(tmp_path)
    assert plan.records_validated
    state, audit = applier.execute(plan, CurrentAccount(ACCOUNT), TODAY, "jdoe", now=NOW)
    assert sorted(u["username"] for u in state.users.values()) == ["bob", "jdoe"]
    assert len(audit) == len(plan.actions)
    assert schema_checks == []  # validated once, by load_desired


def test_a_saved_plan_is_checked_in_full(tmp_path: Path, schema_checks: list[Any]) -> None:
    loaded = saved_and_loaded(fresh_plan(tmp_path), tmp_path)
    assert not loaded.records_validated  # a plan file is untrusted input
    state, _ = applier.execute(loaded, CurrentAccount(ACCOUNT), TODAY, "jdoe", now=NOW)
    assert sorted(r["username"] for r in schema_checks) == ["bob", "jdoe"]
    assert len(state.users) == 2


def test_a_saved_plan_with_an_invalid_record_is_refused(tmp_path: Path) -> None:
    doc = json.loads(plans.dumps([fresh_plan(tmp_path)], as_list=False))
    for action in doc["actions"]:
        if action["action"] == "add_user" and action["user"] == "bob":
            action["after"]["email"] = "not an email"
    doc["digest"] = plans.digest(doc)
    doc["checksum"] = plans.checksum(doc)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    forged = plans.load(str(path))[0]
    with pytest.raises(InputError, match=r"the plan would break the account's rules.*email"):
        applier.execute(forged, CurrentAccount(ACCOUNT), TODAY, "jdoe", now=NOW)


@pytest.mark.parametrize("validated", [True, False])
def test_the_whole_account_rules_run_for_every_plan(tmp_path: Path,
                                                    validated: bool) -> None:
    """Uniqueness and the Decision Maker rule are checked whatever the plan says of its
    records (a forged plan object marked validated still cannot share an extension)."""
    plan = fresh_plan(tmp_path)
    actions = []
    for action in plan.actions:
        if action.action is Kind.ADD_USER and action.user == "bob":
            assert action.after is not None
            action = replace(action, after={**action.after, "extension": "2001"})
        actions.append(action)
    forged = replace(plan, actions=tuple(actions), records_validated=validated)
    with pytest.raises(InputError, match="two users would share an extension"):
        applier.execute(forged, CurrentAccount(ACCOUNT), TODAY, "jdoe", now=NOW)
    no_dm = [replace(a, after={**a.after, "roles": []})
             if a.action is Kind.ADD_USER and a.after is not None else a
             for a in plan.actions]
    with pytest.raises(InputError, match="no user would have the decision-maker role"):
        applier.execute(replace(plan, actions=tuple(no_dm), records_validated=validated),
                        CurrentAccount(ACCOUNT), TODAY, "jdoe", now=NOW)
