"""Reads, always scoped to the requesting user: another user's objects simply do not exist (404)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache, cached_property
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from chat.models import Attachment, Conversation, Message, Share
from chat.streaming.db import request_db
from usage.models import Budget

THINKING_TYPES = ("thinking", "redacted_thinking")

SIDEBAR_PAGE = 50


@dataclass(frozen=True)
class ConversationPage:
    """One page of the sidebar, newest first with pinned conversations on top; `next_cursor` (None on the
    last page) is an opaque keyset position: pages stay fast however many conversations there are.
    `first`: the list's first page, which marks where its unpinned conversations begin (`pinned`: the
    number of pinned ones before them), so a new conversation can be put in its place without a re-render."""

    items: list[Conversation]
    next_cursor: str | None
    first: bool = True

    @cached_property  # read for every item the page's template draws
    def pinned(self) -> int:
        """How many of the items, from the top, are pinned."""
        return next((i for i, item in enumerate(self.items) if not item.pinned), len(self.items))


def conversation_list(*, user: Any, query: str = "") -> QuerySet[Conversation]:
    """The user's conversations, pinned first then most recent; `query` matches titles and the text of
    any message (any branch)."""
    qs = Conversation.objects.filter(user=user).order_by("-pinned", "-updated_at", "-id")
    query = query.strip()
    if query:
        # One uncorrelated subquery (hashed once), which PostgreSQL answers from the trigram index on
        # UPPER(content) (migration 0005) instead of reading every message.
        matching = Message.objects.filter(content__icontains=query).values("conversation_id")
        qs = qs.filter(Q(title__icontains=query) | Q(pk__in=matching))
    return qs


def conversation_page(
    *, user: Any, query: str = "", cursor: str = "", size: int = SIDEBAR_PAGE
) -> ConversationPage:
    qs = conversation_list(user=user, query=query).only("pk", "title", "pinned", "updated_at")
    position = _decode_cursor(cursor)
    if position is not None:
        pinned, updated_at, pk = position
        # Keyset: strictly after the last row shown, in the list's order (pinned desc, updated desc, id desc).
        after = Q(pinned=pinned, updated_at=updated_at, pk__lt=pk) | Q(
            pinned=pinned, updated_at__lt=updated_at
        )
        if pinned:
            after |= Q(pinned=False)
        qs = qs.filter(after)
    rows = list(qs[: size + 1])
    items, more = rows[:size], len(rows) > size
    last = items[-1] if items else None
    next_cursor = None
    if more and last is not None:
        next_cursor = f"{int(last.pinned)}~{last.updated_at.isoformat()}~{last.pk}"
    return ConversationPage(items, next_cursor, first=position is None)


def _decode_cursor(cursor: str) -> tuple[bool, datetime, int] | None:
    try:
        pinned, updated_at, pk = cursor.split("~")
        return pinned == "1", datetime.fromisoformat(updated_at), int(pk)
    except ValueError:
        return None


def conversation_get(*, user: Any, pk: int) -> Conversation:
    return get_object_or_404(Conversation, pk=pk, user=user)


async def aconversation_get(*, user: Any, pk: int) -> Conversation:
    return await request_db(conversation_get)(user=user, pk=pk)


def message_get(*, user: Any, conversation_pk: int, pk: int) -> Message:
    return get_object_or_404(
        Message.objects.select_related("conversation"),
        pk=pk,
        conversation_id=conversation_pk,
        conversation__user=user,
    )


async def amessage_get(*, user: Any, conversation_pk: int, pk: int) -> Message:
    return await request_db(message_get)(user=user, conversation_pk=conversation_pk, pk=pk)


@dataclass(frozen=True)
class StartState:
    """What a new start is checked against (`start_state`)."""

    streaming: int  # the user's replies being generated, in every conversation
    conversation_busy: bool  # a reply in this conversation is being generated
    budgeted: bool  # some budget applies to the user (its own, or a group's)


@cache
def _start_state_sql() -> str:
    """`start_state`'s query, its names taken from the models (so a renamed table or column follows)."""
    q = connection.ops.quote_name
    message, conversation = Message._meta, Conversation._meta
    budget, membership = Budget._meta, User.groups.through._meta

    def column(meta: Any, name: str) -> str:
        return q(meta.get_field(name).column)

    status, in_conversation = column(message, "status"), column(message, "conversation")
    return (
        f"SELECT (SELECT COUNT(*) FROM {q(message.db_table)} m"
        f" INNER JOIN {q(conversation.db_table)} c ON m.{in_conversation} = c.{column(conversation, 'id')}"
        f" WHERE m.{status} = %s AND c.{column(conversation, 'user')} = %s),"
        f" EXISTS(SELECT 1 FROM {q(message.db_table)} WHERE {status} = %s AND {in_conversation} = %s),"
        f" EXISTS(SELECT 1 FROM {q(budget.db_table)} WHERE {column(budget, 'user')} = %s"
        f" OR {column(budget, 'group')} IN (SELECT {column(membership, 'group')}"
        f" FROM {q(membership.db_table)} WHERE {column(membership, 'user')} = %s))"
    )


