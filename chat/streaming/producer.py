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
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from chat.blocks import BlockSplitter
from chat.errors import MAX_TOKENS_MESSAGE, REFUSAL_MESSAGE, STOPPED_MESSAGE, TRUNCATED_MESSAGE, ReplyFailure
from chat.models import Message
from chat.providers import (
    Finished,
    ReplyRequest,
    Started,
    TextDelta,
    ThinkingDelta,
    ToolCallReady,
    ToolCallStarted,
    fill_streamed_text,
    get_provider,
)
from chat.rendering import block_html, tool_call_html
from chat.selectors import THINKING_TYPES, prefill_thinking, provider_history, split_prefill
from chat.streaming import flusher, metrics, pubsub
from chat.streaming.db import start_db
from chat.streaming.store import FinalRender, areply_check_budget, areply_close, areply_save_blocks
from chat.text import clean_model_data, clean_model_text
from chat.tools import ToolContext, enabled_tools, get_tool
from chat.tools.runner import run_tool_call
from usage.pricing import TokenUsage

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
    upstream_sent_at: float | None = None  # when the round that may bring the first token was requested
    # Resolved once the first upstream request has left (see `_sending`), or when the reply ends first:
    # `astart_reply` waits for it, so the start's page render does not compete with the request for the GIL.
    requesting: asyncio.Future[None] | None = None
    stop_reason: str = ""  # why we are ending early: "stopped" / "gone"
    input_tokens: int | None = None  # summed over rounds
    output_tokens: int | None = None
    cache_creation_tokens: int | None = None
    cache_read_tokens: int | None = None
    # Announced by the round in progress (message_start): billed even if the round is cut off.
    round_started: Started | None = None
    model: str = ""
    note: str = ""
    # Tool boxes shown so far: id -> (text offset where it appears, its latest HTML), for late subscribers.
    tool_boxes: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Extended thinking shown so far (its own offset space), and, for Continue, the thinking blocks of the
    # round being extended (put back in front of it when it is saved).
    thinking: str = ""
    prefill_thinking: list[dict[str, Any]] = field(default_factory=list)
    # Streaming Markdown: the scanner over the current round's text, where its open block starts, and
    # every finished block as (start, end, html), each rendered once per reply whatever the number of viewers.
    splitter: BlockSplitter | None = None
    block_start: int = 0
    rendered: list[tuple[int, int, str]] = field(default_factory=list)
    markdown: bool = True
    # Whether every stream of this reply reads on this event loop, so far as the syncs tell (see
    # `_broadcast`). Set by `_produce` from what the layer can do; once False, False for good.
    audience_here: bool = False
    # Whether an audience message has gone out: the first never waits to share a write with other replies'
    # deltas (`_broadcast`), since it is the first token someone is waiting for.
    announced: bool = False

    def blocks_upto(self, cuts: list[int]) -> list[tuple[int, int, str]]:
        """Render the blocks that end at `cuts` (ascending, after the open block's start)."""
        new = []
        for end in cuts:
            if end <= self.block_start:
                continue
            text = self.text[self.block_start : end]
            new.append((self.block_start, end, block_html(text, end=end, markdown=self.markdown)))
            self.block_start = end
        self.rendered.extend(new)
        return new

    def close_round_blocks(self) -> list[tuple[int, int, str]]:
        """A tool round ended: its open block is finished; scanning starts afresh after it."""
        new = self.blocks_upto([len(self.text)])
        self.splitter = BlockSplitter(base=len(self.text)) if self.markdown else None
        self.block_start = len(self.text)
        return new

    @property
    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started) * 1000)

    def add_usage(self, round_usage: Started | Finished) -> None:
        """Add one round's usage (a None count stays unknown rather than becoming 0)."""
        for name in ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens"):
            value = getattr(round_usage, name, None)
            if value is not None:
                setattr(self, name, (getattr(self, name) or 0) + value)

    def usage(self) -> TokenUsage:
        return TokenUsage(
            input=self.input_tokens or 0,
            output=self.output_tokens or 0,
            cache_creation=self.cache_creation_tokens or 0,
            cache_read=self.cache_read_tokens or 0,
        )

    def final_blocks(self, finished: Finished | None) -> list[dict[str, Any]]:
        """The whole exchange as API messages, valid to replay: every tool_use has its tool_result."""
        thinking = [b for b in finished.content if b["type"] in THINKING_TYPES] if finished else []
        if not self.blocks and not self.pending_tool_uses and not (thinking and self.text.strip()):
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
        # A round that only thought (cut off before any text) is not replayed: an assistant turn of thinking
        # alone is no answer, and the next turn does not need it.
        if tail.strip():
            blocks.append({"role": "assistant", "content": [*thinking, {"type": "text", "text": tail}]})
        return blocks


