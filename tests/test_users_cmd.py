"""`crctl users ACCOUNT`: the Call Recording user list (DESIGN §1 "The CR list shows Full
Name, Phone Number, Extension, Product, searchable, filterable per column"; §4).

Everything runs the real command line against a state directory built by applying the
example accounts: acme (jdoe always-on and prevent_remove, asmith on-demand, bob.smith
on-demand pending until 2026-12-01 and without a phone number, lobby without CR) and
globex.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import EXAMPLES, crctl

ON_DEMAND = "MiCloud Connect MIR On-Demand"
ALWAYS_ON = "MiCloud Connect MIR Always-On"
ACME_CR = {"asmith", "bob.smith", "jdoe"}
JSON_KEYS = ["full_name", "phone_number", "extension", "product", "username", "email",
             "status", "access"]
FILTER_COLUMNS = ("name", "phone", "extension", "product", "username", "email", "status",
                  "access")


def apply_file(state: Path, path: Path, actor: str) -> None:
    result = crctl("apply", path, "--auto-approve", state=state, actor=actor)
    assert result.returncode == 0, result.stderr + result.stdout


def write_account(directory: Path, account: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{account}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """acme and globex applied; a third account `longnames` with long and wide names."""
    root = tmp_path_factory.mktemp("users")
    accounts = root / "accounts"
    accounts.mkdir()
    for name in ("acme", "globex"):
        shutil.copy(EXAMPLES / f"{name}.yaml", accounts / f"{name}.yaml")
    state = root / "state"
    apply_file(state, accounts / "acme.yaml", "jdoe")
    apply_file(state, accounts / "globex.yaml", "hank")
    long_first = "Maximiliana-Theodora " * 4
    write_account(accounts, "longnames", f"""\
account: longnames
users:
  boss:
    first_name: "{long_first.strip()}"
    last_name: Wolfeschlegelsteinhausenbergerdorff
    email: boss@long.example
    extension: "1234567890"
    phone_number: "+161355501234"
    profile: Elite
    roles: [decision-maker]
    call_recording:
      product: always-on
  wide:
    first_name: 山田太郎山田太郎
    last_name: 佐藤花子佐藤花子佐藤花子
    email: wide@long.example
    extension: "22"
    profile: Premier
    call_recording:
      product: on-demand
""")
    apply_file(state, accounts / "longnames.yaml", "boss")
    return state


def users_json(state: Path, *args: str, account: str = "acme") -> list[dict[str, str]]:
    result = crctl("users", account, "--format", "json", *args, state=state)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_many(state: Path, arg_lists: list[tuple[str, ...]]) -> list[list[dict[str, str]]]:
    """`users acme --format json ARGS` for each ARGS, a few at a time."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: users_json(state, *args), arg_lists))


def usernames(rows: list[dict[str, str]]) -> set[str]:
    return {r["username"] for r in rows}


# -- the three formats ------------------------------------------------------------------

def test_table_has_the_four_columns_with_full_product_names(state: Path) -> None:
    result = crctl("users", "acme", state=state)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert " ".join(header) == "Full Name Phone Number Extension Product"
    assert lines[0].index("Full Name") < lines[0].index("Phone Number") \
        < lines[0].index("Extension") < lines[0].index("Product")
    body = lines[1:]
    assert len(body) == 3, result.stdout
    by_name = {line.split("  ")[0].strip(): line for line in body}
    assert set(by_name) == {"Jane Doe", "Alice Smith", "Bob Smith"}
    assert "+16135550101" in by_name["Jane Doe"] and "2101" in by_name["Jane Doe"]
    assert by_name["Jane Doe"].rstrip().endswith(ALWAYS_ON)
    assert by_name["Alice Smith"].rstrip().endswith(ON_DEMAND)
    assert by_name["Bob Smith"].rstrip().endswith(ON_DEMAND)
    # YAML spellings never appear in human output; neither do users without CR.
    assert "always-on" not in result.stdout and "on-demand" not in result.stdout
    assert "Front Desk" not in result.stdout and "2199" not in result.stdout
    # Table columns only: no usernames or emails.
    assert "acme.example" not in result.stdout and "asmith" not in result.stdout


