"""Plans: typed actions, the plan document (DESIGN §5), its checksum, save and load.

A Plan is data only; the planner builds it, renderers show it, the applier executes it.
The JSON document is the saved form. Two hashes identify it (DESIGN §5):
- `digest`: sha256 of the canonical JSON of {account, prior_state, actions, mir} only, so
  two plans of the same change from the same state have the same digest wherever and
  whenever they were made (`apply --expect DIGEST` re-plans and compares);
- `checksum`: sha256 of the canonical JSON of everything else (the digest included), so
  any edit to a saved plan is detected (`apply PLANFILE --checksum SHA`).
A plan set (several accounts) is a JSON list; its digest and checksum are the sha256 of
its documents' digests and checksums joined by "\n", in file order.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler import __version__
from reconciler.errors import InputError, StalePlanError
from reconciler.inert import inert_text
from reconciler.model import PRODUCTS

FORMAT_VERSION = "1"
ACCOUNT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")  # \Z: "$" would accept "acme\n"


class Kind(StrEnum):
    """Action kinds, declared in the order they apply (DESIGN §5)."""

    CREATE_ACCOUNT = "create_account"
    UPDATE_ACCOUNT = "update_account"
    REMOVE = "remove"
    DELETE_USER = "delete_user"
    ADD_USER = "add_user"
    UPDATE_USER = "update_user"
    CHANGE = "change"
    ENABLE = "enable"
    DELETE_GROUP = "delete_group"
    ADD_GROUP = "add_group"
    UPDATE_GROUP = "update_group"
    TERMINATE_ACCOUNT = "terminate_account"


ORDER = {kind: index for index, kind in enumerate(Kind)}
SUMMARY_KEYS = ("enable", "change", "remove", "add_user", "update_user", "delete_user",
                "terminate_account")
# Group actions are counted only in a plan that has some (DESIGN §5: the footer's group
# clause appears only then), so every plan without groups keeps the summary, digest and
# checksum it had before groups existed: a plan saved by an older crctl still loads.
GROUP_KINDS = (Kind.ADD_GROUP, Kind.UPDATE_GROUP, Kind.DELETE_GROUP)
GROUP_SUMMARY_KEYS = ("add_group", "update_group", "delete_group")


@dataclass(frozen=True, slots=True)
class Action:
    """One change. `user` is the username (the new one for a rename); `user_id` is None
    for a user that does not exist yet. A group action names its group in `group` (and no
    user); `group` is None for every other action and absent from its JSON, so a plan
    without group actions has the shape (and digest) it always had.

    `before` and `after` are read-only JSON objects (user details, a CR service, counts):
    a Mapping, so the planner can hand over a record's TypedDict as it is, and a plan
    file's untrusted dict fits too (the applier checks its keys and values)."""

    action: Kind
    user: str | None
    user_id: str | None
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    changed: tuple[str, ...] = ()
    group: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc = {"action": str(self.action), "user": self.user, "user_id": self.user_id,
               "before": self.before, "after": self.after, "changed": list(self.changed)}
        if self.group is not None:
            doc["group"] = self.group
        return doc

    @property
    def subject(self) -> str:
        """What the action is about, as a plan lists it: the user, or the group."""
        return self.user or self.group or ""


@dataclass(frozen=True, slots=True)
class MirrorChange:
    """A MIR mirror entry that differs from what the portal implies (drift): a user's, or
    (with `group` set, user_id and username empty) a recording group's."""

    user_id: str
    username: str
    reason: str
    group: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc = {"user_id": self.user_id, "username": self.username, "reason": self.reason}
        if self.group is not None:
            doc["group"] = self.group
        return doc

    @property
    def subject(self) -> str:
        return f"group {self.group}" if self.group is not None else \
            self.username or self.user_id


