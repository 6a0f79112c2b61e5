"""What can go wrong with a reply, in plain words for the page."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplyFailure(Exception):
    """A provider failure mapped to a short code and a sentence a person understands."""

    code: str
    message: str
    retryable: bool = True

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


STOPPED_MESSAGE = "You stopped this response."
INTERRUPTED_MESSAGE = "The server handling this response stopped before it finished."
TRUNCATED_MESSAGE = "The connection to the model ended before the response was complete."
MAX_TOKENS_MESSAGE = "The response reached the maximum length."
REFUSAL_MESSAGE = "The model declined to continue this response."
