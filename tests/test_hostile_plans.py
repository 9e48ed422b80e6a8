"""Hostile saved plans: a plan file is untrusted input (DESIGN §4-§5).

Every variant below is a plan file someone could hand to `crctl apply PLANFILE`: broken
JSON, the wrong shape, an unknown format, a path-like account id, or a plan whose
checksum was recomputed over edited actions. Each must be refused with exit 1 (invalid
input) or 3 (stale or altered), a clear message and no traceback, and the state directory
must stay byte-identical (every file hashed before and after).

The semantic variants run twice: with the desired file the plan names still present and
unchanged (the edit is caught by re-planning it: "altered"), and with that file moved on
since planning, so that only the applier's own checks stand between the edited plan and
the account.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import support
from support import TODAY

ACTOR = "user000000"  # the Decision Maker of the generated account
crctl = partial(support.crctl, actor=ACTOR, timeout=60)


# -- helpers --------------------------------------------------------------------------------

def run_cli(cwd: Path, *args: str, actor: str | None = ACTOR) -> tuple[int, str, str]:
    """`crctl --state-dir CWD/state ARGS` in this process (reconciler.cli.main, sys.argv
    patched): the same code path as the command, at a fraction of a subprocess's cost."""
    import contextlib
    import gc
    import io

    from reconciler import cli

    out, err = io.StringIO(), io.StringIO()
    saved_env = {k: os.environ.get(k) for k in ("CRCTL_TODAY", "CRCTL_ACTOR", "NO_COLOR",
                                               "CRCTL_DEBUG", "CRCTL_STATE_DIR")}
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    os.environ.update(CRCTL_TODAY=TODAY, NO_COLOR="1")
    for key in ("CRCTL_ACTOR", "CRCTL_DEBUG", "CRCTL_STATE_DIR"):
        os.environ.pop(key, None)
    if actor:
        os.environ["CRCTL_ACTOR"] = actor
    sys.argv = ["crctl", "--state-dir", str(cwd / "state"), *args]
    code: Any = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code
    finally:
        gc.enable()  # cli.main() disables the collector for its short-lived process
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    code = 0 if code is None else code
    for stream in (out.getvalue(), err.getvalue()):
        assert "Traceback" not in stream, stream
        assert "internal error" not in stream, stream
    return code, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under root: relative path -> sha256 (or 'dir')."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def canonical_checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def canonical_digest(doc: dict[str, Any]) -> str:
    """DESIGN §5: sha256 of the canonical JSON of {account, prior_state, actions, mir}."""
    part = {k: doc[k] for k in ("account", "prior_state", "actions", "mir") if k in doc}
    return hashlib.sha256(json.dumps(part, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def resign(doc: dict[str, Any], *, summary: bool = True) -> dict[str, Any]:
    """Recompute the summary (unless told not to), the digest and the checksum, as a
    forger would."""
    if summary:
        counts = dict.fromkeys(doc["summary"], 0)
        for action in doc["actions"]:
            if action["action"] in counts:
                counts[action["action"]] += 1
        doc["summary"] = counts
    if "digest" in doc:
        doc["digest"] = canonical_digest(doc)
    doc["checksum"] = canonical_checksum(doc)
    return doc


def user_yaml(name: str, ext: str, *, profile: str = "Elite", roles: str = "",
              cr: str | None = None, location: str = "Ottawa") -> str:
    text = (f"  {name}:\n    first_name: F{name}\n    last_name: L{name}\n"
            f"    email: {name}@acme.example\n    extension: \"{ext}\"\n"
            f"    profile: {profile}\n    location: {location}\n")
    if roles:
        text += f"    roles: [{roles}]\n"
    if cr:
        text += f"    call_recording:\n      product: {cr}\n"
    return text


def base_yaml() -> str:
    users = [user_yaml("user000000", "2000", roles="decision-maker", cr="always-on"),
             user_yaml("user000001", "2001", roles="phone-manager")]
    for i in range(2, 12):
        users.append(user_yaml(f"user{i:06d}", f"20{i:02d}",
                               cr=("on-demand" if i % 2 == 0 else None)))
    return ("account: acme\nname: Acme\nsafety:\n  max_remove_pct: 60\nusers:\n"
            + "".join(users))


def changed_yaml() -> str:
    """One of each action kind against base_yaml()."""
    text = base_yaml()
    # change: user000002 on-demand -> always-on; update: user000004 moves to Halifax
    lines = text.splitlines(keepends=True)
    out, current = [], None
    for line in lines:
        if line.startswith("  user") and line.rstrip().endswith(":"):
            current = line.strip()[:-1]
        if current == "user000002" and "product: on-demand" in line:
            line = line.replace("on-demand", "always-on")
        if current == "user000004" and line.strip() == "location: Ottawa":
            line = line.replace("Ottawa", "Halifax")
        out.append(line)
    text = "".join(out)
    # remove CR from user000006 (drop its two call_recording lines)
    block = user_yaml("user000006", "2006", cr="on-demand")
    text = text.replace(block, user_yaml("user000006", "2006"))
    # enable CR on user000005
    text = text.replace(user_yaml("user000005", "2005"),
                        user_yaml("user000005", "2005", cr="on-demand"))
    # delete user000011, add newbie with CR
    text = text.replace(user_yaml("user000011", "2011"), "")
    text += user_yaml("newbie", "2099", profile="Premier", cr="always-on")
    return text


# -- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace: state with the base account applied, d2/acme.yaml and plan.json."""
    work = tmp_path_factory.mktemp("hostile")
    (work / "d1").mkdir()
    (work / "d2").mkdir()
    (work / "d1" / "acme.yaml").write_text(base_yaml())
    (work / "d2" / "acme.yaml").write_text(changed_yaml())
    r = crctl("apply", "d1/acme.yaml", "--auto-approve", state=work / "state", cwd=work)
    assert r.returncode == 0, r.stderr
    r = crctl("plan", "d2/acme.yaml", "--out", "plan.json", state=work / "state", cwd=work)
    assert r.returncode == 0, r.stderr
    kinds = [a["action"] for a in json.loads((work / "plan.json").read_text())["actions"]]
    assert set(kinds) == {"remove", "delete_user", "add_user", "update_user", "change",
                          "enable"}, kinds
    return work


@pytest.fixture
def work(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "w"
    shutil.copytree(pristine, target)
    return target


def plan_doc(work: Path) -> dict[str, Any]:
    return json.loads((work / "plan.json").read_text())


def find(doc: dict[str, Any], kind: str, user: str | None = None) -> dict[str, Any]:
    return next(a for a in doc["actions"]
                if a["action"] == kind and (user is None or a["user"] == user))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def apply_refused(work: Path, content: bytes, code: int, *extra: str, show: int = 0,
                  words: tuple[str, ...] = (), subprocess_run: bool = False) -> Result:
    """Write `content` as hostile.plan, apply it; assert the refusal's exit `code` (DESIGN
    §4: 1 for a file that is not a plan or a plan that would break the account's rules, 3
    for an altered or stale one) and an untouched state. `show` is what `crctl show` exits
    with on the same file: 0 (a well-formed plan renders), 1 (not a plan), 3 (altered)."""
    (work / "hostile.plan").write_bytes(content)
    before = snapshot(work / "state")
    if subprocess_run:
        p = crctl("apply", "hostile.plan", *extra, state=work / "state", cwd=work)
        r = Result(p.returncode, p.stdout, p.stderr)
    else:
        r = Result(*run_cli(work, "apply", "hostile.plan", *extra))
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip(), "a refusal must say why"
    assert r.stderr.startswith("Error: ") or ": error: " in r.stderr, r.stderr
    assert "Apply complete" not in r.stdout
    for word in words:
        assert word.lower() in r.stderr.lower(), (word, r.stderr)
    assert snapshot(work / "state") == before, "the state directory changed"
    # `show` must not crash on it either (it renders a well-formed one)
    shown, _, err = run_cli(work, "show", "hostile.plan")
    assert shown == show, (shown, err)
    return r


def dump(doc: Any) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


# -- the plan file itself is broken (exit 1) ------------------------------------------------

BROKEN: dict[str, bytes] = {
    "malformed-json": b'{"format_version": "1", "account": "acme", ',
    "trailing-garbage": b'{"format_version": "1"} xyz',
    "empty-file": b"",
    "whitespace-only": b"   \n\n",
    # "[]" is not here: it is the plan set of no account (test_plan_identity.py)
    "empty-object": b"{}",
    "list-of-empty-object": b"[{}]",
    "list-of-numbers": b"[1, 2, 3]",
    "nested-lists": b"[[[]]]",
    "null": b"null",
    "string": b'"a plan"',
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep-object-nesting": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "not-utf8": b'{"format_version": "1", "account": "\xff\xfe"}',
    "nul-bytes": b"{\x00\x00\x00}",
    "format-version-2": b'{"format_version": "2"}',
    "format-version-int": b'{"format_version": 1}',
    "format-version-null": b'{"format_version": null}',
    "format-version-list": b'{"format_version": ["1"]}',
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_plan_file_is_refused(work: Path, name: str) -> None:
    r = apply_refused(work, BROKEN[name], 1, show=1)
    if name not in ("empty-file", "whitespace-only", "string"):
        # a JSON-looking file is read as a plan: the message names the plan file
        assert "hostile.plan" in r.stderr, r.stderr


def test_unknown_format_version_says_so(work: Path) -> None:
    doc = plan_doc(work)
    doc["format_version"] = "2"
    r = apply_refused(work, dump(resign(doc)), 1, show=1)
    assert "format_version" in r.stderr


# -- structurally wrong but correctly checksummed (exit 1) ----------------------------------

def _mutate(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], dict]:
    def run(doc: dict[str, Any]) -> dict[str, Any]:
        fn(doc)
        return doc
    return run


SHAPE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "account-dotdot": _mutate(lambda d: d.update(account="../evil")),
    "account-slash": _mutate(lambda d: d.update(account="acme/../../evil")),
    "account-abs": _mutate(lambda d: d.update(account="/etc/passwd")),
    "account-backslash": _mutate(lambda d: d.update(account="acme\\..\\x")),
    "account-nul": _mutate(lambda d: d.update(account="acme\x00x")),
    "account-upper": _mutate(lambda d: d.update(account="ACME")),
    "account-int": _mutate(lambda d: d.update(account=7)),
    "missing-actions": _mutate(lambda d: d.pop("actions")),
    "actions-not-list": _mutate(lambda d: d.update(actions={"a": 1})),
    "action-not-object": _mutate(lambda d: d["actions"].append("rm -rf /")),
    "action-unknown-kind": _mutate(lambda d: d["actions"][0].update(action="drop_table")),
    "action-extra-key": _mutate(lambda d: d["actions"][0].update(sudo=True)),
    "action-missing-changed": _mutate(lambda d: d["actions"][0].pop("changed")),
    "user-id-path": _mutate(lambda d: d["actions"][0].update(user_id="../u1")),
    "user-path": _mutate(lambda d: d["actions"][0].update(user="../../etc")),
    "serial-string": _mutate(lambda d: d["prior_state"].update(serial="1")),
    "serial-negative": _mutate(lambda d: d["prior_state"].update(serial=-1)),
    "serial-float": _mutate(lambda d: d["prior_state"].update(serial=1.5)),
    "serial-bool": _mutate(lambda d: d["prior_state"].update(serial=True)),
    "lineage-int": _mutate(lambda d: d["prior_state"].update(lineage=5)),
    "summary-missing-key": _mutate(lambda d: d["summary"].pop("enable")),
    "mir-garbage": _mutate(lambda d: d["mir"]["upsert"].append({"x": 1})),
    "safety-pct-200": _mutate(lambda d: d["safety"].update(max_remove_pct=200)),
    "safety-missing": _mutate(lambda d: d.pop("safety")),
    "desired-sha-not-hex": _mutate(lambda d: d["desired"].update(sha256="zz")),
    "unknown-top-key": _mutate(lambda d: d.update(run="sh -c 'id'")),
}


@pytest.mark.parametrize("name", sorted(SHAPE))
def test_wrong_shape_with_valid_checksum_is_refused(work: Path, name: str) -> None:
    doc = SHAPE[name](plan_doc(work))
    doc["checksum"] = canonical_checksum(doc)
    apply_refused(work, dump(doc), 1, show=1, words=("hostile.plan",))
    # nothing was created outside the state directory by a path-like id
    assert not (work / "evil").exists() and not (work.parent / "evil").exists()


def test_path_separator_account_in_a_list_plan(work: Path) -> None:
    good = plan_doc(work)
    bad = copy.deepcopy(good)
    bad["account"] = "../../outside"
    bad["checksum"] = canonical_checksum(bad)
    apply_refused(work, dump([good, bad]), 1, show=1)
    assert not (work.parent / "outside").exists()


def test_account_id_with_trailing_newline_is_refused(work: Path) -> None:
    """A new-account plan whose account id ends with a newline (checksum recomputed)."""
    (work / "d3").mkdir()
    (work / "d3" / "acme.yaml").write_text(base_yaml())
    r = crctl("plan", "d3/acme.yaml", "--out", "new.json", state=work / "fresh", cwd=work)
    assert r.returncode == 0, r.stderr
    doc = json.loads((work / "new.json").read_text())
    doc["account"] = "acme\n"
    (work / "hostile.plan").write_bytes(dump(resign(doc)))
    r = crctl("apply", "hostile.plan", state=work / "fresh", cwd=work)
    created = sorted(os.listdir(work / "fresh" / "portal")) if (
        work / "fresh" / "portal").exists() else []
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr, created)
    assert created == [], created


def test_missing_checksum_is_refused(work: Path) -> None:
    doc = plan_doc(work)
    del doc["checksum"]
    apply_refused(work, dump(doc), 1, show=1)  # not a plan (the schema requires it)


def test_checksum_uppercase_or_truncated_is_refused(work: Path) -> None:
    doc = plan_doc(work)
    doc["checksum"] = doc["checksum"].upper()
    # not a plan: the schema wants 64 lowercase hex digits
    apply_refused(work, dump(doc), 1, show=1)
    doc["checksum"] = doc["checksum"][:10].lower()
    apply_refused(work, dump(doc), 1, show=1)


# -- altered plans (exit 3) -----------------------------------------------------------------

def test_edit_without_new_checksum_is_altered(work: Path) -> None:
    doc = plan_doc(work)
    find(doc, "change")["after"]["product"] = "on-demand"
    apply_refused(work, dump(doc), 3, show=3, words=("altered",))


def test_summary_that_does_not_match_the_actions(work: Path) -> None:
    doc = plan_doc(work)
    doc["summary"]["remove"] = 0
    apply_refused(work, dump(resign(doc, summary=False)), 3, show=3, words=("summary",))


def test_dropped_action_with_stale_summary(work: Path) -> None:
    doc = plan_doc(work)
    doc["actions"] = [a for a in doc["actions"] if a["action"] != "remove"]
    apply_refused(work, dump(resign(doc, summary=False)), 3, show=3)


def test_checksum_option_mismatch(work: Path) -> None:
    content = (work / "plan.json").read_bytes()
    apply_refused(work, content, 3, "--checksum", "0" * 64, words=("checksum",))


def test_checksum_option_on_a_list_plan_needs_the_sets_checksum(work: Path) -> None:
    """--checksum of a plan set is the set's (DESIGN §5; test_plan_identity.py), not one
    document's."""
    doc = plan_doc(work)
    apply_refused(work, dump([doc, doc]), 3, "--checksum", doc["checksum"],
                  words=("plan set",))


def test_stale_lineage_and_serial(work: Path) -> None:
    doc = plan_doc(work)
    doc["prior_state"]["serial"] += 1
    apply_refused(work, dump(resign(doc)), 3, words=("stale",))
    doc = plan_doc(work)
    doc["prior_state"]["lineage"] = "00000000-0000-0000-0000-000000000000"
    apply_refused(work, dump(resign(doc)), 3, words=("stale",))
    doc = plan_doc(work)
    doc["prior_state"] = {"lineage": None, "serial": 0}  # "made before the account existed"
    apply_refused(work, dump(resign(doc)), 3)


# -- semantic forgeries with a recomputed checksum ------------------------------------------

def _ghost_user(doc: dict[str, Any]) -> None:
    update = copy.deepcopy(find(doc, "update_user"))
    update["user"] = "ghost"
    update["user_id"] = "u999"
    update["before"]["username"] = "ghost"
    update["after"]["username"] = "ghost"
    doc["actions"].insert(doc["actions"].index(find(doc, "update_user")), update)


def _ghost_remove(doc: dict[str, Any]) -> None:
    remove = copy.deepcopy(find(doc, "remove"))
    remove.update(user="ghost", user_id="u4242")
    doc["actions"].insert(0, remove)


def _duplicate(kind: str) -> Callable[[dict[str, Any]], None]:
    def run(doc: dict[str, Any]) -> None:
        action = find(doc, kind)
        doc["actions"].insert(doc["actions"].index(action), copy.deepcopy(action))
    return run


def _reverse(doc: dict[str, Any]) -> None:
    doc["actions"].reverse()


def _swap_first_two(doc: dict[str, Any]) -> None:
    doc["actions"][0], doc["actions"][1] = doc["actions"][1], doc["actions"][0]


def _after(kind: str, change: Callable[[dict[str, Any]], None],
           user: str | None = None) -> Callable[[dict[str, Any]], None]:
    def run(doc: dict[str, Any]) -> None:
        change(find(doc, kind, user)["after"])
    return run


def _before(kind: str, change: Callable[[dict[str, Any]], None]) -> Callable[[dict], None]:
    def run(doc: dict[str, Any]) -> None:
        change(find(doc, kind)["before"])
    return run


def _set(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.update(values)


def _drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def run(d: dict[str, Any]) -> None:
        for key in keys:
            d.pop(key, None)
    return run


def _delete_cr_user_without_remove(doc: dict[str, Any]) -> None:
    remove = find(doc, "remove")
    doc["actions"].remove(remove)
    update = find(doc, "update_user")
    delete = copy.deepcopy(find(doc, "delete_user"))
    delete.update(user=remove["user"], user_id=remove["user_id"])
    delete["before"] = {**update["before"], "username": remove["user"]}
    doc["actions"].insert(doc["actions"].index(find(doc, "delete_user")), delete)


def _terminate_plus(doc: dict[str, Any]) -> None:
    doc["actions"].append({"action": "terminate_account", "user": None, "user_id": None,
                           "before": None, "after": None, "changed": []})


def _enable_existing_cr(doc: dict[str, Any]) -> None:
    enable = find(doc, "enable", "user000005")
    enable["user"] = "user000000"
    enable["user_id"] = "u1"


def _add_existing(doc: dict[str, Any]) -> None:
    add = find(doc, "add_user")
    add["user"] = "user000003"
    add["after"]["username"] = "user000003"


def _add_with_id(doc: dict[str, Any]) -> None:
    find(doc, "add_user")["user_id"] = "u3"


def _rename_onto_existing(doc: dict[str, Any]) -> None:
    update = find(doc, "update_user")
    update["user"] = "user000003"
    update["after"]["username"] = "user000003"


def _update_user_null(doc: dict[str, Any]) -> None:
    find(doc, "update_user")["user"] = None


FORGED: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown-user-update": _ghost_user,
    "unknown-user-remove": _ghost_remove,
    "duplicated-update": _duplicate("update_user"),
    "duplicated-enable": _duplicate("enable"),
    "duplicated-add": _duplicate("add_user"),
    "reordered-reverse": _reverse,
    "reordered-swap": _swap_first_two,
    "update-after-missing-email": _after("update_user", _drop("email")),
    "update-after-empty": _after("update_user", lambda a: a.clear()),
    "add-after-missing-profile": _after("add_user", _drop("profile")),
    "change-after-missing-product": _after("change", _drop("product")),
    "enable-after-missing-fields": _after("enable", _drop("activation_date",
                                                          "prevent_remove")),
    "update-after-profile-root": _after("update_user", _set(profile="Root")),
    "add-after-profile-root": _after("add_user", _set(profile="Root")),
    "update-after-extension-x": _after("update_user", _set(extension="x")),
    "add-after-extension-x": _after("add_user", _set(extension="x")),
    "update-after-email-bad": _after("update_user", _set(email="not an email")),
    "update-after-roles-root": _after("update_user", _set(roles=["root"])),
    "update-after-roles-string": _after("update_user", _set(roles="decision-maker")),
    "update-after-username-upper": _after("update_user", _set(username="ROOT")),
    "update-after-first-name-int": _after("update_user", _set(first_name=5)),
    "update-after-first-name-control": _after("update_user", _set(first_name="a\x1bb")),
    "update-after-courtesy-with-cr": _after("update_user", _set(profile="Courtesy"),
                                            "user000004"),
    "change-after-prevent-remove-yes": _after("change", _set(prevent_remove="yes")),
    "add-extension-collides": _after("add_user", _set(extension="2003")),
    "add-email-collides-case": _after("add_user", _set(email="USER000003@acme.example")),
    "after-is-list": lambda d: find(d, "update_user").update(after=["x"]),
    "after-null-on-change": lambda d: find(d, "change").update(after=None),
    "before-mismatch-on-update": _before("update_user", _set(first_name="Someone")),
    "before-mismatch-on-change": _before("change", _set(product="always-on")),
    "before-null-on-remove": lambda d: find(d, "remove").update(before=None),
    "delete-cr-user-without-remove": _delete_cr_user_without_remove,
    "enable-already-enabled": _enable_existing_cr,
    "add-existing-username": _add_existing,
    "add-with-user-id": _add_with_id,
    "rename-onto-existing-user": _rename_onto_existing,
    "update-user-null": _update_user_null,
    "update-changed-hides-a-field": lambda d: find(d, "update_user").update(changed=[]),
    "change-changed-hides-product": lambda d: find(d, "change").update(changed=[]),
    "enable-with-a-before": lambda d: find(d, "enable").update(
        before={"product": "on-demand", "activation_date": None, "prevent_remove": False,
                "status": "active"}),
    "add-with-call-recording": _after("add_user", _set(call_recording={
        "product": "always-on", "activation_date": None, "prevent_remove": False,
        "status": "active"})),
    "enable-status-bogus": _after("enable", _set(status="root"), "user000005"),
    "enable-activation-date-compact": _after("enable", _set(activation_date="20261201"),
                                             "user000005"),
    "change-names-another-user": lambda d: find(d, "change").update(user="user000008"),
    "strip-decision-maker": lambda d: d["actions"].insert(
        d["actions"].index(find(d, "update_user")),
        {"action": "update_user", "user": "user000000", "user_id": "u1",
         "before": _details_of_dm(), "after": {**_details_of_dm(), "roles": []},
         "changed": ["roles"]}),
}


def _details_of_dm() -> dict[str, Any]:
    return {"username": "user000000", "first_name": "Fuser000000",
            "last_name": "Luser000000", "email": "user000000@acme.example",
            "extension": "2000", "phone_number": None, "profile": "Elite",
            "location": "Ottawa", "roles": ["decision-maker"], "tags": []}


def _moved_on(work: Path) -> None:
    """The desired file changed since planning: only the applier's own checks remain."""
    with open(work / "d2" / "acme.yaml", "a") as fh:
        fh.write("# edited after planning\n")


# Forgeries that the plan schema itself refuses: not a plan (exit 1), whatever the desired
# file says.
NOT_A_PLAN = {"after-is-list", "change-after-missing-product"}
# Forgeries whose actions fit the current state but would leave an invalid account: while
# the desired file is unchanged, re-planning shows the plan altered (3); once it moved on,
# the applier refuses the result as invalid (1: "the plan would break the account's rules").
BREAKS_RULES = {"add-after-extension-x", "add-after-profile-root", "add-email-collides-case",
                "add-extension-collides", "strip-decision-maker"}


@pytest.mark.parametrize("desired", ["unchanged", "moved-on"])
@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_plan_is_refused(work: Path, name: str, desired: str) -> None:
    doc = plan_doc(work)
    FORGED[name](doc)
    if desired == "moved-on":
        _moved_on(work)
    code = 1 if name in NOT_A_PLAN or (desired == "moved-on" and name in BREAKS_RULES) else 3
    apply_refused(work, dump(resign(doc)), code, show=1 if name in NOT_A_PLAN else 0)


# Forgeries the applier once let through (each was a separate reported bug; the text says
# what went wrong). Now refused both ways: as altered while the desired file is unchanged,
# and by the applier's own checks once it moved on.
BUG_FORGED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "update-after-extra-field": (
        _after("update_user", _set(is_admin=True, password="hunter2")),
        "BUG: applier.execute/_expect_after accepts an update_user 'after' with extra "
        "fields (silently dropped, but recorded in the audit log); expected exit 1/3"),
    "enable-after-extra-field": (
        _after("enable", _set(recordings_deleted=True)),
        "BUG: applier._expect_after accepts an enable 'after' with extra fields; "
        "expected exit 1/3"),
    "enable-activation-date-invalid": (
        _after("enable", _set(activation_date="2026-99-99"), "user000005"),
        "BUG: an enable 'after' with activation_date '2026-99-99' (matches the pattern, "
        "not a date) is applied: check_records does not check dates; expected exit 1"),
    "create-account-on-existing-account": (
        lambda d: d["actions"].insert(0, {"action": "create_account", "user": None,
                                          "user_id": None, "before": None,
                                          "after": {"account": "acme", "name": "Pwned"},
                                          "changed": []}),
        "BUG: applier.execute accepts create_account for an account that exists: the "
        "account's lineage is replaced and its name changed; expected exit 3"),
    "terminate-plus-other-actions": (
        _terminate_plus,
        "BUG: Applier.apply() runs _terminate() before execute(), so _check_sequence's "
        "'terminate_account must be the only action' never runs: a plan of remove/"
        "update/... plus terminate_account terminates the account (exit 0); expected 3"),
    "user-and-user-id-disagree": (
        lambda d: find(d, "remove").update(user="user000008"),
        "BUG: applier.execute trusts user_id and ignores action.user: a 'remove' shown "
        "to the reviewer as user000008 removes CR from user000006; expected exit 3"),
}


