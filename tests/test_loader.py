"""The strict loader: plain data only, every scalar a string, refusals located exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TODAY, run_crctl

from reconciler import loader
from reconciler.errors import ValidationFailed
from reconciler.loader import load_bytes, load_file


def refusals(text: str | bytes, name: str = "t.yaml") -> list[str]:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    with pytest.raises(ValidationFailed) as info:
        load_bytes(name, raw)
    return [str(d) for d in info.value.diagnostics]


# -- every scalar stays a string ------------------------------------------------------------

@pytest.mark.parametrize("source, value", [
    ("0101", "0101"), ("2101", "2101"), ("on", "on"), ("off", "off"), ("yes", "yes"),
    ("no", "no"), ("y", "y"), ("true", "true"), ("True", "True"), ("FALSE", "FALSE"),
    ("1.5", "1.5"), ("1e3", "1e3"), ("0x1F", "0x1F"), ("0o17", "0o17"), ("-0", "-0"),
    (".inf", ".inf"), (".nan", ".nan"), ("2026-12-01", "2026-12-01"),
    ("2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z"), ("12:30", "12:30"),
    ("+16135550101", "+16135550101"), ('"0101"', "0101"), ("'on'", "on"),
    ('"null"', "null"), ("'~'", "~"), ('""', ""), ("''", ""), ('"true"', "true"),
])
def test_scalar_stays_a_string(source: str, value: str) -> None:
    doc = load_bytes("t.yaml", f"x: {source}\nl: [{source}]\n".encode())
    assert doc.data == {"x": value, "l": [value]}
    assert type(doc.data["x"]) is str


@pytest.mark.parametrize("source", ["~", "null", "Null", "NULL", ""])
def test_plain_null_is_none(source: str) -> None:
    doc = load_bytes("t.yaml", f"x: {source}\ny: 1\n".encode())
    assert doc.data == {"x": None, "y": "1"}


def test_nulls_in_sequences_and_flow_mappings() -> None:
    doc = load_bytes("t.yaml", b'a: [~, null, "null", \'~\', x]\nb: {c: , d: ~, e: "~"}\n')
    assert doc.data == {"a": [None, None, "null", "~", "x"], "b": {"c": None, "d": None, "e": "~"}}


def test_keys_stay_strings() -> None:
    doc = load_bytes("t.yaml", b"0101: a\ntrue: b\n1.5: c\non: d\n~: e\nnull: f\n")
    assert list(doc.data) == ["0101", "true", "1.5", "on", "~", "null"]


def test_block_scalars_keep_their_text() -> None:
    doc = load_bytes("t.yaml", b"a: |\n  line one\n  line two\nb: >-\n  folded\n  text\n")
    assert doc.data == {"a": "line one\nline two\n", "b": "folded text"}


def test_data_is_plain_dicts_lists_and_strings() -> None:
    doc = load_bytes("t.yaml", b"a:\n  b: [1, {c: d}]\n  e: f\n")
    assert doc.data == {"a": {"b": ["1", {"c": "d"}], "e": "f"}}
    assert type(doc.data) is dict and type(doc.data["a"]["b"]) is list


def test_utf8_bom_and_crlf_are_accepted() -> None:
    doc = load_bytes("t.yaml", b"\xef\xbb\xbfa: Zo\xc3\xab\r\nb: c\r\n")
    assert doc.data == {"a": "Zoë", "b": "c"}
    assert doc.key_position(("b",)) == (2, 1)


# -- positions ------------------------------------------------------------------------------

POSITIONS = """\
# a comment
account: acme
users:
  jdoe:
    first_name: Jane
    email:   jane@example.com
    roles: [decision-maker, phone-manager]
    list:
      - one
      - {k: v}
  "bob.smith":
    call_recording:
