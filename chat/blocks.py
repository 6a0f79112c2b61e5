"""Where streaming Markdown text can be cut into finished blocks, decided from a prefix alone.

A cut at offset `b` means: rendering `text[a:b]` and `text[b:]` separately gives the same HTML as
rendering them together (the blocks are independent), and no text arriving later can change that. The
producer renders each finished block once and sends it as HTML; only the text after the last cut (the
open block) travels as plain text.

Invariants (unit-tested in tests/test_blocks.py):
- Cuts depend only on the text, never on how it was fed: feeding it char by char gives the same cuts as
  feeding it whole, and the cuts of a prefix are exactly the cuts of the whole text that a prefix decides.
- The scanner is conservative: when unsure (a possible list continuation, a fence that never closed, an
  indented line), it does not cut. A missed cut only keeps more text open; the final rendering is always
  the whole reply's.
- Linear: each character is looked at a bounded number of times.

Cut points: before a line that starts at column 0 after a blank line (unless it continues a list: a list
item after a list), after a top-level ATX heading line, and after the closing line of a top-level fence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE_OPEN = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$")
_LIST_ITEM = re.compile(r"^[ ]{0,3}(?:[-+*]|\d{1,9}[.)])(?:[ \t\r]|$)")
_HEADING = re.compile(r"^#{1,6}(?:[ \t\r]|$)")
_LIST_START_CHARS = frozenset("-+*0123456789")


@dataclass
class _Fence:
    char: str
    length: int
    top_level: bool  # opened at column 0: its closing line ends a top-level block


class BlockSplitter:
    """Give it the text as it streams; it returns the new cut offsets (absolute, counting from `base`).

    Two ways to give it: `feed(piece)`, each new piece, and the scanner keeps the open line itself; or
    `scan(text)`, the whole text so far (the scanner's `base` is an offset into it), when the caller keeps
    the text anyway: the scanner then holds no copy of it. (The producer does: a one-paragraph reply is one
    open line, so with `feed` the scanner held a second copy of the whole reply while it streamed.)"""

    def __init__(self, base: int = 0) -> None:
        self.line_start = base  # offset where the current (incomplete) line starts
        self.scanned = base  # offset up to which the text has been looked at
        self.line = ""  # `feed` only: the current incomplete line
        self.last_cut = base
        self.fence: _Fence | None = None
        self.in_list = False
        self.after_blank = False  # the previous complete line was blank (outside a fence)
        self.has_content = False  # the open block holds a non-blank line
        self.decided_line = False  # the cut before the current line was already decided
        self.disabled = False

    def feed(self, text: str) -> list[int]:
        """Scan the next piece of the stream."""
        open_line = self.line + text
        origin = self.line_start
        cuts = self._scan(open_line, origin)
        self.line = open_line[self.line_start - origin :]
        return cuts

    def scan(self, text: str) -> list[int]:
        """Scan the stream up to the end of `text`, the whole stream so far (the one given last time, with
        more at its end); only a completed line is sliced out of it, for as long as it is looked at."""
        return self._scan(text, 0)

    def _scan(self, buffer: str, origin: int) -> list[int]:
        """Scan `buffer[self.scanned - origin :]`; `buffer[i]` is the stream's character `origin + i`."""
        cuts: list[int] = []
        at = self.scanned - origin
        while (newline := buffer.find("\n", at)) >= 0:
            self._complete_line(buffer[self.line_start - origin : newline], cuts)
            at = newline + 1
        self.scanned = origin + len(buffer)
        if self.line_start < self.scanned:
            self._partial_line(buffer[self.line_start - origin], cuts)
        return cuts

    def _cut(self, at: int, cuts: list[int]) -> None:
        if at > self.last_cut:
            cuts.append(at)
            self.last_cut = at
        self.in_list = False
        self.has_content = False
        self.after_blank = False

    def _partial_line(self, first: str, cuts: list[int]) -> None:
        """A line still arriving (`first`: its first character): cut before it once that settles it."""
        if self.disabled or self.decided_line or self.fence is not None:
            return
        if not self.after_blank or not self.has_content:
            return
        if first.isspace():
            return
        if self.in_list and first in _LIST_START_CHARS:
            return  # may be the next item of the same list: wait for the whole line
        self.decided_line = True
        self._cut(self.line_start, cuts)

    def _complete_line(self, line: str, cuts: list[int]) -> None:
        start = self.line_start
        self.line_start = start + len(line) + 1
        decided, self.decided_line = self.decided_line, False
        blank = not line.strip()
        if "\r" in line[:-1]:
            # A lone CR is a line break to Markdown but not to this scanner, which could then misread a
            # fence: stop cutting for the rest of the text (it stays open; the final rendering is whole).
            self.disabled = True
        if self.disabled:
            return
        if self.fence is not None:
            if _closes(line, self.fence):
                top_level = self.fence.top_level
                self.fence = None
                if top_level:
                    self._cut(self.line_start, cuts)
            return
        if blank:
            if self.has_content:
                self.after_blank = True
            return
        if self.after_blank and not decided:
            if not line[0].isspace() and not (self.in_list and _LIST_ITEM.match(line)):
                self._cut(start, cuts)
        self.after_blank = False
        self.has_content = True
        opened = _FENCE_OPEN.match(line)
        if opened and not (opened[1][0] == "`" and "`" in opened[2]):
            self.fence = _Fence(opened[1][0], len(opened[1]), top_level=not line[0].isspace())
            return
        if _LIST_ITEM.match(line):
            self.in_list = True
        elif _HEADING.match(line):
            self._cut(self.line_start, cuts)


def _closes(line: str, fence: _Fence) -> bool:
    stripped = line.strip()
    return (
        len(stripped) >= fence.length
        and stripped == fence.char * len(stripped)
        and len(line) - len(line.lstrip(" ")) <= 3 + (0 if fence.top_level else len(line))
    )


def block_cuts(text: str) -> list[int]:
    """Every cut the scanner finds in `text` (as if it had streamed in)."""
    return BlockSplitter().feed(text)


def finished_length(text: str) -> int:
    """How much of `text` is made of finished blocks: the offset of its last cut, or 0."""
    cuts = block_cuts(text)
    return cuts[-1] if cuts else 0
