"""The producer of a reply: calls the provider, runs the tools it asks for, publishes each delta, saves.

It runs as a task in the process that accepted the message, independent of any HTTP connection, so a
refresh or a closed tab does not stop it. Subscribers (see `subscriber.py`) follow it through the
channel layer from any process. The database is written on a throttle (every CHAT_SAVE_INTERVAL
seconds while text flows, with the lease renewal in the same UPDATE), at each tool round, and once at
the end — never per token, and never on the path from upstream to subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from chat import flusher, pubsub, services
from chat.db import background_db
from chat.errors import MAX_TOKENS_MESSAGE, REFUSAL_MESSAGE, STOPPED_MESSAGE, TRUNCATED_MESSAGE, ReplyFailure
from chat.models import Message
from chat.providers import (
    Finished,
    ReplyRequest,
    Started,
    TextDelta,
    ToolCallReady,
    ToolCallStarted,
    get_provider,
)
from chat.rendering import tool_call_html
from chat.selectors import provider_history, split_prefill
from chat.tools import ToolContext, enabled_tools, get_tool
from chat.tools.runner import run_tool_call

logger = logging.getLogger(__name__)

ROUND_SEPARATOR = "\n\n"
TOOL_ABANDONED = "The reply ended before this tool finished."


@dataclass
class ReplyState:
    reply_id: int
    text: str
    context: ToolContext
    # Earlier tool rounds as Messages API messages: assistant (text + tool_use), user (tool_result)…
    blocks: list[dict[str, Any]] = field(default_factory=list)
    pending_tool_uses: list[dict[str, Any]] = field(default_factory=list)
    round_start: int = 0  # offset in `text` where the current round's text starts
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    stop_reason: str = ""  # why we are ending early: "stopped" / "gone"
    input_tokens: int | None = None  # summed over rounds
    output_tokens: int | None = None
    round_input_tokens: int | None = None  # announced by the round in progress
    model: str = ""
    note: str = ""
    # Tool boxes shown so far: id -> (text offset where it appears, its latest HTML), for late subscribers.
    tool_boxes: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started) * 1000)

    def add_usage(self, input_tokens: int | None, output_tokens: int | None) -> None:
        if input_tokens is not None:
            self.input_tokens = (self.input_tokens or 0) + input_tokens
        if output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + output_tokens

    def final_blocks(self, finished: Finished | None) -> list[dict[str, Any]]:
        """The whole exchange as API messages, valid to replay: every tool_use has its tool_result."""
        if not self.blocks and not self.pending_tool_uses:
            return []
        blocks = list(self.blocks)
        if self.pending_tool_uses:  # stopped or failed while a tool ran
            blocks.append(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": b["id"],
                            "content": TOOL_ABANDONED,
                            "is_error": True,
                        }
                        for b in self.pending_tool_uses
                    ],
                }
            )
            return blocks
        tail = self.text[self.round_start :]
        if tail.strip():
            blocks.append({"role": "assistant", "content": [{"type": "text", "text": tail}]})
        return blocks


@dataclass(frozen=True)
class Loaded:
    request: ReplyRequest
    text: str
    context: ToolContext
    blocks: list[dict[str, Any]]
    round_start: int


@background_db
def _load(reply_id: int) -> Loaded | None:
    reply = Message.objects.select_related("conversation").filter(pk=reply_id).first()
    if reply is None or reply.status != Message.Status.STREAMING:
        return None
    messages, system, model = provider_history(reply=reply)
    request = ReplyRequest(model=model, system=system, messages=messages, max_tokens=settings.CHAT_MAX_TOKENS)
    context = ToolContext(user_id=reply.conversation.user_id, conversation_id=reply.conversation_id)
    # Continue: earlier rounds stay as they were; a trailing text round is the prefill being extended.
    earlier, prefill = split_prefill(reply.blocks, reply.content)
    return Loaded(request, reply.content, context, earlier, len(reply.content) - len(prefill))


_save_blocks = background_db(services.reply_save_blocks)
_finish = background_db(services.reply_finish)


async def produce_reply(reply_id: int) -> None:
    """Generate reply `reply_id` (a STREAMING row) to the end, whatever happens to its viewers."""
    loaded = await _load(reply_id)
    if loaded is None:
        return
    state = ReplyState(
        reply_id=reply_id,
        text=loaded.text,
        context=loaded.context,
        blocks=loaded.blocks,
        round_start=loaded.round_start,
    )
    layer = pubsub.layer()
    control_channel = await layer.new_channel("reply-control.")
    await layer.group_add(pubsub.control_group(reply_id), control_channel)

    generation = asyncio.create_task(_generate(state, loaded.request))
    control = asyncio.create_task(_control_loop(state, control_channel, generation))

    def stop(reason: str) -> None:
        if not generation.done():
            state.stop_reason = state.stop_reason or reason
            generation.cancel()

    # The process's flusher saves the text on a throttle, renews the lease, and relays Stop from the database.
    flusher.register(
        reply_id,
        flusher.Registration(
            text=lambda: state.text,
            ttft_ms=lambda: state.ttft_ms,
            stop=stop,
            saved_length=len(loaded.text),
        ),
    )
    outcome: dict[str, Any] = {}
    try:
        outcome = await _outcome(state, generation)
    except asyncio.CancelledError:
        # The process is shutting down: keep the partial and say so; no one will finish this reply here.
        generation.cancel()
        failure = ReplyFailure("interrupted", "The server restarted before this response finished.")
        outcome = {"status": Message.Status.INTERRUPTED, "error": failure}
        raise
    finally:
        control.cancel()
        await asyncio.gather(control, return_exceptions=True)
        try:
            await asyncio.shield(_close(state, outcome, control_channel))
        finally:
            flusher.unregister(reply_id)  # only now: until the final save, the lease is ours


async def _generate(state: ReplyState, request: ReplyRequest) -> Finished | None:
    """One or more rounds: stream text; when the model calls tools, run them and go on in the same reply."""
    provider = get_provider()
    tools = [] if provider.is_demo else [tool.api_definition() for tool in enabled_tools()]
    messages = request.messages  # already holds this reply's earlier rounds when it is continued
    rounds = 0
    while True:
        allow_tools = rounds < settings.CHAT_MAX_TOOL_ROUNDS
        round_request = dataclasses.replace(request, messages=messages, tools=tools, allow_tools=allow_tools)
        finished = await _stream_round(state, provider, round_request)
        if finished is None or finished.stop_reason != "tool_use" or not allow_tools:
            return finished
        await _run_tools(state, finished)
        messages = [*messages, *state.blocks[-2:]]
        rounds += 1
        if rounds >= settings.CHAT_MAX_TOOL_ROUNDS:
            state.note = (
                f"Reached the limit of {settings.CHAT_MAX_TOOL_ROUNDS} tool rounds; the model answered "
                "without further tools."
            )
        await _publish_text(state, ROUND_SEPARATOR if state.text and not state.text.endswith("\n") else "")
        state.round_start = len(state.text)


async def _stream_round(state: ReplyState, provider: Any, request: ReplyRequest) -> Finished | None:
    finished: Finished | None = None
    state.round_input_tokens = None
    prefill = state.text[state.round_start :] if request.messages[-1]["role"] == "assistant" else ""
    async with contextlib.aclosing(provider.stream(request)) as events:
        async for item in events:
            if isinstance(item, TextDelta):
                if state.first_token_at is None:
                    state.first_token_at = time.monotonic()
                await _publish_text(state, item.text)
            elif isinstance(item, Started):
                state.model = item.model
                state.round_input_tokens = item.input_tokens
            elif isinstance(item, ToolCallStarted):
                await _publish_tool(state, item.id, item.name)
            elif isinstance(item, ToolCallReady):
                await _publish_tool(state, item.id, item.name, arguments=item.input)
            else:
                finished = item
    state.round_input_tokens = None
    if finished is not None:
        state.add_usage(finished.input_tokens, finished.output_tokens)
        if prefill and finished.content:  # Continue: the round's text includes the prefill it extended
            first = finished.content[0]
            if first["type"] == "text":
                finished.content[0] = {**first, "text": prefill + first["text"]}
            else:
                finished.content.insert(0, {"type": "text", "text": prefill})
    return finished


async def _publish_text(state: ReplyState, text: str) -> None:
    if not text:
        return
    start = len(state.text)
    state.text += text
    await pubsub.layer().group_send(pubsub.audience_group(state.reply_id), pubsub.chunk(start, text))


async def _publish_tool(
    state: ReplyState,
    tool_id: str,
    name: str,
    *,
    arguments: dict[str, Any] | None = None,
    result: str | None = None,
    is_error: bool = False,
) -> None:
    tool = get_tool(name)
    html = tool_call_html(
        tool_id=tool_id,
        label=tool.label if tool else name,
        arguments=arguments,
        result=result,
        is_error=is_error,
    )
    offset = state.tool_boxes.get(tool_id, (len(state.text), ""))[0]
    state.tool_boxes[tool_id] = (offset, html)
    await pubsub.layer().group_send(pubsub.audience_group(state.reply_id), pubsub.tool(offset, html))


async def _run_tools(state: ReplyState, finished: Finished) -> None:
    tool_uses = [block for block in finished.content if block["type"] == "tool_use"]
    state.blocks.append({"role": "assistant", "content": finished.content})
    state.pending_tool_uses = tool_uses
    results = []
    for block in tool_uses:
        result = await run_tool_call(
            tool_use_id=block["id"],
            name=block["name"],
            arguments=block["input"],
            context=state.context,
            timeout=settings.CHAT_TOOL_TIMEOUT,
        )
        await _publish_tool(
            state,
            block["id"],
            block["name"],
            arguments=block["input"],
            result=result.content,
            is_error=result.is_error,
        )
        results.append(result.api_block())
    state.blocks.append({"role": "user", "content": results})
    state.pending_tool_uses = []
    await _save_blocks(reply_id=state.reply_id, content=state.text, blocks=state.blocks)


async def _outcome(state: ReplyState, generation: asyncio.Task[Finished | None]) -> dict[str, Any]:
    try:
        finished = await generation
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        if state.stop_reason == "gone":
            return {"status": None}
        return {"status": Message.Status.STOPPED, "error": ReplyFailure("stopped", STOPPED_MESSAGE)}
    except ReplyFailure as failure:
        return {"status": Message.Status.ERROR, "error": failure}
    except Exception:
        logger.exception("reply %s failed", state.reply_id)
        internal = ReplyFailure("internal", "Something went wrong on our side while writing this response.")
        return {"status": Message.Status.ERROR, "error": internal}
    cut_off = _cut_off_by_model(finished)
    if cut_off is not None:
        return {"status": Message.Status.INCOMPLETE, "error": cut_off, "finished": finished}
    return {"status": Message.Status.COMPLETE, "finished": finished}


def _cut_off_by_model(finished: Finished | None) -> ReplyFailure | None:
    """The reply ended without error but is not whole: say why."""
    if finished is None or finished.stop_reason is None:
        return ReplyFailure("truncated", TRUNCATED_MESSAGE)
    if finished.stop_reason == "max_tokens":
        return ReplyFailure("max_tokens", MAX_TOKENS_MESSAGE)
    if finished.stop_reason == "refusal":
        return ReplyFailure("refusal", REFUSAL_MESSAGE, False)
    return None


async def _control_loop(state: ReplyState, channel: str, generation: asyncio.Task[Any]) -> None:
    """Answer subscribers' sync requests from memory, and stop on request from any process."""
    layer = pubsub.layer()
    while True:
        message = await layer.receive(channel)
        if message["type"] == pubsub.SYNC:
            offset = max(0, min(int(message["offset"]), len(state.text)))
            boxes = sorted((at, html) for at, html in state.tool_boxes.values() if at >= offset)
            await layer.send(message["reply_to"], pubsub.chunk(offset, state.text[offset:], boxes))
        elif message["type"] == pubsub.STOP and not generation.done():
            state.stop_reason = state.stop_reason or "stopped"
            generation.cancel()


async def _close(state: ReplyState, outcome: dict[str, Any], control_channel: str) -> None:
    layer = pubsub.layer()
    status = outcome.get("status")
    try:
        if status is not None:
            finished: Finished | None = outcome.get("finished")
            # A round that failed or was stopped still counts the input its upstream announced.
            state.add_usage(state.round_input_tokens, None)
            await _finish(
                reply_id=state.reply_id,
                content=state.text,
                blocks=state.final_blocks(finished),
                status=status,
                error=outcome.get("error"),
                note=state.note,
                stop_reason=finished.stop_reason if finished else None,
                model=finished.model if finished else state.model or None,
                input_tokens=state.input_tokens,
                output_tokens=state.output_tokens,
                ttft_ms=state.ttft_ms,
                duration_ms=round((time.monotonic() - state.started) * 1000),
            )
    finally:
        # Persist, then publish: a subscriber that sees `end` finds the final text in the database.
        await layer.group_discard(pubsub.control_group(state.reply_id), control_channel)
        await pubsub.publish_end(state.reply_id)
