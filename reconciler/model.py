"""The domain model: products, profiles, roles, and the shape of accounts and users.

Users are *records*: plain dicts with a fixed set of keys (`UserRecord`), the same shape
in the desired state, in the portal file and in plans. Why not dataclasses: at 100,000
users, building frozen dataclasses for both sides costs about 0.35 s of the 3 s plan
budget, while comparing two records with `==` runs in C. Records are never mutated once
built; every change produces a new record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from reconciler.errors import Diagnostic

if TYPE_CHECKING:
    from reconciler.policy import Rules


class Product(StrEnum):
    """A Call Recording product; the value is the YAML spelling."""

    ALWAYS_ON = "always-on"
    ON_DEMAND = "on-demand"

    @property
    def display_name(self) -> str:
        return PRODUCT_NAMES[self]


PRODUCT_NAMES = {
    Product.ALWAYS_ON: "MiCloud Connect MIR Always-On",
    Product.ON_DEMAND: "MiCloud Connect MIR On-Demand",
}


def product_name(value: str | None) -> str:
    """Full product name for human output ('' for none)."""
    return PRODUCT_NAMES[Product(value)] if value else ""


class Profile(StrEnum):
    ELITE = "Elite"
    PREMIER = "Premier"
    ESSENTIALS = "Essentials"
    TELEPHONY = "Telephony"
    COURTESY = "Courtesy"
    VOICEMAIL = "Voicemail"
    ANALOG = "Analog"


CR_PROFILES = frozenset((Profile.ELITE, Profile.PREMIER, Profile.ESSENTIALS, Profile.TELEPHONY))


class Role(StrEnum):
    DECISION_MAKER = "decision-maker"
    PHONE_MANAGER = "phone-manager"


CR_MANAGER_ROLES = frozenset((Role.DECISION_MAKER, Role.PHONE_MANAGER))


class Status(StrEnum):
    """A CR service is *pending* until its activation date, then *active*."""

    ACTIVE = "active"
    PENDING = "pending"


class Access(StrEnum):
    """MIR Record Management Access of a CR user (DESIGN §1, wave 2).

    none: not even their own recordings (the product's default); own-group: their own
    recordings (an On-Demand user only while in a recording group) and those of the
    members of every group they manage; all: every recording of the account."""

    NONE = "none"
    OWN_GROUP = "own-group"
    ALL = "all"


ACCESS_LEVELS = frozenset(a.value for a in Access)


class CallRecordingRecord(TypedDict):
    product: str
    activation_date: str | None
    prevent_remove: bool
    access: str  # an Access value; "none" when the file does not say
    status: str


class GroupRecord(TypedDict):
    """A MIR Call Recording Group. Desired side and plans: usernames; stored state and
    the MIR mirror: user ids (so a rename keeps the memberships). Both lists sorted,
    without repeats."""

    managers: list[str]
    members: list[str]


# A role entry: "decision-maker" or "phone-manager" (the whole account), or
# {"phone-manager": [locations]} (DESIGN §2: a Phone Manager of those locations only).
# Canonical `roles`: the strings sorted, then at most one such mapping, its locations
# sorted without repeats.
RoleEntry = str | dict[str, list[str]]


class UserRecord(TypedDict):
    username: str
    first_name: str
    last_name: str
    email: str
    extension: str
    phone_number: str | None
    profile: str
    location: str | None
    roles: list[RoleEntry]
    tags: list[str]  # free labels (sorted, no repeats) that §9 rules match on
    call_recording: CallRecordingRecord | None


# Literal field names: code that compares records field by field indexes the TypedDicts
# with them and stays checked (a plain str key is refused on a TypedDict).
DetailField = Literal["username", "first_name", "last_name", "email", "extension",
                      "phone_number", "profile", "location", "roles", "tags"]
CRField = Literal["product", "activation_date", "prevent_remove", "access"]
DETAIL_FIELDS: tuple[DetailField, ...] = (
    "username", "first_name", "last_name", "email", "extension", "phone_number", "profile",
    "location", "roles", "tags")
CR_FIELDS: tuple[CRField, ...] = ("product", "activation_date", "prevent_remove", "access")
GROUP_FIELDS: tuple[Literal["managers", "members"], ...] = ("managers", "members")
# What update_account changes (DESIGN §5: name, settings; safety is not kept yet)
AccountField = Literal["name", "time_zone"]
ACCOUNT_FIELDS: tuple[AccountField, ...] = ("name", "time_zone")


def account_roles(roles: list[RoleEntry]) -> frozenset[str]:
    """The account-level roles of a `roles` list (its string entries)."""
    return frozenset(r for r in roles if type(r) is str)


def canonical_roles(roles: list[RoleEntry] | None) -> list[RoleEntry]:
    """`roles` in canonical form (see RoleEntry): equal roles compare equal as lists."""
    if not roles:
        return []
    names: list[RoleEntry] = []
    names.extend(sorted(r for r in roles if isinstance(r, str)))
    places = sorted({loc for r in roles if type(r) is dict
                     for loc in r.get(Role.PHONE_MANAGER.value, ())})
    return [*names, {Role.PHONE_MANAGER.value: places}] if places else names


def managed_locations(roles: list[RoleEntry]) -> frozenset[str]:
    """The locations a location Phone Manager manages (empty: none, or account-level)."""
    out: set[str] = set()
    for r in roles:
        if type(r) is dict:
            out.update(r.get(Role.PHONE_MANAGER.value, ()))
    return frozenset(out)


PRODUCTS = frozenset(p.value for p in Product)


def is_iso_date(value: Any) -> bool:
    """A real calendar date written exactly YYYY-MM-DD (fromisoformat alone also takes
    '20261201' and week dates, which no file of crctl's uses)."""
    if type(value) is not str or len(value) != 10:
        return False
    try:
        return date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


def status_on(activation_date: str | None, today: str) -> str:
    """The status a service has on `today` (ISO dates compare as strings)."""
    return Status.PENDING if activation_date and activation_date > today else Status.ACTIVE


def full_name(user: UserRecord | dict[str, Any]) -> str:
    return f"{user['first_name']} {user['last_name']}"


@dataclass(frozen=True, slots=True)
class DesiredAccount:
    """One validated desired-state file. `users` is keyed by username."""

    account: str
    path: str
    sha256: str
    name: str | None = None
    max_remove_pct: int = 30
    terminate: bool = False
    users: dict[str, UserRecord] = field(default_factory=dict)
    renamed_from: dict[str, str] = field(default_factory=dict)  # new username -> old
    # recording_groups by name, members as usernames; None: the file has no
    # `recording_groups` key (an empty mapping deletes every group)
    groups: dict[str, GroupRecord] | None = None
    time_zone: str | None = None  # recording_settings.time_zone; None: not declared
    # the file's lints (severity "warning"), in file order: printed, never refusing it
    warnings: tuple[Diagnostic, ...] = ()
    # defaults, policies, exceptions (DESIGN §9); `users` already holds effective values
    rules: Rules | None = None
    raw_policies: dict[str, Any] | None = None  # `policies` as written (the plan's hook)
    # policy breaches, when loaded for explain/report (validate and plan refuse them)
    breaches: tuple[Diagnostic, ...] = ()


@dataclass(frozen=True, slots=True)
class CurrentAccount:
    """The portal's account as read from a backend. `users` is keyed by user id.

    A missing account is `CurrentAccount(account, lineage=None, serial=0)`.
    """

    account: str
    lineage: str | None = None
    serial: int = 0
    name: str | None = None
    next_user_id: int = 1
    users: dict[str, UserRecord] = field(default_factory=dict)
    groups: dict[str, GroupRecord] = field(default_factory=dict)  # members as user ids
    time_zone: str | None = None  # recording_settings.time_zone

    @property
    def exists(self) -> bool:
        return self.lineage is not None

    def by_username(self) -> dict[str, str]:
        """username -> user id."""
        return {u["username"]: uid for uid, u in self.users.items()}

    def has_manager(self, username: str, roles: frozenset[str] = CR_MANAGER_ROLES) -> bool:
        """Whether `username` holds one of `roles` for the whole account."""
        return any(u["username"] == username and roles.intersection(account_roles(u["roles"]))
                   for u in self.users.values())


@dataclass(frozen=True, slots=True)
class Mirror:
    """The MIR mirror: CR users keyed by user id, and the recordings crctl never touches."""

    account: str
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    recordings: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, GroupRecord] = field(default_factory=dict)  # members as user ids


def termination_counts(current: CurrentAccount, mirror: Mirror) -> dict[str, int]:
    """What terminating the account deletes: the counts a terminate_account plan shows
    (its `before`), the tombstone records, and a saved plan is checked against (DESIGN
    §5: a termination whose counts changed since planning is stale). One function, so
    the three can never count differently."""
    return {"users": len(current.users),
            "cr_users": sum(1 for u in current.users.values() if u["call_recording"]),
            "recordings": len(mirror.recordings)}
