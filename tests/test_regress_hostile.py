"""Issue 10 item 5: no "internal error" on hostile input (DESIGN §4-§5).

Each case is a clean, located refusal with the contract's exit code (1: not a valid plan
file or input; 3: an altered plan) or a character shown as an escape: floats where a
plan holds integers, wrongly typed fields in an edited plan's `after`, directory and file
names that are not UTF-8, a plan whose `desired.path` cannot be read, and a terminal whose
encoding cannot show a name. (support.crctl fails any run that prints "Traceback" or
"internal error".)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import crctl, resign

ACTOR = "jdoe"


def quoted(text: str) -> str:
    """A YAML double-quoted scalar (raw characters: YAML has no surrogate pairs)."""
    return json.dumps(text, ensure_ascii=False)


def account_yaml(bob_first: str = "Bob", bob_ext: str = "2102", bob_product: str = "on-demand",
                 last: str = "Smith") -> str:
    return ("account: acme\nname: Acme\nusers:\n"
            "  jdoe:\n    first_name: Jane\n    last_name: Doe\n"
            "    email: jdoe@acme.example\n    extension: \"2101\"\n    profile: Elite\n"
            "    roles: [decision-maker]\n    call_recording:\n      product: always-on\n"
            f"  bob:\n    first_name: {quoted(bob_first)}\n    last_name: {quoted(last)}\n"
            f"    email: bob@acme.example\n    extension: \"{bob_ext}\"\n    profile: Elite\n"
            f"    location: Ottawa\n    call_recording:\n      product: {bob_product}\n")



def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """acme applied; d2/acme.yaml changes bob's extension (update_user) and product
    (change); plan.json is its saved plan."""
    work = tmp_path_factory.mktemp("hostile-input")
    (work / "acme.yaml").write_text(account_yaml())
    r = crctl("apply", "acme.yaml", "--auto-approve", state=work / "state", actor=ACTOR,
              cwd=work)
    assert r.returncode == 0, r.stderr
    (work / "d2").mkdir()
    (work / "d2" / "acme.yaml").write_text(account_yaml(bob_ext="2103",
                                                        bob_product="always-on"))
    r = crctl("plan", "d2/acme.yaml", "--out", "plan.json", state=work / "state", cwd=work)
    assert r.returncode == 0, r.stderr
    return work


@pytest.fixture
def work(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "w"
    shutil.copytree(pristine, target, symlinks=True)
    return target


def find(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(a for a in doc["actions"] if a["action"] == kind)


def edited(work: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    doc = json.loads((work / "plan.json").read_text())
    change(doc)
    (work / "edited.plan").write_text(json.dumps(resign(doc)))
    return work / "edited.plan"


def refused(work: Path, plan: Path, code: int, *words: str) -> None:
    """`show` and `apply` both refuse with `code`, saying where; the state is untouched."""
    before = tree(work / "state")
    for args in (("show", plan), ("apply", plan)):
        r = crctl(*args, state=work / "state", actor=ACTOR, cwd=work)
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
        assert r.stderr.startswith("Error: "), r.stderr
        for word in words:
            assert word in r.stderr, (word, r.stderr)
    assert tree(work / "state") == before


# -- numbers -------------------------------------------------------------------------------

FLOATS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "serial-0.0": (lambda d: d["prior_state"].update(serial=0.0), "prior_state/serial"),
    "serial-1.0": (lambda d: d["prior_state"].update(serial=1.0), "prior_state/serial"),
    "serial-1e0": (lambda d: d["prior_state"].update(serial=1e0), "prior_state/serial"),
    "max-remove-pct-30.0": (lambda d: d["safety"].update(max_remove_pct=30.0),
                            "safety/max_remove_pct"),
    "summary-count-1.0": (lambda d: d["summary"].update(change=1.0), "summary/change"),
    "termination-count-2.0": (lambda d: d.update(actions=[{
        "action": "terminate_account", "user": None, "user_id": None,
        "before": {"users": 2.0, "cr_users": 2, "recordings": 0}, "after": None,
        "changed": []}]), "actions/0/before/users"),
}


@pytest.mark.parametrize("name", sorted(FLOATS))
def test_a_float_where_a_plan_holds_an_integer_is_refused_where_it_is(work: Path,
                                                                      name: str) -> None:
    change, where = FLOATS[name]
    refused(work, edited(work, change), 1, "not a valid crctl plan file", where,
            "not an integer")


@pytest.mark.parametrize("value", [True, False, "1", None, -1])
def test_a_serial_that_is_not_a_whole_number_is_refused(work: Path, value: Any) -> None:
    refused(work, edited(work, lambda d: d["prior_state"].update(serial=value)), 1,
            "not a valid crctl plan file", "prior_state/serial")


# -- wrongly typed fields in an edited plan's `after` ----------------------------------------

def _after(kind: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: find(d, kind)["after"].update(values)


# name: (edit, exit with the desired file unchanged, exit once it moved on). Unchanged,
# re-planning shows the plan altered (3); moved on, the applier's own checks refuse it:
# 3 for an action that does not fit the current state, 1 for a result that breaks the
# account's rules.
TYPED: dict[str, tuple[Callable[[dict[str, Any]], None], int, int]] = {
    "extension-int": (_after("update_user", extension=5), 3, 1),
    "roles-string": (_after("update_user", roles="x"), 3, 3),
    "roles-of-numbers": (_after("update_user", roles=[1]), 3, 3),
    "roles-of-objects": (_after("update_user", roles=[{}]), 3, 3),
    "call-recording-list": (_after("update_user", call_recording=[]), 3, 3),
    "first-name-list": (_after("update_user", first_name=["a"]), 3, 3),
    "username-object": (_after("update_user", username={"a": 1}), 3, 3),
    "phone-number-int": (_after("update_user", phone_number=5), 3, 3),
    "location-list": (_after("update_user", location=[1]), 3, 3),
    "prevent-remove-list": (_after("change", prevent_remove=[]), 3, 3),
    "activation-date-int": (_after("change", activation_date=5), 3, 3),
    "status-list": (_after("change", status=[]), 3, 3),
}


@pytest.mark.parametrize("desired", ["unchanged", "moved-on"])
@pytest.mark.parametrize("name", sorted(TYPED))
def test_a_wrongly_typed_field_in_after_is_refused(work: Path, name: str,
                                                   desired: str) -> None:
    change, unchanged, moved_on = TYPED[name]
    plan = edited(work, change)
    if desired == "moved-on":
        with open(work / "d2" / "acme.yaml", "a") as fh:
            fh.write("# edited after planning\n")
    before = tree(work / "state")
    shown = crctl("show", plan, cwd=work)
    assert shown.returncode == 0, shown.stderr  # well-formed: it renders
    r = crctl("apply", plan, state=work / "state", actor=ACTOR, cwd=work)
    assert r.returncode == (unchanged if desired == "unchanged" else moved_on), r.stderr
    assert r.stderr.startswith("Error: account acme: "), r.stderr
    assert tree(work / "state") == before


@pytest.mark.parametrize("value", ["x", [], 5, True])
def test_a_cr_service_that_is_not_an_object_is_refused(work: Path, value: Any) -> None:
    refused(work, edited(work, lambda d: find(d, "change").update(after=value)), 1,
            "not a valid crctl plan file", "actions/1/after")


# -- names that are not UTF-8 --------------------------------------------------------------

def test_a_directory_name_that_is_not_utf8(tmp_path: Path) -> None:
    directory = os.path.join(os.fsencode(tmp_path), b"dir\xff")
    os.mkdir(directory)
    with open(os.path.join(directory, b"acme.yaml"), "w") as fh:
        fh.write(account_yaml())
    shown_dir = os.fsdecode(directory)
    r = crctl("validate", shown_dir + "/", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "1 file is valid.\n"), r.stderr
    r = crctl("validate", os.path.join(shown_dir, "acme.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # a file in it whose name is not UTF-8 either: a located refusal, the name escaped
    with open(os.path.join(directory, b"b\xfe.yaml"), "w") as fh:
        fh.write(account_yaml())
    r = crctl("validate", shown_dir, cwd=tmp_path)
    assert r.returncode == 1
    assert "dir\\udcff/b\\udcfe.yaml:1:10: error: account:" in r.stderr, r.stderr
    os.remove(os.path.join(directory, b"b\xfe.yaml"))
    # plan, plan --format json, plan --out, show and apply of a file in that directory
    desired = os.path.join(shown_dir, "acme.yaml")
    state = tmp_path / "state"
    r = crctl("plan", desired, "--format", "json", state=state, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["desired"]["path"].endswith("dir\\xff/acme.yaml")
    plan = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"p\xff.plan"))
    r = crctl("plan", desired, "--out", plan, state=state, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = crctl("show", plan, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("Account acme (new)"), r.stderr
    r = crctl("apply", plan, state=state, actor=ACTOR, cwd=tmp_path)
    assert r.returncode == 0 and "Apply complete" in r.stdout, r.stderr
    r = crctl("apply", desired, "--auto-approve", state=state, actor=ACTOR, cwd=tmp_path)
    assert (r.returncode, r.stdout.splitlines()[-1]) == (0, "No changes."), r.stderr


def test_a_state_directory_whose_name_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "acme.yaml").write_text(account_yaml())
    state = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"st\xff"))
    r = crctl("apply", "acme.yaml", "--auto-approve", state=state, actor=ACTOR,
              cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("State: ") and "st\\udcff" in r.stdout.splitlines()[0]
    for args in (("users", "acme"), ("history", "acme"), ("accounts",)):
        r = crctl(*args, state=state, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)


# -- a plan whose desired.path cannot be read ----------------------------------------------

def _unreadable_file(work: Path) -> str:
    path = work / "unreadable.yaml"
    shutil.copy(work / "d2" / "acme.yaml", path)
    path.chmod(0)
    return str(path)


UNREADABLE: dict[str, Callable[[Path], str]] = {
    # /proc/self/mem: a regular file whose first read fails (EIO), even for root
    "input-output-error": lambda work: "/proc/self/mem",
    "a-directory": lambda work: str(work / "d2"),
    "a-dangling-symlink": lambda work: (os.symlink("gone.yaml", work / "dangling.yaml"),
                                        str(work / "dangling.yaml"))[1],
    "permission-denied": _unreadable_file,
    "not-a-path": lambda work: "nul\x00byte.yaml",
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_a_plan_whose_desired_file_cannot_be_read_applies_on_its_own_checks(
        work: Path, name: str) -> None:
    """As when the desired file is gone (DESIGN §5: a plan applies with or without it),
    the reviewed plan is applied after its own checks against the current state."""
    if name == "permission-denied" and os.geteuid() == 0:
        pytest.skip("root reads a file of mode 000")
    if name == "input-output-error" and not os.path.exists("/proc/self/mem"):
        pytest.skip("no /proc")
    path = UNREADABLE[name](work)
    plan = edited(work, lambda d: d["desired"].update(path=path))
    r = crctl("show", plan, cwd=work)
    assert r.returncode == 0, r.stderr
    r = crctl("apply", plan, state=work / "state", actor=ACTOR, cwd=work)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("Apply complete: 0 enabled, 1 changed"), \
        r.stdout


# -- a terminal whose encoding cannot show a name ------------------------------------------

NAME = "山田"
LAST = "Ωmega😀"  # neither is Latin-1; 😀 is beyond U+FFFF


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "latin-1"},
                                 {"PYTHONIOENCODING": "ascii"},
                                 {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0",
                                  "PYTHONCOERCECLOCALE": "0"}],
                         ids=["latin-1", "ascii", "C-locale"])
def test_a_terminal_that_cannot_show_a_name_gets_escapes(tmp_path: Path,
                                                         env: dict[str, str]) -> None:
    """Latin-1: the names as backslash escapes. ASCII (or the C locale without UTF-8
    mode): click writes UTF-8 to an ASCII stream itself; either way no encoding error."""
    escaped = "\\u5c71\\u7530"  # 山田
    shown = (escaped,) if "latin-1" in env.values() else (escaped, NAME)
    (tmp_path / "acme.yaml").write_text(account_yaml(bob_first=NAME, last=LAST))
    state = tmp_path / "state"
    r = crctl("plan", "acme.yaml", state=state, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert any(s in r.stdout for s in shown), r.stdout
    r = crctl("plan", "acme.yaml", "--out", "acme.plan", state=state, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    for fmt in ("text", "markdown"):
        r = crctl("show", "acme.plan", "--format", fmt, cwd=tmp_path, env=env)
        assert r.returncode == 0 and any(s in r.stdout for s in shown), r.stderr
    r = crctl("apply", "acme.plan", state=state, actor=ACTOR, cwd=tmp_path, env=env)
    assert r.returncode == 0 and "Apply complete" in r.stdout, r.stderr
    r = crctl("users", "acme", state=state, cwd=tmp_path, env=env)
    assert r.returncode == 0 and any(s in r.stdout for s in shown), r.stderr
    # JSON stays JSON, and exact: the same names once parsed
    for args in (("users", "acme", "--format", "json"),
                 ("plan", "acme.yaml", "--format", "json"),
                 ("show", "acme.plan", "--format", "json")):
        r = crctl(*args, state=state, cwd=tmp_path, env=env)
        assert r.returncode == 0, (args, r.stderr)
        assert r.stdout.isascii(), r.stdout
        json.loads(r.stdout)
    rows = json.loads(crctl("users", "acme", "--format", "json", state=state, cwd=tmp_path,
                            env=env).stdout)
    assert f"{NAME} {LAST}" in {row["full_name"] for row in rows}
    # an error message naming such a file
    (tmp_path / f"{NAME}.yaml").write_text(account_yaml())
    r = crctl("validate", f"{NAME}.yaml", cwd=tmp_path, env=env)
    assert r.returncode == 1 and ".yaml:1:10: error:" in r.stderr, r.stderr


@pytest.mark.parametrize("value", [[1], "zzz", 5, {"a": 1}])
def test_an_edited_product_change_on_a_user_update_renders_and_is_refused(
        work: Path, value: Any) -> None:
    """update_user lists `product` as changed with a value that is no product: `show`
    renders it as written, `apply` refuses it (3: it does not fit the current state)."""
    def change(doc: dict[str, Any]) -> None:
        update = find(doc, "update_user")
        update["changed"] = [*update["changed"], "product"]
        update["after"]["product"] = value

    plan = edited(work, change)
    for fmt in ("text", "markdown"):
        r = crctl("show", plan, "--format", fmt, cwd=work)
        assert r.returncode == 0, r.stderr
        assert "; product: " in r.stdout, r.stdout
    r = crctl("apply", plan, state=work / "state", actor=ACTOR, cwd=work)
    assert r.returncode == 3, r.stderr