@dataclass(frozen=True)
class Outcome:
    """How a generation ended. `status` None: the reply is gone (deleted, or reaped elsewhere) and nothing is
    saved; otherwise the final status, why it stopped early (`error`), and the last round (`finished`)."""

    status: str | None
    error: ReplyFailure | None = None
    finished: Finished | None = None


@dataclass(frozen=True)
class Loaded:
    """What a reply's generation starts from: its first upstream request and its text so far (see
    `prepare_reply`)."""

    request: ReplyRequest
    text: str
    context: ToolContext
    blocks: list[dict[str, Any]]
    round_start: int
    user_id: int
    thinking: str
    prefill_thinking: list[dict[str, Any]]


@start_db  # part of starting a reply: not behind the flusher's saves, nor renders waiting for a thread
def _load(reply_id: int) -> Loaded | None:
    try:
        reply = Message.objects.select_related("conversation").get(pk=reply_id)
    except Message.DoesNotExist:
        return None
    if reply.status != Message.Status.STREAMING:
        return None
    return prepare_reply(reply)


def prepare_reply(reply: Message, *, ancestors: Sequence[Message] | None = None) -> Loaded:
    """The start of `reply`'s generation (a STREAMING row, with its conversation), built from the row as
    given: a view that has just committed the reply calls this in the same trip to the database threads
    and hands the result to `start_reply(prepared=...)`, so the producer need not read the reply again
    before its first upstream request (one thread hand-off and two queries fewer on the first token's
    path). `ancestors`: see `provider_history` (a new conversation's first message: no query at all)."""
    reply_id = reply.pk
    history = provider_history(reply=reply, ancestors=ancestors)
    if history.dropped_turns != reply.context_dropped:  # the page says older turns were left out
        Message.objects.filter(pk=reply_id).update(context_dropped=history.dropped_turns)
    messages, system, model = history.messages, history.system, history.model
    # Continue: earlier rounds stay as they were; a trailing text round is the prefill being extended.
    earlier, prefill = split_prefill(reply.blocks, reply.content)
    # The Messages API refuses an assistant prefill with thinking enabled, so a Continue goes on without
    # thinking (the thinking shown so far stays on the page and in the row).
    budget = reply.conversation.thinking_budget if not prefill else None
    request = ReplyRequest(
        model=model,
        system=system,
        messages=messages,
        max_tokens=settings.CHAT_MAX_TOKENS + (budget or 0),
        thinking_budget=budget,
    )
    context = ToolContext(user_id=reply.conversation.user_id, conversation_id=reply.conversation_id)
    return Loaded(
        request,
        reply.content,
        context,
        earlier,
        len(reply.content) - len(prefill),
        reply.conversation.user_id,
        reply.thinking,
        prefill_thinking(reply.blocks) if prefill else [],
    )


async def produce_reply(
    reply_id: int, *, requesting: asyncio.Future[None] | None = None, prepared: Loaded | None = None
) -> None:
    """Generate reply `reply_id` (a STREAMING row) to the end, whatever happens to its viewers.
    `requesting` is resolved once the first upstream request has left (see `_sending`), or when the reply
    ends before that (see `lifecycle.astart_reply`). `prepared`: `prepare_reply` of the row just committed;
    else it is loaded here."""
    try:
        await _produce(reply_id, requesting, prepared)
    finally:
        _resolve(requesting)