def test_table_columns_are_aligned(state: Path) -> None:
    result = crctl("users", "acme", state=state)
    lines = result.stdout.splitlines()
    start = lines[0].index("Extension")
    for line in lines[1:]:
        assert line[start:start + 4].isdigit(), (line, result.stdout)
        assert line[start - 2:start] == "  "


def test_json_keys_and_values(state: Path) -> None:
    rows = users_json(state)
    assert len(rows) == 3
    for row in rows:
        assert list(row) == JSON_KEYS
        assert all(isinstance(v, str) for v in row.values()), row
    by_user = {r["username"]: r for r in rows}
    assert set(by_user) == ACME_CR
    assert by_user["jdoe"] == {
        "full_name": "Jane Doe", "phone_number": "+16135550101", "extension": "2101",
        "product": ALWAYS_ON, "username": "jdoe", "email": "jane.doe@acme.example",
        "status": "active", "access": "all"}
    assert by_user["asmith"]["product"] == ON_DEMAND
    assert by_user["asmith"]["access"] == "own-group"
    assert by_user["asmith"]["status"] == "active"
    bob = by_user["bob.smith"]
    assert bob["status"] == "pending"  # activation date 2026-12-01, today 2026-11-25
    assert bob["full_name"] == "Bob Smith" and bob["extension"] == "2103"
    assert bob["product"] == ON_DEMAND


def test_csv_has_a_header_row_and_the_same_rows_as_json(state: Path) -> None:
    result = crctl("users", "acme", "--format", "csv", state=state)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ",".join(JSON_KEYS)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows == users_json(state)


def test_empty_selection_in_every_format(state: Path) -> None:
    assert users_json(state, "--search", "no such thing") == []
    result = crctl("users", "acme", "--format", "csv", "--search", "no such thing", state=state)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [",".join(JSON_KEYS)]
    result = crctl("users", "acme", "--search", "no such thing", state=state)
    assert result.returncode == 0
    assert result.stdout.split() == ["Full", "Name", "Phone", "Number", "Extension", "Product"]


def test_only_this_accounts_cr_users(state: Path) -> None:
    rows = users_json(state, account="globex")
    assert usernames(rows) == {"hank", "homer"}  # frank has no CR
    assert {r["extension"] for r in rows} == {"100", "0101"}  # "0101" stays a string
    assert not usernames(rows) & ACME_CR


# -- search -----------------------------------------------------------------------------

SEARCHES = [
    ("SMITH", {"asmith", "bob.smith"}),               # full name, any case
    ("jane DOE", {"jdoe"}),
    ("ACME.example", ACME_CR),                        # email column (not in the table)
    ("JDOE", {"jdoe"}),                               # username column
    ("pending", {"bob.smith"}),                       # status column
    ("2103", {"bob.smith"}),                          # extension column
    ("+1613555010", {"asmith", "jdoe"}),              # phone column
    ("mir always-ON", {"jdoe"}),                      # full product name
    ("on-demand", {"asmith", "bob.smith"}),
    ("front", set()),                                 # lobby has no CR
    ("zzz", set()),
]


def test_search_is_a_case_insensitive_substring_of_any_column(state: Path) -> None:
    got = run_many(state, [("--search", text) for text, _ in SEARCHES])
    wrong = [(text, usernames(rows), expected)
             for (text, expected), rows in zip(SEARCHES, got, strict=True)
             if usernames(rows) != expected]
    assert not wrong, wrong


def test_search_applies_to_the_table_too(state: Path) -> None:
    result = crctl("users", "acme", "--search", "smith", state=state)
    assert result.returncode == 0
    body = result.stdout.splitlines()[1:]
    assert sorted(line.split("  ")[0] for line in body) == ["Alice Smith", "Bob Smith"]


# -- filters ----------------------------------------------------------------------------