@dataclass(frozen=True, slots=True)
class Plan:
    account: str
    desired_path: str | None
    desired_sha256: str | None
    lineage: str | None
    serial: int
    actions: tuple[Action, ...] = ()
    mir_upsert: tuple[MirrorChange, ...] = ()
    mir_delete: tuple[MirrorChange, ...] = ()
    max_remove_pct: int = 30
    created_at: str = ""
    tool_version: str = __version__
    violations: tuple[str, ...] = ()  # the safety limits it breaks (safety.violations)
    forced: bool = False  # made with --force: applying needs no second --force while
    #                       the violations at apply time are these recorded ones
    # DESIGN §9's policy hook, only in a plan of a file with policies: {"policies": {name:
    # {description, match, require}}, "users": {username: {location, profile, roles,
    # tags, policies}}} for every user an action names, so an organisation's own
    # conftest/OPA rule can judge the plan (effective attributes, the matched policies)
    policy_input: dict[str, Any] | None = None
    checksum: str | None = field(default=None, compare=False)
    # made in this run by the planner from desired files validated in this run: the
    # records its actions carry passed the schema and the domain rules already, so the
    # applier checks only the whole-account rules again. Never set for a plan read from a
    # file (untrusted input: every record it proposes is checked in full).
    records_validated: bool = field(default=False, compare=False)
    # the canonical JSON of the actions and the digest, once computed: a plan of 100,000
    # actions is rendered, saved and applied, and each pass over them costs (init=False:
    # `replace` starts a new memo)
    _memo: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def has_changes(self) -> bool:
        return bool(self.actions or self.mir_upsert or self.mir_delete)

    @property
    def terminates(self) -> bool:
        """Asked several times per apply (safety, rendering, the batch): scanned once."""
        found = self._memo.get("terminates")
        if found is None:
            found = self._memo["terminates"] = any(a.action is Kind.TERMINATE_ACCOUNT
                                                   for a in self.actions)
        return bool(found)

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(SUMMARY_KEYS, 0)
        if self.has_group_actions:
            counts.update(dict.fromkeys(GROUP_SUMMARY_KEYS, 0))
        for action in self.actions:
            if action.action in counts:
                counts[action.action] += 1
        return counts

    @property
    def has_group_actions(self) -> bool:
        return any(a.group is not None for a in self.actions)

    def of_kind(self, kind: Kind) -> list[Action]:
        return [a for a in self.actions if a.action is kind]

    @property
    def digest(self) -> str:
        """What the plan changes, from which state: see `digest`."""
        if "digest" not in self._memo:
            self._memo["digest"] = hashlib.sha256(_compose(self._identity_parts())).hexdigest()
        return str(self._memo["digest"])

    def _identity_parts(self) -> dict[str, bytes]:
        """The canonical JSON of each of IDENTITY_KEYS, the actions serialised once."""
        parts: dict[str, bytes] | None = self._memo.get("parts")
        if parts is None:
            parts = {
                "account": canonical_json(self.account),
                "prior_state": canonical_json({"lineage": self.lineage,
                                               "serial": self.serial}),
                "actions": canonical_json([a.to_json() for a in self.actions]),
                "mir": canonical_json(self._mir_json()),
            }
            self._memo["parts"] = parts
        return parts

    def _mir_json(self) -> dict[str, Any]:
        return {"upsert": [m.to_json() for m in self.mir_upsert],
                "delete": [m.to_json() for m in self.mir_delete]}

    def _other_keys(self) -> dict[str, Any]:
        """The document's keys beside IDENTITY_KEYS, digest and checksum."""
        return {
            "format_version": FORMAT_VERSION,
            "tool_version": self.tool_version,
            "created_at": self.created_at,
            "desired": {"path": _as_text(self.desired_path), "sha256": self.desired_sha256},
            "summary": self.summary(),
            "safety": {"max_remove_pct": self.max_remove_pct},
            "violations": list(self.violations),
            "forced": self.forced,
            **({"policy_input": self.policy_input} if self.policy_input is not None else {}),
        }

    def document_checksum(self) -> str:
        """`checksum(self.to_document())`, from the memoised canonical JSON of the actions
        instead of serialising them again."""
        parts = {**self._identity_parts(), "digest": canonical_json(self.digest)}
        parts.update((k, canonical_json(v)) for k, v in self._other_keys().items())
        return hashlib.sha256(_compose(parts)).hexdigest()

    # -- the saved form ---------------------------------------------------------------
    def to_document(self) -> dict[str, Any]:
        doc = {
            **self._other_keys(),
            "account": self.account,
            "prior_state": {"lineage": self.lineage, "serial": self.serial},
            "actions": [a.to_json() for a in self.actions],
            "mir": self._mir_json(),
            "digest": self.digest,
            "checksum": self.document_checksum(),
        }
        order = ("format_version", "tool_version", "account", "created_at", "desired",
                 "prior_state", "actions", "summary", "mir", "safety", "violations",
                 "forced", "policy_input", "digest", "checksum")
        return {k: doc[k] for k in order if k in doc}