async def _produce(reply_id: int, requesting: asyncio.Future[None] | None, prepared: Loaded | None) -> None:
    loaded = prepared or await _load(reply_id)
    if loaded is None:
        return
    state = ReplyState(
        requesting=requesting,
        reply_id=reply_id,
        text=loaded.text,
        context=loaded.context,
        blocks=loaded.blocks,
        round_start=loaded.round_start,
        thinking=loaded.thinking,
        prefill_thinking=loaded.prefill_thinking,
        block_start=loaded.round_start,
        markdown=settings.CHAT_STREAM_MARKDOWN,
        audience_here=pubsub.delivers_here(),
    )
    if state.markdown:  # Continue: the text so far is scanned (and its blocks rendered) once, here
        state.splitter = BlockSplitter(base=loaded.round_start)
        state.blocks_upto(state.splitter.scan(state.text))
    control_channel = await pubsub.new_channel()
    joined = await pubsub.join(control_channel, [pubsub.control_group(reply_id)])

    generation = asyncio.create_task(_generate(state, loaded.request, user_id=loaded.user_id))
    control = asyncio.create_task(_control_loop(state, control_channel, generation, joined=joined))

    def stop(reason: str) -> None:
        if not generation.done():
            state.stop_reason = state.stop_reason or reason
            generation.cancel()

    # The process's flusher saves the text on a throttle, renews the lease, and relays Stop from the database.
    flusher.register(
        reply_id,
        flusher.Registration(
            text=lambda: state.text,
            thinking=lambda: state.thinking,
            ttft_ms=lambda: state.ttft_ms,
            stop=stop,
            saved_length=len(loaded.text),
            saved_thinking_length=len(loaded.thinking),
        ),
    )
    outcome = Outcome(status=None)
    try:
        outcome = await _outcome(state, generation)
    except asyncio.CancelledError:
        # The process is shutting down: keep the partial and say so; no one will finish this reply here.
        generation.cancel()
        failure = ReplyFailure("interrupted", "The server restarted before this response finished.")
        outcome = Outcome(Message.Status.INTERRUPTED, failure)
        raise
    finally:
        # Bounded: the final save and `end` never wait on the channel layer (see pubsub.stop_listening).
        flusher.stop_answering(reply_id)  # before `end` is published: subscribers opening now read the row
        await pubsub.stop_listening(control, control_channel)
        try:
            await asyncio.shield(_close(state, outcome, control_channel))
        finally:
            flusher.unregister(reply_id)  # only now: until the final save, the lease is ours
            metrics.reply_ended(outcome.status)