FILTERS = [
    ("name=smith", {"asmith", "bob.smith"}),
    ("name=ALICE", {"asmith"}),
    ("phone=5550102", {"asmith"}),
    ("phone=+1613", {"asmith", "jdoe"}),
    ("extension=2101", {"jdoe"}),
    ("extension=21", ACME_CR),
    ("product=on-demand", {"asmith", "bob.smith"}),
    ("product=always-on", {"jdoe"}),
    (f"product={ON_DEMAND}", {"asmith", "bob.smith"}),
    (f"product={ALWAYS_ON}", {"jdoe"}),
    (f"product={ALWAYS_ON.lower()}", {"jdoe"}),
    ("username=jdoe", {"jdoe"}),
    ("username=smith", {"asmith", "bob.smith"}),
    ("email=alice.smith@", {"asmith"}),
    ("status=pending", {"bob.smith"}),
    ("status=active", {"asmith", "jdoe"}),
]


def test_filter_per_column(state: Path) -> None:
    got = run_many(state, [("--filter", spec) for spec, _ in FILTERS])
    wrong = [(spec, usernames(rows), expected)
             for (spec, expected), rows in zip(FILTERS, got, strict=True)
             if usernames(rows) != expected]
    assert not wrong, wrong


def test_a_filter_matches_its_own_column_only(state: Path) -> None:
    # "jdoe" is a username, never part of a full name; "doe" is part of both.
    assert usernames(users_json(state, "--filter", "name=jdoe")) == set()
    assert usernames(users_json(state, "--filter", "username=doe")) == {"jdoe"}
    assert usernames(users_json(state, "--filter", "extension=+1613")) == set()
    # A product filter is not a substring: "on" alone is no product.
    result = crctl("users", "acme", "--filter", "product=on", state=state)
    assert result.returncode == 1


@pytest.mark.parametrize(("specs", "expected"), [
    (("name=smith", "product=on-demand"), {"asmith", "bob.smith"}),
    (("name=smith", "product=on-demand", "status=active"), {"asmith"}),
    (("name=smith", "status=pending", "extension=2103"), {"bob.smith"}),
    (("name=smith", "product=always-on"), set()),
    (("product=always-on", "status=pending"), set()),
])
def test_filters_combine_with_and(state: Path, specs: tuple[str, ...],
                                  expected: set[str]) -> None:
    args = [a for spec in specs for a in ("--filter", spec)]
    assert usernames(users_json(state, *args)) == expected


def test_search_and_filter_combine_with_and(state: Path) -> None:
    assert usernames(users_json(state, "--search", "smith", "--filter", "status=pending")) \
        == {"bob.smith"}
    assert usernames(users_json(state, "--search", "jane", "--filter", "product=on-demand")) \
        == set()


def test_filters_apply_to_csv(state: Path) -> None:
    result = crctl("users", "acme", "--format", "csv", "--filter", "product=always-on", state=state)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["username"] for r in rows] == ["jdoe"]


@pytest.mark.parametrize("spec", ["foo=bar", "fullname=Jane", "location=Ottawa", "nameSmith",
                                  "=smith"])
def test_unknown_filter_column_is_refused_listing_the_valid_ones(state: Path,
                                                                 spec: str) -> None:
    result = crctl("users", "acme", "--filter", spec, state=state)
    assert result.returncode == 1
    assert result.stdout == ""
    for column in FILTER_COLUMNS:
        assert column in result.stderr, result.stderr


def test_unknown_product_in_filter_is_refused(state: Path) -> None:
    result = crctl("users", "acme", "--filter", "product=sometimes-on", state=state)
    assert result.returncode == 1
    assert "on-demand" in result.stderr and "always-on" in result.stderr


def test_unknown_format_is_refused(state: Path) -> None:
    assert crctl("users", "acme", "--format", "xml", state=state).returncode == 1


# -- unknown account ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_unknown_account_is_an_error(state: Path, fmt: str) -> None:
    result = crctl("users", "initech", "--format", fmt, state=state)
    assert result.returncode == 1
    assert "initech" in result.stderr
    assert result.stdout == ""


def test_unknown_account_in_an_empty_state_dir(tmp_path: Path) -> None:
    result = crctl("users", "acme", state=tmp_path / "nothing-here")
    assert result.returncode == 1
    assert "acme" in result.stderr


# -- terminal width -----------------------------------------------------------------------