def _as_text(path: str | None) -> str | None:
    """A file name as a plan can hold it: JSON text is Unicode, so the bytes of a name
    that is not UTF-8 (dir\\xff/acme.yaml) are written as visible escapes. Such a path
    names no file when the plan is applied, which then relies on its own checks, as it
    does when the desired file is gone."""
    if path is None:
        return None
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return path


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _compose(parts: dict[str, bytes]) -> bytes:
    """The canonical JSON of an object whose values are given as canonical JSON already:
    byte for byte what canonical_json gives for the object itself (keys sorted, no
    spaces), so the bulk of a plan is serialised once for its digest and checksum."""
    return b"{" + b",".join(canonical_json(k) + b":" + parts[k] for k in sorted(parts)) + b"}"


def checksum(doc: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the document without its `checksum` key (its
    `digest` included: the checksum pins everything the file says)."""
    return hashlib.sha256(canonical_json({k: v for k, v in doc.items() if k != "checksum"}))\
        .hexdigest()


IDENTITY_KEYS = ("account", "prior_state", "actions", "mir")


def digest(doc: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the document's {account, prior_state, actions, mir}:
    not its time, tool version, paths or safety notes, so a re-plan of the same change
    from the same state on another machine has the same digest."""
    return hashlib.sha256(canonical_json({k: doc[k] for k in IDENTITY_KEYS})).hexdigest()


def set_hash(hashes: list[str]) -> str:
    """The digest (or checksum) of a plan set: sha256 of its documents' digests (or
    checksums) joined by "\n", in file order."""
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def plan_set(plans: list[Plan]) -> list[Plan]:
    """The documents of a plan set: the accounts with actions or drift, in file order
    (unchanged accounts are counted by the renderers, not listed)."""
    return [p for p in plans if p.has_changes]


@dataclass(frozen=True, slots=True)
class Identity:
    """What a reviewer pins: the digest (of a plan or a plan set) and, for a saved plan,
    its checksum. `accounts` is how many documents the set holds (None: a single plan)."""

    digest: str
    checksum: str | None = None
    accounts: int | None = None

    @property
    def is_set(self) -> bool:
        return self.accounts is not None

    def matches_digest(self, expected: str, digests: list[str]) -> bool:
        """`expected` is this digest, or (a set of one account) that account's own digest:
        a file planned alone and the same file in a directory pin the same change."""
        wanted = expected.strip().lower()
        return wanted == self.digest or (len(digests) == 1 and wanted == digests[0])


def identity(plans: list[Plan], *, as_list: bool, docs: list[dict[str, Any]] | None = None,
             saved: bool = False, loaded: bool = False) -> Identity:
    """The identity of what `dumps(plans, as_list=as_list)` holds.

    `docs`: those documents when already made (their digests are used, not computed
    again); `saved`: the plan is (or is being) saved, so its checksum is part of the
    identity; `loaded`: the plans were read from a saved file, whose documents (and
    verified checksums) are the set as it is, in file order."""
    members = plans if loaded else plan_set(plans) if as_list else plans[:1]
    checksums: list[str] | None = None
    if docs is not None:
        digests = [d["digest"] for d in docs]
        checksums = [d["checksum"] for d in docs] if saved else None
    else:
        digests = [p.digest for p in members]
        if saved:
            checksums = [p.checksum or p.document_checksum() for p in members]
    if not as_list:
        return Identity(digests[0], checksums[0] if checksums else None)
    return Identity(set_hash(digests), set_hash(checksums) if checksums is not None else None,
                    len(digests))


def documents(plans: list[Plan], *, as_list: bool) -> list[dict[str, Any]]:
    """The documents a saved plan holds: one, or those of the plan set."""
    return [p.to_document() for p in (plan_set(plans) if as_list else plans[:1])]


def dumps(plans: list[Plan], *, as_list: bool,
          docs: list[dict[str, Any]] | None = None) -> str:
    """The JSON text of one plan, or of a plan set (a JSON list, see `plan_set`)."""
    docs = documents(plans, as_list=as_list) if docs is None else docs
    return json.dumps(docs if as_list else docs[0], indent=2, ensure_ascii=False) + "\n"


def save(path: str, text: str, inputs: Sequence[str] = ()) -> None:
    """Write a plan file, always 0600 (plans hold personal data), refusing a symlink,
    anything that is not a regular file (`--out /dev/null` run as root would otherwise
    replace the device with a file of personal data) and the desired files it was planned
    from (`inputs`).

    The text goes to a new private file beside `path`, which is then renamed over it:
    an existing file's mode (say 0644) or other hard links never see the new content.
    """
    if not path:
        raise InputError("--out: an empty path names no file; nothing was saved")
    shown = inert_text(path)  # a hostile file name must not forge lines
    directory = os.path.dirname(path) or "."
    tmp = None
    try:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            info = None
        if info is not None and stat.S_ISLNK(info.st_mode):
            raise OSError(errno.ELOOP, "is a symbolic link; refusing to follow it")
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EEXIST, "exists and is not a regular file")
        if info is not None and any(_same_file(path, given) for given in inputs):
            raise OSError(errno.EEXIST, "is one of the desired files being planned")
        fd, tmp = tempfile.mkstemp(prefix=".crctl-plan-", dir=directory)  # O_EXCL, 0600
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise InputError(f"{shown}: cannot write plan file: {exc.strerror}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


MAX_PLAN_BYTES = 512 * 1024 * 1024


def load(path: str, expected_checksum: str | None = None) -> list[Plan]:
    """Read a saved plan file (untrusted input): refuse malformed ones (exit 1) and altered
    ones (exit 3) before anything else looks at them."""
    return load_file(path, expected_checksum)[0]


def load_file(path: str, expected_checksum: str | None = None) -> tuple[list[Plan], bool]:
    """`load`, and whether the file is a plan set (a JSON list)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_PLAN_BYTES)
    except OSError as exc:
        raise InputError(f"{inert_text(path)}: cannot read plan file: {exc.strerror}") from None
    return parse_file(path, raw, expected_checksum)


def parse(path: str, raw: bytes, expected_checksum: str | None = None) -> list[Plan]:
    """`load` of bytes already read from `path`: a pipe (`apply /dev/stdin`) can be read
    only once, so whoever sniffed it hands its bytes on."""
    return parse_file(path, raw, expected_checksum)[0]


def parse_file(path: str, raw: bytes,
               expected_checksum: str | None = None) -> tuple[list[Plan], bool]:
    """`parse`, and whether the plan is a plan set (a JSON list)."""
    shown = inert_text(path)  # a hostile file name must not forge lines
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{shown}: not a crctl plan file (invalid JSON: {exc})") from None
    is_set = isinstance(data, list)
    docs = data if is_set else [data]
    if not docs:
        return [], True  # a plan set of no account: nothing changed anywhere (plan_set)
    plans = [_from_document(path, doc) for doc in docs]
    if expected_checksum is not None:
        _check_expected(shown, plans, expected_checksum, is_set)
    return plans, is_set


def _check_expected(shown: str, plans: list[Plan], expected: str, is_set: bool) -> None:
    """--checksum: the plan's checksum, or a plan set's (see `set_hash`); for a set of one
    document its own checksum too (what `show` prints of that document alone)."""
    checksums = [p.checksum or "" for p in plans]
    actual = set_hash(checksums) if is_set else checksums[0]
    wanted = expected.strip().lower()
    if wanted == actual or (is_set and len(plans) == 1 and wanted == checksums[0]):
        return
    what = f"the plan set's checksum ({len(plans)} accounts)" if is_set else "its checksum"
    raise StalePlanError(f"{shown}: plan was altered: {what} {actual} does not match "
                         f"--checksum {expected}")


LEGACY_KEYS = ("violations", "forced", "digest")


def _is_legacy(doc: dict[str, Any]) -> bool:
    """A document of a crctl before plan identity: no digest, violations or forced.

    It is read as one without violations that was not forced: its checksum covers the
    same content as before, and the missing keys can only make applying it stricter (its
    violations are checked again and need --force). Saved plans live for the length of a
    pull request, so an upgrade of crctl between plan and merge must not strand them."""
    return not any(k in doc for k in LEGACY_KEYS)


def _from_document(path: str, doc: Any) -> Plan:
    shown = inert_text(path)  # a hostile file name must not forge lines
    if not isinstance(doc, dict) or "format_version" not in doc:
        raise InputError(f"{shown}: not a crctl plan file (no format_version)")
    if doc["format_version"] != FORMAT_VERSION:
        raise InputError(f"{shown}: unsupported plan format_version {doc['format_version']!r};"
                         f" this crctl reads version {FORMAT_VERSION}")
    actual = checksum(doc)  # over the document as written, before any upgrade
    legacy = _is_legacy(doc)
    if legacy:
        doc = {**doc, "violations": [], "forced": False, "digest": "0" * 64}
    _check_shape(path, doc)
    if legacy:
        doc["digest"] = digest(doc)
    if doc.get("checksum") != actual:
        raise StalePlanError(f"{shown}: plan was altered: its checksum does not match its "
                             "content; make a new plan with `crctl plan --out`")
    if doc["digest"] != digest(doc):
        raise StalePlanError(f"{shown}: plan was altered: its digest does not match its "
                             "account, prior state, actions and MIR mirror changes; make a "
                             "new plan with `crctl plan --out`")
    actions = tuple(
        Action(Kind(a["action"]), a["user"], a["user_id"], a["before"], a["after"],
               tuple(a["changed"]), a.get("group"))
        for a in doc["actions"]
    )
    _check_groups(path, actions)
    _check_products(path, actions)
    mir = doc["mir"]
    plan = Plan(
        account=doc["account"],
        desired_path=doc["desired"]["path"],
        desired_sha256=doc["desired"]["sha256"],
        lineage=doc["prior_state"]["lineage"],
        serial=doc["prior_state"]["serial"],
        actions=actions,
        mir_upsert=tuple(MirrorChange(**m) for m in mir["upsert"]),
        mir_delete=tuple(MirrorChange(**m) for m in mir["delete"]),
        max_remove_pct=doc["safety"]["max_remove_pct"],
        created_at=doc["created_at"],
        tool_version=doc["tool_version"],
        violations=tuple(doc["violations"]),
        forced=doc["forced"],
        policy_input=doc.get("policy_input"),
        checksum=actual,
    )
    plan._memo["digest"] = doc["digest"]  # verified above: no second pass to render it
    if doc["summary"] != plan.summary():
        raise StalePlanError(f"{shown}: plan was altered: its summary does not match its "
                             "actions")
    return plan


def _check_groups(path: str, actions: tuple[Action, ...]) -> None:
    """A group action names a group and no user; any other action names no group (the
    schema cannot tie the key to the kind)."""
    for index, action in enumerate(actions):
        is_group = action.action in GROUP_KINDS
        if is_group != (action.group is not None) or (
                is_group and (action.user is not None or action.user_id is not None)):
            what = "names its group in 'group' and no user" if is_group \
                else "has no 'group' key"
            raise InputError(f"{inert_text(path)}: not a valid crctl plan file: at "
                             f"actions/{index}: a {action.action} action {what}")


CR_SIDES = {Kind.REMOVE: ("before",), Kind.CHANGE: ("before", "after"),
            Kind.ENABLE: ("after",)}


def _check_products(path: str, actions: tuple[Action, ...]) -> None:
    """Every CR service a plan shows names a known product: renderers print its full name,
    and the schema cannot say which actions' before/after are CR services."""
    shown = inert_text(path)  # a hostile file name must not forge lines
    for index, action in enumerate(actions):
        for side in CR_SIDES.get(action.action, ()):
            cr = getattr(action, side)
            if cr is None:
                continue  # the applier refuses a missing service with a clearer message
            product = cr.get("product")
            if not isinstance(product, str) or product not in PRODUCTS:
                raise InputError(
                    f"{shown}: not a valid crctl plan file: at actions/{index}/{side}/product:"
                    f" {product!r} is not one of {', '.join(sorted(PRODUCTS))}")


def _first_float(doc: Any) -> tuple[str, float] | None:
    """The first JSON number with a fraction or exponent (0.0, 1e3) and where it is.

    JSON Schema's "integer" accepts 0.0, which Python then carries on as a float: a
    serial of 0.0 or a count of 2.0 would reach the applier and its messages. No number
    crctl writes into a plan is a float, so any float is an edited plan. (A loop, not
    recursion: a deeply nested document must not exhaust the stack.)
    """
    pending: list[tuple[str, Any]] = [("", doc)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, float):
            return where, value
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        children = [(f"{where}/{key}" if where else str(key), item) for key, item in items]
        pending.extend(reversed(children))
    return None


def _check_shape(path: str, doc: dict[str, Any]) -> None:
    """The plan schema (schemas/plan.schema.json), with a message naming the first error."""
    shown = inert_text(path)  # a hostile file name must not forge lines
    from reconciler.schema import checker, validator

    fraction = _first_float(doc)
    if fraction is not None:
        where, number = fraction
        raise InputError(f"{shown}: not a valid crctl plan file: at {where or 'document'}: "
                         f"{number!r} is not an integer (a plan holds whole numbers only)")
    if not checker("plan.schema.json")([doc]):
        error = next(iter(validator("plan.schema.json").iter_errors(doc)), None)
        if error is None:  # the two checkers disagree: still a refusal, never a crash
            raise InputError(f"{shown}: not a valid crctl plan file")
        where = "/".join(inert_text(str(p)) for p in error.absolute_path) or "document"
        raise InputError(f"{shown}: not a valid crctl plan file: at {where}: "
                         f"{inert_text(error.message)}")
    if not ACCOUNT_ID.match(doc["account"]):
        raise InputError(f"{shown}: invalid account id {doc['account']!r} in plan")
