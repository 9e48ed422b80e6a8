"""Property: for any two valid desired states A and B of one account, applying A and then
B leaves an account that plans to "No changes" against B, with the MIR mirror equal to
the projection of the portal (DESIGN §3, §6). Renamed and kept users keep their ids.

A is applied through the Python API (reconciler.service) or the CLI; B always through the
CLI; the final plan runs through the CLI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from apply_helpers import TODAY, audit, mirror, portal, run, write_account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import service
from reconciler.backends.local import LocalBackend
from reconciler.mirror import project
from reconciler.model import CR_PROFILES, Profile, status_on
from reconciler.validate import load_desired

ACCOUNT = "prop"
ACTOR = "admin"
POOL = ("u1", "u2", "u3", "u.4", "u-5", "u_6")
PROFILES = [str(p) for p in Profile]
DATES = (None, "2026-01-31", "2026-11-24", TODAY, "2026-11-26", "2027-02-28")
EXTENSIONS = tuple(f"{n}" for n in range(200, 216))
LOCALS = ("ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "jon")


@st.composite
def user(draw: st.DrawFn, admin: bool = False) -> dict[str, Any]:
    profile = draw(st.sampled_from(PROFILES))
    record: dict[str, Any] = {
        "first_name": draw(st.sampled_from(["Ann", "Bo", "Cé", "Dee"])),
        "last_name": draw(st.sampled_from(["Lee", "Ng", "Ó Brien"])),
        "profile": profile,
        "phone_number": draw(st.sampled_from([None, "+16135550100", "+442071838750"])),
        "location": draw(st.sampled_from([None, "Ottawa", "Berlin"])),
    }
    roles = draw(st.sets(st.sampled_from(["decision-maker", "phone-manager"])))
    if admin:
        roles.add("decision-maker")
    record["roles"] = sorted(roles)
    if profile in CR_PROFILES and draw(st.booleans()):
        record["call_recording"] = {
            "product": draw(st.sampled_from(["always-on", "on-demand"])),
            "activation_date": draw(st.sampled_from(DATES)),
            "prevent_remove": draw(st.sampled_from([None, True, False])),
        }
    return record


@st.composite
def desired_state(draw: st.DrawFn, previous: tuple[str, ...] = ()) -> dict[str, Any]:
    """Users by name: always `admin` (a Decision Maker); optionally a rename of a user of
    `previous` that this state does not list."""
    names = [ACTOR, *draw(st.lists(st.sampled_from(POOL), unique=True, max_size=len(POOL)))]
    users = {name: draw(user(admin=name == ACTOR)) for name in names}
    renamable = [n for n in previous if n != ACTOR and n not in users]
    if renamable and draw(st.booleans()):
        old = draw(st.sampled_from(renamable))
        users[f"{old}.r"] = {**draw(user()), "renamed_from": old}
    extensions = draw(st.lists(st.sampled_from(EXTENSIONS), unique=True,
                               min_size=len(users), max_size=len(users)))
    locals_ = draw(st.lists(st.sampled_from(LOCALS), unique=True,
                            min_size=len(users), max_size=len(users)))
    for record, ext, local in zip(users.values(), extensions, locals_, strict=True):
        record["extension"] = ext
        shout = draw(st.booleans())
        record["email"] = f"{local.upper() if shout else local}@prop.example"
    return users


@st.composite
def two_states(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], bool]:
    a = draw(desired_state())
    b = draw(desired_state(tuple(a)))
    return a, b, draw(st.booleans())


def by_username(state: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    return {u["username"]: (uid, u) for uid, u in portal(state, ACCOUNT)["users"].items()}


def mirror_users(state: Path) -> dict[str, Any]:
    """The mirror's users; no mirror file yet (never a CR user) reads as empty."""
    if not (state / "mir" / f"{ACCOUNT}.json").exists():
        return {}
    return mirror(state, ACCOUNT)["users"]


def apply_api(state: Path, path: Path) -> None:
    runner = service.ApplyRun(LocalBackend(str(state)), TODAY, ACTOR, True, 10.0)
    runner.from_desired([str(path)], lambda plans: None, lambda: True)


def apply_cli(state: Path, path: Path) -> None:
    result = run(state, "apply", str(path), "--auto-approve", "--force", actor=ACTOR)
    assert result.returncode == 0, (result.stdout, result.stderr)


def planned_actions(state: Path, path: Path) -> int:
    desired = load_desired(str(path), TODAY)
    return len(service.plan_one(LocalBackend(str(state)), desired, TODAY).plan.actions)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(two_states())
def test_apply_a_then_b_converges_to_b(states: tuple[dict[str, Any], dict[str, Any], bool]
                                       ) -> None:
    a, b, a_through_cli = states
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        state = root / "state"
        path_a = write_account(root / "a", ACCOUNT, a)
        path_b = write_account(root / "b", ACCOUNT, b)

        actions_a = planned_actions(state, path_a)
        (apply_cli if a_through_cli else apply_api)(state, path_a)
        assert len(audit(state, ACCOUNT)) == actions_a
        ids_a = {name: uid for name, (uid, _) in by_username(state).items()}
        serial_a = portal(state, ACCOUNT)["serial"]
        assert serial_a == 1

        actions_b = planned_actions(state, path_b)
        apply_cli(state, path_b)
        assert len(audit(state, ACCOUNT)) == actions_a + actions_b

        plan = run(state, "plan", str(path_b), "--detailed-exitcode")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "No changes" in plan.stdout

        after = portal(state, ACCOUNT)
        assert mirror_users(state) == project(after["users"], TODAY)
        assert after["serial"] == serial_a + (1 if actions_b else 0)
        users = by_username(state)
        assert set(users) == set(b)
        for name, want in b.items():
            uid, have = users[name]
            kept = want.get("renamed_from", name)
            if kept in ids_a:
                assert uid == ids_a[kept], (name, kept)  # same user, same id
            cr = want.get("call_recording")
            if cr is None:
                assert have["call_recording"] is None
            else:
                assert have["call_recording"]["product"] == cr["product"]
                assert have["call_recording"]["status"] == status_on(
                    cr.get("activation_date"), TODAY)
            assert have["email"] == want["email"] and have["extension"] == want["extension"]

        again = run(state, "apply", str(path_b), "--auto-approve", actor=ACTOR)
        assert again.returncode == 0 and "No changes." in again.stdout
        assert portal(state, ACCOUNT)["serial"] == after["serial"]
