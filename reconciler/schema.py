"""JSON Schemas: loading them, a fast yes/no check, and located jsonschema errors.

jsonschema gives the best error messages but costs about 40 microseconds per user,
4 s for a 100,000-user file. Valid files are the common case, so `compile_check` turns
the (small, known) subset of JSON Schema our schemas use into plain Python predicates
that only answer "valid or not", and jsonschema runs only on the parts that fail, to
explain why. `compile_check` refuses any keyword it does not implement, so the schema
cannot drift ahead of the fast path unnoticed; tests compare both on random data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from itertools import compress, repeat
from operator import contains, itemgetter
from typing import Any

ANNOTATIONS = frozenset(
    ("$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples",
     "x-message")
)
PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "object": (dict,), "array": (list,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Read a schema shipped in reconciler/schemas/ (also linked as schemas/ at the top)."""
    text = resources.files("reconciler").joinpath("schemas", name).read_text("utf-8")
    return json.loads(text)


def resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` (`#/$defs/name`)."""
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, not {ref!r}")
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


KEYWORDS = frozenset((
    "type", "enum", "const", "pattern", "minLength", "maxLength", "minimum", "maximum",
    "properties", "required", "additionalProperties", "propertyNames", "items",
    "uniqueItems", "minItems", "maxItems", "anyOf", "minProperties",
))

BatchCheck = Callable[[list[Any]], bool]


def compile_check(root: dict[str, Any], schema: dict[str, Any] | None = None) -> BatchCheck:
    """Compile `schema` (default: `root`) into a predicate over a *list* of instances.

    The predicate is true when every instance is valid, exactly as jsonschema would say.
    It works column by column: all users' extensions are checked in one C-level pass
    (`all(map(pattern.search, ...))`), not user by user, because a Python call per value
    costs more than the test itself at 100,000 users.
    """
    schema = resolve(root, root if schema is None else schema)
    unknown = set(schema) - ANNOTATIONS - KEYWORDS
    if unknown:
        raise ValueError(f"compile_check does not implement {sorted(unknown)}")
    steps: list[BatchCheck] = []
    names = schema.get("type")
    names = [names] if isinstance(names, str) else names
    if names == ["string"]:
        steps.append(_string_check(schema, typed=True))
    elif names:
        allowed = frozenset(t for n in names for t in PY_TYPES[n])
        steps.append(lambda vs: allowed.issuperset(map(type, vs)))
    if "const" in schema or "enum" in schema:
        steps.append(_enum_check(schema.get("enum", [schema.get("const")])))
    if names != ["string"] and {"pattern", "minLength", "maxLength"} & schema.keys():
        steps.append(_string_check(schema, typed=False))
    if "minimum" in schema or "maximum" in schema:
        low, high = schema.get("minimum"), schema.get("maximum")
        steps.append(lambda vs: all(
            (low is None or v >= low) and (high is None or v <= high)
            for v in vs if type(v) in (int, float)))
    if "anyOf" in schema:
        steps.append(_any_of([compile_check(root, sub) for sub in schema["anyOf"]]))
    if KEYWORDS_OBJECT & schema.keys():
        steps.append(_only(dict, _object_check(root, schema)))
    if KEYWORDS_ARRAY & schema.keys():
        steps.append(_only(list, _array_check(root, schema)))
    return lambda values: all(step(values) for step in steps)


KEYWORDS_OBJECT = frozenset(("properties", "required", "additionalProperties", "propertyNames"))
KEYWORDS_ARRAY = frozenset(("items", "uniqueItems", "minItems", "maxItems"))


def _any_of(options: list[BatchCheck]) -> BatchCheck:
    """anyOf: every instance valid against one option. The whole column against the
    first option first (the common case: `roles` entries that are all plain strings),
    then instance by instance."""
    def check(values: list[Any]) -> bool:
        if options[0](values):
            return True
        return all(any(option([v]) for option in options) for v in values)

    return check


def _only(kind: type, check: BatchCheck) -> BatchCheck:
    """Apply `check` to the instances of `kind` only (the others pass, as in JSON Schema)."""
    kinds = frozenset((kind,))

    def run(values: list[Any]) -> bool:
        if not kinds.issuperset(map(type, values)):
            values = [v for v in values if type(v) is kind]
        return not values or check(values)

    return run


def _enum_check(members: list[Any]) -> BatchCheck:
    if all(type(m) is str for m in members):
        strings = frozenset(members)
        return lambda vs: {str}.issuperset(map(type, vs)) and strings.issuperset(vs)
    return lambda vs: all(any(type(v) is type(m) and v == m for m in members) for v in vs)


