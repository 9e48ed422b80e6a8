"""Fuzzing the loader and the validator (DESIGN §2: strict loading, located errors).

Whatever the bytes, `load_bytes` + `desired_from_document` must end in a DesiredAccount
or in ValidationFailed whose every diagnostic is `PATH:LINE:COL: error: FIELD: message`
(any other exception is a bug), within a few seconds. Inputs: random bytes, YAML-ish
noise, and documents generated from reconciler/schemas/account.schema.json, either kept
valid (then they must be accepted, every value read back exactly) or mutated (wrong
types, deep nesting, huge strings, unicode and control characters, very long keys,
tags, anchors, aliases, merge keys, duplicate keys, cut and shuffled lines). A handful go
through the real command line as well.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import support
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import TODAY

from reconciler.errors import ValidationFailed
from reconciler.loader import field_path, load_bytes
from reconciler.model import CR_PROFILES, canonical_roles
from reconciler.schema import load_schema, resolve, validator
from reconciler.validate import _coerce, desired_from_document

NAME = "fuzz/acme.yaml"
ROOT = load_schema("account.schema.json")
LOCATED = re.compile(r"^" + re.escape(NAME) + r":(\d+):(\d+): error: (.+)$", re.S)
LIMIT_SECONDS = 5.0

EXAMPLES = int(os.environ.get("CRCTL_FUZZ_EXAMPLES", "150"))  # raise it for a longer hunt
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# -- the invariant --------------------------------------------------------------------------

def check(raw: bytes) -> Any:
    """Load and validate `raw`; return the DesiredAccount or the ValidationFailed.

    Fails the test on any other exception, on a badly formed diagnostic, or when it takes
    longer than LIMIT_SECONDS.
    """
    started = time.monotonic()
    outcome: Any
    try:
        doc = load_bytes(NAME, raw)
        data_copy = copy.deepcopy(doc.data)
        outcome = desired_from_document(doc, TODAY)
    except ValidationFailed as exc:
        outcome = exc
    elapsed = time.monotonic() - started
    assert elapsed < LIMIT_SECONDS, f"took {elapsed:.1f}s"
    if isinstance(outcome, ValidationFailed):
        assert outcome.diagnostics, "ValidationFailed without a diagnostic"
        text = raw.decode("utf-8", "replace")
        lines = sum(text.count(c) for c in "\n\r\x85\u2028\u2029") + 2
        for diagnostic in outcome.diagnostics:
            assert LOCATED.match(str(diagnostic)), str(diagnostic)
            # one inert line: no newline, carriage return, escape sequence, bidi override
            assert str(diagnostic).isprintable(), repr(str(diagnostic))
            assert 1 <= diagnostic.line <= lines, (diagnostic, lines)
            assert diagnostic.column >= 1, diagnostic
            assert diagnostic.field and diagnostic.message.strip(), diagnostic
        assert str(outcome).startswith(NAME + ":")
    else:
        # accepted: jsonschema (the reference) agrees that the document is valid
        _coerce(data_copy)
        errors = [e.message for e in validator("account.schema.json").iter_errors(data_copy)]
        assert not errors, errors
        assert outcome.account == "acme"
    return outcome


# -- strategies: documents generated from the schema ----------------------------------------

SAFE_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy for instances of (the subset of JSON Schema our) account schema uses."""
    schema = resolve(ROOT, schema)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(sub, depth + 1) for sub in schema["anyOf"]])
    types = schema.get("type")
    types = [types] if isinstance(types, str) else (types or [])
    options = []
    for kind in types:
        if kind == "null":
            options.append(st.none())
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "integer":
            options.append(st.integers(schema.get("minimum", -10), schema.get("maximum", 10)))
        elif kind == "string":
            options.append(_string(schema))
        elif kind == "array":
            items = from_schema(schema.get("items", {}), depth + 1)
            unique = {"unique_by": canonical} if schema.get("uniqueItems") else {}
            options.append(st.lists(items, min_size=schema.get("minItems", 0), max_size=3,
                                    **unique))
        elif kind == "object":
            options.append(_object(schema, depth))
    assert options, schema
    return st.one_of(options)


