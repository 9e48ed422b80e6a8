"""Validation of desired-state files: JSON Schema plus the domain rules, all at once.

One pass over the users does the fast schema check, the domain rules (DESIGN §1-2) and
the construction of canonical records. Only what fails goes on to jsonschema, for its
precise messages, and to a second event walk, for line and column. Every problem of
every file is reported in one run.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from operator import itemgetter
from pathlib import Path as FsPath
from typing import Any, Literal

from reconciler.errors import Diagnostic, InputError, ValidationFailed
from reconciler.loader import Document, Path, field_path, load_file, printable
from reconciler.model import (
    CR_PROFILES,
    DesiredAccount,
    GroupRecord,
    Role,
    UserRecord,
    canonical_roles,
    is_iso_date,
    status_on,
)
from reconciler.policy import ABSENT, Rules, breaches, effective_cr, has_role, waiver_for
from reconciler.schema import compile_check, invalid_items, load_schema, resolve, validator

SCHEMA_NAME = "account.schema.json"
YAML_SUFFIXES = (".yaml", ".yml")
INTEGER = re.compile(r"[-+]?[0-9]{1,18}")  # YAML 1.2 core ints, short enough to convert
LONG_INTEGER = re.compile(r"[-+]?[0-9]+")


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem found before its position is known (positions are looked up in bulk)."""

    path: Path
    message: str
    at_key: bool = False
    first: Path | None = None  # a path whose line the message mentions as {first_line}
    kind: str = ""  # "required" for a missing key (dropped where the loader lost keys)


