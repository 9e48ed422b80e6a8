"""`crctl explain` and `crctl report` (DESIGN §9): the evidence side of policies.

explain: one user of a desired file, each effective CR field with the line it came
from, and every policy that matches them (met, waived, broken).
report: every policy of the desired files against the *current* state, with who is
compliant since when (replayed from the audit log), who is waived and who breaks it; the
body is hashed (sha256) so a printed report can be checked against its JSON.

Pure: the callers pass the loaded documents, the state, the audit entries and the date.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from reconciler.loader import Document
from reconciler.model import CR_FIELDS, CR_PROFILES, CurrentAccount, DesiredAccount, product_name
from reconciler.policy import (
    BUILT_IN,
    CR_DEFAULTS,
    Policy,
    Rules,
    breaches,
    effective_cr,
    require_words,
    waiver_for,
)

# -- explain ------------------------------------------------------------------------

def explain(doc: Document, desired: DesiredAccount, username: str, own: Any,
            today: str) -> dict[str, Any]:
    """The explanation of `username` (a user of `desired`); `own` is their own
    call_recording value as written (ABSENT if the key is missing), read before
    validation completed the record."""
    user = desired.users[username]
    rules = desired.rules or Rules()
    defaults, policies = rules.applying(user)
    where = ("users", username, "call_recording")
    cr: dict[str, Any] | None = None
    reason = ""
    if own is None:
        reason = "call_recording: null opts this user out of every default"
        origin_path: tuple[Any, ...] = where
    else:
        origins: dict[str, Any] = {}
        merged = effective_cr(user, own, defaults, origins)
        origin_path = where
        if merged is None:
            reason = ("no call_recording key and no default that matches this user gives a "
                      "product" if user["profile"] in CR_PROFILES else
                      f"the {user['profile']} profile cannot have Call Recording (defaults "
                      "never give it)")
        else:
            cr = {}
            paths = []
            for name in CR_FIELDS:
                source = origins.get(name, BUILT_IN)
                path = (where + (name,) if source == "user" else
                        ("defaults", source, "call_recording", name) if source != BUILT_IN
                        else None)
                if path is not None:
                    paths.append(path)
                value = merged.get(name, CR_DEFAULTS.get(name))
                cr[name] = {"value": value, "from": _origin_name(username, source, name),
                            "path": path}
            doc.locate(paths)
            for field_entry in cr.values():
                path = field_entry.pop("path")
                field_entry["line"] = doc.key_position(path)[0] if path is not None else None
            status = user["call_recording"]["status"] if user["call_recording"] else None
            cr["status"] = {"value": status, "from": "activation_date", "line": None}
    if cr is None:
        doc.locate([origin_path])
    out_policies = []
    for policy in policies:
        found = breaches(policy, user["call_recording"])
        entry: dict[str, Any] = {"name": policy.name, "description": policy.description,
                                 "requires": require_words(policy)}
        waiver = waiver_for(rules, policy.name, username, today) if found else None
        if not found:
            entry["status"] = "met"
        elif waiver is not None:
            entry["status"] = "waived"
            entry["exception"] = waiver.to_json()
        else:
            entry["status"] = "broken"
        entry["breaches"] = [{"field": b.field, "requires": b.requires, "gives": b.gives}
                             for b in found]
        out_policies.append(entry)
    return {
        "account": desired.account, "path": desired.path, "user": username,
        "full_name": f"{user['first_name']} {user['last_name']}",
        "attributes": {"location": user["location"], "profile": user["profile"],
                       "roles": user["roles"], "tags": user["tags"]},
        "call_recording": cr,
        "no_call_recording": None if cr is not None else {
            "reason": reason,
            "line": doc.key_position(origin_path)[0] if own is None else None},
        "policies": out_policies,
    }


def _origin_name(username: str, source: Any, name: str) -> str:
    if source == "user":
        return f"users.{username}.call_recording.{name}"
    if source == BUILT_IN:
        return BUILT_IN
    return f"defaults[{source}]"


def explain_text(data: dict[str, Any]) -> str:
    """The human form of `explain` (every string passed through `inert` by the caller)."""
    a = data["attributes"]
    roles = ", ".join(r if isinstance(r, str) else
                      "phone-manager of " + ", ".join(next(iter(r.values())))
                      for r in a["roles"]) or "-"
    lines = [f"{data['user']} ({data['full_name']}), account {data['account']}, "
             f"{data['path']}",
             f"  location {a['location'] or '-'}, profile {a['profile']}, roles {roles}, "
             f"tags {', '.join(a['tags']) or '-'}", ""]
    cr = data["call_recording"]
    if cr is None:
        none = data["no_call_recording"]
        at = f" ({data['path']}:{none['line']})" if none["line"] else ""
        lines.append(f"Call Recording: none: {none['reason']}{at}")
    else:
        lines.append("Call Recording (effective):")
        for name, entry in cr.items():
            value = entry["value"]
            shown = (product_name(value) if name == "product" else
                     "-" if value is None else str(value).lower() if type(value) is bool
                     else str(value))
            if entry["from"] == BUILT_IN:
                source = "the product's default"
            elif name == "status":
                source = "from activation_date"
            else:
                source = f"from {entry['from']} ({data['path']}:{entry['line']})"
            lines.append(f"  {name:<16} {shown:<32} {source}")
    lines.append("")
    if not data["policies"]:
        lines.append("Policies: none match this user.")
    else:
        lines.append("Policies:")
        width = max(len(p["name"]) for p in data["policies"])
        for p in data["policies"]:
            if p["status"] == "met":
                detail = f"met: {p['requires']}"
            elif p["status"] == "waived":
                e = p["exception"]
                detail = (f"waived by exceptions[{e['index']}] until {e['expires']} "
                          f"(approved by {e['approved_by']}): {e['reason']}")
            else:
                detail = "broken: " + "; ".join(
                    f"requires {b['requires']}, this file gives {b['gives']}"
                    for b in p["breaches"])
            lines.append(f"  {p['name']:<{width}}  {detail}")
    return "\n".join(lines) + "\n"


# -- report -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AccountEvidence:
    """What `report` needs of one account: its file's rules and its current state."""

    desired: DesiredAccount
    current: CurrentAccount
    audit: list[dict[str, Any]]  # oldest first, up to the report's date


