"""Issue 10 item 4: every string from a desired file, a plan file or the state is printed
inert in text, markdown and `show` output (DESIGN §4-§5).

A desired file may hold bidi controls and line separators in names (only C0/C1 controls
are refused there); a saved plan can be edited and re-checksummed to hold anything,
ESC sequences and newlines included. None of it may reach a terminal raw: each output
line is printable (str.isprintable) and no name forges a plan line. In markdown no name
renders a link, an image, HTML, a mention or a broken table row.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from support import crctl, resign

# What a hostile name may hold in a desired file (the schema refuses C0 and C1 controls).
BIDI_NAME = "Eve\u202egnp.exe\u2066x\u2069"
SEPARATED = "Jane\u2028  + enable CR         root  forged\u2029end"
# What an edited plan may hold: ESC sequences (erase screen, set the window title), a
# newline that forges a plan line, C1 controls (CSI, NEL), DEL, a zero-width joiner.
FORGED_LINE = "  + enable CR         root      MiCloud Connect MIR Always-On"
PLAN_NAME = ("Mal\x1b[2J\x1b]0;pwned\x07lory\n" + FORGED_LINE + "\r\x9b31m\x85\x7f"
             "\u200d\u2028\u202e")
# Markdown that must not render.
MARKDOWN_NAME = "[x](http://evil.example) ![i](http://evil.example/i.png) <img src=x>"
MARKDOWN_LAST = "<!-- hidden --> `tick`` | pipe @octocat www.evil.example **bold**"


def inert(text: str) -> bool:
    """Every line printable: no control, format or separator character at all."""
    return all(line.isprintable() for line in text.split("\n"))


def assert_inert(result: Any) -> None:
    for stream in (result.stdout, result.stderr):
        assert inert(stream), repr(stream)
        assert FORGED_LINE not in stream.split("\n"), stream


def account_yaml(first: str, last: str, name: str = "Acme") -> str:
    return (f"account: acme\nname: {json.dumps(name)}\nusers:\n"
            "  jdoe:\n    first_name: Jane\n    last_name: Doe\n"
            "    email: jdoe@acme.example\n    extension: \"2101\"\n    profile: Elite\n"
            "    roles: [decision-maker]\n    call_recording:\n      product: always-on\n"
            f"  bob:\n    first_name: {json.dumps(first)}\n    last_name: {json.dumps(last)}\n"
            "    email: bob@acme.example\n    extension: \"2102\"\n    profile: Elite\n"
            "    location: Ottawa\n    call_recording:\n      product: on-demand\n")



@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "acme.yaml").write_text(account_yaml(BIDI_NAME, SEPARATED, "Acme\u202e Corp"))
    return tmp_path


def test_names_from_a_desired_file_are_inert_in_every_output(work: Path) -> None:
    state = work / "state"
    for fmt in ("text", "markdown"):
        r = crctl("plan", "acme.yaml", "--format", fmt, state=state, cwd=work)
        assert r.returncode == 0, r.stderr
        assert_inert(r)
    assert "\\u202e" in r.stdout and "\\u2028" in r.stdout  # shown, escaped
    r = crctl("plan", "acme.yaml", "--out", "acme.plan", state=state, cwd=work)
    assert_inert(r)
    assert "Eve\\u202egnp.exe\\u2066x\\u2069" in r.stdout
    for fmt in ("text", "markdown"):
        r = crctl("show", "acme.plan", "--format", fmt, cwd=work)
        assert r.returncode == 0, r.stderr
        assert_inert(r)
    r = crctl("apply", "acme.yaml", "--auto-approve", state=state, actor="jdoe", cwd=work)
    assert r.returncode == 0, r.stderr
    assert_inert(r)
    # from the state now
    for args in (("users", "acme"), ("history", "acme"), ("audit", "acme"), ("accounts",)):
        r = crctl(*args, state=state, cwd=work)
        assert r.returncode == 0, (args, r.stderr)
        assert_inert(r)
    r = crctl("users", "acme", state=state, cwd=work)
    assert "Eve\\u202egnp.exe" in r.stdout and "\\u2028" in r.stdout
    # a change of the names: before and after both from the state / file
    (work / "acme.yaml").write_text(account_yaml(SEPARATED, BIDI_NAME, "Acme\u2029"))
    for fmt in ("text", "markdown"):
        r = crctl("plan", "acme.yaml", "--format", fmt, state=state, cwd=work)
        assert r.returncode == 0, r.stderr
        assert_inert(r)
        assert "first_name" in r.stdout


def test_json_output_stays_exact(work: Path) -> None:
    r = crctl("plan", "acme.yaml", "--format", "json", state=work / "state", cwd=work)
    doc = json.loads(r.stdout)
    names = {a["after"].get("first_name") for a in doc["actions"] if a["action"] == "add_user"}
    assert BIDI_NAME in names


def edited_plan(work: Path, name: str, *, mir_reason: str | None = None) -> Path:
    """acme.plan with bob's first name replaced by `name` and the checksum redone."""
    r = crctl("plan", "acme.yaml", "--out", "acme.plan", state=work / "state", cwd=work)
    assert r.returncode == 0, r.stderr
    doc = json.loads((work / "acme.plan").read_text())
    for action in doc["actions"]:
        if action["action"] == "add_user" and action["user"] == "bob":
            action["after"]["first_name"] = name
            action["after"]["last_name"] = name
    if mir_reason is not None:
        doc["mir"]["upsert"].append({"user_id": "u1\x1b[8m", "username": "bob\x1b[8m\u202e",
                                     "reason": mir_reason})
    (work / "edited.plan").write_text(json.dumps(resign(doc), ensure_ascii=False))
    return work / "edited.plan"


