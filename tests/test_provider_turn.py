"""The Anthropic provider's turn (`_Turn`) and the producer's fill of its text blocks: pure, so tested on
their own. The turn reads each event as the API's JSON; every event here is first checked against the SDK's
own event types, so that none is a shape the API does not send.

The turn keeps a text block as its length only; the producer fills the text in from the reply's text,
which it keeps anyway (issue 15: the turn's copy was a second copy of every reply while it streamed)."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from chat.providers import STREAMED_TEXT, Finished, TextDelta, ToolCallReady, fill_streamed_text
from chat.providers.anthropic_provider import _Turn
from chat.text import clean_model_text

_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def _event(data: dict[str, Any]) -> dict[str, Any]:
    _EVENT.validate_python(data)  # raises for what is not a Messages API stream event
    return data


def _start() -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    }


def _text_block(index: int, pieces: list[str], *, start: str = "") -> list[dict[str, Any]]:
    return [
        {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": start}},
        *(
            {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
            for piece in pieces
        ),
        {"type": "content_block_stop", "index": index},
    ]


def _tool_block(index: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": '{"expression": "2+2"}'},
        },
        {"type": "content_block_stop", "index": index},
    ]


def _end(stop_reason: str) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": 9},
    }


def _run(events: list[dict[str, Any]]) -> tuple[_Turn, list[Any], Finished]:
    turn = _Turn()
    items: list[Any] = []
    for data in events:
        items += turn.feed(_event(data))
    return turn, items, turn.finished()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_text_then_a_tool_call_then_text_is_replayed_exactly_from_the_streamed_text() -> None:
    events = [
        _start(),
        *_text_block(0, ["Let me ", "compute."]),
        *_tool_block(1),
        *_text_block(2, ["Done", "."]),
        _end("tool_use"),
    ]
    turn, items, finished = _run(events)
    streamed = "".join(item.text for item in items if isinstance(item, TextDelta))
    assert streamed == "Let me compute.Done."
    assert next(item for item in items if isinstance(item, ToolCallReady)).input == {"expression": "2+2"}
    # The turn holds lengths, not text: no string of the reply is left in it.
    assert not any("compute" in s or "Done" in s for s in _strings(turn.blocks))
    assert finished.content[0] == {"type": "text", STREAMED_TEXT: 15}
    assert fill_streamed_text(finished.content, streamed) == [
        {"type": "text", "text": "Let me compute."},
        {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {"expression": "2+2"}},
        {"type": "text", "text": "Done."},
    ]


def test_text_in_a_blocks_start_is_streamed_and_counted() -> None:
    _, items, finished = _run([_start(), *_text_block(0, ["b"], start="a"), _end("end_turn")])
    assert [item.text for item in items if isinstance(item, TextDelta)] == ["a", "b"]
    assert fill_streamed_text(finished.content, "ab") == [{"type": "text", "text": "ab"}]


def test_an_empty_text_block_is_not_replayed() -> None:
    """The API refuses an empty text block: as before, it is left out (and takes no text)."""
    _, _, finished = _run([_start(), *_text_block(0, []), *_tool_block(1), _end("tool_use")])
    assert [block["type"] for block in finished.content] == ["tool_use"]


def test_the_fill_takes_the_cleaned_text_one_for_one() -> None:
    """The producer keeps the reply's text cleaned (NUL and lone surrogates become U+FFFD, one for one):
    the lengths the turn counted on the raw deltas still cut it at the same places."""
    events = [_start(), *_text_block(0, ["a\x00b"]), *_text_block(1, ["\ud800c"]), _end("end_turn")]
    _, items, finished = _run(events)
    kept = "".join(clean_model_text(item.text) for item in items if isinstance(item, TextDelta))
    assert fill_streamed_text(finished.content, kept) == [
        {"type": "text", "text": "a\ufffdb"},
        {"type": "text", "text": "\ufffdc"},
    ]


def test_blocks_with_their_own_text_are_kept_and_take_nothing_from_the_streamed_text() -> None:
    content: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": "hm", "signature": "s"},
        {"type": "text", STREAMED_TEXT: 2},
    ]
    assert fill_streamed_text(content, "ok") == [content[0], {"type": "text", "text": "ok"}]
    assert content[1] == {"type": "text", STREAMED_TEXT: 2}  # its argument is not changed


def test_a_length_beyond_the_streamed_text_is_an_error_not_a_shorter_replay() -> None:
    with pytest.raises(ValueError, match="3 streamed characters; 2 were"):
        fill_streamed_text([{"type": "text", STREAMED_TEXT: 3}], "ok")
