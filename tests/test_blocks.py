"""The streaming Markdown block splitter: pure, so tested on its own, against the real renderer."""

from __future__ import annotations

import itertools
import re

import pytest

from chat.blocks import BlockSplitter, block_cuts, finished_length
from chat.rendering import render_markdown

NESTED_LIST = (
    "Intro.\n\n- one\n  - one.a\n  - one.b\n\n- two\n\n  more of two\n\n1. first\n2. second\n\nAfter."
)
FENCE_IN_LIST = "- step:\n\n  ```python\n  x = 1\n\n  y = 2\n  ```\n\n- next step\n\nDone.\n"
UNCLOSED_FENCE = "Look:\n\n```js\nconst a = 1;\n\nconst b"
TABLE = "| a | b |\n|---|:-:|\n| 1 | 2 |\n| 3 | 4 |\n\nBelow the table.\n"
CRLF = "# Title\r\n\r\nFirst **para**.\r\n\r\n- a\r\n- b\r\n\r\nLast.\r\n"
HEADINGS_AND_CODE = "# One\nText under one.\n## Two\n```py\n# not a heading\n\n\nprint(1)\n```\nTail"
MIXED = (
    "> quote\n\n> another\n\n---\n\n    indented code\n\n    still code\n\nPara with [link](http://x.y).\n\n"
    "~~~\n```\nfence in fence\n~~~\n\n* star\n\n+ plus\n\nEnd"
)
CORPUS = [NESTED_LIST, FENCE_IN_LIST, UNCLOSED_FENCE, TABLE, CRLF, HEADINGS_AND_CODE, MIXED]


def _normal(html: str) -> str:
    return re.sub(r">\s+<", "><", html).strip()


def _pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("text", CORPUS)
def test_rendering_the_blocks_apart_equals_rendering_the_whole(text: str) -> None:
    cuts = block_cuts(text)
    assert cuts == sorted(set(cuts)) and all(0 < c <= len(text) for c in cuts)
    apart = "".join(render_markdown(piece) for piece in _pieces(text, cuts))
    assert _normal(apart) == _normal(render_markdown(text))


@pytest.mark.parametrize("text", CORPUS)
def test_cuts_do_not_depend_on_how_the_text_arrives(text: str) -> None:
    whole = block_cuts(text)
    splitter = BlockSplitter()
    by_char = [cut for ch in text for cut in splitter.feed(ch)]
    assert by_char == whole
    for size in (2, 3, 7):
        splitter = BlockSplitter()
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert [cut for chunk in chunks for cut in splitter.feed(chunk)] == whole


@pytest.mark.parametrize("text", CORPUS)
def test_a_prefix_never_cuts_where_the_whole_does_not(text: str) -> None:
    whole = block_cuts(text)
    for end in range(len(text) + 1):
        prefix_cuts = block_cuts(text[:end])
        assert prefix_cuts == whole[: len(prefix_cuts)]


def test_nested_list_stays_one_block_until_a_paragraph_follows() -> None:
    cuts = block_cuts(NESTED_LIST)
    pieces = _pieces(NESTED_LIST, cuts)
    assert pieces[0] == "Intro.\n\n"
    # The blank line between "one" and "two" makes the list loose: it must not be cut there.
    # A list after a list may continue it: conservatively one block with the ordered list.
    assert pieces[1] == "- one\n  - one.a\n  - one.b\n\n- two\n\n  more of two\n\n1. first\n2. second\n\n"
    assert pieces[-1] == "After."


def test_a_fence_inside_a_list_keeps_its_blank_lines() -> None:
    pieces = _pieces(FENCE_IN_LIST, block_cuts(FENCE_IN_LIST))
    assert pieces[0].startswith("- step:") and pieces[0].endswith("- next step\n\n")
    assert pieces[-1] == "Done.\n"


def test_an_unclosed_fence_at_a_cut_off_stays_open() -> None:
    assert finished_length(UNCLOSED_FENCE) == len("Look:\n\n")


def test_top_level_fence_and_heading_close_at_their_last_line() -> None:
    pieces = _pieces(HEADINGS_AND_CODE, block_cuts(HEADINGS_AND_CODE))
    assert pieces == [
        "# One\n",
        "Text under one.\n## Two\n",
        "```py\n# not a heading\n\n\nprint(1)\n```\n",
        "Tail",
    ]


def test_table_closes_at_the_blank_line() -> None:
    assert finished_length(TABLE) == TABLE.index("Below")


def test_crlf_line_endings() -> None:
    pieces = _pieces(CRLF, block_cuts(CRLF))
    assert pieces[:3] == ["# Title\r\n", "\r\nFirst **para**.\r\n\r\n", "- a\r\n- b\r\n\r\n"]


def test_a_lone_carriage_return_stops_cutting() -> None:
    text = "One.\n\n\r```\rcode\n\nnot a new block"
    assert block_cuts(text) == []


def test_a_partial_line_decides_as_soon_as_it_can() -> None:
    splitter = BlockSplitter()
    assert splitter.feed("Para one.\n\nP") == [len("Para one.\n\n")]
    splitter = BlockSplitter()
    assert splitter.feed("- a\n\n-") == []  # maybe the next item of the list
    assert splitter.feed(" b\n") == []
    assert splitter.feed("\nx") == [len("- a\n\n- b\n\n")]


def test_offsets_start_at_the_base() -> None:
    assert BlockSplitter(base=100).feed("# H\nrest") == [104]


@pytest.mark.parametrize("text", CORPUS)
def test_scanning_the_whole_text_so_far_cuts_where_feeding_its_pieces_does(text: str) -> None:
    """`scan` (the caller keeps the text) and `feed` (the scanner keeps the open line) agree, from any
    base: the producer scans its reply text, which starts with earlier rounds' text."""
    earlier = "Earlier round.\n\n"
    for size in (1, 2, 7, len(text)):
        fed = BlockSplitter()
        scanned = BlockSplitter(base=len(earlier))
        so_far = earlier
        for i in range(0, len(text), size):
            piece = text[i : i + size]
            so_far += piece
            assert [cut + len(earlier) for cut in fed.feed(piece)] == scanned.scan(so_far)


def test_a_scanner_given_the_whole_text_holds_no_copy_of_it() -> None:
    paragraph = "One long paragraph that streams as a single open line, " * 200
    splitter = BlockSplitter()
    so_far = ""
    for word in paragraph.split(" "):
        so_far += word + " "
        splitter.scan(so_far)
    held = [value for value in vars(splitter).values() if isinstance(value, str)]
    assert all(len(value) <= 1 for value in held), held