@pytest.mark.parametrize("name", sorted(BUG_FORGED))
def test_forged_plan_desired_unchanged_is_refused_as_altered(work: Path, name: str) -> None:
    """With the desired file present and unchanged, re-planning catches every forgery."""
    doc = plan_doc(work)
    BUG_FORGED[name][0](doc)
    apply_refused(work, dump(resign(doc)), 3, words=("altered",))


@pytest.mark.parametrize("name", sorted(BUG_FORGED))
def test_forged_plan_desired_moved_on_is_refused(work: Path, name: str) -> None:
    doc = plan_doc(work)
    BUG_FORGED[name][0](doc)
    _moved_on(work)
    apply_refused(work, dump(resign(doc)), 3)  # the applier's own checks: it does not fit the state


@pytest.mark.parametrize("product", ["bogus", 1])
def test_unknown_product_in_plan_is_refused_not_crashing(work: Path, product: Any) -> None:
    doc = plan_doc(work)
    find(doc, "change")["after"]["product"] = product
    find(doc, "enable")["after"]["product"] = product
    _moved_on(work)
    (work / "hostile.plan").write_bytes(dump(resign(doc)))
    before = snapshot(work / "state")
    code, out, err = run_cli(work, "show", "hostile.plan")
    assert code == 1 and "not a valid crctl plan file" in err, err
    apply_refused(work, dump(resign(doc)), 1, show=1)
    assert snapshot(work / "state") == before