def start_state(*, user_id: int, conversation_id: int | None) -> StartState:
    """The user's replies being generated, whether `conversation_id`'s is (None: a conversation created in
    this transaction, which cannot be), and whether any budget applies: one plain SELECT, on every start.

    In SQL, not the ORM, which spends most of a query's cost building it in Python: the ORM's two queries
    for this (a COUNT over a join, and the budgets with their groups, which `usage.budgets.check_can_start`
    still runs when some budget applies) cost 0.73 ms of CPU, this one 0.03 ms (one thread, SQLite, best
    of three rounds of 400 calls; the whole commit of a new conversation was 2.9 ms, now 1.5). The query
    is built from the models' names once per process."""
    streaming = Message.Status.STREAMING.value
    with connection.cursor() as cursor:
        cursor.execute(
            _start_state_sql(), [streaming, user_id, streaming, conversation_id or 0, user_id, user_id]
        )
        count, busy, budgeted = cursor.fetchone()
    return StartState(streaming=int(count), conversation_busy=bool(busy), budgeted=bool(budgeted))


@cache
def _message_role_sql() -> str:
    """`message_role`'s query, its names taken from the models (as `_start_state_sql`)."""
    q = connection.ops.quote_name
    message, conversation = Message._meta, Conversation._meta

    def column(meta: Any, name: str) -> str:
        return q(meta.get_field(name).column)

    in_conversation = column(message, "conversation")
    return (
        f"SELECT m.{column(message, 'role')} FROM {q(message.db_table)} m"
        f" INNER JOIN {q(conversation.db_table)} c ON m.{in_conversation} = c.{column(conversation, 'id')}"
        f" WHERE m.{column(message, 'id')} = %s AND m.{in_conversation} = %s"
        f" AND c.{column(conversation, 'user')} = %s"
    )


def message_role(*, user: Any, conversation_pk: int, pk: int) -> str:
    """The role of one of `user`'s messages (404 for anyone else's): all an event stream needs to open, on
    every stream's open. One plain SELECT (as `start_state`): the ORM's query for this (one column, no model
    built) cost 0.43 ms of CPU, this one 0.03 ms (one thread, SQLite, best of three rounds of 400 calls)."""
    with connection.cursor() as cursor:
        cursor.execute(_message_role_sql(), [pk, conversation_pk, user.pk])
        row = cursor.fetchone()
    if row is None:
        raise Http404("No such message")
    return str(row[0])


def attachment_for_viewer(*, user: Any, pk: int) -> Attachment:
    """An attachment its owner, or staff, may see; anyone else gets a 404 (it does not exist for them)."""
    attachments = Attachment.objects.all()
    if not (user.is_active and user.is_staff):
        attachments = attachments.filter(owner=user)
    return get_object_or_404(attachments, pk=pk)


@dataclass(frozen=True)
class Branches:
    """Where a message sits among its alternatives (same parent, same role): `index` of `count`, 1-based,
    with the ids of its neighbours, for the "< 2 / 3 >" control."""

    index: int
    count: int
    previous: int | None
    next: int | None


def _branches(siblings: list[int], pk: int) -> Branches:
    at = siblings.index(pk)
    return Branches(
        index=at + 1,
        count=len(siblings),
        previous=siblings[at - 1] if at > 0 else None,
        next=siblings[at + 1] if at + 1 < len(siblings) else None,
    )


def path_to(messages: dict[int, Message], leaf: int | None) -> list[Message]:
    """The path from the first message to `leaf`, through parents."""
    path: list[Message] = []
    node = messages.get(leaf) if leaf is not None else None
    while node is not None:
        path.append(node)
        node = messages.get(node.parent_id) if node.parent_id is not None else None
    path.reverse()
    return path


def transcript(*, conversation: Conversation) -> list[Message]:
    """The visible path, oldest first, each message with its `branches` (a Branches) set. One query."""
    messages = {m.pk: m for m in conversation.messages.prefetch_related("attachments")}
    siblings: dict[tuple[int | None, str], list[int]] = {}
    for message in sorted(messages.values(), key=lambda m: m.pk):
        siblings.setdefault((message.parent_id, message.role), []).append(message.pk)
    if conversation.current_id is None:
        # Rows written without the services (fixtures, imports): no path recorded, so show them in order.
        path = sorted(messages.values(), key=lambda m: (m.created_at, m.pk))
    else:
        path = path_to(messages, conversation.current_id)
    for message in path:
        message.branches = _branches(siblings[(message.parent_id, message.role)], message.pk)
    return path


