"""Defaults, policies and exceptions (DESIGN §9): pure rules over user records.

Why one module: `validate` (the effective desired state, breaches as errors), `explain`
(where each field came from) and `report` (the current state against the same
policies) must read the rules identically, or the evidence would disagree with the
check that let a change through.

Speed: a rule's `match` only looks at a user's location, profile, roles and tags, so
the rules that apply are computed once per distinct combination of those
(`Rules.applying`), not once per user: 100,000 users with 20 defaults and 20 policies
cost one dict lookup each plus a few hundred match evaluations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.model import (
    CR_PROFILES,
    PRODUCT_NAMES,
    Product,
    Role,
    account_roles,
    managed_locations,
)

ABSENT: Any = object()  # a user without a `call_recording` key (null is an opt-out)
BUILT_IN = "built-in"  # origin of a field nobody set: the product's own default
CR_DEFAULTS: dict[str, Any] = {"activation_date": None, "prevent_remove": False,
                               "access": "none"}


@dataclass(frozen=True, slots=True)
class Match:
    """`match`: every key given must hold; `{}` matches everyone (DESIGN §9)."""

    locations: frozenset[str] | None = None  # any of
    profiles: frozenset[str] | None = None  # any of
    role: str | None = None
    tags: frozenset[str] = frozenset()  # all of

    @classmethod
    def from_data(cls, data: Any) -> Match:
        data = data if type(data) is dict else {}
        return cls(locations=_any_of(data.get("location")),
                   profiles=_any_of(data.get("profile")),
                   role=data.get("role"),
                   tags=frozenset(data.get("tags") or ()))

    def matches(self, user: Mapping[str, Any]) -> bool:
        if self.locations is not None and user.get("location") not in self.locations:
            return False
        if self.profiles is not None and user.get("profile") not in self.profiles:
            return False
        if self.role is not None and not has_role(user.get("roles") or [], self.role):
            return False
        return self.tags.issubset(user.get("tags") or ())


def _any_of(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset(value) if type(value) is list else frozenset((value,))


def has_role(roles: list[Any], role: str) -> bool:
    """A user holds `role` for the account or, for phone-manager, for some locations."""
    if role in account_roles(roles):
        return True
    return role == Role.PHONE_MANAGER and bool(managed_locations(roles))


@dataclass(frozen=True, slots=True)
class Default:
    index: int  # its place in `defaults` (later entries win)
    match: Match
    fields: dict[str, Any]  # the call_recording fields it gives


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    description: str
    match: Match
    require: dict[str, Any]  # product (any|always-on|on-demand|none), prevent_remove, access


@dataclass(frozen=True, slots=True)
class Waiver:
    """One entry of `exceptions`: `policy` does not apply to `user` until `expires`."""

    index: int
    policy: str
    user: str
    reason: str
    approved_by: str
    expires: str  # ISO date, the last day it waives

    def valid_on(self, today: str) -> bool:
        return self.expires >= today

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "policy": self.policy, "user": self.user,
                "reason": self.reason, "approved_by": self.approved_by,
                "expires": self.expires}


@dataclass(frozen=True, slots=True)
class Breach:
    """How a user's CR falls short of a policy: the field, what is required, what is."""

    field: str  # product, prevent_remove or access
    requires: str
    gives: str


@dataclass(slots=True)
class Rules:
    defaults: tuple[Default, ...] = ()
    policies: dict[str, Policy] = field(default_factory=dict)
    waivers: tuple[Waiver, ...] = ()
    _memo: dict[tuple[Any, ...], tuple[tuple[Default, ...], tuple[Policy, ...]]] = \
        field(default_factory=dict)
    _named: dict[str, tuple[tuple[Default, ...], tuple[Policy, ...]]] = \
        field(default_factory=dict)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Rules:
        """The rules of a file that passed the schema."""
        defaults = tuple(
            Default(i, Match.from_data(d.get("match")), dict(d.get("call_recording") or {}))
            for i, d in enumerate(data.get("defaults") or ()))
        policies = {name: Policy(name, str(p.get("description") or ""),
                                 Match.from_data(p.get("match")), dict(p.get("require") or {}))
                    for name, p in (data.get("policies") or {}).items()}
        waivers = tuple(Waiver(i, e["policy"], e["user"], e.get("reason") or "",
                               e.get("approved_by") or "", e["expires"])
                        for i, e in enumerate(data.get("exceptions") or ()))
        return cls(defaults, policies, waivers)

    def __bool__(self) -> bool:
        return bool(self.defaults or self.policies or self.waivers)

    def applying(self, user: Mapping[str, Any], name: str | None = None
                 ) -> tuple[tuple[Default, ...], tuple[Policy, ...]]:
        """The defaults (in order) and policies whose match holds for `user`. `name`: the
        user's key, when the caller asks again for the same (unchanged) canonical record
        (validate: once for the defaults, once for the policies); the answer is then
        remembered by name, sparing the key of its attributes."""
        if name is not None:
            known = self._named.get(name)
            if known is not None:
                return known
        roles = user.get("roles") or []
        key = (user.get("location"), user.get("profile"),
               tuple(r if type(r) is str else "@" + ",".join(r.get(Role.PHONE_MANAGER, ()))
                     for r in roles),
               tuple(user.get("tags") or ()))
        found = self._memo.get(key)
        if found is None:
            found = (tuple(d for d in self.defaults if d.match.matches(user)),
                     tuple(p for p in self.policies.values() if p.match.matches(user)))
            self._memo[key] = found
        if name is not None:
            self._named[name] = found
        return found

    def forget_names(self) -> None:
        """Drop the answers remembered by user name (a file's validation is over: the
        rules travel on with the account, its users' answers need not)."""
        self._named.clear()