def test_altered_message_is_clean_with_many_differences(work: Path) -> None:
    doc = plan_doc(work)
    _reverse(doc)
    r = apply_refused(work, dump(resign(doc)), 3, words=("altered",),
                      subprocess_run=True)
    assert "DeepDiff" not in r.stderr, r.stderr
    assert r.stderr.startswith("Error: "), r.stderr


def test_subprocess_refusals(work: Path) -> None:
    """A few refusals through the real command line (the rest run in-process)."""
    apply_refused(work, BROKEN["malformed-json"], 1, show=1, subprocess_run=True)
    apply_refused(work, BROKEN["nested-lists"], 1, show=1, subprocess_run=True)
    doc = plan_doc(work)
    doc["account"] = "../evil"
    apply_refused(work, dump(resign(doc)), 1, show=1, subprocess_run=True)
    doc = plan_doc(work)
    _ghost_user(doc)
    _moved_on(work)
    apply_refused(work, dump(resign(doc)), 3, subprocess_run=True)


def test_raised_safety_limit_in_a_forged_plan_is_refused(work: Path) -> None:
    text = base_yaml()
    for i in (2, 4, 6, 8):  # 4 of the 6 CR users lose CR: 67% > 60%
        name = f"user{i:06d}"
        text = text.replace(user_yaml(name, f"20{i:02d}", cr="on-demand"),
                            user_yaml(name, f"20{i:02d}"))
    (work / "d4").mkdir()
    (work / "d4" / "acme.yaml").write_text(text)
    code, out, err = run_cli(work, "plan", "d4/acme.yaml", "--out", "forced.plan")
    assert code == 5, (code, err)
    code, out, err = run_cli(work, "plan", "d4/acme.yaml", "--out", "forced.plan", "--force")
    assert code == 0, err
    doc = json.loads((work / "forced.plan").read_text())
    assert doc["safety"]["max_remove_pct"] == 60
    doc["safety"]["max_remove_pct"] = 100
    apply_refused(work, dump(resign(doc)), 3, words=("altered",))