def canonical(value: Any) -> str:
    """A hashable stand-in for a JSON value (role entries may be mappings)."""
    return json.dumps(value, sort_keys=True)


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    pattern = schema.get("pattern")
    if pattern is None:
        return st.text(SAFE_CHARS, max_size=20)
    if "(?=" in pattern:  # the email pattern's length lookahead: a plain address instead
        return st.from_regex(r"\A[a-z0-9._%+-]{1,12}@[a-z0-9-]{1,12}\.[a-z]{2,6}\Z",
                             fullmatch=True)
    if "{4}-" in pattern:  # an ISO date: mostly real dates
        return st.dates(date(2000, 1, 1), date(2099, 12, 31)).map(date.isoformat)
    # `\Z`, not `$`: Python's `$` also matches before a final newline
    return st.from_regex(pattern.removesuffix("$(?!\\n)") + r"\Z", fullmatch=True,
                         alphabet=SAFE_CHARS).filter(lambda s: "\n" not in s)


def _object(schema: dict[str, Any], depth: int) -> st.SearchStrategy[dict[str, Any]]:
    props = schema.get("properties", {})
    required = set(schema.get("required", ()))
    if props:
        return st.fixed_dictionaries(
            {k: from_schema(v, depth + 1) for k, v in props.items() if k in required},
            optional={k: from_schema(v, depth + 1) for k, v in props.items()
                      if k not in required})
    names = schema.get("propertyNames", {"type": "string"})
    values = schema.get("additionalProperties", {"type": "string"})
    return st.dictionaries(from_schema(names, depth + 1), from_schema(values, depth + 1),
                           min_size=1, max_size=6)


def make_sound(doc: dict[str, Any]) -> dict[str, Any]:
    """Fix what the schema cannot say (DESIGN §1-2) so the document must be accepted."""
    doc["account"] = "acme"
    doc.pop("terminate", None)
    doc.pop("recording_groups", None)  # refused until crctl plans and stores them
    doc.pop("recording_settings", None)
    for key in ("defaults", "policies", "exceptions"):  # semantic: tests/test_compliance.py
        doc.pop(key, None)
    users = doc.setdefault("users", {})
    if not users:
        users["jdoe"] = {"first_name": "J", "last_name": "D", "email": "j@d.example",
                         "extension": "10", "profile": "Elite"}
    names = set(users)
    claimed: set[str] = set()
    for index, (name, user) in enumerate(users.items()):
        user["extension"] = f"{10 + index}"
        user["email"] = f"u{index}.{user['email']}"
        cr = user.get("call_recording")
        if cr is not None and user["profile"] not in CR_PROFILES:
            user["call_recording"] = None
        elif type(cr) is dict and "product" not in cr:  # only a default could give one
            cr["product"] = "on-demand"
        old = user.get("renamed_from")
        if old is not None and (old in names or old in claimed or old == name):
            del user["renamed_from"]
        elif old is not None:
            claimed.add(old)
    for user in users.values():  # account-level or location-level, not both
        roles = user.get("roles")
        if roles and "phone-manager" in roles:
            user["roles"] = [r for r in roles if type(r) is str]
    settings = doc.get("recording_settings")
    if settings and "time_zone" in settings:
        settings["time_zone"] = "America/Toronto"
    # groups may name only CR users of the file, never one as manager and member
    groups = doc.get("recording_groups") or {}
    cr_users = sorted(n for n, u in users.items() if u.get("call_recording") is not None)
    for group in groups.values():
        managers = group.get("managers")
        if managers is not None:
            group["managers"] = [n for n in managers if n in cr_users][:1] or []
        members = group.get("members")
        if members is not None:
            group["members"] = [n for n in cr_users if n not in group.get("managers", [])]
    first = next(iter(users.values()))
    roles = first.get("roles") or []
    if "decision-maker" not in roles:
        first["roles"] = [*roles, "decision-maker"]
    return doc


def dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=10**6).encode()


DOCUMENTS = from_schema(ROOT)
SOUND = DOCUMENTS.map(make_sound)


# -- valid documents are accepted, values read back exactly ---------------------------------

@SETTINGS
@given(SOUND)
def test_generated_valid_documents_are_accepted(doc: dict[str, Any]) -> None:
    expected = copy.deepcopy(doc)
    outcome = check(dump(doc))
    assert not isinstance(outcome, ValidationFailed), str(outcome)
    assert outcome.name == expected.get("name")
    assert set(outcome.users) == set(expected["users"])
    for name, want in expected["users"].items():
        got = outcome.users[name]
        for key in ("first_name", "last_name", "email", "extension", "profile"):
            assert got[key] == want[key], (name, key)
        assert got["phone_number"] == want.get("phone_number")
        assert got["location"] == want.get("location")
        assert got["roles"] == canonical_roles(want.get("roles"))
        assert got["tags"] == sorted(want.get("tags") or [])
        cr = want.get("call_recording")
        if cr is None:
            assert got["call_recording"] is None
        else:
            assert got["call_recording"]["product"] == cr["product"]
            assert got["call_recording"]["activation_date"] == cr.get("activation_date")
            assert got["call_recording"]["prevent_remove"] == cr.get("prevent_remove", False)
            assert got["call_recording"]["access"] == cr.get("access", "none")
        if "renamed_from" in want:
            assert outcome.renamed_from[name] == want["renamed_from"]


# -- random inputs: never anything but acceptance or located errors -------------------------

@SETTINGS
@given(st.binary(max_size=4000))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


YAMLISH = st.lists(
    st.sampled_from(list(":-[]{},&*!|>'\"#%@`?\n\n\n  \t\r\\")
                             + ["account", "users", "acme", "jdoe", "0101", "~", "null",
                                "<<", "!!str", "!!python/object:os.system", "---", "...",
                                "\x00", "\x1b", "\ufeff", "\u2028", "\x85", "é", "\U0001F600",
                                "call_recording", "product", "on", "yes", "true"]),
    max_size=200).map("".join)


@SETTINGS
@given(st.sampled_from(["", "account: acme\n", "account: acme\nusers:\n  jdoe:\n"]), YAMLISH)
def test_yaml_like_noise(prefix: str, noise: str) -> None:
    check((prefix + noise).encode("utf-8", "surrogatepass"))


# -- mutated documents ----------------------------------------------------------------------

def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, prefix + (key,)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, prefix + (index,)))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


def _nested(depth: int, leaf: Any, kind: str) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf} if kind == "map" else [leaf]
    return leaf


CONTROL = ["\x00", "\x01", "\x07", "\x1b[31m", "\x7f", "\x85", "\x9b", "\u2028", "\u202e",
           "\ufeff", "\ufffe", "\U0010ffff", "e\u0301", "\U0001F600", "\t", "\r"]