async def _generate(state: ReplyState, request: ReplyRequest, *, user_id: int) -> Finished | None:
    """One or more rounds: stream text; when the model calls tools, run them and go on in the same reply.
    Before each later round the user's budgets are checked (the first was checked when the reply was
    accepted); a used-up budget ends the reply with an error, keeping its text and tool results."""
    provider = get_provider()
    tools = [] if provider.is_demo else [tool.api_definition() for tool in enabled_tools()]
    messages = request.messages  # already holds this reply's earlier rounds when it is continued
    rounds = 0
    while True:
        allow_tools = rounds < settings.CHAT_MAX_TOOL_ROUNDS
        round_request = dataclasses.replace(
            request,
            messages=messages,
            tools=tools,
            allow_tools=allow_tools,
            on_sending=functools.partial(_sending, state),
        )
        finished = await _stream_round(state, provider, round_request)
        if finished is None or finished.stop_reason != "tool_use" or not allow_tools:
            return finished
        await _run_tools(state, finished)
        over_budget = await areply_check_budget(
            reply_id=state.reply_id, user_id=user_id, model=state.model or request.model, usage=state.usage()
        )
        if over_budget is not None:
            state.round_start = len(state.text)  # the finished round's text is in its saved blocks
            raise over_budget
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
    state.round_started = None
    prefill = state.text[state.round_start :] if request.messages[-1]["role"] == "assistant" else ""
    streamed_from = len(state.text)  # where this round's text begins (its blocks are filled from there)
    # Model output is cleaned here, where it enters the reply (NUL and lone surrogates become U+FFFD, one
    # character for one): what subscribers are sent is what the database can store, offset for offset.
    if state.first_token_at is None:
        state.upstream_sent_at = time.monotonic()  # until the provider says when it sends (`_sending`)
    try:
        async with contextlib.aclosing(provider.stream(request)) as events:
            async for item in events:
                if state.requesting is not None:  # a provider that never called `on_sending`
                    _resolve(state.requesting)
                    state.requesting = None
                if isinstance(item, TextDelta):
                    metrics.counts.upstream_deltas += 1
                    if state.first_token_at is None:
                        _first_token(state)
                    await _publish_text(state, clean_model_text(item.text))
                elif isinstance(item, ThinkingDelta):
                    metrics.counts.upstream_deltas += 1
                    if state.first_token_at is None:
                        _first_token(state)
                    await _publish_thinking(state, clean_model_text(item.text))
                elif isinstance(item, Started):
                    state.model = item.model
                    state.round_started = item
                elif isinstance(item, ToolCallStarted):
                    await _publish_tool(state, clean_model_text(item.id), clean_model_text(item.name))
                elif isinstance(item, ToolCallReady):
                    tool_id, name = clean_model_text(item.id), clean_model_text(item.name)
                    await _publish_tool(state, tool_id, name, arguments=clean_model_data(item.input))
                else:
                    # The round's text blocks, from the text kept here (already cleaned, one for one).
                    content = clean_model_data(item.content)
                    content = fill_streamed_text(content, state.text[streamed_from:])
                    finished = dataclasses.replace(item, content=content)
    except ReplyFailure as failure:  # the provider's own failures (a used-up budget is raised elsewhere)
        metrics.upstream_error(failure.code)
        raise
    if finished is None or finished.stop_reason is None:  # ended cleanly but without its stop reason
        metrics.upstream_error("truncated")
    state.round_started = None
    if finished is not None:
        state.add_usage(finished)
        if prefill and finished.content:  # Continue: the round's text includes the prefill it extended
            first = finished.content[0]
            if first["type"] == "text":
                finished.content[0] = {**first, "text": prefill + first["text"]}
            else:
                finished.content.insert(0, {"type": "text", "text": prefill})
        if prefill and state.prefill_thinking:  # the extended round keeps the thinking it began with
            finished.content[:0] = state.prefill_thinking
            state.prefill_thinking = []
    return finished


# How long after the SDK hands a reply's first request to its HTTP transport the request counts as sent,
# unless the upstream answers sooner (see `_sending`).
SENDING_GRACE_SECONDS = 0.01


def _sending(state: ReplyState) -> None:
    """`on_sending`: the provider has built a round's request and hands it to its HTTP transport.

    The first time, the start view waiting in `astart_reply` may render its answer once the request has
    left: when the upstream's first event arrives, or SENDING_GRACE_SECONDS from now, whichever is first.
    Not at once: the transport writes the request on a later turn of the event loop (aiohttp's body writer
    is a task of its own), and the render, in a request thread, takes the GIL in 5 ms slices. Measured
    (issue 15, a throwaway per-stage trace, bench N=50, medians): with the view let go when the provider
    was called, the request reached the upstream 5.1 ms after that; let go here at once, 4.2 ms after
    this hook; let go as now, 2.3 ms after the provider was called. Interleaved bench runs, TTFT added
    p50 / p99: N=10 13.8 / 15.6 and 17.8 / 22.4 -> 10.5 / 12.2 and 11.5 / 15.8 ms; N=50 15.9 / 30.6 and
    12.8 / 27.1 -> 11.3 / 21.7 and 12.4 / 16.6 ms. The grace bounds how long the page's answer may wait
    for a slow upstream."""
    if state.first_token_at is None:
        state.upstream_sent_at = time.monotonic()
    if state.requesting is not None:
        asyncio.get_running_loop().call_later(SENDING_GRACE_SECONDS, _resolve, state.requesting)


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _first_token(state: ReplyState) -> None:
    state.first_token_at = time.monotonic()
    sent_at = state.upstream_sent_at if state.upstream_sent_at is not None else state.started
    metrics.upstream_first_token(state.reply_id, state.first_token_at - sent_at)