"""


def test_key_and_value_positions() -> None:
    doc = load_bytes("t.yaml", POSITIONS.encode())
    doc.locate([("users", "jdoe", "email"), ("users", "jdoe", "roles", 1)])
    assert doc.key_position(("account",)) == (2, 1)
    assert doc.value_position(("account",)) == (2, 10)
    assert doc.key_position(("users", "jdoe")) == (4, 3)
    assert doc.value_position(("users", "jdoe")) == (5, 5)
    assert doc.key_position(("users", "jdoe", "email")) == (6, 5)
    assert doc.value_position(("users", "jdoe", "email")) == (6, 14)
    assert doc.value_position(("users", "jdoe", "roles")) == (7, 12)
    assert doc.value_position(("users", "jdoe", "roles", 0)) == (7, 13)
    assert doc.value_position(("users", "jdoe", "roles", 1)) == (7, 29)
    assert doc.value_position(("users", "jdoe", "list", 1)) == (10, 9)
    assert doc.value_position(("users", "jdoe", "list", 1, "k")) == (10, 13)
    assert doc.key_position(("users", "bob.smith")) == (11, 3)
    # An empty value sits right after its colon.
    assert doc.value_position(("users", "bob.smith", "call_recording")) == (12, 20)


def test_positions_fall_back_to_the_nearest_known_parent() -> None:
    doc = load_bytes("t.yaml", POSITIONS.encode())
    assert doc.key_position(("users", "jdoe", "no_such_key")) == (4, 3)
    assert doc.key_position(("users", "nobody", "email")) == (3, 1)
    assert doc.key_position(()) == (1, 1)


def test_diagnostic_uses_positions_and_field_path() -> None:
    doc = load_bytes("t.yaml", POSITIONS.encode())
    d = doc.diagnostic(("users", "bob.smith", "call_recording"), "boom", at_key=True)
    assert str(d) == 't.yaml:12:5: error: users["bob.smith"].call_recording: boom'
    d = doc.diagnostic(("users", "jdoe", "roles", 1), "bad role")
    assert str(d) == "t.yaml:7:29: error: users.jdoe.roles[1]: bad role"


# -- refusals -------------------------------------------------------------------------------

def test_duplicate_key_names_the_first_line() -> None:
    text = "a: 1\nusers:\n  jdoe:\n    x: 1\n  bob: {}\n  jdoe:\n    x: 2\n  jdoe: {}\n"
    assert refusals(text) == [
        "t.yaml:6:3: error: users.jdoe: duplicate key 'jdoe' (first defined at line 3)",
        "t.yaml:8:3: error: users.jdoe: duplicate key 'jdoe' (first defined at line 3)",
    ]


def test_duplicate_key_in_a_flow_mapping() -> None:
    assert refusals("a: {b: 1, b: 2}\n") == [
        "t.yaml:1:11: error: a.b: duplicate key 'b' (first defined at line 1)"]


def test_all_loader_refusals_are_reported_at_once() -> None:
    text = "a: &x 1\nb: *x\nc: !!str 2\nd: !foo 3\n<<: {e: 4}\nf: 5\nf: 6\n"
    assert refusals(text) == [
        "t.yaml:1:4: error: a: anchors are not allowed (found &x)",
        "t.yaml:2:4: error: b: aliases are not allowed (found *x)",
        "t.yaml:3:4: error: c: explicit tags are not allowed (found 'tag:yaml.org,2002:str')",
        "t.yaml:4:4: error: d: explicit tags are not allowed (found '!foo')",
        "t.yaml:5:1: error: document: merge keys (<<) are not allowed",
        "t.yaml:7:1: error: f: duplicate key 'f' (first defined at line 6)",
    ]


def test_quoted_merge_key_is_just_a_key() -> None:
    assert load_bytes("t.yaml", b'"<<": x\n').data == {"<<": "x"}


@pytest.mark.parametrize("text, position", [
    ("a: !!map {b: c}\n", "1:4"),
    ("a: !!seq [b]\n", "1:4"),
    ("a: &l [b]\n", "1:4"),
    ("!!map\na: b\n", "1:1"),
    ("a:\n  - !!binary aGk=\n", "2:5"),
    ("!foo a: b\n", "1:1"),
    ("&k a: b\n", "1:1"),
])
def test_tags_and_anchors_anywhere_are_refused(text: str, position: str) -> None:
    (line,) = refusals(text)
    assert line.startswith(f"t.yaml:{position}: error: ")
    assert "are not allowed" in line


def test_python_object_tag_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for text in (
        f'a: !!python/object/apply:os.system ["touch {marker}"]\n',
        f'!!python/object/apply:os.system ["touch {marker}"]\n',
        f'a: [!!python/object/apply:os.system ["touch {marker}"]]\n',
        f'? !!python/object/apply:os.system ["touch {marker}"]\n: x\n',
        f'a: !!python/object/apply:subprocess.call [["touch", "{marker}"]]\n',
        f'a: !!python/object/new:os.system ["touch {marker}"]\n',
    ):
        found = refusals(text)
        assert any("explicit tags are not allowed" in line for line in found), found
        assert not marker.exists()


def test_python_object_tag_never_executes_via_the_cli(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    account = tmp_path / "evil.yaml"
    account.write_text(f'account: evil\nname: !!python/object/apply:os.system ["touch {marker}"]\n'
                       "users: {}\n")
    result = run_crctl("validate", account, cwd=tmp_path, env={"CRCTL_TODAY": TODAY})
    assert result.returncode == 1
    assert f"{account}:2:7: error: name: explicit tags are not allowed" in result.stderr
    assert not marker.exists()


def test_second_document_is_refused() -> None:
    assert refusals("a: 1\n---\nb: 2\n") == [
        "t.yaml:2:1: error: document: more than one YAML document; "
        "put each account in its own file"]
    # An explicit document end without a second document is fine.
    assert load_bytes("t.yaml", b"---\na: 1\n...\n").data == {"a": "1"}


@pytest.mark.parametrize("raw", [b"", b"\n", b"   \n\t\n", b"\xef\xbb\xbf"])
def test_empty_file(raw: bytes) -> None:
    assert refusals(raw) == ["t.yaml:1:1: error: document: file is empty"]


def test_comment_only_file_is_empty() -> None:
    (line,) = refusals("# nothing here\n")
    assert line.endswith(": error: document: file is empty")


def test_non_utf8_is_located() -> None:
    assert refusals(b"a: b\nc: d\xff\n") == [
        "t.yaml:2:5: error: document: file is not valid UTF-8 (byte 0xff)"]
    assert refusals(b"\xfe\xffa: b\n") == [
        "t.yaml:1:1: error: document: file is not valid UTF-8 (byte 0xfe)"]


@pytest.mark.parametrize("text, expected", [
    ("a: [b\n", "t.yaml:2:1: error: "),
    ("a: b\n c: d\n", "t.yaml:2:3: error: "),
    ("a:\n\tb: c\n", "t.yaml:2:1: error: "),
    ('a: "unterminated\n', "t.yaml:2:1: error: "),
    ("a: b\x07c\n", "t.yaml:1:5: error: "),
])
def test_syntax_errors_are_located(text: str, expected: str) -> None:
    (line,) = refusals(text)
    assert line.startswith(expected), line
    assert "YAML syntax error" in line


@pytest.mark.parametrize("text, position", [
    ("name: \u00e9\u00e9\u00e9\x07\n", "1:10"),
    ("a: M\u00fcller M\u00fcller\nb: c\x07\n", "2:5"),
])
def test_control_character_after_non_ascii_is_located(text: str, position: str) -> None:
    """Columns count characters, not UTF-8 bytes, also for errors found by libyaml's reader."""
    (line,) = refusals(text)
    assert line.startswith(f"t.yaml:{position}: error: "), line