def test_names_from_an_edited_plan_are_inert_in_show_and_apply(work: Path) -> None:
    plan = edited_plan(work, PLAN_NAME, mir_reason="drift\x1b[1m\n" + FORGED_LINE)
    for fmt in ("text", "markdown"):
        r = crctl("show", plan, "--format", fmt, cwd=work)
        assert r.returncode == 0, r.stderr
        assert_inert(r)
    assert "\\x1b[2J" in r.stdout or "\\x1b\\[2J" in r.stdout
    text = crctl("show", plan, cwd=work).stdout
    assert "Mal\\x1b[2J\\x1b]0;pwned\\x07lory\\n  + enable CR" in text
    assert "\\x9b31m\\x85\\x7f\\u200d\\u2028\\u202e" in text
    # applying it is refused (altered: the desired file yields other actions), and the
    # message, which quotes the actions, is inert too
    r = crctl("apply", plan, state=work / "state", actor="jdoe", cwd=work)
    assert r.returncode == 3, r.stderr
    assert_inert(r)


def test_a_hostile_file_name_and_state_location_are_inert(work: Path) -> None:
    hostile = work / "acme\x1b[2J\n+ forged.yaml"
    hostile.write_text(account_yaml("Bob", "Smith"))
    r = crctl("validate", hostile, cwd=work)
    assert r.returncode == 1
    assert_inert(r)
    assert "[2J" in r.stderr and "+ forged.yaml" in r.stderr
    state = work / "st\x1b[31m\u202e"
    r = crctl("plan", "acme.yaml", state=state, cwd=work)
    assert r.returncode == 0, r.stderr
    assert_inert(r)
    assert r.stdout.startswith("State: ") and "[31m" in r.stdout


def test_validate_messages_quote_control_characters_inert(work: Path) -> None:
    (work / "acme.yaml").write_text(account_yaml("Bob\\e[2J\\x85", "Smith").replace(
        '"Bob\\\\e[2J\\\\x85"', '"Bob\\e[2J\\x85"'))
    r = crctl("validate", "acme.yaml", cwd=work)
    assert r.returncode == 1, r.stdout
    assert "first_name" in r.stderr
    assert_inert(r)


def outside_code(md: str) -> str:
    """The markdown with code spans (any fence length) blanked out."""
    return re.sub(r"(`+)(?:(?!\1).)+?\1", lambda m: " " * len(m.group(0)), md)


def test_markdown_renders_no_link_image_html_or_mention(work: Path) -> None:
    (work / "acme.yaml").write_text(account_yaml(MARKDOWN_NAME, MARKDOWN_LAST))
    state = work / "state"
    r = crctl("apply", "acme.yaml", "--auto-approve", state=state, actor="jdoe", cwd=work)
    assert r.returncode == 0, r.stderr
    # an update (before and after) and a deletion of the hostile user; a fresh add
    (work / "acme.yaml").write_text(account_yaml(MARKDOWN_LAST, MARKDOWN_NAME))
    plans = [crctl("plan", "acme.yaml", "--format", "markdown", state=state, cwd=work).stdout,
             crctl("plan", "acme.yaml", "--format", "markdown", state=work / "fresh",
                   cwd=work).stdout]
    edited = edited_plan(work, MARKDOWN_NAME + "|`x`|", mir_reason=MARKDOWN_LAST)
    plans.append(crctl("show", edited, "--format", "markdown", cwd=work).stdout)
    for md in plans:
        assert "bob" in md
        plain = outside_code(md)
        assert "<img" not in md and "<!-- hidden" not in md, md
        assert "](" not in plain.replace("\\]", ""), md
        # the only [ outside code spans are the call-outs ([!WARNING], [!CAUTION])
        links = re.sub(r"> \[!(WARNING|CAUTION)\]", "", plain)
        assert re.search(r"(?<!\\)\[", links) is None, md
        assert "http://" not in plain and "www.evil" not in plain, md
        assert re.search(r"(?<![`\w])@octocat", plain) is None, md
        assert re.search(r"(?<!\\)\*\*bold", plain) is None, md
        for line in md.split("\n"):
            assert line.isprintable(), line
            if line.startswith("| `") or line.startswith("| ``"):
                cells = re.split(r"(?<!\\)\|", line)
                assert len(cells) == 4, line  # "", user, details, ""
        # the one comment is the marker line of DESIGN §5, first, with a hex digest only
        marker, _, rest = md.partition("\n")
        assert re.fullmatch(r"<!-- crctl-plan digest=[0-9a-f]{64} -->", marker), marker
        tags = re.findall(r"<[^>]*>", rest)
        assert set(tags) <= {"<details>", "</details>", "<summary>", "</summary>"}, tags


@pytest.mark.parametrize("args", [("bo\x1b[2Jgus",), ("plan", "--format", "x\x1b]0;t\x07",
                                                       "a.yaml")])
def test_usage_errors_quote_what_was_typed_inert(tmp_path: Path, args: tuple[str, ...]
                                                 ) -> None:
    r = crctl(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert "Error: " in r.stderr and "\\x1b" in r.stderr
    assert_inert(r)
