"""The one small interface every model provider implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ReplyRequest:
    model: str
    system: str
    messages: list[dict[str, Any]]
    max_tokens: int
    tools: list[dict[str, Any]] = field(default_factory=list)
    allow_tools: bool = True  # False: the model must answer in text (after the tool-round cap)
    thinking_budget: int | None = None  # extended thinking's budget_tokens; None = off
    # Called (at least once) when the request has been built and is being sent, before the provider waits
    # for the model: from then on the caller may use the CPU without delaying the request. See `stream`.
    on_sending: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Started:
    """The upstream accepted the request: its model and input usage are known even if the reply fails."""

    model: str
    input_tokens: int | None = None
    cache_creation_tokens: int | None = None
    cache_read_tokens: int | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ThinkingDelta:
    """Extended thinking text as it streams (shown apart from the answer; never part of `content`)."""

    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    """A tool_use block began; its arguments are still streaming."""

    id: str
    name: str


@dataclass(frozen=True)
class ToolCallReady:
    """A tool_use block is complete, with its parsed arguments."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Finished:
    stop_reason: str | None
    model: str
    input_tokens: int | None = None  # not counting cached tokens (as the API reports it)
    output_tokens: int | None = None
    cache_creation_tokens: int | None = None
    cache_read_tokens: int | None = None
    # The assistant turn as Messages API content blocks (thinking with its signature, redacted_thinking, text,
    # tool_use), to replay in history exactly as received. A text block may give, instead of its "text",
    # its length as `STREAMED_TEXT` (see `fill_streamed_text`).
    content: list[dict[str, Any]] = field(default_factory=list)


# A text block of `Finished.content` given as {"type": "text", STREAMED_TEXT: n}: its text is the next n
# characters of the turn's `TextDelta` text, in order. The producer keeps that text anyway and fills it in
# (`fill_streamed_text`), so a provider need not hold a second copy of every reply for as long as it streams
# (measured, issue 15: the SDK turn's copy was ~3-7 KB per open stream of the bench's 7 KB replies).
STREAMED_TEXT = "streamed"


def fill_streamed_text(content: list[dict[str, Any]], streamed: str) -> list[dict[str, Any]]:
    """`content` with each `STREAMED_TEXT` block given its text from `streamed` (the turn's `TextDelta`
    text, or the same text with characters replaced one for one). Other blocks are kept as they are.
    Raises ValueError when the lengths claim more text than was streamed: a provider's bug, which must not
    become a silently shortened replay."""
    filled: list[dict[str, Any]] = []
    at = 0
    for block in content:
        if block.get("type") == "text" and STREAMED_TEXT in block:
            end = at + block[STREAMED_TEXT]
            if end > len(streamed):
                raise ValueError(f"A text block claims {end} streamed characters; {len(streamed)} were.")
            block = {key: value for key, value in block.items() if key != STREAMED_TEXT}
            block["text"] = streamed[at:end]
            at = end
        filled.append(block)
    return filled


StreamEvent = Started | TextDelta | ThinkingDelta | ToolCallStarted | ToolCallReady | Finished


class Provider(Protocol):
    name: str
    is_demo: bool

    def stream(self, request: ReplyRequest) -> AsyncGenerator[StreamEvent, None]:
        """Yield `Started` (optional), text deltas, then exactly one `Finished`.

        Call `request.on_sending` (when set) once the request is built and about to be sent.

        Raise `ReplyFailure` on provider errors.

        Closing the iterator (or cancelling the task that drives it) must close the upstream connection,
        so that Stop also stops billing."""
        ...
