"""`crctl validate` from the command line: exit codes, help, big files and domain rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_no_traceback, run_crctl, user_yaml

from reconciler import __version__

DM = user_yaml("jdoe", extension="2101", roles="decision-maker")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if ": error: " in line]


# -- the command line ---------------------------------------------------------------------

def test_version(tmp_path: Path) -> None:
    result = run_crctl("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"crctl, version {__version__}"


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["validate", "--help"],
                                  ["validate", "-h"]])
def test_help(tmp_path: Path, args: list[str]) -> None:
    result = run_crctl(*args, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: crctl")
    assert "validate" in result.stdout


def test_validate_help_describes_the_output(tmp_path: Path) -> None:
    out = run_crctl("validate", "--help", cwd=tmp_path).stdout
    assert "PATH..." in out
    assert "PATH:LINE:COL: error: FIELD: message" in out


@pytest.mark.parametrize("args, message", [
    (["validate"], "Missing argument"),
    (["valdate", "x.yaml"], "No such command 'valdate'"),
    (["--bogus", "validate", "x.yaml"], "No such option"),
    (["validate", "--bogus", "x.yaml"], "No such option"),
])
def test_usage_errors_exit_1_not_2(tmp_path: Path, args: list[str], message: str) -> None:
    """Exit 2 means "changes present" to CI scripts, so a usage error must not use it."""
    result = run_crctl(*args, cwd=tmp_path)
    assert result.returncode == 1, result
    assert_no_traceback(result)
    assert message in result.stderr
    assert "Usage: crctl" in result.stderr


def test_bad_crctl_today_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml", "account: acme\nusers:\n" + DM)
    result = run_crctl("validate", path, cwd=tmp_path, env={"CRCTL_TODAY": "2026-13-01"})
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "CRCTL_TODAY" in result.stderr


def test_validate_writes_no_state(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml", "account: acme\nusers:\n" + DM)
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acme.yaml"]


# -- big files ----------------------------------------------------------------------------

def big_account(name: str, n: int, bad: dict[int, str] | None = None) -> str:
    bad = bad or {}
    parts = [f"# yaml-language-server: $schema=../schemas/account.schema.json\n"
             f"account: {name}\nname: Generated {n}\nsafety:\n  max_remove_pct: 10\nusers:\n"]
    for i in range(n):
        cr = ""
        if i % 3 == 0:
            cr = "    call_recording:\n      product: always-on\n"
        elif i % 3 == 1:
            cr = ("    call_recording:\n      product: on-demand\n"
                  "      activation_date: 2026-12-01\n      prevent_remove: false\n")
        parts.append(
            f"  user{i:05d}:\n"
            f"    first_name: First{i}\n"
            f"    last_name: Last\n"
            f"    email: user{i:05d}@{name}.example\n"
            f'    extension: "{i + 100000}"\n'
            f'    phone_number: "+1613{i:07d}"\n'
            f"    profile: {bad.get(i, 'Elite')}\n"
            f"    location: Ottawa\n"
            + ("    roles: [decision-maker]\n" if i == 0 else "")
            + cr
        )
    return "".join(parts)


def test_twenty_thousand_valid_users(tmp_path: Path) -> None:
    path = write(tmp_path, "big.yaml", big_account("big", 20_000))
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_no_traceback(result)
    assert result.stdout.strip() == "1 file is valid."


def test_twenty_thousand_users_with_a_few_bad_ones(tmp_path: Path) -> None:
    bad = {7: "Gold", 12_345: "elite", 19_999: "Premium"}
    text = big_account("big", 20_000, bad)
    path = write(tmp_path, "big.yaml", text)
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    lines = text.splitlines()
    expected = []
    for i, profile in sorted(bad.items()):
        line = lines.index(f"  user{i:05d}:") + 1 + 6  # the profile line
        assert lines[line - 1] == f"    profile: {profile}"
        expected.append(f"{path}:{line}:14: error: users.user{i:05d}.profile: "
                        f"'{profile}' is not one of: Elite, Premier")
    found = errors(result)
    assert len(found) == 3, found
    for line, want in zip(found, expected, strict=True):
        assert line.startswith(want), (line, want)


# -- domain rules, as a user meets them ---------------------------------------------------

def test_every_scalar_is_a_string_end_to_end(tmp_path: Path) -> None:
    """Unquoted 0101 is the extension "0101" (not 101), so it clashes with "0101"."""
    text = ("account: acme\nusers:\n" + DM
            + "  bob:\n    first_name: 0101\n    last_name: on\n    email: bob@example.com\n"
              "    extension: 0101\n    phone_number: +16135550101\n    profile: Elite\n"
            + "  carl:\n    first_name: yes\n    last_name: 1.5\n    email: carl@example.com\n"
              '    extension: "0101"\n    profile: Elite\n')
    path = write(tmp_path, "acme.yaml", text)
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    assert errors(result) == [
        f"{path}:21:16: error: users.carl.extension: extension 0101 is already used by bob "
        "(line 14)"]


def test_terminating_account_needs_no_decision_maker(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml", "account: acme\nterminate: true\nusers: {}\n")
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_empty_users_needs_a_decision_maker(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml", "account: acme\nterminate: false\nusers: {}\n")
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    assert errors(result) == [f"{path}:3:1: error: users: an account needs at least one user "
                              "with the decision-maker role"]


def test_phone_manager_alone_is_not_enough(tmp_path: Path) -> None:
    text = "account: acme\nusers:\n" + user_yaml("pm", extension="21", roles="phone-manager")
    path = write(tmp_path, "acme.yaml", text)
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    assert "an account needs at least one user with the decision-maker role" in result.stderr


@pytest.mark.parametrize("profile", ["Elite", "Premier", "Essentials", "Telephony"])
def test_cr_profiles_accept_call_recording(tmp_path: Path, profile: str) -> None:
    text = ("account: acme\nusers:\n" + DM + user_yaml("bob", extension="2102").replace(
        "profile: Elite", f"profile: {profile}")
        + "    call_recording:\n      product: on-demand\n      activation_date: 2020-01-01\n")
    path = write(tmp_path, "acme.yaml", text)
    assert run_crctl("validate", path, cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("profile", ["Courtesy", "Voicemail", "Analog"])
def test_other_profiles_refuse_call_recording(tmp_path: Path, profile: str) -> None:
    text = ("account: acme\nusers:\n" + DM + user_yaml("bob", extension="2102").replace(
        "profile: Elite", f"profile: {profile}")
        + "    call_recording:\n      product: always-on\n")
    path = write(tmp_path, "acme.yaml", text)
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    assert errors(result) == [
        f"{path}:16:5: error: users.bob.call_recording: Call Recording is available only for "
        f"users with an Elite, Premier, Essentials or Telephony profile; bob has {profile}"]


@pytest.mark.parametrize("profile", ["Courtesy", "Voicemail", "Analog"])
def test_other_profiles_accept_null_call_recording(tmp_path: Path, profile: str) -> None:
    text = ("account: acme\nusers:\n" + DM + user_yaml("bob", extension="2102").replace(
        "profile: Elite", f"profile: {profile}") + "    call_recording:\n")
    path = write(tmp_path, "acme.yaml", text)
    assert run_crctl("validate", path, cwd=tmp_path).returncode == 0


def test_problems_of_several_users_are_all_reported(tmp_path: Path) -> None:
    text = ("account: acme\nusers:\n" + DM
            + user_yaml("bob", extension="2101")  # duplicate extension
            + user_yaml("carl", extension="2103", email="JDOE@example.com")  # duplicate email
            + user_yaml("dan", extension="2104", extra="    renamed_from: jdoe\n")
            + user_yaml("eve", extension="2105", extra="    renamed_from: old\n")
            + user_yaml("fay", extension="2106", extra="    renamed_from: old\n"))
    path = write(tmp_path, "acme.yaml", text)
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    found = errors(result)
    assert len(found) == 4, found
    assert "users.bob.extension: extension 2101 is already used by jdoe (line 7)" in found[0]
    assert "users.carl.email: email JDOE@example.com is already used by jdoe (line 6)" \
        in found[1]
    assert "users.dan.renamed_from: renamed_from 'jdoe' collides with the listed user" \
        in found[2]
    assert "users.fay.renamed_from: renamed_from 'old' is already claimed by eve" in found[3]


# -- bugs found while writing these tests (see the xfail reasons) ---------------------------

def bob(**fields: str) -> str:
    """The user bob with some fields replaced (values are raw YAML)."""
    body = {"first_name": "Bob", "last_name": "Smith", "email": "bob@example.com",
            "extension": '"2102"', "profile": "Premier", **fields}
    return "  bob:\n" + "".join(f"    {k}: {v}\n" for k, v in body.items())


@pytest.mark.parametrize("field, value", [
    ("extension", '"2102\\n"'),
    ("email", '"bob@example.com\\n"'),
    ("phone_number", '"+16135550102\\n"'),
    ("first_name", '"Bob\\n"'),
    ("first_name", "|\n      Bob"),
    ("renamed_from", '"bsmith\\n"'),
])
def test_trailing_newline_is_refused(tmp_path: Path, field: str, value: str) -> None:
    path = write(tmp_path, "acme.yaml", "account: acme\nusers:\n" + DM + bob(**{field: value}))
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1, path.read_text()
    assert f"users.bob.{field}: " in result.stderr


def test_duplicate_extension_with_trailing_newline(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml",
                 "account: acme\nusers:\n" + DM + bob(extension='"2101\\n"'))
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1


def test_duplicate_key_and_unknown_key_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml", "account: acme\nusers:\n" + DM
                 + bob(first_name="Bob", call_recoding="") + "    first_name: Robert\n")
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    found = errors(result)
    assert any("duplicate key 'first_name' (first defined at line 11)" in e for e in found)
    assert any("unknown key 'call_recoding'" in e for e in found), found


def test_missing_decision_maker_reported_with_a_schema_error(tmp_path: Path) -> None:
    text = ("account: acme\nusers:\n"
            + user_yaml("pm", extension="2101", roles="phone-manager")
            + bob(email="bob.example.com"))
    path = write(tmp_path, "acme.yaml", text)
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    found = errors(result)
    assert any("users.bob.email: 'bob.example.com' must be an email address" in e
               for e in found), found
    assert any("an account needs at least one user with the decision-maker role" in e
               for e in found), found


def test_duplicate_extension_reported_with_a_schema_error(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml", "account: acme\nusers:\n" + DM
                 + bob(extension='"2101"', profile="Gold"))
    result = run_crctl("validate", path, cwd=tmp_path)
    found = errors(result)
    assert any("users.bob.profile: 'Gold' is not one of" in e for e in found), found
    assert any("extension 2101 is already used by jdoe" in e for e in found), found


def test_negative_max_remove_pct_message(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml",
                 "account: acme\nsafety:\n  max_remove_pct: -5\nusers:\n" + DM)
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    assert errors(result) == [
        f"{path}:3:19: error: safety.max_remove_pct: must be between 0 and 100, not -5"]


# -- every problem once, in one run (around the fixes above) --------------------------------

def test_loader_refusals_and_validation_problems_in_one_run_by_line(tmp_path: Path) -> None:
    """Tags, anchors, aliases, merge keys and duplicate keys are reported with the schema
    and domain problems, sorted by line, each once; what the loader could not read (an
    alias, a merged mapping) raises no echo ("must be a string", "missing required key",
    "unknown key '<<'", no Decision Maker)."""
    text = ("account: acme\n"                                   # 1
            "users:\n"                                          # 2
            "  jdoe:\n"                                         # 3
            "    first_name: Jane\n"                            # 4
            "    last_name: Doe\n"                              # 5
            "    email: jane@example.com\n"                     # 6
            '    extension: "2101"\n'                           # 7
            "    profile: Elite\n"                              # 8
            "    roles: *dm\n"                                  # 9
            "  bob:\n"                                          # 10
            "    <<: *person\n"                                 # 11
            '    extension: !!str "2101"\n'                     # 12
            "    emial: bob@example.com\n"                      # 13
            "  carl:\n"                                         # 14
            "    first_name: &n Carl\n"                         # 15
            "    last_name: C\n"                                # 16
            "    email: carl@example.com\n"                     # 17
            '    extension: "21x"\n'                            # 18
            "    profile: Elite\n"                              # 19
            "    profile: Premier\n")                           # 20
    path = write(tmp_path, "acme.yaml", text)
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    found = [line.split(": error: ", 1)[1] for line in errors(result)]
    assert found == [
        "users.jdoe.roles: aliases are not allowed (found *dm)",
        "users.bob: merge keys (<<) are not allowed",
        'users.bob["<<"]: aliases are not allowed (found *person)',
        "users.bob.extension: explicit tags are not allowed "
        "(found 'tag:yaml.org,2002:str')",
        "users.bob.extension: extension 2101 is already used by jdoe (line 7)",
        "users.bob.emial: unknown key 'emial' (did you mean 'email'?)",
        "users.carl.first_name: anchors are not allowed (found &n)",
        "users.carl.extension: '21x' must be 2-10 digits",
        "users.carl.profile: duplicate key 'profile' (first defined at line 19)",
    ], found
    lines = [int(line.split(":")[1]) for line in errors(result)]
    assert lines == sorted(lines)


def test_users_that_fail_the_schema_still_count_where_they_are_sound(tmp_path: Path) -> None:
    """A Decision Maker with a bad email still is one; an invalid extension is reported
    as invalid, not also as a duplicate; a sound one is checked for duplicates."""
    text = ("account: acme\nusers:\n"
            + user_yaml("boss", extension="2101", roles="decision-maker",
                        email="boss.example.com")
            + user_yaml("ann", extension="2102")
            + bob(extension='"2102"', profile="Gold")
            + user_yaml("carl", extension="21x")
            + user_yaml("dan", extension="21x", email="Ann@example.com"))
    path = write(tmp_path, "acme.yaml", text)
    found = errors(run_crctl("validate", path, cwd=tmp_path))
    messages = [line.split(": error: ", 1)[1] for line in found]
    assert "users.boss.email: 'boss.example.com' must be an email address such as " \
           "jane.doe@example.com" in messages
    assert not any("decision-maker" in m for m in messages), messages
    assert any(m.startswith("users.bob.extension: extension 2102 is already used by ann")
               for m in messages), messages
    assert sum("21x" in m for m in messages) == 2, messages  # format only, no duplicate
    assert any(m.startswith("users.dan.email: email Ann@example.com is already used by ann")
               for m in messages), messages


@pytest.mark.parametrize("value, message", [
    ("-5", "must be between 0 and 100, not -5"),
    ("101", "must be between 0 and 100, not 101"),
    ("1000000", "must be between 0 and 100, not 1000000"),
    ("-1000000000000000000000000", "must be between 0 and 100, not a number of 25 digits"),
    ("5.5", "must be a whole number, not '5.5'"),
    ("thirty", "must be a whole number, not 'thirty'"),
    ("+5", None), ("05", None), ("-0", None),
])
def test_max_remove_pct_reads_signed_whole_numbers(tmp_path: Path, value: str,
                                                    message: str | None) -> None:
    path = write(tmp_path, "acme.yaml",
                 f"account: acme\nsafety:\n  max_remove_pct: {value}\nusers:\n" + DM)
    result = run_crctl("validate", path, cwd=tmp_path)
    if message is None:
        assert result.returncode == 0, result.stderr
    else:
        assert errors(result) == [f"{path}:3:19: error: safety.max_remove_pct: {message}"]


def test_error_naming_a_hostile_directory_stays_one_inert_line(tmp_path: Path) -> None:
    odd = tmp_path / "a\x1b[2Jb\nforged: error"
    odd.mkdir()
    result = run_crctl("validate", odd, cwd=tmp_path)
    assert result.returncode == 1
    assert "\x1b" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "no *.yaml or *.yml files in" in result.stderr


def test_error_naming_a_hostile_plan_path_stays_one_inert_line(tmp_path: Path) -> None:
    odd = tmp_path / "p\x1b[2J\nforged: error.plan"
    odd.write_text("{not json")
    result = run_crctl("show", odd, cwd=tmp_path)
    assert result.returncode == 1
    assert "\x1b" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "not a crctl plan file" in result.stderr
