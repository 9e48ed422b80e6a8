"""Plan identity and safety in review (DESIGN §5, §8), through the real command.

- identity: every plan document has a `digest` (of account, prior state, actions and MIR
  mirror changes only) beside its `checksum` (of everything else, the digest included);
  a plan set (several accounts) has a set digest and checksum; text, markdown and `show`
  print them, markdown with a hidden marker line for sticky pull-request comments;
- `apply PATH --expect DIGEST` applies only the reviewed change; `apply PLANFILE
  --checksum` accepts a plan set's checksum;
- safety in review: a refused plan is still printed (and saved) in full, violations
  first, then exit 5; a forced saved plan records its violations and applies without a
  second --force while they are the same; termination counts as removing 100% and is
  refused by prevent_remove services, in plan, apply and `crctl terminate`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support import EXAMPLES, REPO, crctl

ACME = EXAMPLES / "acme.yaml"
GLOBEX = EXAMPLES / "globex.yaml"
SCHEMA = json.loads((REPO / "schemas" / "plan.schema.json").read_text(encoding="utf-8"))
HEX = "[0-9a-f]{64}"
GITHUB_LIMIT = 65_536


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_digest(doc: dict[str, Any]) -> str:
    return sha256(canonical({k: doc[k] for k in ("account", "prior_state", "actions", "mir")}))


def expected_checksum(doc: dict[str, Any]) -> str:
    return sha256(canonical({k: v for k, v in doc.items() if k != "checksum"}))


def set_hash(values: list[str]) -> str:
    return sha256("\n".join(values).encode())


def resign(doc: dict[str, Any]) -> dict[str, Any]:
    """Redo the checksum over an edited document, as a forger would."""
    doc["checksum"] = expected_checksum(doc)
    return doc


def snapshot(state: Path) -> dict[str, bytes]:
    return {p.relative_to(state).as_posix(): p.read_bytes()
            for p in sorted(state.rglob("*")) if p.is_file()}


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.M)
    assert match, (pattern, text[-2000:])
    return match[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state holding examples/acme.yaml (jdoe: Decision Maker, prevent_remove)."""
    state = tmp_path / "state"
    result = crctl("apply", ACME, "--auto-approve", state=state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    return state


def acme_changed(tmp_path: Path, name: str = "pr") -> Path:
    """acme.yaml with bob.smith on Always-On: a plain change, no safety limit."""
    text = ACME.read_text(encoding="utf-8")
    start = text.index("  bob.smith:")
    text = text[:start] + text[start:].replace("product: on-demand", "product: always-on", 1)
    return write(tmp_path / name / "acme.yaml", text)


def acme_without_jdoe_cr(tmp_path: Path) -> Path:
    """Removes CR from jdoe, whose service has prevent_remove: true."""
    text = ACME.read_text(encoding="utf-8")
    start = text.index("  jdoe:")
    end = text.index("  asmith:")
    block = re.sub(r"    call_recording:\n(      .*\n)+", "", text[start:end])
    return write(tmp_path / "refused" / "acme.yaml", text[:start] + block + text[end:])


def big_account(account: str, users: int, *, prevent_remove: bool = False,
                terminate: bool = False) -> str:
    """An account of `users` users, the first a Decision Maker `boss`, all with CR."""
    lines = [f"account: {account}\nusers:\n"]
    for i in range(users):
        name = "boss" if i == 0 else f"u{i:03d}"
        lines.append(f"  {name}:\n    first_name: F{i}\n    last_name: L{i}\n"
                     f"    email: {name}@{account}.example\n    extension: \"{2000 + i}\"\n"
                     "    profile: Elite\n")
        if i == 0:
            lines.append("    roles: [decision-maker]\n")
        lines.append("    call_recording:\n      product: on-demand\n")
        if i == 0 and prevent_remove:
            lines.append("      prevent_remove: true\n")
    if terminate:
        lines.append("terminate: true\n")
    return "".join(lines)


# -- 1. the document's digest and checksum -------------------------------------------------

def test_document_has_digest_checksum_violations_and_forced(tmp_path: Path) -> None:
    result = crctl("plan", ACME, "--format", "json", state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    assert doc["digest"] == expected_digest(doc)
    assert doc["checksum"] == expected_checksum(doc)  # everything else, digest included
    assert doc["violations"] == [] and doc["forced"] is False


def test_the_same_change_from_the_same_state_has_the_same_digest(state: Path,
                                                                  tmp_path: Path) -> None:
    """Another clone, another path, another time: same digest, another checksum."""
    first = crctl("plan", acme_changed(tmp_path, "clone1"), "--format", "json", state=state)
    second = crctl("plan", acme_changed(tmp_path, "clone2"), "--format", "json", state=state)
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert one["desired"]["path"] != two["desired"]["path"]
    assert one["digest"] == two["digest"]
    assert one["checksum"] != two["checksum"]
    # a different state (serial) is a different plan
    crctl("apply", acme_changed(tmp_path, "clone1"), "--auto-approve", state=state,
          actor="jdoe")
    again = json.loads(crctl("plan", ACME, "--format", "json", state=state).stdout)
    assert again["digest"] != one["digest"]


def test_text_markdown_and_show_print_the_digest_and_checksum(state: Path,
                                                              tmp_path: Path) -> None:
    saved = tmp_path / "acme.plan"
    text = crctl("plan", acme_changed(tmp_path), "--out", saved, state=state).stdout
    doc = json.loads(saved.read_text())
    lines = text.splitlines()
    assert lines[-3:] == [f"Digest: {doc['digest']}",
                          f"Checksum: {doc['checksum']} (saved plan)",
                          "Plan: 0 to enable, 1 to change, 0 to remove; 0 users to add, "
                          "0 to update, 0 to delete."]
    plain = crctl("plan", acme_changed(tmp_path), state=state).stdout
    assert f"Digest: {doc['digest']}" in plain and "Checksum:" not in plain  # not saved
    shown = crctl("show", saved).stdout
    assert f"Digest: {doc['digest']}" in shown and f"Checksum: {doc['checksum']}" in shown
    md = crctl("show", saved, "--format", "markdown").stdout
    assert md.splitlines()[0] == f"<!-- crctl-plan digest={doc['digest']} -->"
    assert f"`Digest: {doc['digest']}`" in md and doc["checksum"] in md


def test_a_saved_plan_whose_digest_was_edited_is_altered(state: Path, tmp_path: Path) -> None:
    saved = tmp_path / "acme.plan"
    crctl("plan", acme_changed(tmp_path), "--out", saved, state=state)
    doc = json.loads(saved.read_text())
    doc["digest"] = "0" * 64
    write(saved, json.dumps(resign(doc)))
    before = snapshot(state)
    for args in (["apply", saved], ["show", saved]):
        result = crctl(*args, state=state, actor="jdoe")
        assert result.returncode == 3, result.stderr
        assert "altered" in result.stderr and "digest" in result.stderr
    assert snapshot(state) == before


def test_a_plan_saved_before_plan_identity_still_applies(state: Path, tmp_path: Path) -> None:
    """A document without digest, violations and forced (an older crctl's, checksum over
    the rest) is read as not forced, without violations; its digest is computed."""
    saved = tmp_path / "old.plan"
    crctl("plan", acme_changed(tmp_path), "--out", saved, state=state)
    doc = json.loads(saved.read_text())
    digest = doc["digest"]
    for key in ("digest", "violations", "forced"):
        del doc[key]
    write(saved, json.dumps(resign(doc)))
    shown = crctl("show", saved)
    assert shown.returncode == 0, shown.stderr
    assert f"Digest: {digest}" in shown.stdout
    result = crctl("apply", saved, "--checksum", doc["checksum"], state=state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    # only one of the three keys missing is not an older document: invalid
    doc = json.loads(crctl("plan", ACME, "--format", "json", state=state).stdout)
    del doc["forced"]
    write(saved, json.dumps(resign(doc)))
    result = crctl("show", saved)
    assert result.returncode == 1 and "forced" in result.stderr, result.stderr


# -- 2. plan sets ---------------------------------------------------------------------------

def accounts_dir(tmp_path: Path) -> Path:
    """acme (changed) and globex (new)."""
    directory = tmp_path / "accounts"
    write(directory / "acme.yaml", acme_changed(tmp_path).read_text())
    shutil.copy(GLOBEX, directory / "globex.yaml")
    return directory


def test_a_plan_set_lists_the_changed_accounts_with_its_digest(state: Path,
                                                               tmp_path: Path) -> None:
    directory = tmp_path / "accounts"
    write(directory / "acme.yaml", ACME.read_text())  # applied: unchanged
    shutil.copy(GLOBEX, directory / "globex.yaml")
    saved = tmp_path / "set.plan"
    text = crctl("plan", directory, "--out", saved, state=state)
    assert text.returncode == 0, text.stderr
    docs = json.loads(saved.read_text())
    assert isinstance(docs, list)
    listed = [d["account"] for d in docs]
    assert "acme" not in listed and "globex" in listed  # acme is unchanged: not listed
    assert all(d["actions"] or d["mir"]["upsert"] or d["mir"]["delete"] for d in docs)
    digest = set_hash([d["digest"] for d in docs])
    checksum = set_hash([d["checksum"] for d in docs])
    n = len(docs)
    of = f"of the plan set ({n} account{'' if n == 1 else 's'})"
    assert text.stdout.splitlines()[-2:] == [f"Digest {of}: {digest}",
                                             f"Checksum {of}: {checksum} (saved plan)"]
    assert f"Digest {of}: {digest}" in crctl("show", saved).stdout
    md = crctl("plan", directory, "--format", "markdown", state=state).stdout
    assert md.splitlines()[0] == f"<!-- crctl-plan digest={digest} -->"
    shown = crctl("show", saved, "--format", "markdown").stdout
    assert f"<!-- crctl-plan digest={digest} -->" in shown and checksum in shown


def test_apply_accepts_a_plan_sets_checksum(state: Path, tmp_path: Path) -> None:
    saved = tmp_path / "set.plan"
    assert crctl("plan", accounts_dir(tmp_path), "--out", saved, state=state).returncode == 0
    docs = json.loads(saved.read_text())
    assert [d["account"] for d in docs] == ["acme", "globex"]
    checksum = set_hash([d["checksum"] for d in docs])
    before = snapshot(state)
    wrong = crctl("apply", saved, "--checksum", docs[0]["checksum"], state=state,
                  actor="hank")
    assert wrong.returncode == 3, wrong.stderr
    assert "plan set" in wrong.stderr and checksum in wrong.stderr
    assert snapshot(state) == before
    # the actor must manage both accounts: hank is globex's, jdoe acme's
    result = crctl("apply", saved, "--checksum", checksum.upper(), state=state, actor="jdoe")
    assert result.returncode == 6, result.stderr  # the checksum passed; globex refused
    assert snapshot(state) == before


def test_apply_of_a_plan_set_with_its_checksum(tmp_path: Path) -> None:
    state = tmp_path / "state"
    directory = tmp_path / "accounts"
    write(directory / "acme.yaml", ACME.read_text())
    write(directory / "team.yaml", ACME.read_text().replace("account: acme", "account: team"))
    saved = tmp_path / "set.plan"
    assert crctl("plan", directory, "--out", saved, state=state).returncode == 0
    docs = json.loads(saved.read_text())
    result = crctl("apply", saved, "--checksum", set_hash([d["checksum"] for d in docs]),
                   state=state, actor="jdoe")
    assert result.returncode == 0, result.stderr
    listed = json.loads(crctl("accounts", "--format", "json", state=state).stdout)
    assert sorted(a["account"] for a in listed) == ["acme", "team"]


def test_an_unchanged_directory_saves_an_empty_plan_set_that_applies(state: Path,
                                                                    tmp_path: Path) -> None:
    directory = tmp_path / "accounts"
    write(directory / "acme.yaml", ACME.read_text())
    saved = tmp_path / "none.plan"
    result = crctl("plan", directory, "--out", saved, "--detailed-exitcode", state=state)
    assert result.returncode == 0, result.stderr
    assert json.loads(saved.read_text()) == []
    assert f"Digest of the plan set (0 accounts): {set_hash([])}" in result.stdout
    before = snapshot(state)
    applied = crctl("apply", saved, "--checksum", set_hash([]), state=state, actor="jdoe")
    assert applied.returncode == 0, applied.stderr
    assert "No changes." in applied.stdout
    assert snapshot(state) == before


# -- 3. apply --expect DIGEST ---------------------------------------------------------------

def test_expect_applies_the_reviewed_change(state: Path, tmp_path: Path) -> None:
    path = acme_changed(tmp_path)
    digest = found(rf"^Digest: ({HEX})$", crctl("plan", path, state=state).stdout)
    result = crctl("apply", path, "--auto-approve", "--expect", digest, state=state,
                   actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert "Apply complete: 0 enabled, 1 changed" in result.stdout
    assert crctl("plan", path, "--detailed-exitcode", state=state).returncode == 0


def test_expect_refuses_a_plan_that_moved_on(state: Path, tmp_path: Path) -> None:
    """Another merge landed between review and apply: exit 3, saying what the fresh plan
    is, nothing written."""
    path = acme_changed(tmp_path)
    reviewed = found(rf"^Digest: ({HEX})$", crctl("plan", path, state=state).stdout)
    other = write(tmp_path / "other" / "acme.yaml",
                  ACME.read_text().replace("location: Toronto", "location: Kanata"))
    assert crctl("apply", other, "--auto-approve", state=state, actor="jdoe").returncode == 0
    before = snapshot(state)
    result = crctl("apply", path, "--auto-approve", "--expect", reviewed, state=state,
                   actor="jdoe")
    assert result.returncode == 3, result.stdout + result.stderr
    err = result.stderr
    assert reviewed in err and "acme (serial 2" in err
    assert "Plan: 0 to enable, 1 to change" in err and "update" in err
    assert "Plan again" in err
    assert snapshot(state) == before
    fresh = found(rf"^Digest: ({HEX})$", crctl("plan", path, state=state).stdout)
    assert fresh in err  # the digest to review next
    result = crctl("apply", path, "--auto-approve", "--expect", fresh, state=state,
                   actor="jdoe")
    assert result.returncode == 0, result.stderr


def test_expect_on_a_directory_compares_the_set_digest(state: Path, tmp_path: Path) -> None:
    directory = accounts_dir(tmp_path)
    (directory / "globex.yaml").unlink()  # team: a new account jdoe manages too
    write(directory / "team.yaml", ACME.read_text().replace("account: acme", "account: team"))
    plan = crctl("plan", directory, state=state).stdout
    digest = found(rf"^Digest of the plan set \(2 accounts\): ({HEX})$", plan)
    acme_alone = found(rf"^Digest: ({HEX})$",
                       crctl("plan", directory / "acme.yaml", state=state).stdout)
    before = snapshot(state)
    refused = crctl("apply", directory, "--auto-approve", "--expect", acme_alone,
                    state=state, actor="jdoe")
    assert refused.returncode == 3, refused.stderr
    assert "plan set of 2 accounts" in refused.stderr
    assert "acme (serial 1" in refused.stderr and "team (new account" in refused.stderr
    assert snapshot(state) == before
    result = crctl("apply", directory, "--auto-approve", "--expect", digest, state=state,
                   actor="jdoe")
    assert result.returncode == 0, result.stderr


def test_expect_is_for_desired_state_only(state: Path, tmp_path: Path) -> None:
    saved = tmp_path / "acme.plan"
    crctl("plan", acme_changed(tmp_path), "--out", saved, state=state)
    digest = json.loads(saved.read_text())["digest"]
    result = crctl("apply", saved, "--expect", digest, state=state, actor="jdoe")
    assert result.returncode == 1 and "--checksum" in result.stderr, result.stderr


# -- 4. safety in review --------------------------------------------------------------------

def test_a_refused_plan_is_printed_in_full_in_every_format(state: Path,
                                                           tmp_path: Path) -> None:
    path = acme_without_jdoe_cr(tmp_path)
    for fmt in ("text", "json", "markdown"):
        saved = tmp_path / f"refused-{fmt}.plan"
        result = crctl("plan", path, "--format", fmt, "--out", saved, "--detailed-exitcode",
                       state=state)
        assert result.returncode == 5, (fmt, result.stderr)
        assert "jdoe" in result.stderr and "--force" in result.stderr
        out = result.stdout
        doc = json.loads(saved.read_text())  # saved, for review
        assert doc["forced"] is False and len(doc["violations"]) == 1
        assert "jdoe" in doc["violations"][0] and "prevent_remove" in doc["violations"][0]
        if fmt == "json":
            assert json.loads(out) == doc
        elif fmt == "text":
            assert out.index("Refused by a safety limit") < out.index("Account acme")
            assert doc["violations"][0] in out
            assert "remove CR         jdoe" in out
            assert out.splitlines()[-1].startswith("Plan: 0 to enable, 0 to change, 1 to "
                                                   "remove")
        else:
            assert out.index("> [!CAUTION]") < out.index("### crctl plan: `acme`")
            assert "Refused by a safety limit" in out and "prevent_remove" in out
            assert "| `jdoe` |" in out
    shown = crctl("show", tmp_path / "refused-text.plan")
    assert shown.returncode == 0 and "Refused by a safety limit" in shown.stdout


def test_a_forced_plan_records_its_violations_and_applies_without_a_second_force(
        state: Path, tmp_path: Path) -> None:
    saved = tmp_path / "forced.plan"
    result = crctl("plan", acme_without_jdoe_cr(tmp_path), "--force", "--format", "markdown",
                   "--out", saved, state=state)
    assert result.returncode == 0, result.stderr
    assert "Forced past a safety limit" in result.stdout.split("### crctl plan")[0]
    doc = json.loads(saved.read_text())
    assert doc["forced"] is True and len(doc["violations"]) == 1
    applied = crctl("apply", saved, state=state, actor="jdoe")
    assert applied.returncode == 0, applied.stderr
    assert "1 removed" in applied.stdout


def test_a_forced_plan_is_refused_for_violations_it_did_not_record(state: Path,
                                                                   tmp_path: Path) -> None:
    saved = tmp_path / "forced.plan"
    crctl("plan", acme_without_jdoe_cr(tmp_path), "--force", "--out", saved, state=state)
    doc = json.loads(saved.read_text())
    recorded = doc["violations"]
    doc["violations"] = []  # forced, but past nothing: the prevent_remove one is new
    write(saved, json.dumps(resign(doc)))
    before = snapshot(state)
    result = crctl("apply", saved, state=state, actor="jdoe")
    assert result.returncode == 5, result.stdout + result.stderr
    assert "not recorded in the forced plan" in result.stderr
    assert recorded[0] in result.stderr
    assert snapshot(state) == before
    assert crctl("apply", saved, "--force", state=state, actor="jdoe").returncode == 0


def test_a_refused_plan_saved_without_force_needs_force_to_apply(state: Path,
                                                                 tmp_path: Path) -> None:
    saved = tmp_path / "refused.plan"
    crctl("plan", acme_without_jdoe_cr(tmp_path), "--out", saved, state=state)
    before = snapshot(state)
    result = crctl("apply", saved, state=state, actor="jdoe")
    assert result.returncode == 5, result.stderr
    assert snapshot(state) == before
    assert crctl("apply", saved, "--force", state=state, actor="jdoe").returncode == 0


def test_prevent_remove_refuses_a_termination_everywhere(state: Path, tmp_path: Path) -> None:
    """acme has 4 users (below the percentage rule) but jdoe's service has
    prevent_remove: true: plan, apply and `crctl terminate` refuse, --force overrides."""
    path = write(tmp_path / "terminate" / "acme.yaml", ACME.read_text() + "terminate: true\n")
    before = snapshot(state)
    runs = [["plan", path], ["apply", path, "--auto-approve"],
            ["terminate", "acme", "--confirm", "acme"]]
    for args in runs:
        result = crctl(*args, state=state, actor="jdoe")
        assert result.returncode == 5, (args, result.stdout + result.stderr)
        assert "prevent_remove" in result.stderr and "jdoe" in result.stderr, args
        assert "--force" in result.stderr
        if args[0] != "terminate":  # the refused plan is printed, violations first
            assert result.stdout.index("Refused by a safety limit") < \
                result.stdout.index("terminate account"), args
        assert snapshot(state) == before, args
    result = crctl("terminate", "acme", "--confirm", "acme", "--force", state=state,
                   actor="jdoe")
    assert result.returncode == 0, result.stderr
    assert "Terminated account acme" in result.stdout


def test_terminating_an_account_of_ten_users_counts_as_removing_all(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = write(tmp_path / "accounts" / "big.yaml", big_account("big", 10))
    assert crctl("apply", path, "--auto-approve", state=state, actor="boss").returncode == 0
    gone = write(tmp_path / "gone" / "big.yaml", big_account("big", 10, terminate=True))
    before = snapshot(state)
    for args in (["plan", gone], ["apply", gone, "--auto-approve"],
                 ["terminate", "big", "--confirm", "big"]):
        result = crctl(*args, state=state, actor="boss")
        assert result.returncode == 5, (args, result.stdout + result.stderr)
        assert "100%" in result.stderr and "max_remove_pct = 30%" in result.stderr, args
        assert snapshot(state) == before, args
    saved = tmp_path / "gone.plan"
    assert crctl("plan", gone, "--force", "--out", saved, state=state).returncode == 0
    assert json.loads(saved.read_text())["forced"] is True
    result = crctl("apply", saved, state=state, actor="boss")  # reviewed, forced
    assert result.returncode == 0, result.stderr
    assert "terminated" in result.stdout


def test_small_accounts_without_prevent_remove_terminate_without_force(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = write(tmp_path / "accounts" / "small.yaml", big_account("small", 9))
    assert crctl("apply", path, "--auto-approve", state=state, actor="boss").returncode == 0
    result = crctl("terminate", "small", "--confirm", "small", state=state, actor="boss")
    assert result.returncode == 0, result.stderr


# -- 5. the markdown of a 1,000-account plan set with violations -----------------------------

def test_markdown_of_a_thousand_accounts_with_violations_fits(tmp_path: Path) -> None:
    """1,000 accounts whose termination breaks a limit each (a prevent_remove boss): the
    comment stays under GitHub's limit with the marker, the digest and the violations
    called out first."""
    state = tmp_path / "state"
    accounts = tmp_path / "accounts"
    gone = tmp_path / "gone"
    for i in range(1000):
        account = f"account-{i:04d}"
        write(accounts / f"{account}.yaml", big_account(account, 1, prevent_remove=True))
        write(gone / f"{account}.yaml", big_account(account, 1, terminate=True))
    applied = crctl("apply", accounts, "--auto-approve", state=state, actor="boss")
    assert applied.returncode == 0, applied.stderr
    saved = tmp_path / "gone.plan"
    result = crctl("plan", gone, "--format", "markdown", "--out", saved, state=state)
    assert result.returncode == 5, result.stderr
    md = result.stdout
    assert len(md) < GITHUB_LIMIT, len(md)
    docs = json.loads(saved.read_text())
    assert len(docs) == 1000 and all(len(d["violations"]) == 1 for d in docs)
    digest = set_hash([d["digest"] for d in docs])
    checksum = set_hash([d["checksum"] for d in docs])
    lines = md.splitlines()
    assert lines[0] == f"<!-- crctl-plan digest={digest} -->"
    assert lines[1] == "> [!CAUTION]"
    assert lines[2] == "> **Refused by 1000 safety limits (--force overrides):**"
    assert docs[0]["violations"][0].replace(":", "\\:") in md  # as inert markdown
    more = found(r"^> - \.\.\. and (\d+) more; `crctl show PLANFILE` lists them all$", md)
    listed = sum(1 for line in lines if line.startswith("> - account "))
    assert listed + int(more) == 1000
    assert f"`Digest of the plan set (1000 accounts): {digest}`" in md
    assert checksum in md
    assert "### crctl plan: 1000 accounts" in md  # the overview follows
    assert "| Accounts to terminate | 1000 |" in md
