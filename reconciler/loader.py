"""Strict YAML loading from libyaml's event stream.

Why events and not `yaml.safe_load`: the constructor is about 7x slower, resolves
`on`/`yes`/`0101` to booleans and integers, silently keeps the last of two duplicate
keys, and follows anchors and tags. Here every scalar stays a string (plain `~`, `null`
and an empty value are null), and anything outside plain data is refused with its
line and column.

Source positions are not kept on the fast path: a valid 100,000-user file would pay for
a million of them. When a diagnostic needs one, `Document.locate` walks the events again
and records only the paths asked for.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import yaml
from yaml._yaml import CParser  # what yaml.cyaml re-exports (its stub does not)
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

from reconciler import blocks, halves
from reconciler.errors import Diagnostic, ValidationFailed
from reconciler.inert import inert_text

MAX_FILE_BYTES = 128 * 1024 * 1024
MAX_DEPTH = 32
NULLS = frozenset(("", "~", "null", "Null", "NULL"))
# Tags that say what the loader reads anyway ("!" is YAML's non-specific tag): a value
# with any other tag (!!int, !!binary, !!python/..., !foo) is refused and counted unread.
PLAIN_TAGS = {ScalarEvent: frozenset(("!", "tag:yaml.org,2002:str")),
              MappingStartEvent: frozenset(("!", "tag:yaml.org,2002:map")),
              SequenceStartEvent: frozenset(("!", "tag:yaml.org,2002:seq"))}

Path = tuple  # a field path: keys (str) and sequence indexes (int)
Position = tuple[int, int]  # 1-based line, column


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                 "\b": "\\b", "\f": "\\f"}


def _escape(c: str) -> str:
    """One character as a JSON escape (a surrogate pair above U+FFFF, as JSON has it)."""
    known = _JSON_ESCAPES.get(c)
    if known is not None:
        return known
    n = ord(c)
    if n > 0xFFFF:
        n -= 0x10000
        return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"
    return f"\\u{n:04x}"


def json_quote(text: str) -> str:
    """`text` as a JSON string literal in which every non-printable character is escaped.

    Unlike json.dumps(ensure_ascii=False) this also escapes DEL, C1 controls, line and
    paragraph separators and bidi overrides, so the result is one inert terminal line.
    """
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else _escape(c)
                         for c in text) + '"'


# The one inert-text rule lives in reconciler.inert; `printable` stays importable here.
printable = inert_text


def field_path(path: Iterable[Any]) -> str:
    """Render a field path as users.jdoe.call_recording.product (jq-style for odd keys)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif (part := str(part)) and all(c.isalnum() or c in "_-" for c in part):
            out += f".{part}" if out else part
        else:
            out += f"[{json_quote(part)}]"
    return out or "document"


def diagnostic(name: str, line: int, column: int, path: Iterable[Any], message: str
               ) -> Diagnostic:
    """A Diagnostic whose every part is printable (see `printable`)."""
    return Diagnostic(printable(name), line, column, field_path(path), printable(message))