def test_mapping_keys_must_be_scalars() -> None:
    assert refusals("? [a, b]\n: c\nd: e\n") == [
        "t.yaml:1:3: error: document: mapping keys must be plain strings"]


# -- limits ---------------------------------------------------------------------------------

def _nested(levels: int) -> str:
    """`levels` nested collections: a mapping holding levels-1 nested flow sequences."""
    return "a: " + "[" * (levels - 1) + "x" + "]" * (levels - 1) + "\n"


def test_nesting_up_to_the_limit_is_accepted() -> None:
    doc = load_bytes("t.yaml", _nested(loader.MAX_DEPTH).encode())
    value = doc.data["a"]
    for _ in range(loader.MAX_DEPTH - 1):
        value = value[0]
    assert value == "x"


@pytest.mark.parametrize("levels", [loader.MAX_DEPTH + 1, 1_000, 100_000])
def test_nesting_beyond_the_limit_is_refused(levels: int) -> None:
    (line,) = refusals(_nested(levels))
    assert f"nesting deeper than {loader.MAX_DEPTH} levels" in line


def test_deep_block_mappings_are_refused() -> None:
    depth = loader.MAX_DEPTH + 1
    text = "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"
    (line,) = refusals(text)
    assert line.startswith(f"t.yaml:{depth}:")
    assert "nesting deeper than" in line


def test_file_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 64)
    exact = tmp_path / "exact.yaml"
    exact.write_bytes(b"a: " + b"x" * 60 + b"\n")
    assert len(exact.read_bytes()) == 64
    assert load_file(exact).data == {"a": "x" * 60}
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * 61 + b"\n")
    with pytest.raises(ValidationFailed) as info:
        load_file(big)
    assert [str(d) for d in info.value.diagnostics] == [
        f"{big}:1:1: error: document: file is larger than 64 bytes"]


def test_huge_file_is_not_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse 4 GiB file is refused after reading only the first MAX_FILE_BYTES + 1."""
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 1024)
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as fh:
        fh.truncate(1 << 32)
    with pytest.raises(ValidationFailed) as info:
        load_file(huge)
    assert "file is larger than 1024 bytes" in str(info.value)


def test_unreadable_paths(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.yaml", tmp_path):
        with pytest.raises(ValidationFailed) as info:
            load_file(path)
        (d,) = info.value.diagnostics
        assert (d.path, d.line, d.column, d.field) == (str(path), 1, 1, "document")
        assert d.message.startswith("cannot read file: ")


def test_load_file_reads_the_examples() -> None:
    doc = load_file(Path(__file__).parent.parent / "examples" / "globex.yaml")
    homer = doc.data["users"]["homer"]
    assert homer["extension"] == "0101"
    assert doc.data["users"]["frank"].get("call_recording") is None


def test_validation_failed_sorts_diagnostics() -> None:
    text = "b: !x 1\na: &y 2\n"
    found = refusals(text)
    assert [line.split(":")[1] for line in found] == ["1", "2"]