def test_valid_checksum_over_altered_content_is_refused_as_altered(work: Path) -> None:
    """The DESIGN case: content edited, checksum recomputed, desired file unchanged."""
    doc = plan_doc(work)
    find(doc, "change")["after"]["product"] = "on-demand"
    find(doc, "change")["changed"] = []
    r = apply_refused(work, dump(resign(doc)), 3, words=("altered",))
    assert "acme" in r.stderr


def test_desired_file_deleted_after_planning_still_checks(work: Path) -> None:
    doc = plan_doc(work)
    _ghost_user(doc)
    os.unlink(work / "d2" / "acme.yaml")
    apply_refused(work, dump(resign(doc)), 3)


def test_genuine_plan_still_applies_once(work: Path) -> None:
    """Control: the untouched plan applies, and only once."""
    r = crctl("apply", "plan.json", state=work / "state", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "Apply complete" in r.stdout
    before = snapshot(work / "state")
    r = crctl("apply", "plan.json", state=work / "state", cwd=work)
    assert r.returncode == 3, r.stderr
    assert snapshot(work / "state") == before


def test_altered_message_names_the_field_that_differs(work: Path) -> None:
    doc = plan_doc(work)
    enable = find(doc, "enable")
    cr = enable["after"]["call_recording"] if "call_recording" in enable["after"] \
        else enable["after"]
    cr["product"] = "always-on" if cr["product"] == "on-demand" else "on-demand"
    r = apply_refused(work, dump(resign(doc)), 3, words=("altered",),
                      subprocess_run=True)
    assert "product differs" in r.stderr, r.stderr
    assert f"({enable['action']} for {enable['user']})" in r.stderr, r.stderr