WRONG_VALUES = st.one_of(
    st.sampled_from(["", "0101", "on", "yes", "no", "true", "false", "null", "~", "1e3",
                     "0x1F", "-1", "101", "Elite ", "ELITE", "always_on", "2026-02-30",
                     "2026-13-01", "+0", "@", "a@b", "decision-maker"]),
    st.integers(-10**30, 10**30), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.lists(st.text(SAFE_CHARS, max_size=5), max_size=3),
    st.dictionaries(st.text(SAFE_CHARS, max_size=5), st.text(SAFE_CHARS, max_size=5),
                    max_size=3),
    st.builds(_nested, st.integers(20, 80), st.just("x"), st.sampled_from(["map", "list"])),
    st.builds(lambda n, c: c * n, st.integers(1000, 200_000), st.sampled_from(["a", "é", "0"])),
    st.builds(lambda base, c: base + c + base, st.text(SAFE_CHARS, max_size=5),
              st.sampled_from(CONTROL)),
)


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    doc = draw(st.one_of(SOUND, DOCUMENTS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["value", "key", "long-key", "drop", "extra"]))
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if kind == "value":
            doc = _set(doc, path, draw(WRONG_VALUES))
        elif not path or not isinstance(doc, dict):
            continue
        else:
            parent = doc
            for part in path[:-1]:
                parent = parent[part]
            if not isinstance(parent, dict) or path[-1] not in parent:
                continue
            if kind == "drop":
                del parent[path[-1]]
            elif kind in ("key", "long-key"):
                new = (draw(st.sampled_from(CONTROL)).join(["k", str(path[-1])])
                       if kind == "key" else "k" * draw(st.integers(200, 20_000)))
                parent[new] = parent.pop(path[-1])
            else:
                parent[draw(st.sampled_from(["call_recoding", "Users", "emial", "x" * 70,
                                             "roles", "__proto__", ""]))] = draw(WRONG_VALUES)
    try:
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=10**6)
    except yaml.YAMLError:
        text = yaml.safe_dump(doc, sort_keys=False, width=10**6)
    return draw(text_mutations(text)).encode("utf-8", "surrogatepass")


@st.composite
def text_mutations(draw: st.DrawFn, text: str) -> str:
    """Tags, anchors, aliases, merge keys, duplicated/deleted/cut lines, tabs, BOMs."""
    lines = text.splitlines(keepends=True) or [""]
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        op = draw(st.sampled_from(["tag", "anchor", "alias", "merge", "dup", "del", "cut",
                                   "tab", "bom", "flow", "doc", "indent", "crlf"]))
        if op in ("tag", "anchor", "alias") and ": " in line:
            token = {"tag": draw(st.sampled_from(["!foo ", "!!python/object/apply:os.system ",
                                                  "!!str ", "!!binary ", "!<tag:x> "])),
                     "anchor": "&a ", "alias": "*a"}[op]
            head, _, tail = line.partition(": ")
            line = f"{head}: {token}{tail}" if op != "alias" else f"{head}: *a\n"
        elif op == "merge":
            indent = len(line) - len(line.lstrip(" "))
            line = line + " " * indent + "<<: *a\n"
        elif op == "dup":
            line = line + line
        elif op == "del":
            line = ""
        elif op == "cut":
            line = line[: draw(st.integers(0, len(line)))]
        elif op == "tab":
            line = "\t" + line
        elif op == "bom":
            line = "\ufeff" + line
        elif op == "flow":
            line = line.replace(": ", ": {", 1)
        elif op == "doc":
            line = line + "---\n"
        elif op == "indent":
            line = "   " + line
        elif op == "crlf":
            line = line.replace("\n", "\r\n")
        lines[index] = line
    return "".join(lines)


@SETTINGS
@given(mutated_documents())
def test_mutated_documents(raw: bytes) -> None:
    check(raw)


@SETTINGS
@given(SOUND, st.data())
def test_one_wrong_field_is_reported_at_its_user(doc: dict[str, Any], data: st.DataObject
                                                  ) -> None:
    """A single wrong value inside one user: refused, and a diagnostic names that user."""
    name = data.draw(st.sampled_from(sorted(doc["users"])))
    key = data.draw(st.sampled_from(["extension", "email", "profile", "phone_number",
                                     "first_name"]))
    bad = {"extension": "12a", "email": "nope", "profile": "Root",
           "phone_number": "6135550101", "first_name": "x\x07y"}[key]
    doc["users"][name][key] = bad
    outcome = check(dump(doc))
    assert isinstance(outcome, ValidationFailed)
    fields = [d.field for d in outcome.diagnostics]
    assert any(name in f for f in fields), (name, key, fields)


# -- adversarial sizes: many errors at once stay fast (no quadratic diagnostics) ------------

