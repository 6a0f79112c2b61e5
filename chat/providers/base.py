"""The one small interface every model provider implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ReplyRequest:
    model: str
    system: str
    messages: list[dict[str, Any]]
    max_tokens: int


@dataclass(frozen=True)
class Started:
    """The upstream accepted the request: its model and input usage are known even if the reply fails."""

    model: str
    input_tokens: int | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    stop_reason: str | None
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


StreamEvent = Started | TextDelta | Finished


class Provider(Protocol):
    name: str
    is_demo: bool

    def stream(self, request: ReplyRequest) -> AsyncGenerator[StreamEvent, None]:
        """Yield `Started` (optional), text deltas, then exactly one `Finished`.

        Raise `ReplyFailure` on provider errors.

        Closing the iterator (or cancelling the task that drives it) must close the upstream connection,
        so that Stop also stops billing."""
        ...