def fresh_path(messages: list[Message]) -> list[Message]:
    """`messages`, just written in one transaction as a new conversation's whole path, as `transcript`
    would return them (each with its `branches`: the only one), without reading them back."""
    for message in messages:
        message.branches = _branches([message.pk], message.pk)
    return messages


def all_branches(*, conversation: Conversation) -> list[Message]:
    """Every message of every branch, in the order they were written (for export and review)."""
    return list(conversation.messages.order_by("created_at", "id").prefetch_related("attachments"))


def message_branches(*, message: Message) -> Branches:
    """`message`'s place among its alternatives (one query); the transcript precomputes this."""
    cached = getattr(message, "branches", None)
    if isinstance(cached, Branches):
        return cached
    siblings = list(
        Message.objects.filter(
            conversation_id=message.conversation_id, parent_id=message.parent_id, role=message.role
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return _branches(siblings, message.pk)


def newest_leaf(*, message: Message) -> Message:
    """The end of the branch that starts at `message`: follow the newest child down."""
    children: dict[int, list[Message]] = {}
    for m in message.conversation.messages.filter(pk__gt=message.pk).order_by("pk"):
        children.setdefault(m.parent_id or 0, []).append(m)
    node = message
    while children.get(node.pk):
        node = children[node.pk][-1]
    return node


def _is_prefill_turn(turn: dict[str, Any]) -> bool:
    return turn["role"] == "assistant" and all(
        b["type"] in ("text", *THINKING_TYPES) for b in turn["content"]
    )


def split_prefill(blocks: list[dict[str, Any]], content: str) -> tuple[list[dict[str, Any]], str]:
    """A reply's saved tool rounds, and the trailing text that a Continue extends (its prefill). A trailing
    round's thinking blocks are not part of the prefill (see `prefill_thinking`)."""
    if not blocks:
        return [], content.rstrip()
    last = blocks[-1]
    if _is_prefill_turn(last):
        return blocks[:-1], "".join(b["text"] for b in last["content"] if b["type"] == "text").rstrip()
    return blocks, ""


def prefill_thinking(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The thinking blocks of the trailing text round a Continue extends: the API refuses an assistant
    prefill while thinking is on, so Continue sends the prefill without thinking, and these blocks are put
    back in front of the continued round when it is saved (replayed as they were in later turns)."""
    if blocks and _is_prefill_turn(blocks[-1]):
        return [b for b in blocks[-1]["content"] if b["type"] in THINKING_TYPES]
    return []


def attachment_block(attachment: Attachment) -> dict[str, Any]:
    """An attachment as a Messages API content block (base64 source), read from storage."""
    with attachment.file.open("rb") as handle:
        data = base64.standard_b64encode(handle.read()).decode("ascii")
    block_type = "image" if attachment.is_image else "document"
    return {
        "type": block_type,
        "source": {"type": "base64", "media_type": attachment.media_type, "data": data},
    }


def _user_content(message: Message) -> str | list[dict[str, Any]]:
    """A user turn: its attachments (images and documents, in the order attached) before its text."""
    attachments = list(message.attachments.all())
    if not attachments:
        return message.content
    blocks = [attachment_block(a) for a in attachments]
    if message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    return blocks


def _append(history: list[dict[str, Any]], role: str, content: str | list[dict[str, Any]]) -> None:
    """Add a turn; consecutive turns of one role (a tool_result, then the user's next text) become one."""
    if history and history[-1]["role"] == role:
        previous = history[-1]["content"]
        as_blocks = [{"type": "text", "text": previous}] if isinstance(previous, str) else list(previous)
        new = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        history[-1] = {"role": role, "content": as_blocks + new}
    else:
        history.append({"role": role, "content": content})


@dataclass(frozen=True)
class History:
    """What a reply's request sends: `messages` (the path before the reply, fitted to the context window),
    the system prompt, the model, and how many older turns were left out to fit."""

    messages: list[dict[str, Any]]
    system: str
    model: str
    dropped_turns: int = 0


def _turns(message: Message) -> list[tuple[str, str | list[dict[str, Any]]]]:
    if message.blocks:
        return [(turn["role"], turn["content"]) for turn in message.blocks]
    if message.role == Message.Role.USER and message.attachments.all():
        return [("user", _user_content(message))]
    text = message.content if message.role == Message.Role.USER else message.content.rstrip()
    return [(message.role, text)] if text.strip() else []  # an empty failed reply would be rejected


def provider_history(*, reply: Message, ancestors: Sequence[Message] | None = None) -> History:
    """The messages to send for `reply`: exactly its path (its ancestors; the visible path when it was
    requested), tool rounds as saved, then, for Continue, its own earlier rounds and partial text. Older
    exchanges are dropped whole to fit the model's context window (see `fit_to_context`).

    `ancestors`: the reply's whole path before it, oldest first, with their attachments loaded, when the
    caller has just written them all (a new conversation); else they are read (one query)."""
    conversation = reply.conversation
    if ancestors is not None:
        earlier = list(ancestors)
    else:
        earlier_rows = conversation.messages.filter(pk__lt=reply.pk).prefetch_related("attachments")
        messages = {m.pk: m for m in earlier_rows}
        earlier = path_to(messages, reply.parent_id)
    exchanges: list[list[tuple[str, str | list[dict[str, Any]]]]] = []
    for message in earlier:
        # An exchange starts at each user message: tool_use/tool_result pairs live inside a reply, so a
        # cut between exchanges never splits a tool exchange.
        if message.role == Message.Role.USER or not exchanges:
            exchanges.append([])
        exchanges[-1].extend(_turns(message))
    tail: list[tuple[str, str | list[dict[str, Any]]]] = []
    rounds, prefill = split_prefill(reply.blocks, reply.content)
    tail.extend((turn["role"], turn["content"]) for turn in rounds)
    if prefill:
        tail.append(("assistant", prefill))
    system = conversation.system_prompt or settings.CHAT_SYSTEM_PROMPT
    model = conversation.model or settings.CHAT_MODEL
    kept, dropped = fit_to_context(exchanges, tail, budget=context_budget(model, system))
    history: list[dict[str, Any]] = []
    for exchange in kept:
        for role, content in exchange:
            _append(history, role, content)
    for role, content in tail:
        _append(history, role, content)
    return History(history, system, model, dropped)


def context_budget(model: str, system: str) -> int:
    """Tokens the history may use: the model's window (CHAT_CONTEXT_TOKENS) less the reply's max_tokens
    and the system prompt."""
    window = settings.CHAT_CONTEXT_TOKENS.get(model, settings.CHAT_CONTEXT_TOKENS_DEFAULT)
    return max(0, window - settings.CHAT_MAX_TOKENS - estimate_tokens(system))


IMAGE_TOKENS = 1_600  # an image the API has scaled to its limit costs about this much


def estimate_tokens(content: Any) -> int:
    """A cheap, deliberately generous estimate (about 3 characters per token) with no network call: the
    SDK's count_tokens is a request of its own. Blocks count their JSON size, except attachments: an image
    a flat IMAGE_TOKENS, a document about one token per 200 bytes of its base64 (its text, roughly)."""
    if isinstance(content, str):
        return len(content) // 3 + 4
    if isinstance(content, list):
        return sum(_block_tokens(block) for block in content) + 4
    return len(json.dumps(content, ensure_ascii=False)) // 3 + 4


def _block_tokens(block: Any) -> int:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "document":
        return 1_500 + len(str(block.get("source", {}).get("data", ""))) // 200
    return len(json.dumps(block, ensure_ascii=False)) // 3


def fit_to_context(
    exchanges: list[list[tuple[str, Any]]], tail: list[tuple[str, Any]], *, budget: int
) -> tuple[list[list[tuple[str, Any]]], int]:
    """Keep the newest exchanges that fit in `budget`, dropping the oldest whole; the last exchange (the
    question being answered) is always kept. Returns the kept exchanges and how many were dropped."""
    used = sum(estimate_tokens(content) for _, content in tail)
    kept: list[list[tuple[str, Any]]] = []
    for index, exchange in enumerate(reversed(exchanges)):
        cost = sum(estimate_tokens(content) for _, content in exchange)
        if index > 0 and used + cost > budget:
            break
        kept.append(exchange)
        used += cost
    kept.reverse()
    return kept, len(exchanges) - len(kept)


def share_list(*, user: Any) -> QuerySet[Share]:
    return Share.objects.filter(conversation__user=user).select_related("conversation")


def share_get(*, user: Any, pk: int) -> Share:
    return get_object_or_404(Share, pk=pk, conversation__user=user)


def share_get_public(*, token: str) -> Share:
    """The share behind a link, for anyone holding it; a revoked or unknown link is a 404 alike."""
    return get_object_or_404(Share, token=token, revoked_at__isnull=True)
