"""Strings from files and the state made inert for a terminal, a CI log or a PR comment.

Names come from desired files, saved plans (which anyone can edit and re-checksum) and
the state. Printed as they are, an ESC sequence could recolour or erase a terminal's
lines, a newline or U+2028 could forge a plan line ("+ enable CR ..."), a bidi override
could show a name backwards, and in markdown `[x](http://evil)` or `<img>` would render
a link or an image in a pull-request comment. Every renderer passes such strings through
here; JSON output does not need it (JSON escaping is already exact and inert).
"""

from __future__ import annotations

import re

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def escape_char(c: str) -> str:
    """One character as a visible escape: \\n, \\t, ... or \\xNN, \\uNNNN, \\UNNNNNNNN."""
    known = _ESCAPES.get(c)
    if known is not None:
        return known
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def inert_text(text: str) -> str:
    """`text` with every character a terminal would act on shown as an escape.

    str.isprintable() is False for exactly what must not reach a terminal raw: C0 and C1
    controls (ESC, newline, carriage return, DEL, CSI), format characters (the bidi
    controls U+202A-U+202E and U+2066-U+2069, zero-width joiners), line and paragraph
    separators (U+2028, U+2029), lone surrogates (undecodable bytes of a file name) and
    unassigned code points. Everything else, accents and CJK included, is left as is.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else escape_char(c) for c in text)


# Markdown that a name could use to render something: emphasis and strikethrough
# (* _ ~), links and images ([ ]), URL autolinks (the : of http://x.example), table
# cells (|), code spans (`) and the backslash itself; HTML and entities become entities
# (GitHub renders <img>, <a>, <!-- and &...; as HTML otherwise). The dot of "www." is
# escaped too (GFM links www.x.example); other dots stay as written ("Acme Inc.").
_MD_BACKSLASHED = frozenset("\\`*_[]~|:")
_MD_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
# An @ that starts a word would notify a GitHub user or team: a code span stops that.
_MENTION = re.compile(r"(?<![0-9A-Za-z])@")


def inert_markdown(text: str) -> str:
    """`text` as literal markdown (outside a code span): shown as written, never a link,
    image, HTML, emphasis, mention or a break out of a table cell or line.

    An underscore between two letters or digits (prevent_remove) is left alone: GFM
    never reads it as emphasis there.
    """
    shown = inert_text(text)
    out = []
    for i, c in enumerate(shown):
        if c == "_" and 0 < i < len(shown) - 1 and shown[i - 1].isalnum() \
                and shown[i + 1].isalnum():
            out.append(c)
        elif c in _MD_BACKSLASHED or (c == "." and shown[max(0, i - 3):i].lower() == "www"):
            out.append("\\" + c)
        else:
            out.append(_MD_ENTITIES.get(c, c))
    return _MENTION.sub("`@`", "".join(out))


def markdown_code(text: str, *, in_table: bool = False) -> str:
    """`text` as a markdown code span, which GitHub never renders as a link, HTML or a
    mention. The fence is one backtick longer than the longest run inside, and padded
    with spaces when the text starts or ends with a backtick or a space (CommonMark strips
    one space from each side). Inside a table a pipe still ends the cell, so it is
    escaped there (GFM reads `\\|` as a pipe even inside a code span)."""
    shown = inert_text(text)
    if in_table:
        shown = shown.replace("|", "\\|")
    longest = max((len(run) for run in re.findall("`+", shown)), default=0)
    fence = "`" * (longest + 1)
    if shown[:1] in ("`", " ") or shown[-1:] in ("`", " "):
        shown = f" {shown} "
    return f"{fence}{shown}{fence}"