def test_table_fits_the_terminal_width(state: Path) -> None:
    cases = [(account, columns) for account in ("acme", "globex", "longnames")
             for columns in (40, 60, 80)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: crctl("users", c[0], state=state, columns=c[1]), cases))
    for (account, columns), result in zip(cases, results, strict=True):
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) >= 3
        too_long = [line for line in lines if len(line) > columns]
        assert not too_long, f"{account} at COLUMNS={columns}:\n" + "\n".join(too_long)


def test_narrow_table_keeps_one_line_per_user(state: Path) -> None:
    wide = crctl("users", "acme", state=state, columns=200).stdout.splitlines()
    narrow = crctl("users", "acme", state=state, columns=40).stdout.splitlines()
    assert len(narrow) == len(wide) == 4  # rows are shortened, not wrapped
    assert all(len(line) <= 40 for line in narrow)
    # A wide terminal shows everything in full.
    assert "…" not in "\n".join(wide)
    assert any(line.rstrip().endswith(ALWAYS_ON) for line in wide)


def test_long_names_are_shown_in_full_in_json(state: Path) -> None:
    rows = users_json(state, account="longnames")
    boss = next(r for r in rows if r["username"] == "boss")
    assert boss["full_name"].endswith("Wolfeschlegelsteinhausenbergerdorff")
    assert "…" not in boss["full_name"]


def display_width(text: str) -> int:
    """Terminal cells: East Asian wide and fullwidth characters take two."""
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def test_table_of_wide_characters_fits_the_terminal_width(state: Path) -> None:
    result = crctl("users", "longnames", state=state, columns=40)
    assert result.returncode == 0
    too_long = [line for line in result.stdout.splitlines() if display_width(line) > 40]
    assert not too_long, "\n".join(too_long)


def test_table_output_holds_only_the_table(state: Path) -> None:
    """stdout is the header and one line per user (pipeable); anything else goes to stderr."""
    result = crctl("users", "acme", state=state)
    assert len(result.stdout.splitlines()) == 4
    assert "CR users" not in result.stdout


# -- CSV formula injection (OWASP: a cell starting with = + - @ tab or CR) ------------------

@pytest.mark.parametrize("value", ["=HYPERLINK(\"http://x\")", "+cmd|' /C calc'!A0", "-2+3",
                                   "@SUM(A1)", "\tx", "\rx", "+1+1"])
def test_csv_cells_that_read_as_formulas_are_quoted(value: str) -> None:
    from reconciler.userlist import as_csv

    row = {"full_name": value, "phone_number": "", "extension": "10", "product": ON_DEMAND,
           "username": "u", "email": "u@x.example", "status": "active", "access": "none"}
    (read,) = csv.DictReader(io.StringIO(as_csv([row]), newline=""))
    assert read["full_name"] == "'" + value


def test_csv_keeps_phone_numbers_and_plain_values() -> None:
    """An E.164 number can only be read as a number, never as a formula: kept as in JSON."""
    from reconciler.userlist import as_csv

    row = {"full_name": "Jane Doe", "phone_number": "+16135550101", "extension": "0101",
           "product": ON_DEMAND, "username": "jdoe", "email": "jdoe@x.example",
           "status": "active", "access": "own-group"}
    (read,) = csv.DictReader(io.StringIO(as_csv([row])))
    assert read == row


def test_table_cells_are_measured_in_terminal_cells() -> None:
    """Wide characters take two cells, combining marks none; a cut never splits a cell."""
    from reconciler.userlist import as_table

    rows = [{"full_name": "山田太郎 佐藤花子佐藤花子", "phone_number": "+16135550101",
             "extension": "22", "product": ON_DEMAND},
            {"full_name": "Zoe\u0301 Smith", "phone_number": "", "extension": "2101",
             "product": ALWAYS_ON}]
    for width in (40, 50, 60):  # 38 is the narrowest (4 columns of 8 and gaps)
        lines = as_table(rows, width).splitlines()
        assert all(display_width(line) <= width for line in lines), (width, lines)
    wide = as_table(rows, 200).splitlines()
    assert "…" not in "\n".join(wide)
    # columns line up in cells: every Extension value starts in the same terminal column
    starts = {display_width(line[:line.index(ext)]) for line, ext in
              zip(wide, ("Extension", "22", "2101"), strict=True)}
    assert len(starts) == 1, wide