def _string_check(schema: dict[str, Any], typed: bool) -> BatchCheck:
    """type string (if `typed`), pattern and length bounds in as few passes as possible."""
    search = re.compile(schema["pattern"]).search if "pattern" in schema else None
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    strs = frozenset((str,))

    if typed and not low and high is None and "pattern" in schema:
        simple = _one_class(schema["pattern"])
        if simple is not None:
            return simple
    if typed and search is not None and not low and high is None:
        def one_pass(values: list[Any]) -> bool:
            try:  # the search raises TypeError on a non-string: no separate type pass
                return all(map(search, values))
            except TypeError:
                return False

        return one_pass

    def check(values: list[Any]) -> bool:
        if not strs.issuperset(map(type, values)):
            if typed:
                return False
            values = [v for v in values if type(v) is str]
            if not values:
                return True
        if low and min(map(len, values)) < low:
            return False
        if high is not None and max(map(len, values)) > high:
            return False
        return search is None or all(map(search, values))

    return check


# `^[CLASS]{m,n}$(?!\n)` (or `+`): a single character class with a length range.
_ONE_CLASS = re.compile(r"\^\[(\^?)((?:[^\]\\]|\\.)+)\](?:\{(\d+),(\d+)\}|(\+))\$\(\?!\\n\)")


def _one_class(pattern: str) -> BatchCheck | None:
    """A whole column against `^[CLASS]{m,n}$` in two C-level passes, or None.

    Per-value `re.search` costs a Python-level call per user; here the column's lengths
    are bounded with min/max, and one search of the negated class runs over the joined
    column (the class decides each character on its own, so joining changes nothing)."""
    m = _ONE_CLASS.fullmatch(pattern)
    if m is None:
        return None
    negated, body, low, high, plus = m.groups()
    bad = re.compile(f"[{'' if negated else '^'}{body}]").search
    low_n, high_n = (1, None) if plus else (int(low), int(high))

    def check(values: list[Any]) -> bool:
        if not values:
            return True
        try:
            joined = "".join(values)
        except TypeError:  # a value that is not a string
            return False
        lengths = list(map(len, values))
        if min(lengths) < low_n or (high_n is not None and max(lengths) > high_n):
            return False
        return bad(joined) is None

    return check


def _object_check(root: dict[str, Any], schema: dict[str, Any]) -> BatchCheck:
    props = [(k, compile_check(root, s)) for k, s in schema.get("properties", {}).items()]
    known = frozenset(k for k, _ in props)
    required = frozenset(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    extra_check = compile_check(root, extra) if isinstance(extra, dict) else None
    names = compile_check(root, schema["propertyNames"]) if "propertyNames" in schema else None
    fewest = schema.get("minProperties", 0)

    def check(objects: list[dict[str, Any]]) -> bool:
        if required and not all(map(required.issubset, objects)):
            return False
        if fewest and min(map(len, objects)) < fewest:
            return False
        if extra is False and not all(map(known.issuperset, objects)):
            return False
        if names is not None and not names([k for o in objects for k in o]):
            return False
        for key, sub in props:
            if key in required:
                column = list(map(itemgetter(key), objects))
            else:
                column = list(map(itemgetter(key), compress(objects, map(
                    contains, objects, repeat(key)))))
            if column and not sub(column):
                return False
        if extra_check is not None:
            rest = [v for o in objects for k, v in o.items() if k not in known]
            if rest and not extra_check(rest):
                return False
        return True

    return check


def _array_check(root: dict[str, Any], schema: dict[str, Any]) -> BatchCheck:
    items = compile_check(root, schema["items"]) if "items" in schema else None
    unique = schema.get("uniqueItems", False)
    low = schema.get("minItems", 0)
    high = schema.get("maxItems")

    def check(arrays: list[list[Any]]) -> bool:
        lengths = list(map(len, arrays))
        if min(lengths) < low or (high is not None and max(lengths) > high):
            return False
        if items is not None:
            flat = [v for a in arrays for v in a]
            if flat and not items(flat):
                return False
        return not unique or all(
            len({json.dumps(v, sort_keys=True) for v in a}) == len(a) for a in arrays)

    return check


CHUNK = 512  # see invalid_items


def invalid_items(check: BatchCheck, items: list[Any]) -> list[int]:
    """Indexes of the items `check` refuses, found by bisection (cheap when few are bad).

    Bisection starts from chunks of CHUNK items, not from the whole list: halving 100,000
    users down to each of a few bad ones re-checks about twice the whole list per bad
    user, while the chunks cost one pass plus a small bisection each.
    """
    bad: list[int] = []
    stack = [(lo, min(lo + CHUNK, len(items))) for lo in range(0, len(items), CHUNK)]
    stack.reverse()
    while stack:
        lo, hi = stack.pop()
        if hi - lo == 0 or check(items[lo:hi]):
            continue
        if hi - lo == 1:
            bad.append(lo)
            continue
        mid = (lo + hi) // 2
        stack.extend(((mid, hi), (lo, mid)))
    return sorted(bad)


@cache
def checker(name: str) -> BatchCheck:
    """The compiled fast check of a shipped schema, built once per process."""
    return compile_check(load_schema(name))


@cache
def validator(name: str) -> Any:
    """A jsonschema validator for a shipped schema (imported lazily: it costs ~0.1 s)."""
    import jsonschema

    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)