@dataclass
class Document:
    """A loaded file: plain data (dicts, lists, str, None) plus a way back to positions."""

    path: str
    data: Any
    raw: bytes  # the file's bytes (UTF-8, BOM removed): re-walked to place diagnostics
    sha256: str = ""  # of the file as read, for plans (`desired.sha256`)
    # Loaded with strict=False: the loader's non-fatal refusals (duplicate keys, tags,
    # anchors, aliases, merge keys), to be reported with the file's other problems; the
    # paths whose value was not read (aliases: None in `data`); and the mappings that lost
    # entries (merge keys, non-string keys), whose missing keys prove nothing.
    refusals: list[Diagnostic] = field(default_factory=list)
    unread: set[Path] = field(default_factory=set)
    partial: set[Path] = field(default_factory=set)
    _positions: dict[Path, tuple[int, int, int, int]] = field(default_factory=dict, repr=False)
    _absent: set[Path] = field(default_factory=set, repr=False)  # looked for, not there

    def locate(self, paths: Iterable[Path]) -> None:
        """Record key and value positions of `paths` (one extra pass over the events)."""
        known = self._positions
        absent = self._absent
        wanted = {path[:i] for p in paths if (path := tuple(p)) not in known
                  for i in range(1, len(path) + 1)}
        wanted = {p for p in wanted if p not in known and p not in absent}
        if not wanted:
            return
        found, missing, wanted = blocks.locate_in_blocks(self.raw, self.data, wanted,
                                                         self._walk_entry)
        known.update(found)
        absent.update(missing)
        if not wanted:
            return
        walker = _Walker(self.path, self.raw, wanted)
        walker.run()
        self._positions.update(walker.positions)
        # A path the file does not have (a missing key) is not walked for again by each
        # diagnostic that falls back to its parent.
        absent.update(wanted.difference(walker.positions))

    def _walk_entry(self, entry: bytes, wanted: set[Path]
                    ) -> tuple[Any, bool, dict[Path, tuple[int, int, int, int]]]:
        """One entry's lines on their own: its data, whether they parsed without a
        refusal, and the positions of `wanted` in them (for `blocks`)."""
        walker = _Walker(self.path, entry, None)
        data = walker.run()
        clean = not (walker.diagnostics or walker.unread or walker.partial or walker.fatal)
        if not clean:
            return data, False, {}
        placer = _Walker(self.path, entry, set(wanted))
        placer.run()
        return data, True, placer.positions

    def _nearest(self, path: Path) -> tuple[int, int, int, int]:
        path = tuple(path)
        self.locate([path])
        while path and path not in self._positions:
            path = path[:-1]
        return self._positions.get(path, (1, 1, 1, 1))

    def value_position(self, path: Path) -> Position:
        line, col, vline, vcol = self._nearest(path)
        return vline, vcol

    def key_position(self, path: Path) -> Position:
        line, col, _, _ = self._nearest(path)
        return line, col

    def diagnostic(self, path: Path, message: str, *, at_key: bool = False) -> Diagnostic:
        line, col = self.key_position(path) if at_key else self.value_position(path)
        return diagnostic(self.path, line, col, path, message)


def load_file(path: str | os.PathLike[str], *, strict: bool = True) -> Document:
    """Read and strictly parse one desired-state file; raise ValidationFailed if refused.

    With strict=False only the fatal refusals raise (unreadable, too big, not UTF-8,
    empty, syntax error, too deep, several documents); the others are left on
    `Document.refusals` so that validation can report them with the rest of the file's
    problems in one run (DESIGN §2).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ValidationFailed(
            [diagnostic(name, 1, 1, (), f"cannot read file: {exc.strerror}")]
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ValidationFailed(
            [diagnostic(name, 1, 1, (), f"file is larger than {MAX_FILE_BYTES} bytes")]
        )
    return load_bytes(name, raw, strict=strict)


def load_bytes(name: str, raw: bytes, *, strict: bool = True) -> Document:
    """Parse bytes already read; `name` is used in diagnostics. See `load_file`."""
    digest = hashlib.sha256(raw).hexdigest()
    raw = _check_encoding(name, raw)
    data = halves.parse_in_halves(raw, lambda part: _walk_clean(name, part))
    if data is not None:  # a big file, parsed on two cores without a single refusal
        return Document(name, data, raw, digest)
    walker = _Walker(name, raw, None)
    data = walker.run()
    doc = Document(name, data, raw, digest)
    if walker.diagnostics:
        _resolve_duplicates(doc, walker)
        if strict or walker.fatal:
            raise ValidationFailed(walker.diagnostics)
        doc.refusals = walker.diagnostics
        doc.unread = walker.unread
        doc.partial = walker.partial
    return doc


def _walk_clean(name: str, raw: bytes) -> tuple[Any, bool]:
    """One part of a file for `halves`: its data, and whether it was read without a refusal."""
    walker = _Walker(name, raw, None)
    data = walker.run()
    clean = not (walker.diagnostics or walker.unread or walker.partial or walker.fatal)
    return data, clean


def _check_encoding(name: str, raw: bytes) -> bytes:
    """Refuse non-UTF-8 bytes and empty files; libyaml then reads the bytes directly."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise ValidationFailed(
            [diagnostic(name, line, col, (),
                        f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})")]
        ) from None
    if not raw.strip():
        raise ValidationFailed([diagnostic(name, 1, 1, (), "file is empty")])
    return raw