async def _publish_text(state: ReplyState, text: str) -> None:
    if not text:
        return
    start = len(state.text)
    state.text += text
    # Linear: the scanner looks at the new text only, and a block is rendered once, when it closes. It is
    # given the whole text (`scan`, not `feed`), so it keeps no copy of the open line: with one long
    # paragraph, that was a second copy of the reply for as long as it streamed.
    blocks = state.blocks_upto(state.splitter.scan(state.text)) if state.splitter is not None else None
    # Never raises: with the layer down the text is still kept here and saved; subscribers sync it later.
    await _broadcast(state, pubsub.chunk(start, text, blocks=blocks))


async def _publish_thinking(state: ReplyState, text: str) -> None:
    """Thinking text, in its own offset space (subscribers send it as `event: thinking`)."""
    if not text:
        return
    start = len(state.thinking)
    state.thinking += text
    await _broadcast(state, pubsub.thinking(start, text))


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
    if tool_id not in state.tool_boxes:
        # The round's text ends where its first tool box appears: its open block is finished.
        blocks = state.close_round_blocks()
        if blocks:
            await _broadcast(state, pubsub.chunk(len(state.text), "", blocks=blocks))
    offset = state.tool_boxes.get(tool_id, (len(state.text), ""))[0]
    state.tool_boxes[tool_id] = (offset, html)
    await _broadcast(state, pubsub.tool(offset, html))


async def _broadcast(state: ReplyState, message: dict[str, Any]) -> None:
    """Send `message` to the reply's audience (its open streams, wherever they are read).

    While every stream that has asked for a sync reads on this event loop (`state.audience_here`), the
    message is handed to them here, as the in-process layer does: in Redis mode a delta then costs no
    PUBLISH, no push from Redis and no wake-up of a second process. Every stream asks for a sync when it
    opens (after joining the audience), so the first sync from a channel elsewhere switches the reply to
    the layer for good, before that sync is answered (`_control_loop`): from then on the audience messages
    and the sync answers all go through the layer, in the layer's one order, and that reader's answer
    comes before the deltas after it. What a reader elsewhere missed before its sync arrived, the answer
    brings (text from its offset). Streams here switch with the reply without a gap: what was handed to
    them here came first. `end` goes through the layer in any case (`pubsub.publish_end`).

    Through the layer, every message after the reply's first is `batch`ed: in Redis mode it may wait up to
    REDIS_PUBLISH_EVERY_MS to share one write with other replies' deltas. The first goes at the end of this
    turn of the loop: it is the first token, which a reader elsewhere would otherwise see that much later
    (the sync answers, and `end`, never wait either)."""
    if state.audience_here:
        pubsub.publish_here(pubsub.audience_group(state.reply_id), message)
    else:
        await pubsub.publish(pubsub.audience_group(state.reply_id), message, batch=state.announced)
    state.announced = True


async def _answer(state: ReplyState, channel: str, message: dict[str, Any]) -> None:
    """A sync answer, by the same path as the audience messages (see `_broadcast`)."""
    if state.audience_here:
        pubsub.send_here(channel, message)
    else:
        await pubsub.send(channel, message)


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
    await areply_save_blocks(reply_id=state.reply_id, content=state.text, blocks=state.blocks)


async def _outcome(state: ReplyState, generation: asyncio.Task[Finished | None]) -> Outcome:
    try:
        finished = await generation
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        if state.stop_reason == "gone":
            return Outcome(status=None)
        return Outcome(Message.Status.STOPPED, ReplyFailure("stopped", STOPPED_MESSAGE))
    except ReplyFailure as failure:
        return Outcome(Message.Status.ERROR, failure)
    except Exception:
        logger.exception("reply %s failed", state.reply_id)
        internal = ReplyFailure("internal", "Something went wrong on our side while writing this response.")
        return Outcome(Message.Status.ERROR, internal)
    cut_off = _cut_off_by_model(finished)
    if cut_off is not None:
        return Outcome(Message.Status.INCOMPLETE, cut_off, finished)
    return Outcome(Message.Status.COMPLETE, finished=finished)