def _many_users(n: int, **user: Any) -> bytes:
    return dump({"account": "acme", "users": {f"u{i}": dict(user) for i in range(n)}})


ADVERSARIAL = {
    "5000 invalid users": lambda: _many_users(
        5000, first_name="a", last_name="b", email="same@x.example", extension="1",
        profile="Courtesy", call_recording={"product": "on"}),
    "10000 duplicate emails and extensions": lambda: _many_users(
        10000, first_name="a", last_name="b", email="same@x.example", extension="10",
        profile="Elite"),
    "20000 duplicate keys": lambda: b"account: acme\nusers:\n"
    + b"  jdoe:\n    first_name: a\n" * 20000,
    "50000 unknown keys": lambda: b"account: acme\n" + b"x: 1\n" * 50000,
    "deep flow nesting": lambda: b"account: acme\nusers: " + b"[" * 100000 + b"]" * 100000,
    "deep block nesting": lambda: b"account: acme\nusers:\n"
    + b"".join(b"  " * i + b"k:\n" for i in range(1, 3000)),
    "deep sequence": lambda: b"- " * 100000 + b"x",
    "a 1 MB scalar": lambda: b"account: acme\nname: " + b"x" * 1_000_000 + b"\n",
    "a 100 kB key": lambda: b"account: acme\n? " + b"k" * 100_000 + b"\n: 1\n",
}


@pytest.mark.parametrize("label", list(ADVERSARIAL))
def test_adversarial_sizes_are_refused_quickly(label: str) -> None:
    outcome = check(ADVERSARIAL[label]())
    assert isinstance(outcome, ValidationFailed), label


# -- known bugs, pinned by explicit inputs --------------------------------------------------

def _one_user(**override: str) -> bytes:
    user = {"first_name": "Jane", "last_name": "Doe", "email": "jane@acme.example",
            "extension": "2101", "profile": "Elite", "roles": ["decision-maker"], **override}
    return dump({"account": "acme", "users": {"jdoe": user}})


@pytest.mark.parametrize("field,value", [
    ("extension", "2101\n"), ("phone_number", "+16135550101\n"),
    ("email", "jane@acme.example\n"), ("first_name", "Jane\n"), ("location", "Ottawa\n")])
def test_trailing_newline_in_a_pattern_field_is_refused(field: str, value: str) -> None:
    outcome = check(_one_user(**{field: value}))
    assert isinstance(outcome, ValidationFailed), f"{field}={value!r} was accepted"


def test_trailing_newline_in_a_username_is_refused() -> None:
    raw = b'account: acme\nusers:\n  "jdoe\\n":\n    first_name: J\n    last_name: D\n' \
          b'    email: j@a.example\n    extension: "10"\n    profile: Elite\n' \
          b'    roles: [decision-maker]\n'
    outcome = check(raw)
    assert isinstance(outcome, ValidationFailed), sorted(outcome.users)


@pytest.mark.parametrize("key", ["a\nacme.yaml:1:1: error: forged", "x\x1b[2Jy", "k\rk"])
def test_field_path_of_an_odd_key_stays_on_one_line(key: str) -> None:
    raw = dump({"account": "acme", key: "1"})
    outcome = check(raw)
    assert isinstance(outcome, ValidationFailed)
    for diagnostic in outcome.diagnostics:
        text = str(diagnostic)
        assert not any(c in text for c in "\n\r\x1b"), repr(text)