class _Checks:
    """The compiled fast checks of the account schema, built once per process."""

    _instance: _Checks | None = None

    def __init__(self) -> None:
        root = load_schema(SCHEMA_NAME)
        users = root["properties"]["users"]
        self.root = root
        self.document = compile_check(root)
        top_properties = {**root["properties"], "users": {"type": "object"}}
        self.top = compile_check(root, {**root, "properties": top_properties})
        self.account = compile_check(root, root["properties"]["account"])
        self.username = compile_check(root, users["propertyNames"])
        self.user = compile_check(root, users["additionalProperties"])
        # Per field, to use the sound fields of a user that fails the schema elsewhere.
        fields = resolve(root, users["additionalProperties"])["properties"]
        self.fields = {key: compile_check(root, sub) for key, sub in fields.items()}
        cr = resolve(root, fields["call_recording"])["properties"]
        self.activation_date = compile_check(root, cr["activation_date"])
        self.rules = {key: compile_check(root, root["properties"][key])
                      for key in ("defaults", "policies", "exceptions")}
        settings = resolve(root, root["properties"]["recording_settings"])["properties"]
        self.time_zone = compile_check(root, settings["time_zone"])

    @classmethod
    def get(cls) -> _Checks:
        if cls._instance is None:
            cls._instance = _Checks()
        return cls._instance


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given; a directory becomes every *.yaml / *.yml file below it, recursively
    (DESIGN §4), in a stable order. A file named twice (`dir dir/acme.yaml`) is one file."""
    out: dict[str, str] = {}  # normalised path -> the path as the user spelled it
    for path in paths:
        for file in yaml_files_below(path) if os.path.isdir(path) else [path]:
            out.setdefault(os.path.normpath(file), file)
    return list(out.values())


def yaml_files_below(directory: str) -> list[str]:
    """The *.yaml / *.yml files below `directory`: each directory's own files (sorted by
    name) before its subdirectories' (sorted), so every machine reads a repository in the
    same order (a plan set's digest depends on it).

    Hidden files and directories (a name starting with '.': .git, .github, editors'
    backups, `.gitlab-ci.yml`) are skipped, and symbolic links to directories are not
    followed (no loops); the directory given is read even if its own name is hidden. A
    subdirectory that cannot be read is an error: skipping it would plan without its
    accounts."""
    def unreadable(exc: OSError) -> None:
        raise InputError(f"{printable(str(exc.filename))}: cannot read directory: "
                         f"{exc.strerror}")

    found: list[str] = []
    for root, dirs, names in os.walk(directory, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, name) for name in sorted(names)
                     if not name.startswith(".") and name.endswith(YAML_SUFFIXES)
                     and os.path.isfile(os.path.join(root, name)))
    return found


def duplicate_accounts(desired: Iterable[DesiredAccount]) -> list[Diagnostic]:
    """An account declared by more than one file: a located error at every file after the
    first (validate and plan refuse the same files with the same message)."""
    first: dict[str, str] = {}
    out = []
    for d in desired:
        if d.account not in first:
            first[d.account] = d.path
            continue
        message = f"account {d.account} is also declared in {first[d.account]}"
        try:
            doc = load_file(d.path, strict=False)
            out.append(doc.diagnostic(("account",), message))
        except ValidationFailed:  # the file changed since: its first line will do
            out.append(Diagnostic(printable(d.path), 1, 1, "account", printable(message)))
    return out


def load_desired(path: str, today: str, *, breaches_fatal: bool = True) -> DesiredAccount:
    """Load, validate and build one desired account; raise ValidationFailed with all errors."""
    doc = load_file(path, strict=False)
    return desired_from_document(doc, today, breaches_fatal=breaches_fatal)


def desired_from_document(doc: Document, today: str, *,
                          breaches_fatal: bool = True) -> DesiredAccount:
    """Validate a loaded document; its loader refusals (if any) are reported with the rest.

    With breaches_fatal=False a user breaking a policy is not an error but kept on
    `breaches` (explain and report describe a file's breaches instead of refusing it)."""
    problems, users, renames, rules, rule_lints = _check(doc, today)
    held: list[Problem] = []
    if not breaches_fatal:
        held = [p for p in problems if p.kind == "policy"]
        problems = [p for p in problems if p.kind != "policy"]
    if problems or doc.refusals:
        located = _locate(doc, _known(doc, problems))
        # dict.fromkeys: nothing is reported twice; ValidationFailed sorts by line.
        raise ValidationFailed(list(dict.fromkeys([*doc.refusals, *located])))
    data = doc.data
    lints = _lints(data, users) + rule_lints
    warnings = tuple(sorted((replace(d, severity="warning") for d in _locate(doc, lints)),
                            key=lambda d: (d.line, d.column)))
    breaches_found = tuple(_locate(doc, held))
    safety = data.get("safety") or {}
    return DesiredAccount(
        account=data["account"],
        path=doc.path,
        sha256=doc.sha256,
        name=data.get("name"),
        max_remove_pct=safety.get("max_remove_pct", 30),
        terminate=data.get("terminate", False),
        users=users,
        renamed_from=renames,
        groups=_groups(data.get("recording_groups")),
        time_zone=(data.get("recording_settings") or {}).get("time_zone"),
        warnings=warnings,
        rules=rules if rules else None,
        raw_policies=data.get("policies"),
        breaches=breaches_found,
    )


def str_list(values: list[Any]) -> bool:
    """Whether every item is a string (the common case of `roles`: sorted as it is)."""
    return all(type(v) is str for v in values)


def _groups(raw: dict[str, Any] | None) -> dict[str, GroupRecord] | None:
    """recording_groups in canonical form (sorted lists); None if the file has none."""
    if raw is None:
        return None
    return {name: {"managers": sorted((g or {}).get("managers") or []),
                   "members": sorted((g or {}).get("members") or [])}
            for name, g in raw.items()}


def _coerce(data: Any) -> None:
    """Turn the strings YAML gave us into the booleans and integers the schema wants."""
    if type(data) is not dict:
        return
    if "terminate" in data:
        data["terminate"] = _boolean(data["terminate"])
    safety = data.get("safety")
    if type(safety) is dict and type(safety.get("max_remove_pct")) is str:
        text = safety["max_remove_pct"]
        if INTEGER.fullmatch(text):  # -5 is a whole number (out of range), not a type error
            safety["max_remove_pct"] = int(text)
    for default in data.get("defaults") or () if type(data.get("defaults")) is list else ():
        cr = default.get("call_recording") if type(default) is dict else None
        if type(cr) is dict and "prevent_remove" in cr:
            cr["prevent_remove"] = _boolean(cr["prevent_remove"])
    policies = data.get("policies")
    for policy in policies.values() if type(policies) is dict else ():
        require = policy.get("require") if type(policy) is dict else None
        if type(require) is dict and "prevent_remove" in require:
            require["prevent_remove"] = _boolean(require["prevent_remove"])
    users = data.get("users")
    if type(users) is dict:
        for user in users.values():
            cr = user.get("call_recording") if type(user) is dict else None
            if type(cr) is dict and "prevent_remove" in cr:
                cr["prevent_remove"] = _boolean(cr["prevent_remove"])


def _boolean(value: Any) -> Any:
    return {"true": True, "false": False}.get(value, value) if type(value) is str else value


def _check(doc: Document, today: str
           ) -> tuple[list[Problem], dict[str, UserRecord], dict[str, str], Rules, list[Problem]]:
    """Problems, the canonical (effective) users, renames, the §9 rules and their lints."""
    checks = _Checks.get()
    data = doc.data
    _coerce(data)
    problems: list[Problem] = []
    users: dict[str, UserRecord] = {}
    renames: dict[str, str] = {}
    rules = Rules()
    rule_lints: list[Problem] = []
    raw_users = data.get("users") if type(data) is dict else None
    bad_users: set[str] = set()
    if not checks.document([data]):
        # Explain what failed without paying for jsonschema over every user.
        if not checks.top([data]):
            top_only = {**data, "users": {}} if type(raw_users) is dict else data
            problems.extend(_schema_problems(top_only))
        if type(raw_users) is dict:
            bad_users = _invalid_users(raw_users)
            reduced = {"users": {name: raw_users[name] for name in bad_users}}
            problems.extend(p for p in _schema_problems(reduced) if p.path[:1] == ("users",))
    if type(data) is not dict:
        return problems, users, renames, rules, rule_lints
    # The rules are used only when their sections are sound; a broken one is reported
    # by the schema, and judging users by half a rule would only add noise.
    sound = all(key not in data or check([data[key]])
                for key, check in checks.rules.items())
    if sound:
        rules = Rules.from_data(data)
    if type(raw_users) is dict:
        users, renames = _check_users(raw_users, bad_users, problems, today, rules)
        _group_rules(doc, data.get("recording_groups"), raw_users, renames, problems)
        if rules:
            rule_lints = _policy_rules(rules, users, raw_users, bad_users, problems, today)
        rules.forget_names()
    _account_rules(doc, data, users, bad_users, problems)
    _settings_rules(data.get("recording_settings"), problems)
    return problems, users, renames, rules, rule_lints


def _known(doc: Document, problems: list[Problem]) -> list[Problem]:
    """Drop the problems that only echo a loader refusal.

    An alias was read as None: its value is unknown, so "must be a string, not empty" at
    or under it says nothing new. A mapping that lost a merge key (or a non-string key)
    may have lost required keys with it.
    """
    unread, partial = doc.unread, doc.partial
    if not unread and not partial:
        return problems
    return [p for p in problems
            if not any(p.path[:i] in unread for i in range(len(p.path) + 1))
            and not (p.kind == "required" and p.path in partial)]


def _invalid_users(raw_users: dict[str, Any]) -> set[str]:
    checks = _Checks.get()
    names = list(raw_users)
    values = list(raw_users.values())
    bad = invalid_items(checks.username, names) + invalid_items(checks.user, values)
    return {names[i] for i in bad}


def _check_users(
    raw_users: dict[str, Any], bad: set[str], problems: list[Problem], today: str,
    rules: Rules,
) -> tuple[dict[str, UserRecord], dict[str, str]]:
    """The domain rules of the users that passed the schema, and their canonical records.

    The records are the loaded dicts themselves, completed in place (missing optional
    fields set to None, roles sorted, CR status computed, renamed_from taken out): at
    100,000 users, building new dicts would cost more than all the checks.
    """
    users = {n: r for n, r in raw_users.items() if n not in bad} if bad else raw_users
    for key, normal, message in UNIQUE:
        if bad:
            names, shown = _sound_column(raw_users, bad, key)
            _unique(key, names, shown, normal, message, problems)
        else:
            _unique(key, users, list(map(itemgetter(key), users.values())), normal, message,
                    problems)
    renames: dict[str, str] = {}
    defaults = rules.defaults
    for name, raw in users.items():
        raw["username"] = name
        if "phone_number" not in raw:
            raw["phone_number"] = None
        if "location" not in raw:
            raw["location"] = None
        roles = raw.get("roles")
        raw["roles"] = (sorted(roles) if str_list(roles) else canonical_roles(roles)) \
            if roles else []
        tags = raw.get("tags")
        raw["tags"] = sorted(tags) if tags else []
        if "renamed_from" in raw:
            renames[name] = raw.pop("renamed_from")
        if defaults:
            own = raw.get("call_recording", ABSENT)
            applying = rules.applying(raw, name)[0] if own is not None else ()
            cr = effective_cr(raw, own, applying) if applying else \
                (None if own is ABSENT else own)
        else:
            cr = raw.get("call_recording")
        if cr is None:
            raw["call_recording"] = None
            continue
        raw["call_recording"] = cr
        if "product" not in cr:
            problems.append(Problem(
                ("users", name, "call_recording"),
                f"{name} has call_recording fields but no product, and no default that "
                "matches them gives one; add product: always-on or on-demand", at_key=True))
            continue
        activation = cr.get("activation_date")
        if activation is None:
            cr["activation_date"] = None
        elif not is_iso_date(activation):
            problems.append(Problem(("users", name, "call_recording", "activation_date"),
                                    f"{activation!r} is not a valid date"))
        if "prevent_remove" not in cr:
            cr["prevent_remove"] = False
        if "access" not in cr:
            cr["access"] = "none"
        cr["status"] = status_on(activation, today)
        if raw["profile"] not in CR_PROFILES:
            problems.append(_profile_problem(name, raw["profile"]))
    if bad:
        renames = _check_bad_users(raw_users, bad, renames, problems)
    _rename_rules(raw_users, renames, problems)
    return users, renames


UNIQUE: tuple[tuple[str, Callable[[str], str] | None, str], ...] = (
    ("extension", None, "extension {value} is already used by {other} (line {first_line})"),
    ("email", str.casefold, "email {value} is already used by {other} (line {first_line}); "
                            "emails are compared ignoring case"),
)


def _sound(raw: Any, key: str) -> bool:
    """Whether a user that fails the schema still has a valid `key` (usable by the rules)."""
    return type(raw) is dict and key in raw and _Checks.get().fields[key]([raw[key]])


def _sound_column(raw_users: dict[str, Any], bad: set[str],
                  key: str) -> tuple[list[str], list[Any]]:
    """Users and their `key` values: every valid user, and the invalid ones whose `key` is
    valid (an invalid extension is reported as such, not also as a duplicate)."""
    if all(_sound(raw_users[name], key) for name in bad):  # C-speed column, as when valid
        return list(raw_users), list(map(itemgetter(key), raw_users.values()))
    names, values = [], []
    for name, raw in raw_users.items():
        if name not in bad or _sound(raw, key):
            names.append(name)
            values.append(raw[key])
    return names, values


def _unique(key: str, names: Iterable[str], shown: list[str],
            normal: Callable[[str], str] | None, message: str,
            problems: list[Problem]) -> None:
    """Report the second and later users sharing a value (compared after `normal`)."""
    values = shown if normal is None else list(map(normal, shown))
    if len(set(values)) == len(values):
        return
    first: dict[str, str] = {}
    for name, value, text in zip(names, values, shown, strict=True):
        other = first.setdefault(value, name)
        if other != name:
            problems.append(Problem(("users", name, key),
                                    message.format(value=text, other=other,
                                                   first_line="{first_line}"),
                                    first=("users", other, key)))


def _check_bad_users(raw_users: dict[str, Any], bad: set[str], renames: dict[str, str],
                     problems: list[Problem]) -> dict[str, str]:
    """The domain rules of the users that fail the schema, on their valid fields only.

    Returns the renames of all users (valid or not) in file order, for the rename rules.
    """
    checks = _Checks.get()
    for name, raw in raw_users.items():
        if name not in bad or type(raw) is not dict:
            continue
        cr = raw.get("call_recording")
        if type(cr) is dict:
            activation = cr.get("activation_date")
            if activation is not None and checks.activation_date([activation]) \
                    and not is_iso_date(activation):
                problems.append(Problem(("users", name, "call_recording", "activation_date"),
                                        f"{activation!r} is not a valid date"))
            if _sound(raw, "profile") and raw["profile"] not in CR_PROFILES:
                problems.append(_profile_problem(name, raw["profile"]))
    return {name: renames[name] if name in renames else raw_users[name]["renamed_from"]
            for name in raw_users
            if name in renames or (name in bad and _sound(raw_users[name], "renamed_from"))}


def _profile_problem(name: str, profile: str) -> Problem:
    return Problem(("users", name, "call_recording"),
                   f"Call Recording is available only for users with an Elite, Premier, "
                   f"Essentials or Telephony profile; {name} has {profile}", at_key=True)


def _rename_rules(raw_users: dict[str, Any], renames: dict[str, str],
                  problems: list[Problem]) -> None:
    claimed: dict[str, str] = {}
    for new, old in renames.items():
        path = ("users", new, "renamed_from")
        if old == new:
            problems.append(Problem(path, f"{new} cannot be renamed from itself"))
        elif old in raw_users:
            problems.append(Problem(
                path, f"renamed_from {old!r} collides with the listed user {old}; after a "
                "rename only the new name is listed"))
        elif claimed.setdefault(old, new) != new:
            problems.append(Problem(path, f"renamed_from {old!r} is already claimed by "
                                          f"{claimed[old]}"))


def _account_rules(doc: Document, data: dict[str, Any], users: dict[str, UserRecord],
                   bad_users: set[str], problems: list[Problem]) -> None:
    account = data.get("account")
    stem = FsPath(doc.path).name.rsplit(".", 1)[0]
    if type(account) is str and account != stem and _Checks.get().account([account]):
        problems.append(Problem(("account",), f"account {account!r} must equal the file "
                                              f"name's stem {stem!r}"))
    terminate = data.get("terminate") is True
    raw_users = data.get("users", {})
    if terminate or type(raw_users) is not dict:
        return
    if any(Role.DECISION_MAKER in u["roles"] for u in users.values()):
        return
    # Users that fail the schema count when their roles name a Decision Maker, so that a
    # typo elsewhere neither hides this rule nor makes it fire for nothing.
    if any(_names_decision_maker(raw_users[n]) for n in bad_users if n in raw_users):
        return
    if _roles_unknown(doc, data):
        return
    where = ("users",) if "users" in data else ("account",)
    problems.append(Problem(where, "an account needs at least one user with the "
                                   "decision-maker role", at_key=True))


def _names_decision_maker(raw: Any) -> bool:
    roles = raw.get("roles") if type(raw) is dict else None
    dm = Role.DECISION_MAKER.value
    return roles == dm or (type(roles) is list and dm in roles)


def _roles_unknown(doc: Document, data: dict[str, Any]) -> bool:
    """Whether the loader dropped something that may have held a user's roles (an alias
    read as None, a merge key), so the Decision Maker rule cannot be judged."""
    if () in doc.partial and "users" not in data:
        return True
    return any(p[:1] == ("users",) and (len(p) <= 2 or p[2] == "roles")
               for p in (*doc.unread, *doc.partial))


# -- policies and exceptions (DESIGN §9, wave 2) ---------------------------------------

def _policy_rules(rules: Rules, users: dict[str, UserRecord], raw_users: dict[str, Any],
                  bad: set[str], problems: list[Problem], today: str) -> list[Problem]:
    """Every policy on the effective users; the exceptions register. Returns its lints.

    A breach without a valid exception is an error at the user's field (kind "policy",
    so explain and report can describe it instead); an exception naming an unknown
    policy or user, approved by someone who may not, or expired, is an error at it; one
    that waives nothing is a warning. One pass over the users: the policies that apply
    come from the memo of `Rules.applying`."""
    used: set[int] = set()
    if rules.policies:
        for name, user in users.items():
            for policy in rules.applying(user, name)[1]:
                found = breaches(policy, user["call_recording"])
                if not found:
                    continue
                waiver = waiver_for(rules, policy.name, name, today)
                if waiver is not None:
                    used.add(waiver.index)
                    continue
                for b in found:
                    problems.append(Problem(
                        ("users", name, "call_recording", b.field),
                        f"policy {policy.name} requires {b.requires}; this file gives "
                        f"{b.gives}", at_key=True, kind="policy"))
    lints: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for w in rules.waivers:
        at = ("exceptions", w.index)
        if w.policy not in rules.policies:
            hint = difflib.get_close_matches(w.policy, list(rules.policies), n=1)
            problems.append(Problem(at + ("policy",), f"unknown policy {w.policy!r}"
                                    + (f" (did you mean {hint[0]!r}?)" if hint else "")))
        if w.user not in raw_users:
            problems.append(Problem(at + ("user",), _UserHints(raw_users, {}).unknown(w.user)))
        approver = users.get(w.approved_by)
        if approver is None and w.approved_by not in bad:
            problems.append(Problem(at + ("approved_by",),
                                    _UserHints(raw_users, {}).unknown(w.approved_by)))
        elif approver is not None and not any(has_role(approver["roles"], r.value)
                                              for r in Role):
            problems.append(Problem(at + ("approved_by",),
                                    f"{w.approved_by} is neither a Decision Maker nor a "
                                    "Phone Manager; only they may approve an exception"))
        if not is_iso_date(w.expires):
            problems.append(Problem(at + ("expires",), f"{w.expires!r} is not a valid date"))
        elif not w.valid_on(today):
            problems.append(Problem(at + ("expires",),
                                    f"the exception expired on {w.expires} (today is "
                                    f"{today}); renew it with a new date or remove it"))
        elif w.index not in used and w.policy in rules.policies and w.user in users:
            first = seen.get((w.policy, w.user))
            lints.append(Problem(at, f"waives nothing: {w.user} meets {w.policy}"
                                     if first is None else
                                     f"waives nothing: exceptions[{first}] already waives "
                                     f"{w.policy} for {w.user}"))
        seen.setdefault((w.policy, w.user), w.index)
    return lints


# -- recording groups and settings (DESIGN §1-2, wave 2) -------------------------------

_ABSENT = object()


def _group_rules(doc: Document, groups: Any, raw_users: dict[str, Any],
                 renames: dict[str, str], problems: list[Problem]) -> None:
    """Group managers and members name Call Recording users of this file, and nobody is
    both manager and member of one group. Located at the list entry.

    One dict lookup per entry, whatever the number of users or groups. Entries that are
    not valid usernames are the schema's to report; users whose value the loader did not
    read (an alias) or a `users` mapping that lost entries (a merge key) prove nothing.
    """
    if type(groups) is not dict:
        return
    unread = doc.unread
    users_partial = ("users",) in doc.partial
    hints = _UserHints(raw_users, renames)
    for group, value in groups.items():
        if type(value) is not dict:
            continue
        manager_at: dict[str, int] = {}
        for role in ("managers", "members"):
            entries = value.get(role)
            if type(entries) is not list:
                continue
            for index, name in enumerate(entries):
                if type(name) is not str:
                    continue
                path = ("recording_groups", group, role, index)
                raw = raw_users.get(name, _ABSENT)
                if raw is _ABSENT:
                    if not users_partial and _Checks.get().username([name]):
                        problems.append(Problem(path, hints.unknown(name)))
                    continue
                if role == "managers":
                    manager_at.setdefault(name, index)
                elif name in manager_at:
                    problems.append(Problem(
                        path, f"{name} is also a manager of {group} (line {{first_line}}); "
                              "a user is either a manager or a member of a group",
                        first=("recording_groups", group, "managers", manager_at[name])))
                if type(raw) is not dict or ("users", name, "call_recording") in unread:
                    continue  # the user's own problem, reported at the user
                if raw.get("call_recording") is None:
                    problems.append(Problem(
                        path, f"{name} has no Call Recording; only CR users can be in a "
                              "recording group"))


class _UserHints:
    """'did you mean' for a username a group names but the file does not list.

    difflib over every username costs seconds at 100,000 similar names, so a big file is
    searched only for the names one edit away (a typo) by set lookups."""

    SCAN_AT_MOST = 2000
    ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789._-"

    def __init__(self, raw_users: dict[str, Any], renames: dict[str, str]):
        self.users = raw_users
        self.renames = renames
        self._renamed: dict[str, str] | None = None

    def unknown(self, name: str) -> str:
        if self._renamed is None:
            self._renamed = {old: new for new, old in self.renames.items()}
        if name in self._renamed:
            return (f"{name!r} is not a user of this file: it was renamed to "
                    f"{self._renamed[name]} (name the new username)")
        hint = self.close(name)
        message = f"{name!r} is not a user of this file"
        return f"{message} (did you mean {hint!r}?)" if hint else message

    def close(self, name: str) -> str | None:
        if len(self.users) <= self.SCAN_AT_MOST:
            candidates: Iterable[str] = self.users
        else:
            candidates = [c for c in self._one_edit(name) if c in self.users]
        found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
        return found[0] if found else None

    def _one_edit(self, name: str) -> set[str]:
        splits = [(name[:i], name[i:]) for i in range(len(name) + 1)]
        out = {a + b[1:] for a, b in splits if b}
        out.update(a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1)
        out.update(a + c + b[1:] for a, b in splits if b for c in self.ALPHABET)
        out.update(a + c + b for a, b in splits for c in self.ALPHABET)
        return out


@functools.cache
def time_zones() -> frozenset[str]:
    """The IANA zones this machine knows (read once per process: it scans the tz
    database on disk, or the tzdata package)."""
    return frozenset(zoneinfo.available_timezones())


def _settings_rules(settings: Any, problems: list[Problem]) -> None:
    """recording_settings.time_zone names a real IANA zone, with a close match as hint."""
    if type(settings) is not dict:
        return
    zone = settings.get("time_zone")
    if type(zone) is not str or not _Checks.get().time_zone([zone]):
        return  # absent, or the schema's to report
    known = time_zones()
    # A machine without any tz database (no /usr/share/zoneinfo, no tzdata package)
    # cannot tell a real zone from a made-up one: a name of the schema's form is taken.
    if not known or zone in known:
        return
    folded = {z.casefold(): z for z in known}
    hint = folded.get(zone.casefold())
    if hint is None:
        close = difflib.get_close_matches(zone.casefold(), list(folded), n=1, cutoff=0.6)
        hint = folded[close[0]] if close else None
    message = f"{zone!r} is not an IANA time zone"
    problems.append(Problem(("recording_settings", "time_zone"),
                            f"{message} (did you mean {hint!r}?)" if hint else
                            f"{message}, such as America/Toronto or Europe/Paris"))


def _lints(data: dict[str, Any], users: dict[str, UserRecord]) -> list[Problem]:
    """Warnings of a valid file (DESIGN §2, §9): what is allowed but likely a mistake.

    - an On-Demand user in no recording group (neither manager nor member): they reach
      their recordings only as members of a group. Only in a file with a
      `recording_groups` key: a file without it does not manage groups (those of the
      portal are kept), so it cannot tell who is in one.
    - a group manager with access none: a manager hears the members' recordings only
      with own-group or all access.

    One set of grouped usernames, then one lookup per user and per manager entry.
    """
    groups = data.get("recording_groups")
    if groups is None:
        return []
    out: list[Problem] = []
    grouped: set[str] = set()
    for group, value in groups.items():
        managers = (value or {}).get("managers") or []
        grouped.update(managers)
        grouped.update((value or {}).get("members") or [])
        for index, name in enumerate(managers):
            cr = users[name]["call_recording"]
            if cr is not None and cr["access"] == "none":
                out.append(Problem(
                    ("recording_groups", group, "managers", index),
                    f"{name} manages {group} but has access none; a manager hears the "
                    f"members' recordings only with own-group or all access (set "
                    f"users.{name}.call_recording.access)"))
    on_demand = "on-demand"
    for name, user in users.items():
        cr = user["call_recording"]
        if cr is not None and cr["product"] == on_demand and name not in grouped:
            out.append(Problem(
                ("users", name, "call_recording", "product"),
                f"{name} is On-Demand but in no recording group; On-Demand users reach "
                "their recordings only as members of a recording group"))
    return out


# -- explaining schema failures -------------------------------------------------------

TYPE_WORDS = {"string": "a string", "object": "a mapping", "array": "a list",
              "boolean": "true or false", "integer": "a whole number", "null": "empty"}


def _schema_problems(data: Any) -> list[Problem]:
    """jsonschema's errors for `data`, as problems with plain messages."""
    problems: list[Problem] = []
    for error in validator(SCHEMA_NAME).iter_errors(data):
        problems.extend(_explain(error))
    return problems


def _explain(error: Any) -> list[Problem]:
    path: Path = tuple(error.absolute_path)
    kind = error.validator
    schema = error.schema
    value = error.instance
    if "propertyNames" in error.absolute_schema_path:
        what = "group name" if path == ("recording_groups",) else "username"
        return [Problem(path + (value,),
                        f"invalid {what} {value!r}: {schema.get('x-message', kind)}",
                        at_key=True)]
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        return [Problem(path + (key,), _unknown_key(key, allowed), at_key=True)
                for key in value if key not in allowed]
    if kind == "required":
        return [Problem(path, f"missing required key {key!r}", at_key=True, kind="required")
                for key in error.validator_value if key not in value]
    if kind == "type":
        wanted = error.validator_value
        names = wanted if isinstance(wanted, list) else [wanted]
        if names == ["integer"] and type(value) is str and LONG_INTEGER.fullmatch(value):
            return [Problem(path, f"must be between {schema.get('minimum')} and "
                                  f"{schema.get('maximum')}, not a number of "
                                  f"{len(value.lstrip('+-'))} digits")]
        return [Problem(path, f"must be {' or '.join(TYPE_WORDS[n] for n in names)}, "
                              f"not {_describe(value)}")]
    if kind == "enum" and error.validator_value == [True]:
        return [Problem(path, f"must be true, not {_describe(value)} (leave it out to not "
                              "require it)")]
    if kind in ("minProperties", "minItems"):
        return [Problem(path, "must not be empty")]
    if kind == "enum":
        return [Problem(path, f"{value!r} is not one of: "
                              f"{', '.join(str(v) for v in error.validator_value)}")]
    if kind == "pattern":
        return [Problem(path, f"{value!r} {schema.get('x-message', 'has the wrong format')}")]
    if kind == "minLength":
        return [Problem(path, "must not be empty")]
    if kind == "maxLength":
        return [Problem(path, f"must be at most {error.validator_value} characters long")]
    if kind in ("minimum", "maximum"):
        return [Problem(path, f"must be between {schema.get('minimum')} and "
                              f"{schema.get('maximum')}, not {value}")]
    if kind == "anyOf":
        # a role entry: a plain role, or {phone-manager: [locations]}
        names = [str(v) for sub in error.validator_value for v in sub.get("enum", ())]
        if type(value) is str and names:
            return [Problem(path, f"{value!r} is not one of: {', '.join(names)}")]
        if type(value) is dict and names:
            return [Problem(path, f"must be one of: {', '.join(names)}, or "
                                  "{phone-manager: [locations]} (a Phone Manager of those "
                                  "locations only; decision-maker is an account-level role)")]
    if kind == "uniqueItems":
        return [Problem(path, "must not list the same value twice")]
    return [Problem(path, error.message)]


def _unknown_key(key: str, allowed: list[str]) -> str:
    hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    message = f"unknown key {key!r}"
    if hint:
        return f"{message} (did you mean {hint[0]!r}?)"
    return f"{message}; allowed keys: {', '.join(allowed)}"


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _locate(doc: Document, problems: list[Problem]) -> list[Diagnostic]:
    """Turn problems into diagnostics, looking all positions up in one event walk."""
    doc.locate([p.path for p in problems] + [p.first for p in problems if p.first])
    out = []
    for p in problems:
        message = p.message
        if p.first is not None:
            message = message.replace("{first_line}", str(doc.key_position(p.first)[0]))
        out.append(doc.diagnostic(p.path, message, at_key=p.at_key))
    return out



# -- records produced by a plan (apply re-checks them) ----------------------------------

def check_records(users: dict[str, UserRecord], touched: set[str]) -> list[str]:
    """Domain and schema rules over an account's records, as sentences (empty: valid).

    Used at apply, where a plan file (untrusted input) proposes the records: the users in
    `touched` are checked in full; uniqueness and the Decision Maker rule run over all
    users whatever `touched` holds (a plan made from a desired file validated in this run
    passes none: its records were checked once already, see applier._check_result).
    """
    problems: list[str] = []
    records = [users[uid] for uid in touched if uid in users]
    if records:
        checks = _Checks.get()
        forms = [_desired_form(r) for r in records]
        names = [r["username"] for r in records]
        for index in sorted(set(invalid_items(checks.user, forms))
                            | set(invalid_items(checks.username, names))):
            reduced = {"users": {str(names[index]): forms[index]}}
            found = (_schema_problems(reduced)
                     or [Problem(("users", names[index]), "is invalid")])
            problems.extend(f"{field_path(p.path)}: {printable(p.message)}" for p in found)
    for record in records:
        cr = record["call_recording"] if type(record) is dict else None
        if type(cr) is dict and "product" not in cr:  # a file may leave it to defaults,
            problems.append(printable(  # a record never does
                f"{field_path(('users', record['username'], 'call_recording'))}: "
                "missing required key 'product'"))
        if record["call_recording"] is not None and record["profile"] not in CR_PROFILES:
            problems.append(printable(
                f"{field_path(('users', record['username']))}: Call Recording needs an "
                f"Elite, Premier, Essentials or Telephony profile, not {record['profile']}"))
    unique: tuple[tuple[Literal["username", "extension", "email"], str], ...] = (
        ("username", "a username"), ("extension", "an extension"), ("email", "an email"))
    for key, what in unique:  # columns pulled in C (itemgetter), compared as sets
        values = list(map(itemgetter(key), users.values()))
        if key == "email":  # emails are compared ignoring case, as in a desired file
            values = list(map(str.casefold, values))
        if len(set(values)) != len(values):
            problems.append(f"two users would share {what}")
    dm = Role.DECISION_MAKER
    if users and not any(dm in roles for roles in map(itemgetter("roles"), users.values())):
        problems.append("no user would have the decision-maker role")
    return problems


def _desired_form(record: Any) -> Any:
    """A record as it would be written in YAML (no nulls, no status) for the schema."""
    if type(record) is not dict:
        return record
    form = {k: v for k, v in record.items()
            if k not in ("username", "call_recording") and v is not None and v != []}
    cr = record.get("call_recording")
    if type(cr) is dict:
        form["call_recording"] = {k: v for k, v in cr.items()
                                  if k != "status" and v is not None}
    elif cr is not None:
        form["call_recording"] = cr
    return form
