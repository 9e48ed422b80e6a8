"""The Call Recording user list (`crctl users`): the portal's CR list as rows, searchable
across all columns and filterable per column."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from reconciler.errors import InputError
from reconciler.inert import inert_text
from reconciler.model import PRODUCT_NAMES, CurrentAccount, Product, product_name

COLUMNS = ("full_name", "phone_number", "extension", "product", "username", "email", "status",
           "access")
TABLE_COLUMNS = (("full_name", "Full Name"), ("phone_number", "Phone Number"),
                 ("extension", "Extension"), ("product", "Product"))
# Filter columns: every JSON key of `users --format json`, and the short names as aliases.
FILTER_ALIASES = {"name": "full_name", "phone": "phone_number"}
FILTER_COLUMNS = {**{c: c for c in COLUMNS}, **FILTER_ALIASES}


def rows(account: CurrentAccount) -> list[dict[str, str]]:
    """CR users only, sorted by full name then username."""
    out = []
    for user in account.users.values():
        cr = user["call_recording"]
        if cr is None:
            continue
        out.append({
            "full_name": f"{user['first_name']} {user['last_name']}",
            "phone_number": user["phone_number"] or "",
            "extension": user["extension"],
            "product": product_name(cr["product"]),
            "username": user["username"],
            "email": user["email"],
            "status": cr["status"],
            "access": cr["access"],
        })
    out.sort(key=lambda r: (r["full_name"].casefold(), r["username"]))
    return out


def parse_filters(specs: tuple[str, ...]) -> list[tuple[str, str]]:
    """COLUMN=VALUE pairs; an unknown column is an error listing the valid ones."""
    filters = []
    for spec in specs:
        column, sep, value = spec.partition("=")
        column = column.strip().lower()
        if not sep or column not in FILTER_COLUMNS:
            aliases = ", ".join(f"{a} for {c}" for a, c in FILTER_ALIASES.items())
            raise InputError(f"invalid filter {spec!r}: use COLUMN=VALUE with COLUMN one of "
                             f"{', '.join(COLUMNS)} (or {aliases})")
        if column == "product":
            value = _product_filter(value)
        filters.append((FILTER_COLUMNS[column], value))
    return filters


def _product_filter(value: str) -> str:
    wanted = value.strip().casefold()
    for product in Product:
        if wanted in (product.value, PRODUCT_NAMES[product].casefold()):
            return PRODUCT_NAMES[product]
    raise InputError(f"invalid product {value!r}: use on-demand, always-on or the full name")


def select(all_rows: list[dict[str, str]], search: str | None,
           filters: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Search: case-insensitive substring of any column. Filters: per column, AND-ed;
    product must match exactly, the others as case-insensitive substrings."""
    needle = search.casefold() if search else None
    out = []
    for row in all_rows:
        if needle is not None and not any(needle in row[c].casefold() for c in COLUMNS):
            continue
        if all(row[c] == v if c == "product" else v.casefold() in row[c].casefold()
               for c, v in filters):
            out.append(row)
    return out


def as_json(selected: list[dict[str, str]]) -> str:
    return json.dumps(selected, indent=2, ensure_ascii=False) + "\n"


def as_csv(selected: list[dict[str, str]]) -> str:
    """RFC 4180 CSV with "\\n" line ends. Not csv.writer: with lineterminator "\\n" it
    leaves a lone carriage return in a cell unquoted, which readers take as a row end."""
    return csv_text(COLUMNS, [[row[k] for k in COLUMNS] for row in selected])


def csv_text(columns: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    """A header and rows as CSV, each cell guarded against formula injection."""
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(_csv_field(_csv_safe(cell)) for cell in row))
    return "\n".join(lines) + "\n"


def _csv_field(value: str) -> str:
    if any(c in value for c in CSV_SPECIAL):
        return '"' + value.replace('"', '""') + '"'
    return value


CSV_SPECIAL = (",", '"', "\r", "\n")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP's CSV injection list
PHONE_NUMBER = re.compile(r"\+[0-9]+")


def _csv_safe(value: str) -> str:
    """Keep spreadsheet programs from reading a cell as a formula (OWASP: a leading
    = + - @ tab or carriage return). An E.164 phone number such as +16135550101 stays as
    it is: a spreadsheet can only read it as a number, and the CSV keeps the JSON values."""
    if value[:1] in FORMULA_STARTS and not PHONE_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _char_width(c: str) -> int:
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def cell_width(text: str) -> int:
    """Terminal cells `text` takes: East Asian wide and fullwidth characters take two,
    combining marks none (len() would let CJK names overflow the terminal)."""
    if text.isascii():
        return len(text)
    return sum(map(_char_width, text))


def _fit(text: str, width: int) -> str:
    """`text` shortened with '…' to at most `width` cells, then padded to exactly that."""
    used = cell_width(text)
    if used > width:
        out, used = [], 1  # room for the '…'
        for c in text:
            w = _char_width(c)
            if used + w > width:
                break
            out.append(c)
            used += w
        text = "".join(out) + "…"
    return text + " " * (width - used)


def as_table(selected: list[dict[str, Any]], width: int) -> str:
    """Aligned columns that fit `width` terminal cells; the widest columns are shortened
    with '…'. Names come from the state: each cell is inert (no control character or
    bidi override reaches the terminal), and measured as shown."""
    headers = [h for _, h in TABLE_COLUMNS]
    cells = [[inert_text(str(r[k])) for k, _ in TABLE_COLUMNS] for r in selected]
    widths = [max([cell_width(h)] + [cell_width(c[i]) for c in cells])
              for i, h in enumerate(headers)]
    gap = 2
    while sum(widths) + gap * (len(widths) - 1) > width and max(widths) > 8:
        widest = widths.index(max(widths))
        widths[widest] -= 1

    lines = ["  ".join(_fit(h, w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(_fit(c, w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"