def _cut_off_by_model(finished: Finished | None) -> ReplyFailure | None:
    """The reply ended without error but is not whole: say why."""
    if finished is None or finished.stop_reason is None:
        return ReplyFailure("truncated", TRUNCATED_MESSAGE)
    if finished.stop_reason == "max_tokens":
        return ReplyFailure("max_tokens", MAX_TOKENS_MESSAGE)
    if finished.stop_reason == "refusal":
        return ReplyFailure("refusal", REFUSAL_MESSAGE, False)
    return None


async def _control_loop(
    state: ReplyState, channel: str, generation: asyncio.Task[Any], *, joined: bool = True
) -> None:
    """Answer subscribers' sync requests from memory, and stop on request from any process. It lives as long
    as the reply: `pubsub.listen` carries it through quiet spells and channel-layer failures (a Stop lost
    meanwhile still arrives through the database flag)."""
    async for message in pubsub.listen(channel, [pubsub.control_group(state.reply_id)], joined=joined):
        if message["type"] == pubsub.SYNC:
            reply_to = message["reply_to"]
            if state.audience_here and not pubsub.is_here(reply_to):
                state.audience_here = False  # a stream read elsewhere: through the layer from now on
            offset = max(0, min(int(message["offset"]), len(state.text)))
            boxes = sorted((at, html) for at, html in state.tool_boxes.values() if at >= offset)
            # Thinking first: on the page it sits above the answer, and it began before it.
            if "thinking_offset" in message:
                at = max(0, min(int(message["thinking_offset"]), len(state.thinking)))
                await _answer(state, reply_to, pubsub.thinking(at, state.thinking[at:]))
            done = int(message.get("done", 0))  # the page has the rendered blocks up to here
            blocks = [block for block in state.rendered if block[1] > done]
            await _answer(state, reply_to, pubsub.chunk(offset, state.text[offset:], boxes, blocks))
        elif message["type"] == pubsub.STOP and not generation.done():
            state.stop_reason = state.stop_reason or "stopped"
            generation.cancel()


async def _close(state: ReplyState, outcome: Outcome, control_channel: str) -> None:
    final: FinalRender | None = None
    try:
        if outcome.status is not None:
            finished = outcome.finished
            # A round that failed or was stopped still counts the input (and cache) usage its upstream
            # announced in message_start; its output count only arrives with message_delta.
            if state.round_started is not None:
                state.add_usage(state.round_started)
                state.round_started = None
            final = await areply_close(
                reply_id=state.reply_id,
                content=state.text,
                thinking=state.thinking,
                blocks=state.final_blocks(finished),
                status=outcome.status,
                error=outcome.error,
                note=state.note,
                stop_reason=finished.stop_reason if finished else None,
                model=finished.model if finished else state.model or None,
                input_tokens=state.input_tokens,
                output_tokens=state.output_tokens,
                cache_creation_tokens=state.cache_creation_tokens,
                cache_read_tokens=state.cache_read_tokens,
                ttft_ms=state.ttft_ms,
                duration_ms=round((time.monotonic() - state.started) * 1000),
                user_id=state.context.user_id,
            )
    finally:
        # Persist, then publish: a subscriber that sees `end` finds the final text in the database.
        await pubsub.leave(control_channel, [pubsub.control_group(state.reply_id)])
        await pubsub.publish_end(state.reply_id, _end_message(final), here=state.audience_here)


def _end_message(final: FinalRender | None) -> dict[str, Any] | None:
    """`end` with the final rendering made in the final save's trip, when there is one."""
    if final is None or final.html is None:
        return None
    return pubsub.end(
        finished_at=final.finished_at.isoformat(),
        length=final.length,
        thinking_length=final.thinking_length,
        html=final.html,
    )