def effective_cr(user: Mapping[str, Any], own: Any, defaults: tuple[Default, ...],
                 origins: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The user's call_recording fields after the defaults that match them (DESIGN §9).

    `own` is the user's own `call_recording` value, or ABSENT. Later defaults win, the
    user's own fields win over all; null opts out of every default; defaults never give
    CR to a profile that cannot have it. Without a product from anywhere a user without
    own fields has no CR (a default may only adjust who has it); one with own fields is
    returned without `product` for the caller to report. `origins`, when given, gets the
    index of the default or "user" for each field set."""
    if own is None:
        return None
    eligible = user.get("profile") in CR_PROFILES
    merged: dict[str, Any] = {}
    if eligible or own is not ABSENT:
        for default in defaults:
            merged.update(default.fields)
            if origins is not None:
                origins.update(dict.fromkeys(default.fields, default.index))
    if own is ABSENT:
        if not eligible or "product" not in merged:
            if origins is not None:
                origins.clear()
            return None
    else:
        merged.update(own)
        if origins is not None:
            origins.update(dict.fromkeys(own, "user"))
    return merged


def breaches(policy: Policy, cr: Mapping[str, Any] | None) -> list[Breach]:
    """What `cr` (an effective call_recording, or None) lacks to meet `policy`."""
    out: list[Breach] = []
    require = policy.require
    product = require.get("product")
    if product == "none":
        if cr is not None:
            out.append(Breach("product", "no Call Recording", product_words(cr)))
    elif product == "any":
        if cr is None:
            out.append(Breach("product", "Call Recording (either product)",
                              product_words(cr)))
    elif product is not None and (cr is None or cr.get("product") != product):
        out.append(Breach("product", PRODUCT_NAMES[Product(product)], product_words(cr)))
    if require.get("prevent_remove") is True and (cr is None or not cr.get("prevent_remove")):
        out.append(Breach("prevent_remove", "prevent_remove: true",
                          "no Call Recording" if cr is None else "prevent_remove: false"))
    access = require.get("access")
    if access is not None and (cr is None or cr.get("access", "none") != access):
        out.append(Breach("access", f"access {access}",
                          "no Call Recording" if cr is None
                          else f"access {cr.get('access', 'none')}"))
    return out


def product_words(cr: Mapping[str, Any] | None) -> str:
    if cr is None:
        return "no Call Recording"
    product = cr.get("product")
    return PRODUCT_NAMES[Product(product)] if product in PRODUCT_NAMES else "no product"


def waiver_for(rules: Rules, policy: str, user: str, today: str) -> Waiver | None:
    """The first exception that waives `policy` for `user` on `today`."""
    for waiver in rules.waivers:
        if waiver.policy == policy and waiver.user == user and waiver.valid_on(today):
            return waiver
    return None


def require_words(policy: Policy) -> str:
    """A policy's requirement in words ("MiCloud Connect MIR Always-On, prevent_remove")."""
    parts = []
    product = policy.require.get("product")
    if product == "none":
        parts.append("no Call Recording")
    elif product == "any":
        parts.append("Call Recording")
    elif product is not None:
        parts.append(PRODUCT_NAMES[Product(product)])
    if policy.require.get("prevent_remove") is True:
        parts.append("prevent_remove: true")
    if policy.require.get("access") is not None:
        parts.append(f"access {policy.require['access']}")
    return ", ".join(parts)
