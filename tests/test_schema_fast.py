"""The fast schema check agrees with jsonschema, on the real account schema.

`compile_check` answers only "valid or not", column by column over many instances;
jsonschema is the reference. Values are generated valid from the schema, then mutated
(wrong types, missing and extra keys, control characters, long strings, nulls, lists,
nested mappings), so that both sides of every keyword are exercised.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.schema import compile_check, invalid_items, load_schema

ROOT = load_schema("account.schema.json")
DEFS = ROOT["$defs"]
USER_SCHEMA = ROOT["properties"]["users"]["additionalProperties"]  # {"$ref": "#/$defs/user"}
USER_CHECK = compile_check(ROOT, USER_SCHEMA)
USER_DEF_CHECK = compile_check(ROOT, DEFS["user"])
DOCUMENT_CHECK = compile_check(ROOT)
USER_VALIDATOR = jsonschema.Draft202012Validator({"$defs": DEFS, **DEFS["user"]})
DOCUMENT_VALIDATOR = jsonschema.Draft202012Validator(ROOT)

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- valid values, generated from the schema ---------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12)
username = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,8}\Z")
email = st.builds("{}@{}.{}".format, st.from_regex(r"\A[a-z0-9.]{1,6}\Z"),
                  st.from_regex(r"\A[a-z0-9-]{1,6}\Z"), st.sampled_from(["com", "example", "ca"]))
extension = st.from_regex(r"\A[0-9]{2,10}\Z")
phone = st.from_regex(r"\A\+[1-9][0-9]{1,14}\Z")
profile = st.sampled_from(DEFS["user"]["properties"]["profile"]["enum"])
roles = st.lists(st.sampled_from(["decision-maker", "phone-manager"]), unique=True)
iso_date = st.dates().map(lambda d: d.isoformat()).filter(lambda s: len(s) == 10)
call_recording = st.none() | st.fixed_dictionaries(
    {"product": st.sampled_from(["always-on", "on-demand"])},
    optional={"activation_date": iso_date, "prevent_remove": st.booleans()},
)
valid_user = st.fixed_dictionaries(
    {"first_name": text, "last_name": text, "email": email, "extension": extension,
     "profile": profile},
    optional={"phone_number": phone, "location": text, "roles": roles,
              "renamed_from": username, "call_recording": call_recording},
)

# -- mutations ----------------------------------------------------------------------------

TRICKY_STRINGS = [
    "", " ", "on", "yes", "true", "null", "Elite", "elite", "always-on", "Always-On",
    "decision-maker", "2101", "0101", "1", "12345678901", "21a", "+16135550101",
    "16135550101", "+0123", "a@b.c", "a@b", "@b.c", "a b@c.d", "a@@b.c", "2026-12-01",
    "2026-02-30", "2026-12-1", "A\x1bB", "A\tB", "A\x7fB", "A\x85B", "\x00", "x" * 200,
    "x" * 201, "é" * 200, "jdoe", "JDoe", "-jdoe", "j" * 64, "j" * 65,
]
control_string = st.builds(lambda a, c, b: a + c + b, st.text(max_size=3),
                           st.characters(min_codepoint=0, max_codepoint=0x1f)
                           | st.characters(min_codepoint=0x7f, max_codepoint=0x9f),
                           st.text(max_size=3))
long_string = st.text(st.characters(blacklist_categories=("Cc", "Cs")),
                      min_size=190, max_size=260)
weird = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=False)
    | st.sampled_from(TRICKY_STRINGS) | st.text(max_size=6) | control_string | long_string,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["product", "x", "first_name", "a"]) | st.text(max_size=4),
                      children, max_size=3),
    max_leaves=6,
)
KEYS = sorted(DEFS["user"]["properties"])
CR_KEYS = sorted(DEFS["call_recording"]["properties"])


@st.composite
def mutated_user(draw: st.DrawFn) -> Any:
    user = dict(draw(valid_user))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(
            ["drop", "extra", "replace", "replace", "cr", "roles", "whole"]))
        if kind == "drop" and user:
            del user[draw(st.sampled_from(sorted(user)))]
        elif kind == "extra":
            key = draw(st.sampled_from(["call_recoding", "Email", "x", ""]) | st.text(max_size=5))
            user[key] = draw(weird)
        elif kind == "replace":
            user[draw(st.sampled_from(KEYS))] = draw(weird)
        elif kind == "cr":
            cr = dict(draw(call_recording) or {})
            action = draw(st.sampled_from(["drop", "extra", "replace"]))
            if action == "drop" and cr:
                del cr[draw(st.sampled_from(sorted(cr)))]
            elif action == "extra":
                cr[draw(st.text(max_size=5))] = draw(weird)
            else:
                cr[draw(st.sampled_from(CR_KEYS))] = draw(weird)
            user["call_recording"] = cr
        elif kind == "roles":
            user["roles"] = draw(st.lists(
                st.sampled_from(["decision-maker", "phone-manager", "admin", ""]) | weird,
                max_size=4))
        elif kind == "whole":
            return draw(weird)
    return user


def test_generated_valid_users_are_valid() -> None:
    """Guard for the generators themselves: unmutated users pass both checks."""

    @SETTINGS
    @given(valid_user)
    def check(user: dict[str, Any]) -> None:
        assert USER_VALIDATOR.is_valid(user), list(USER_VALIDATOR.iter_errors(user))
        assert USER_CHECK([user])

    check()


@SETTINGS
@given(mutated_user())
def test_fast_check_equals_jsonschema_for_one_user(value: Any) -> None:
    expected = USER_VALIDATOR.is_valid(value)
    assert USER_CHECK([value]) is expected
    assert USER_DEF_CHECK([value]) is expected


@SETTINGS
@given(st.lists(mutated_user(), min_size=1, max_size=6))
def test_fast_check_over_many_users_and_invalid_items(values: list[Any]) -> None:
    verdicts = [USER_VALIDATOR.is_valid(v) for v in values]
    assert USER_CHECK(values) is all(verdicts)
    assert invalid_items(USER_CHECK, values) == [i for i, ok in enumerate(verdicts) if not ok]


# Documents as the validator sees them: strings, nulls, mappings, lists, and the booleans
# and integers that `terminate`, `prevent_remove` and `max_remove_pct` are turned into.
doc_scalar = (st.none() | st.booleans() | st.integers(-5, 200) | st.sampled_from(TRICKY_STRINGS)
              | control_string)


@st.composite
def mutated_document(draw: st.DrawFn) -> Any:
    users = draw(st.dictionaries(username | st.sampled_from(["JDoe", "", "a b", "-x"]),
                                 valid_user | valid_user | mutated_user(), max_size=4))
    doc: dict[str, Any] = {"account": draw(st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,8}\Z")),
                           "users": users}
    optional = {"name": text | text | doc_scalar,
                "safety": st.fixed_dictionaries({}, optional={
                    "max_remove_pct": st.integers(0, 100) | st.integers(-5, 150) | doc_scalar,
                    "x": doc_scalar}) | doc_scalar,
                "terminate": st.booleans() | st.booleans() | doc_scalar}
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        doc[key] = draw(optional[key])
    if draw(st.sampled_from([False] * 5 + [True])):
        doc[draw(st.sampled_from(["acount", "user", "x"]))] = draw(doc_scalar)
    if draw(st.sampled_from([False] * 3 + [True])):
        doc.pop(draw(st.sampled_from(sorted(doc))))
    if draw(st.sampled_from([False] * 9 + [True])):
        doc["users"] = draw(doc_scalar | st.lists(doc_scalar, max_size=2))
    return doc


@SETTINGS
@given(st.lists(mutated_document(), min_size=1, max_size=3))
def test_fast_check_equals_jsonschema_for_documents(docs: list[Any]) -> None:
    verdicts = [DOCUMENT_VALIDATOR.is_valid(d) for d in docs]
    assert DOCUMENT_CHECK(docs) is all(verdicts)
    assert invalid_items(DOCUMENT_CHECK, docs) == [i for i, ok in enumerate(verdicts) if not ok]


# -- fixed examples: what each mutation means to a user --------------------------------------

GOOD = {"first_name": "Jane", "last_name": "Doe", "email": "jane@example.com",
        "extension": "2101", "profile": "Elite"}


@pytest.mark.parametrize("change", [
    {"extension": "21a"}, {"extension": "1"}, {"extension": 2101}, {"extension": None},
    {"email": "jane.example.com"}, {"profile": "Gold"}, {"first_name": "A\x1bB"},
    {"first_name": "x" * 201}, {"first_name": ""}, {"roles": ["admin"]},
    {"roles": ["decision-maker", "decision-maker"]}, {"roles": "decision-maker"},
    {"call_recording": {"product": "on"}}, {"call_recording": {"product": True}},
    {"call_recording": {"access": "some"}}, {"call_recording": "yes"},
    {"call_recording": {"product": "on-demand", "prevent_remove": "maybe"}},
    {"call_recording": {"product": "on-demand", "activation_date": "2026-12-1"}},
    {"phone_number": "613-555-0102"}, {"renamed_from": "BSmith"}, {"call_recoding": None},
])
def test_known_bad_users(change: dict[str, Any]) -> None:
    user = {**GOOD, **change}
    assert not USER_VALIDATOR.is_valid(user)
    assert USER_CHECK([user]) is False
    assert invalid_items(USER_CHECK, [GOOD, user, GOOD, GOOD, user]) == [1, 4]


def test_known_good_users() -> None:
    users = [GOOD, {**GOOD, "call_recording": None, "roles": []},
             {**GOOD, "call_recording": {"product": "always-on", "activation_date": "2026-12-01",
                                         "prevent_remove": False},
              "roles": ["phone-manager", "decision-maker"], "phone_number": "+16135550101",
              "location": "Ottawa", "renamed_from": "bsmith"}]
    assert all(USER_VALIDATOR.is_valid(u) for u in users)
    assert USER_CHECK(users)
    assert invalid_items(USER_CHECK, users) == []


def test_invalid_items_finds_exactly_the_bad_indexes_among_many() -> None:
    users = [{**GOOD, "extension": f"{2000 + i}"} for i in range(5000)]
    bad = [0, 17, 2499, 2500, 4999]
    for i in bad:
        users[i] = {**users[i], "profile": "Gold"}
    assert invalid_items(USER_CHECK, users) == bad
    assert invalid_items(USER_CHECK, []) == []
    assert invalid_items(USER_CHECK, [users[0]]) == [0]


def test_compile_check_refuses_keywords_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="does not implement"):
        compile_check(ROOT, {"type": "string", "format": "email"})
    with pytest.raises(ValueError, match="does not implement"):
        compile_check(ROOT, {"oneOf": [{"type": "string"}]})


CLASS_PATTERNS = [r"^[^\u0000-\u001f\u007f-\u009f]{1,200}$(?!\n)", r"^[0-9]{2,10}$(?!\n)",
                  r"^[a-c]+$(?!\n)", r"^[^\]x]{0,3}$(?!\n)"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CLASS_PATTERNS),
       st.lists(st.one_of(st.text(alphabet=st.sampled_from("ab09x]\n\x00\x7f\x9f é"),
                                  max_size=12), st.integers(), st.none()), max_size=6))
def test_single_class_columns_agree_with_re_search(pattern: str, values: list) -> None:
    """The column trick for `^[CLASS]{m,n}$` says exactly what re.search says per value."""
    import re

    from reconciler.schema import _one_class
    check = _one_class(pattern)
    assert check is not None
    expected = all(isinstance(v, str) and re.search(pattern, v) for v in values)
    assert check(values) == expected