def _resolve_duplicates(doc: Document, walker: _Walker) -> None:
    """Fill in 'first defined at line N' for duplicate keys (positions found lazily)."""
    if not walker.duplicates:
        return
    doc.locate(path for path, _ in walker.duplicates)
    for path, index in walker.duplicates:
        line, _ = doc.key_position(path)
        d = walker.diagnostics[index]
        walker.diagnostics[index] = Diagnostic(
            d.path, d.line, d.column, d.field, f"{d.message} (first defined at line {line})"
        )  # d is printable already, and so is the added text


class _Walker:
    """Builds plain data from the events of one document, refusing anything else.

    With `wanted` set, it also records the positions of those paths (the slow path used
    only to place diagnostics); the first occurrence of a duplicate key wins there.
    """

    def __init__(self, name: str, raw: bytes, wanted: set[Path] | None):
        self.name = name
        self.raw = raw
        self.parser = CParser(raw)
        # libyaml returns None only after StreamEndEvent, which ends every read here
        self.get = cast(Callable[[], Event], self.parser.get_event)
        self.wanted = wanted
        self.positions: dict[Path, tuple[int, int, int, int]] = {}
        self.diagnostics: list[Diagnostic] = []
        self.duplicates: list[tuple[Path, int]] = []
        self.fatal = False  # the rest of the file could not be read
        self.unread: set[Path] = set()
        self.partial: set[Path] = set()

    # -- diagnostics --------------------------------------------------------------
    def _error(self, mark: Any, path: Path, message: str, *, fatal: bool = False) -> None:
        if self.wanted is None:
            self.diagnostics.append(
                diagnostic(self.name, mark.line + 1, mark.column + 1, path, message)
            )
            self.fatal = self.fatal or fatal

    def _syntax_error(self, exc: yaml.YAMLError, path: Path) -> None:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            line, col = mark.line + 1, mark.column + 1
        else:  # a ReaderError carries a character offset instead of a mark
            pos = getattr(exc, "position", 0) or 0
            before = self.raw[:pos]
            line = before.count(b"\n") + 1
            col = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
        if "maximum nesting depth" in str(problem):
            # Some libyaml builds stop deep flow collections themselves (at 1,000 levels)
            # before our own limit is reached in the event stream: same refusal, same words.
            message = f"nesting deeper than {MAX_DEPTH} levels"
        if self.wanted is None:
            self.diagnostics.append(diagnostic(self.name, line, col, path, message))
            self.fatal = True

    # -- walking --------------------------------------------------------------------
    def run(self) -> Any:
        data: Any = None
        try:
            event = self.get()
            if type(event) is StreamStartEvent:
                event = self.get()
            if type(event) is StreamEndEvent:
                self._error(event.start_mark, (), "file is empty", fatal=True)
                return None
            # DocumentStartEvent
            data = self._node(self.get(), (), 0)
            self.get()  # DocumentEndEvent
            event = self.get()
            if type(event) is DocumentStartEvent:
                self._error(event.start_mark, (),
                            "more than one YAML document; put each account in its own file",
                            fatal=True)
            elif type(event) is not StreamEndEvent:  # pragma: no cover - libyaml guarantees
                self._error(event.start_mark, (), "unexpected content after the document",
                            fatal=True)
        except _Abort:
            pass
        except yaml.YAMLError as exc:
            self._syntax_error(exc, getattr(exc, "_crctl_path", ()))
        return data

    def _node(self, event: Any, path: Path, depth: int) -> Any:
        kind = type(event)
        if kind is ScalarEvent:
            if event.tag is not None:
                self._tag(event, path)
            if event.anchor is not None:
                self._error(event.start_mark, path,
                            f"anchors are not allowed (found &{event.anchor})")
            value = event.value
            if not event.style and value in NULLS:
                return None
            return value
        if kind is AliasEvent:
            self._error(event.start_mark, path, f"aliases are not allowed (found *{event.anchor})")
            self.unread.add(path)
            return None
        if depth >= MAX_DEPTH:
            self._error(event.start_mark, path, f"nesting deeper than {MAX_DEPTH} levels",
                        fatal=True)
            raise _Abort
        if event.tag is not None:
            self._tag(event, path)
        if event.anchor is not None:
            self._error(event.start_mark, path, f"anchors are not allowed (found &{event.anchor})")
        if kind is MappingStartEvent:
            return self._mapping(path, depth + 1)
        if kind is SequenceStartEvent:
            return self._sequence(path, depth + 1)
        raise _Abort  # pragma: no cover - the parser emits nothing else here

    def _tag(self, event: Any, path: Path) -> None:
        self._error(event.start_mark, path, f"explicit tags are not allowed (found {event.tag!r})")
        if event.tag not in PLAIN_TAGS[type(event)]:
            self.unread.add(path)  # !!python/object on a list is not that list

    def _mapping(self, path: Path, depth: int) -> dict[str, Any]:
        get = self.get
        wanted = self.wanted
        result: dict[str, Any] = {}
        while True:
            try:
                event = get()
                if type(event) is not ScalarEvent:
                    if type(event) is MappingEndEvent:
                        return result
                    self._error(event.start_mark, path, "mapping keys must be plain strings")
                    self.partial.add(path)
                    unread = path in self.unread
                    self._node(event, path, depth)  # consume and drop it
                    self._node(get(), path, depth)
                    if not unread:  # an alias in there is not this mapping's value
                        self.unread.discard(path)
                    continue
                key = event.value
                if (event.tag is not None or event.anchor is not None or key == "<<") \
                        and self._odd_key(event, path, depth):
                    # A merge key is refused and kept out of the data (no "unknown key
                    # '<<'" as well); its value is read for its own refusals.
                    self.partial.add(path)
                    self._node(get(), path + (key,), depth)
                    continue
                vevent = get()
            except yaml.YAMLError as exc:
                exc._crctl_path = path  # type: ignore[attr-defined]
                raise
            if wanted is not None:
                self._record(path + (key,), event, vevent)
            value: Any  # a scalar's text, None, or a nested node
            if type(vevent) is ScalarEvent and vevent.tag is None and vevent.anchor is None:
                value = vevent.value
                if value in NULLS and not vevent.style:
                    value = None
            else:
                value = self._node(vevent, path + (key,), depth)
            if key in result:
                if wanted is None:
                    self.duplicates.append((path + (key,), len(self.diagnostics)))
                self._error(event.start_mark, path + (key,), f"duplicate key {key!r}")
                continue
            result[key] = value

    def _odd_key(self, event: Any, path: Path, depth: int) -> bool:
        """Report a tag or anchor on a key, or a merge key; true for a merge key."""
        if event.tag is not None or event.anchor is not None:
            unread = path in self.unread
            self._node(event, path, depth)
            if not unread:  # a tag on a key says nothing of this mapping's value
                self.unread.discard(path)
        if not event.style and event.value == "<<":
            self._error(event.start_mark, path, "merge keys (<<) are not allowed")
            return True
        return False

    def _record(self, child: Path, kevent: Any, vevent: Any) -> None:
        if child in self.wanted and child not in self.positions:  # type: ignore[operator]
            kmark, vmark = kevent.start_mark, vevent.start_mark
            self.positions[child] = (kmark.line + 1, kmark.column + 1,
                                     vmark.line + 1, vmark.column + 1)
            self._done()

    def _done(self) -> None:
        """Stop the slow walk once every wanted path is placed (errors near the top of a
        100,000-user file are then located without reading the rest of it)."""
        if len(self.positions) == len(self.wanted):  # type: ignore[arg-type]
            raise _Abort

    def _sequence(self, path: Path, depth: int) -> list[Any]:
        get = self.get
        wanted = self.wanted
        result: list[Any] = []
        while True:
            event = get()
            if type(event) is SequenceEndEvent:
                return result
            child = path + (len(result),)
            if wanted is not None and child in wanted:
                mark = event.start_mark
                assert mark is not None  # libyaml marks every event
                self.positions[child] = (mark.line + 1, mark.column + 1,
                                         mark.line + 1, mark.column + 1)
                self._done()
            result.append(self._node(event, child, depth))


class _Abort(Exception):
    """Stop walking: the rest of the file cannot be read meaningfully."""

