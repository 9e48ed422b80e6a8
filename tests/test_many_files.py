"""A repository of many accounts, as a bot in CI applies it (DESIGN §4, §6): actors are
checked only for the accounts that change, several paths and nested directories plan
together, accounts outside the files are listed and never touched, unchanged accounts are
counted; and the CLI details a CI log depends on (lock wait, --lock-timeout, colour,
--help). Every test runs the real `crctl` command."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import account_yaml, portal
from support import crctl

BOT = "ci-bot"


def user(first: str, ext: str, account: str, *roles: str, cr: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "first_name": first.capitalize(), "last_name": "Tester",
        "email": f"{first}@{account}.example", "extension": ext, "profile": "Elite",
        "roles": list(roles)}
    if cr:
        entry["call_recording"] = {"product": "on-demand"}
    return entry


def users_of(account: str, bot_role: str | None, *, extra: int = 0) -> dict[str, Any]:
    """An admin who is Decision Maker, the bot (with `bot_role`, or an ordinary user when
    None) and `extra` more users: changing `extra` is how a test makes a change."""
    out = {"admin": user("admin", "2000", account, "decision-maker"),
           BOT: user("bot", "2001", account, *([bot_role] if bot_role else []), cr=False)}
    for n in range(extra):
        out[f"u{n}"] = user(f"u{n}", f"21{n:02d}", account)
    return out


def write(directory: Path, account: str, bot_role: str | None, *, extra: int = 0,
          name: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"{account}.yaml")
    path.write_text(account_yaml(account, users_of(account, bot_role, extra=extra)),
                    encoding="utf-8")
    return path


def apply_each(state: Path, *paths: Path) -> None:
    """Apply files one by one as each account's own admin."""
    for path in paths:
        result = crctl("apply", path, "--auto-approve", state=state, actor="admin")
        assert result.returncode == 0, result.stderr


def serials(state: Path, *accounts: str) -> dict[str, int]:
    return {a: portal(state, a)["serial"] for a in accounts}


# -- 1. actors: only the accounts that change ---------------------------------------------

def repo_of_three(tmp_path: Path) -> tuple[Path, Path]:
    """acme and globex name the bot a Decision Maker, initech does not know it; all three
    applied by their admins (serial 1)."""
    repo, state = tmp_path / "accounts", tmp_path / "state"
    apply_each(state, write(repo, "acme", "decision-maker"),
               write(repo, "globex", "decision-maker"), write(repo, "initech", None))
    return repo, state


def test_bot_applies_a_directory_where_it_manages_only_the_changed_accounts(
        tmp_path: Path) -> None:
    repo, state = repo_of_three(tmp_path)
    write(repo, "acme", "decision-maker", extra=1)
    write(repo, "globex", "decision-maker", extra=2)
    result = crctl("apply", repo, "--auto-approve", state=state, actor=BOT)
    assert result.returncode == 0, result.stderr
    assert serials(state, "acme", "globex", "initech") == {"acme": 2, "globex": 2,
                                                           "initech": 1}


def test_unchanged_directory_needs_no_actor_at_all(tmp_path: Path) -> None:
    repo, state = repo_of_three(tmp_path)
    result = crctl("apply", repo, "--auto-approve", state=state)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == "No changes."


def test_exit_6_names_every_account_the_actor_lacks_a_role_in(tmp_path: Path) -> None:
    repo, state = repo_of_three(tmp_path)
    apply_each(state, write(repo, "umbrella", None))
    for account, role in (("acme", "decision-maker"), ("initech", None),
                          ("umbrella", None)):
        write(repo, account, role, extra=1)
    result = crctl("apply", repo, "--auto-approve", state=state, actor=BOT)
    assert result.returncode == 6, result.stderr
    assert result.stderr.splitlines() == [
        "Error: actor 'ci-bot' may not apply 2 of the 3 accounts with changes; nothing was "
        "changed:",
        "  account initech: actor 'ci-bot' is not a Decision Maker or Phone Manager in the "
        "current account",
        "  account umbrella: actor 'ci-bot' is not a Decision Maker or Phone Manager in the "
        "current account"]
    assert serials(state, "acme", "globex", "initech", "umbrella") == dict.fromkeys(
        ("acme", "globex", "initech", "umbrella"), 1)


def test_one_refused_account_keeps_the_single_account_message(tmp_path: Path) -> None:
    repo, state = repo_of_three(tmp_path)
    write(repo, "acme", "decision-maker", extra=1)
    write(repo, "initech", None, extra=1)
    result = crctl("apply", repo, "--auto-approve", state=state, actor=BOT)
    assert result.returncode == 6
    assert result.stderr == ("Error: account initech: actor 'ci-bot' is not a Decision "
                             "Maker or Phone Manager in the current account; nothing was "
                             "changed\n")
    assert serials(state, "acme", "initech") == {"acme": 1, "initech": 1}


def test_without_an_actor_exit_6_names_the_accounts_with_changes(tmp_path: Path) -> None:
    repo, state = repo_of_three(tmp_path)
    write(repo, "acme", "decision-maker", extra=1)
    write(repo, "initech", None, extra=1)
    result = crctl("apply", repo, "--auto-approve", state=state)
    assert result.returncode == 6
    assert result.stderr == ("Error: apply needs an actor: pass --actor USER or set "
                             "CRCTL_ACTOR to a Decision Maker or Phone Manager of each of "
                             "the accounts acme, initech\n")