def report(accounts: Iterable[AccountEvidence], as_of: str) -> dict[str, Any]:
    """The report document; `sha256` is that of its canonical JSON without the key."""
    body: dict[str, Any] = {"as_of": as_of,
                            "accounts": [_account_report(e, as_of) for e in accounts]}
    body["sha256"] = body_digest(body)
    return body


def body_digest(body: dict[str, Any]) -> str:
    rest = {k: v for k, v in body.items() if k != "sha256"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _account_report(evidence: AccountEvidence, as_of: str) -> dict[str, Any]:
    rules = evidence.desired.rules or Rules()
    current = evidence.current
    timelines = _timelines(evidence.audit)
    policies = []
    for policy in rules.policies.values():
        compliant, waived, breaking = [], [], []
        for uid, user in sorted(current.users.items(), key=lambda kv: kv[1]["username"]):
            if not policy.match.matches(user):
                continue
            name = user["username"]
            found = breaches(policy, user["call_recording"])
            if not found:
                compliant.append({"user": name,
                                  "since": _since(policy, timelines.get(uid, []))})
                continue
            waiver = waiver_for(rules, policy.name, name, as_of)
            detail = [{"field": b.field, "requires": b.requires, "has": b.gives}
                      for b in found]
            if waiver is not None:
                waived.append({"user": name, "exception": waiver.to_json(),
                               "breaches": detail})
            else:
                breaking.append({"user": name, "breaches": detail})
        policies.append({"name": policy.name, "description": policy.description,
                         "requires": require_words(policy),
                         "in_scope": len(compliant) + len(waived) + len(breaking),
                         "compliant": compliant, "waived": waived, "breaking": breaking})
    return {"account": evidence.desired.account, "path": evidence.desired.path,
            "serial": current.serial, "policies": policies}


def _timelines(audit: list[dict[str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    """Per user id: (time, the user's record after the entry, or None once deleted)."""
    state: dict[str, dict[str, Any] | None] = {}
    out: dict[str, list[tuple[str, Any]]] = {}
    for entry in audit:
        uid = entry.get("user_id")
        if not isinstance(uid, str):
            continue
        action = entry.get("action")
        after = entry.get("after")
        record = state.get(uid)
        if action == "add_user" and isinstance(after, dict):
            record = dict(after)
        elif action == "update_user" and isinstance(after, dict):
            cr = record.get("call_recording") if record else None
            record = {**after, "call_recording": cr}
        elif action in ("enable", "change") and record is not None:
            record = {**record, "call_recording": after if isinstance(after, dict) else None}
        elif action == "remove" and record is not None:
            record = {**record, "call_recording": None}
        elif action == "delete_user":
            record = None
        else:
            continue
        state[uid] = record
        out.setdefault(uid, []).append((str(entry.get("time") or ""), record))
    return out


def _since(policy: Policy, timeline: list[tuple[str, Any]]) -> str | None:
    """When the user last became (in scope and) compliant, as the audit log tells it;
    None when the log does not know the user (a state restored without its log)."""
    since: str | None = None
    for time, record in timeline:
        ok = (record is not None and policy.match.matches(record)
              and not breaches(policy, record.get("call_recording")))
        if not ok:
            since = None
        elif since is None:
            since = time
    return since


def report_text(data: dict[str, Any]) -> str:
    lines = [f"Compliance report as of {data['as_of']}"]
    for account in data["accounts"]:
        lines += ["", f"Account {account['account']} (state serial {account['serial']}; "
                      f"policies from {account['path']})"]
        if not account["policies"]:
            lines.append("  no policies in this file")
        for p in account["policies"]:
            lines.append(f"  {p['name']}: {p['requires']}"
                         + (f" ({p['description']})" if p["description"] else ""))
            lines.append(f"    {p['in_scope']} in scope: {len(p['compliant'])} compliant, "
                         f"{len(p['waived'])} waived, {len(p['breaking'])} breaking")
            width = max((len(x["user"]) for key in ("compliant", "waived", "breaking")
                         for x in p[key]), default=0)
            for c in p["compliant"]:
                lines.append(f"    compliant  {c['user']:<{width}}  since "
                             f"{c['since'] or 'unknown'}")
            for w in p["waived"]:
                e = w["exception"]
                lines.append(f"    waived     {w['user']:<{width}}  by exceptions[{e['index']}]"
                             f" until {e['expires']} (approved by {e['approved_by']}): "
                             f"{e['reason']}")
            for b in p["breaking"]:
                lines.append(f"    BREAKING   {b['user']:<{width}}  " + "; ".join(
                    f"requires {x['requires']}, the state has {x['has']}"
                    for x in b["breaches"]))
    lines += ["", f"Report sha256: {data['sha256']}"]
    return "\n".join(lines) + "\n"


REPORT_COLUMNS = ("account", "serial", "policy", "user", "status", "since", "exception",
                  "expires", "detail")


def report_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for account in data["accounts"]:
        for p in account["policies"]:
            base = [account["account"], str(account["serial"]), p["name"]]
            rows += [base + [c["user"], "compliant", c["since"] or "", "", "", ""]
                     for c in p["compliant"]]
            rows += [base + [w["user"], "waived", "", f"exceptions[{w['exception']['index']}]",
                             w["exception"]["expires"], w["exception"]["reason"]]
                     for w in p["waived"]]
            rows += [base + [b["user"], "breaking", "", "", "", "; ".join(
                f"requires {x['requires']}, the state has {x['has']}" for x in b["breaches"])]
                for b in p["breaking"]]
    return rows


def report_markdown(data: dict[str, Any], cell: Any) -> str:
    """Markdown tables; `cell` makes a value inert in a table cell (the renderers')."""
    out = [f"## Compliance report as of {data['as_of']}", ""]
    for account in data["accounts"]:
        out += [f"### {cell(account['account'])} (state serial {account['serial']})", ""]
        if not account["policies"]:
            out += ["No policies in this file.", ""]
            continue
        out += ["| Policy | Requires | In scope | Compliant | Waived | Breaking |",
                "|---|---|---:|---:|---:|---:|"]
        for p in account["policies"]:
            out.append(f"| {cell(p['name'])} | {cell(p['requires'])} | {p['in_scope']} | "
                       f"{len(p['compliant'])} | {len(p['waived'])} | {len(p['breaking'])} |")
        out.append("")
        rows = [r for r in report_rows({"accounts": [account]}) if r[4] != "compliant"]
        if rows:
            out += ["| Policy | User | Status | Exception | Expires | Detail |",
                    "|---|---|---|---|---|---|"]
            out += [f"| {cell(r[2])} | {cell(r[3])} | {r[4]} | {cell(r[6])} | {cell(r[7])} "
                    f"| {cell(r[8])} |" for r in rows]
            out.append("")
    out.append(f"Report sha256: `{data['sha256']}`")
    return "\n".join(out) + "\n"
