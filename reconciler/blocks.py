"""Place diagnostics in a big file without walking all of its events again.

Why: positions are not kept on the fast path (see `loader`), so placing a warning on the
last user of a 100,000-user file re-walked every event of it: about one more parse, as
much as the whole plan budget above the floor. Warnings (lints) of a valid file are
common at that size (a few hundred On-Demand users in no group).

How: a desired-state file is a top-level block mapping whose big values (`users`,
`recording_groups`) are block mappings, one entry per key line. The loaded data already
holds their keys in file order, so the entries asked for are found by one forward scan of
the bytes (`bytes.find` of each key line, in file order), and only each entry's own lines
are parsed again for positions. Total cost: one memchr-speed pass plus the few entries.

Why it is exact: an entry's lines are re-parsed on their own and must give back the very
value the file loaded there (for a user: the same email and extension, which are unique
in a valid file); otherwise, or for anything not in block style (flow mappings, quoted
keys, odd indentation), the paths are left to the caller's whole walk. This module only
ever answers with positions it has proven.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MIN_BYTES = 1024 * 1024  # below this, the whole walk is fast enough and always exact

Path = tuple
Positions = dict[Path, tuple[int, int, int, int]]
# (entry bytes, wanted paths relative to them) -> (data, clean parse, positions or None)
Walk = Callable[[bytes, set[Path]], tuple[Any, bool, Positions]]

_CONTENT = re.compile(rb"([ ]*)[^ \t\r\n#]")  # a line with content (not a comment)
_KEY_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # keys that need no quoting


def locate_in_blocks(raw: bytes, data: Any, wanted: set[Path], walk: Walk
                     ) -> tuple[Positions, set[Path], set[Path]]:
    """Positions of the `wanted` paths that lie in top-level block mappings.

    Returns (positions found, paths proven absent, paths left for the whole walk).
    `wanted` holds every prefix of every path asked for, as `Document.locate` builds it.
    """
    found: Positions = {}
    absent: set[Path] = set()
    if len(raw) < MIN_BYTES or type(data) is not dict:
        return found, absent, wanted
    by_entry: dict[tuple[str, str], set[Path]] = {}
    rest: set[Path] = set()
    for path in wanted:
        if len(path) >= 2 and type(path[0]) is str and type(path[1]) is str \
                and type(data.get(path[0])) is dict and _KEY_CHARS.fullmatch(path[1]):
            by_entry.setdefault((path[0], path[1]), set()).add(path[1:])
        else:
            rest.add(path)
    tops = {top for top, _ in by_entry}
    order = list(data)
    following = {key: order[i + 1] if i + 1 < len(order) else None
                 for i, key in enumerate(order) if key in tops}
    for top in tops:
        names = {name for t, name in by_entry if t == top}
        block = _Block.find(raw, top, following.get(top))
        if block is None:
            for name in names:
                rest.update((top, *p) for p in by_entry[(top, name)])
            continue
        done = block.place(data[top], names, {n: by_entry[(top, n)] for n in names}, walk,
                           found, absent)
        for name in names - done:
            rest.update((top, *p) for p in by_entry[(top, name)])
        if done and (top,) in rest:
            found[(top,)] = block.header
            rest.discard((top,))
    return found, absent, rest


class _Block:
    """A top-level key whose value is a block mapping: where it is, how it is indented."""

    def __init__(self, raw: bytes, top: str, header: tuple[int, int, int, int], start: int,
                 end: int, indent: int, line_of: Callable[[int], int]):
        self.raw = raw
        self.top = top
        self.header = header
        self.start = start
        self.end = end
        self.indent = indent
        self.line_of = line_of

    @classmethod
    def find(cls, raw: bytes, top: str, following: str | None) -> _Block | None:
        """The block of `top`; `following` is the next top-level key in file order (the
        block ends at its line), None for the last."""
        key = top.encode()
        at = 0 if raw.startswith(key + b":") else raw.find(b"\n" + key + b":")
        if at < 0:
            return None
        key_start = at if at == 0 else at + 1
        header_end = raw.find(b"\n", key_start)
        if header_end < 0:
            return None
        rest_of_header = raw[key_start + len(key) + 1:header_end].strip()
        if rest_of_header and not rest_of_header.startswith(b"#"):
            return None  # a flow mapping or a scalar on the key's line
        start = header_end + 1
        pos = start
        while True:  # the first line with content gives the entries' indentation
            line_end = raw.find(b"\n", pos)
            line_end = len(raw) if line_end < 0 else line_end
            match = _CONTENT.match(raw, pos, line_end)
            if match is not None:
                break
            if line_end >= len(raw):
                return None
            pos = line_end + 1
        indent = len(match.group(1))
        if not indent:
            return None
        end = len(raw)
        if following is not None:
            next_at = raw.find(b"\n" + following.encode() + b":", start)
            end = next_at + 1 if next_at >= 0 else end
        counter = _LineCounter(raw)
        line = counter.line_of(key_start)
        first_line = counter.line_of(pos)
        return cls(raw, top, (line, 1, first_line, indent + 1), start, end, indent,
                   counter.line_of)

    def place(self, values: dict[str, Any], names: set[str],
              wanted: dict[str, set[Path]], walk: Walk, found: Positions,
              absent: set[Path]) -> set[str]:
        """Locate the entries `names` (in file order); return those proven."""
        raw, indent = self.raw, self.indent
        pad = b"\n" + b" " * indent
        stop = re.compile(rb"\n {0,%d}[^ \t\r\n#]" % indent)
        done: set[str] = set()
        pos = self.start - 1  # the newline before the block's first line
        for name in (n for n in values if n in names):
            at = raw.find(pad + name.encode() + b":", pos, self.end)
            if at < 0:
                break  # not in block style from here on: the rest goes to the walk
            line_start = at + 1
            after = line_start + indent + len(name) + 1
            if after < len(raw) and raw[after:after + 1] not in (b" ", b"\t", b"\r", b"\n"):
                pos = after
                continue  # `name:x` is not this key; leave it to the walk
            tail = stop.search(raw, after, self.end)
            entry_end = tail.start() + 1 if tail else self.end
            entry = raw[line_start:entry_end]
            relative = wanted[name]
            loaded, clean, positions = walk(entry, relative)
            pos = entry_end - 1
            if not clean or type(loaded) is not dict or list(loaded) != [name] \
                    or not _same(loaded[name], values[name]):
                continue
            offset = self.line_of(line_start) - 1
            for rel, (kl, kc, vl, vc) in positions.items():
                found[(self.top, *rel)] = (kl + offset, kc, vl + offset, vc)
            absent.update((self.top, *rel) for rel in relative if rel not in positions)
            done.add(name)
        return done


def _same(parsed: Any, loaded: Any) -> bool:
    """Whether a re-parsed entry is the value the file loaded there.

    Users' records are completed in place by validation (username, canonical roles,
    CR status), so a user is compared by its email and extension, each unique in a file;
    any other entry (a recording group) is compared whole."""
    if type(parsed) is dict and type(loaded) is dict and "extension" in loaded:
        return (type(parsed.get("email")) is str
                and parsed.get("email") == loaded.get("email")
                and parsed.get("extension") == loaded.get("extension"))
    return bool(parsed == loaded)


class _LineCounter:
    """1-based line numbers of increasing offsets, counting each newline once."""

    def __init__(self, raw: bytes):
        self.raw = raw
        self.offset = 0
        self.line = 1

    def line_of(self, offset: int) -> int:
        if offset < self.offset:  # rare: start again from the top
            self.offset, self.line = 0, 1
        self.line += self.raw.count(b"\n", self.offset, offset)
        self.offset = offset
        return self.line