def test_saved_plan_set_checks_the_actor_only_where_it_has_actions(tmp_path: Path) -> None:
    repo, state = repo_of_three(tmp_path)
    write(repo, "globex", "decision-maker", extra=1)
    saved = tmp_path / "plan.json"
    planned = crctl("plan", repo, "--out", saved, state=state)
    assert planned.returncode == 0, planned.stderr
    result = crctl("apply", saved, state=state, actor=BOT)
    assert result.returncode == 0, result.stderr
    assert serials(state, "acme", "globex", "initech") == {"acme": 1, "globex": 2,
                                                           "initech": 1}
    write(repo, "acme", "decision-maker", extra=1)
    write(repo, "initech", None, extra=1)
    planned = crctl("plan", repo, "--out", saved, state=state)
    result = crctl("apply", saved, state=state, actor=BOT)
    assert result.returncode == 6
    assert "account initech: actor 'ci-bot' is not" in result.stderr
    assert serials(state, "acme", "initech") == {"acme": 1, "initech": 1}


def test_a_new_account_takes_the_actor_from_its_desired_file(tmp_path: Path) -> None:
    repo, state = repo_of_three(tmp_path)
    write(repo, "hooli", "phone-manager")
    write(repo, "vandelay", None)
    result = crctl("apply", repo, "--auto-approve", state=state, actor=BOT)
    assert result.returncode == 6
    assert result.stderr == ("Error: account vandelay: actor 'ci-bot' is not a Decision "
                             "Maker or Phone Manager in the desired file (the account does "
                             "not exist yet); nothing was changed\n")
    (repo / "vandelay.yaml").unlink()
    result = crctl("apply", repo, "--auto-approve", state=state, actor=BOT)
    assert result.returncode == 0, result.stderr
    assert json.loads((state / "portal" / "hooli.json").read_text())["serial"] == 1


# -- 2. many files: several paths, directories read recursively ---------------------------

def nested_repo(tmp_path: Path) -> Path:
    """accounts/{emea/acme.yaml, emea/de/globex.yml, amer/initech.yaml, hooli.yaml} and
    hidden things that must be skipped: an invalid .draft.yaml, a .git directory, a
    .gitlab-ci.yml."""
    repo = tmp_path / "accounts"
    write(repo / "emea", "acme", None)
    write(repo / "emea" / "de", "globex", None, name="globex.yml")
    write(repo / "amer", "initech", None)
    write(repo, "hooli", None)
    (repo / ".draft.yaml").write_text("account: [broken\n", encoding="utf-8")
    (repo / ".git").mkdir()
    (repo / ".git" / "config.yaml").write_text("not: [an account\n", encoding="utf-8")
    (repo / "amer" / ".gitlab-ci.yml").write_text("stages: [plan]\n", encoding="utf-8")
    (repo / "README.md").write_text("not an account\n", encoding="utf-8")
    return repo


def plan_accounts(result: Any) -> list[str]:
    assert result.returncode in (0, 2), result.stderr
    return [doc["account"] for doc in json.loads(result.stdout)]


def test_validate_reads_directories_recursively_and_skips_hidden_files(
        tmp_path: Path) -> None:
    repo = nested_repo(tmp_path)
    result = crctl("validate", repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "4 files are valid.\n"


def test_plan_reads_nested_directories_in_a_stable_order(tmp_path: Path) -> None:
    repo = nested_repo(tmp_path)
    result = crctl("plan", repo, "--format", "json", state=tmp_path / "state")
    # each directory's own files first, then its subdirectories by name
    assert plan_accounts(result) == ["hooli", "initech", "acme", "globex"]


def test_plan_and_validate_take_several_paths(tmp_path: Path) -> None:
    repo = nested_repo(tmp_path)
    extra = write(tmp_path / "elsewhere", "umbrella", None)
    args = (repo / "emea", extra, repo / "hooli.yaml")
    assert crctl("validate", *args).stdout == "4 files are valid.\n"
    result = crctl("plan", *args, "--format", "json", state=tmp_path / "state")
    assert plan_accounts(result) == ["acme", "globex", "umbrella", "hooli"]


def test_a_file_named_again_inside_a_directory_counts_once(tmp_path: Path) -> None:
    repo = nested_repo(tmp_path)
    result = crctl("validate", repo, repo / "emea" / "acme.yaml", repo / "emea")
    assert result.stdout == "4 files are valid.\n", result.stderr


def test_an_explicitly_named_hidden_file_is_read(tmp_path: Path) -> None:
    repo = nested_repo(tmp_path)
    result = crctl("validate", repo / ".draft.yaml")
    assert result.returncode == 1
    assert ".draft.yaml:2:1: error: document: YAML syntax error" in result.stderr


def test_apply_takes_several_paths(tmp_path: Path) -> None:
    repo = nested_repo(tmp_path)
    state = tmp_path / "state"
    result = crctl("apply", repo / "emea", repo / "hooli.yaml", "--auto-approve",
                   state=state, actor="admin")
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in (state / "portal").glob("*.json")) == [
        "acme", "globex", "hooli"]


def test_apply_refuses_a_saved_plan_mixed_with_other_paths(tmp_path: Path) -> None:
    repo = nested_repo(tmp_path)
    state = tmp_path / "state"
    saved = tmp_path / "plan.json"
    assert crctl("plan", repo, "--out", saved, state=state).returncode == 0
    result = crctl("apply", saved, repo / "hooli.yaml", state=state, actor="admin")
    assert result.returncode == 1
    assert result.stderr == (f"Error: {saved} is a saved plan: apply takes one saved plan, "
                             "or desired-state files and directories, not both\n")
    assert not (state / "portal").exists()


def test_an_unreadable_subdirectory_is_an_error_not_skipped(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every directory")
    repo = nested_repo(tmp_path)
    (repo / "amer").chmod(0)
    try:
        result = crctl("plan", repo, state=tmp_path / "state")
    finally:
        (repo / "amer").chmod(0o755)
    assert result.returncode == 1
    assert f"{repo / 'amer'}: cannot read directory: Permission denied" in result.stderr
