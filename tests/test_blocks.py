"""Positions placed from an entry's own lines (reconciler.blocks) equal those of the whole
event walk, in block style and in every style it must leave to the walk."""

from __future__ import annotations

import pytest

from reconciler import blocks
from reconciler.loader import load_bytes

USER = """\
  {name}:
    first_name: {first}
    last_name: Doe
    email: {name}@acme.example
    extension: "{ext}"
    profile: Elite
    call_recording:
      product: on-demand
"""

BLOCK = ("account: acme\nrecording_groups:\n  sales:\n    managers: [u2]\n"
         "    members: [u3, u4]\nusers:\n"
         + "".join(USER.format(name=f"u{i}", first="Jane", ext=2100 + i) for i in range(1, 6)))

CASES = {
    "block": BLOCK,
    "windows newlines": BLOCK.replace("\n", "\r\n"),
    "comments and blank lines": BLOCK.replace("  u3:\n", "# a comment\n\n  # indented\n  u3:\n"),
    "users before groups": BLOCK.split("recording_groups:")[0] + "users:\n"
    + BLOCK.split("users:\n")[1] + "recording_groups:\n  sales:\n    managers: [u2]\n",
    "flow users": "account: acme\nusers: {u1: {first_name: Jane, email: u1@acme.example,"
                  " extension: '2101', call_recording: {product: on-demand}}}\n",
    "quoted key": BLOCK.replace("  u3:\n", '  "u3":\n'),
    "a fake key inside a quoted scalar": BLOCK.replace(
        "    first_name: Jane\n    last_name: Doe\n    email: u2@",
        '    first_name: "Jane\n  u4: x"\n    last_name: Doe\n    email: u2@'),
    "a fake entry inside a quoted scalar": BLOCK.replace(
        '    first_name: Jane\n    last_name: Doe\n    email: u3@',
        '    first_name: "Jane\n  u4:\n    email: u4@acme.example\n    extension: \'9\'\n'
        '  "\n    last_name: Doe\n    email: u3@'),
    "deeper indentation": BLOCK.replace("\n  ", "\n    "),
    "a key that only starts like the user's": BLOCK.replace("  u3:\n", "  u3x: 1\n  u3:\n"),
}

PATHS = [("users", f"u{i}", "call_recording", "product") for i in range(1, 6)] + [
    ("users", "u5", "email"), ("users", "u2", "first_name"), ("users", "u4"),
    ("users", "u3", "call_recording", "access"),  # absent: falls back to the parent
    ("recording_groups", "sales", "managers", 0), ("recording_groups", "sales", "members", 1),
    ("users", "nobody", "extension"), ("account",)]


def positions(text: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    doc = load_bytes("acme.yaml", text.encode(), strict=False)
    doc.locate(PATHS)
    return [(doc.key_position(p), doc.value_position(p)) for p in PATHS]


@pytest.mark.parametrize("case", list(CASES))
def test_entry_positions_equal_the_whole_walk(case: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    text = CASES[case]
    monkeypatch.setattr(blocks, "MIN_BYTES", 1 << 40)
    expected = positions(text)
    monkeypatch.setattr(blocks, "MIN_BYTES", 0)
    assert positions(text) == expected


def test_a_warning_on_the_last_user_of_a_big_file_is_placed_without_a_whole_walk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    text = BLOCK + "".join(USER.format(name=f"v{i}", first="Jo", ext=30000 + i)
                           for i in range(12000))
    assert len(text) > blocks.MIN_BYTES
    walks: list[int] = []
    from reconciler import loader
    real = loader._Walker.run

    def counting(self: loader._Walker) -> object:
        walks.append(len(self.raw))
        return real(self)

    monkeypatch.setattr(loader._Walker, "run", counting)
    doc = load_bytes("acme.yaml", text.encode(), strict=False)
    walks.clear()
    path = ("users", "v11999", "call_recording", "product")
    doc.locate([path])
    assert doc.key_position(path) == (text.count("\n") - 1 + 1, 7)
    assert walks and max(walks) < 1000  # only the entry's own lines were walked