@pytest.mark.parametrize("path, expected", [
    (("users", "a\nb", "x"), 'users["a\\nb"].x'),
    (("k\rk",), '["k\\rk"]'),
    (("x\x1b[2Jy",), '["x\\u001b[2Jy"]'),
    (("\x7f\x85\x9b",), '["\\u007f\\u0085\\u009b"]'),
    (("a\u2028b\u202ec",), '["a\\u2028b\\u202ec"]'),
    (("q\"b\\",), '["q\\"b\\\\"]'),
    (("\U000e0067\U0010ffff",), '["\\udb40\\udc67\\udbff\\udfff"]'),
    (("users", "bob.smith", "roles", 0), 'users["bob.smith"].roles[0]'),
    (("Zoë", "山田"), "Zoë.山田"),
])
def test_field_path_escapes_like_json(path: tuple, expected: str) -> None:
    """Odd keys are JSON strings (jq-style) with every non-printable character escaped."""
    import json

    text = field_path(path)
    assert text == expected
    assert text.isprintable()
    odd = re.findall(r'\[("(?:[^"\\]|\\.)*")\]', text)
    assert [json.loads(q) for q in odd] == [p for p in path if isinstance(p, str)
                                           and not all(c.isalnum() or c in "_-" for c in p)]


def test_messages_quoting_hostile_values_stay_on_one_line() -> None:
    """Messages that name a user or a value (a CR profile rule, a claimed rename) escape
    control characters too, not only the FIELD part."""
    key = "bad\x1b]0;owned\x07\nforged: error: x"
    raw = dump({"account": "acme", "users": {
        key: {"first_name": "A", "last_name": "B", "email": "a@b.example",
              "extension": "10", "profile": "Courtesy", "roles": ["decision-maker"],
              "call_recording": {"product": "on-demand"}, "renamed_from": "old"},
        "carl": {"first_name": "C", "last_name": "D", "email": "c@d.example",
                 "extension": "11", "profile": "Elite", "renamed_from": "old"}}})
    outcome = check(raw)
    assert isinstance(outcome, ValidationFailed)
    text = str(outcome)
    assert "Courtesy" in text and "already claimed by" in text, text
    for line in text.splitlines():
        assert LOCATED.match(line) and line.isprintable(), repr(line)


@SETTINGS
@given(mutated_documents())
def test_lenient_loading_reports_every_problem_once(raw: bytes) -> None:
    """What `crctl validate` does: the loader's non-fatal refusals and the validation
    problems together, each once, sorted by line; never fewer than the strict loader."""
    strict = check(raw)
    try:
        doc = load_bytes(NAME, raw, strict=False)
        lenient = desired_from_document(doc, TODAY)
    except ValidationFailed as exc:
        lenient = exc
    if not isinstance(strict, ValidationFailed):
        assert not isinstance(lenient, ValidationFailed), str(lenient)
        return
    assert isinstance(lenient, ValidationFailed)
    found = [str(d) for d in lenient.diagnostics]
    assert len(found) == len(set(found)), found
    assert set(map(str, strict.diagnostics)) <= set(found)
    for line in found:
        assert LOCATED.match(line) and line.isprintable(), repr(line)
    places = [(d.line, d.column) for d in lenient.diagnostics]
    assert places == sorted(places)


# -- through the command line ---------------------------------------------------------------

CLI_LOCATED = re.compile(r"^acme\.yaml:\d+:\d+: error: \S.*$")


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzzcli")


@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(mutated_documents(), st.binary(max_size=500), SOUND.map(dump)))
def test_cli_validate_and_plan(cli_dir: Path, raw: bytes) -> None:
    assume(b"\n" in raw or not raw.strip() or len(raw) > 3)
    (cli_dir / "acme.yaml").write_bytes(raw)
    for args in (("validate", "acme.yaml"),
                 ("--state-dir", "state", "plan", "acme.yaml", "--detailed-exitcode")):
        started = time.monotonic()
        # stderr only, below: stdout echoes random input, which may spell "Traceback"
        r = support.crctl(*args, cwd=cli_dir, timeout=60, check_clean=False)
        assert time.monotonic() - started < 30
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
        # random input, valid (validate 0; plan 2, the account is new) or not (1)
        assert r.returncode in ((0, 1) if args[0] == "validate" else (1, 2)), r
        if r.returncode == 1:
            lines = r.stderr.splitlines()
            located = [line for line in lines if CLI_LOCATED.match(line)]
            assert located, r.stderr
        assert not (cli_dir / "state").exists(), "plan must not write the state directory"
