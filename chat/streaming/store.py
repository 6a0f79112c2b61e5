"""The streaming engine's own writes: a reply's partial text and lease on a throttle, a tool round, the final
row, and the reaping of replies whose process died. Each is a keyword-only synchronous function with its
async twin beside it (`areply_finish` beside `reply_finish`), which runs it on the engine's background
database threads (`chat.streaming.db`), never in a request's thread.

Invariant: every UPDATE here is conditional on `status=STREAMING`, so a reply that was finished, reaped
or deleted elsewhere is never written again, and the caller learns it (a 0 row count, or `gone`)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import DecimalField, F, Q, Value
from django.db.models.functions import Coalesce
from django.template.loader import render_to_string
from django.utils import timezone

from chat.errors import INTERRUPTED_MESSAGE, ReplyFailure
from chat.models import Message
from chat.streaming.db import background_db
from usage.accounting import prices_of, record_attempt
from usage.budgets import check_next_round
from usage.pricing import TokenUsage, cost_of

logger = logging.getLogger(__name__)


def lease_deadline() -> datetime:
    """When a reply's lease lapses unless its producer renews it."""
    return timezone.now() + timedelta(seconds=settings.CHAT_LEASE_SECONDS)


@dataclass(frozen=True)
class BatchResult:
    gone: list[int]  # deleted, or no longer streaming (reaped, finished elsewhere)
    stop_requested: list[int]
    failed: list[int] = field(default_factory=list)  # rows the database refused; their lease was renewed


Save = tuple[int, str, int | None]  # reply id, its text so far, its time to first token


@functools.cache
def _partial_update_sql(vendor: str) -> str:
    """One reply's periodic save as one parametrised UPDATE (params: content, lease, ttft_ms or None,
    thinking or None, reply id, the streaming status): compiled by hand once, so a batch of N replies is
    one `executemany`. Measured (50 replies, SQLite): the ORM's `filter().update()` per row spent ~280 µs
    building and compiling its query against ~20 µs executing it, on the database thread that shares the
    GIL with every stream. Cached per database vendor (the quoting of names differs)."""
    quote = connection.ops.quote_name
    column = {f.name: quote(str(f.column)) for f in Message._meta.concrete_fields if f.name in _SAVED}
    return (
        f"UPDATE {quote(Message._meta.db_table)} SET {column['content']} = %s, "
        f"{column['lease_expires_at']} = %s, "
        f"{column['ttft_ms']} = COALESCE(%s, {column['ttft_ms']}), "
        f"{column['thinking']} = COALESCE(%s, {column['thinking']}) "
        f"WHERE {column['id']} = %s AND {column['status']} = %s"
    )


_SAVED = ("content", "lease_expires_at", "ttft_ms", "thinking", "id", "status")
# The parameters of `_partial_update_sql`, in order.
SaveRow = tuple[str, Any, int | None, str | None, int, str]


def _save_rows(rows: list[SaveRow]) -> None:
    with connection.cursor() as cursor:
        sql = _partial_update_sql(connection.vendor)
        if len(rows) == 1:
            cursor.execute(sql, rows[0])
        else:
            cursor.executemany(sql, rows)


def replies_save_batch(
    *,
    saves: list[Save],
    renew: list[int],
    thinking: dict[int, str] | None = None,
) -> BatchResult:
    """One process's periodic save: the partial text (and time to first token) of each reply in `saves`,
    with its lease renewed in the same UPDATE, and a lease-only renewal for `renew`. `thinking` holds the
    extended thinking text of those replies in `saves` whose thinking changed. Reports which replies are
    gone and which a user asked to stop.

    Invariant: one row the database refuses (text it cannot store, say) never stops the others. The whole
    batch is tried in one transaction; if that fails, each row is saved on its own in a savepoint, and a
    row that still fails keeps its lease (its producer lives) and is reported in `failed`."""
    lease = lease_deadline()
    thinking = thinking or {}
    failed: list[int] = []
    lease_param = Message._meta.get_field("lease_expires_at").get_db_prep_save(lease, connection)
    status = Message.Status.STREAMING.value
    rows: list[SaveRow] = [
        (content, lease_param, ttft_ms, thinking.get(reply_id), reply_id, status)
        for reply_id, content, ttft_ms in saves
    ]
    try:
        if rows:
            with transaction.atomic():
                _save_rows(rows)
    except (DatabaseError, ValueError) as error:  # ValueError: UnicodeEncodeError of a lone surrogate
        logger.warning("saving %d replies in one batch failed (%s); saving each alone", len(saves), error)
        with transaction.atomic():
            for (reply_id, _, _), row in zip(saves, rows, strict=True):
                try:
                    with transaction.atomic():  # a savepoint: a failed row rolls back alone
                        _save_rows([row])
                except (DatabaseError, ValueError):
                    logger.exception("reply %s: its partial text could not be saved", reply_id)
                    failed.append(reply_id)
    streaming = Message.objects.filter(status=Message.Status.STREAMING)
    if renew or failed:
        streaming.filter(pk__in=[*renew, *failed]).update(lease_expires_at=lease)
    ids = [reply_id for reply_id, _, _ in saves] + renew
    alive = dict(streaming.filter(pk__in=ids).values_list("pk", "stop_requested"))
    return BatchResult(
        gone=[reply_id for reply_id in ids if reply_id not in alive],
        stop_requested=[reply_id for reply_id, stop in alive.items() if stop],
        failed=failed,
    )


def reply_save_blocks(*, reply_id: int, content: str, blocks: list[dict[str, Any]]) -> None:
    """Save a finished tool round (once per round, not per token)."""
    Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
        content=content, blocks=blocks, lease_expires_at=lease_deadline()
    )


@transaction.atomic
def reply_finish(
    *,
    reply_id: int,
    content: str,
    status: str,
    thinking: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
    note: str = "",
    error: ReplyFailure | None = None,
    stop_reason: str | None = None,
    model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cache_creation_tokens: int | None = None,
    cache_read_tokens: int | None = None,
    ttft_ms: int | None = None,
    duration_ms: int | None = None,
    user_id: int | None = None,
) -> datetime | None:
    """Write the final row of one attempt (first run, Retry's new reply, or a Continue) and bill it: the
    attempt's tokens and cost are added to the reply's (never overwritten), and to the user's daily rollup,
    in one transaction. Returns the `finished_at` it wrote, or None (and writes nothing) if the reply is no
    longer streaming. `user_id`: the reply's owner, if the caller knows it; with `model` too, the row is
    not read first (the conditional UPDATE still says whether it was streaming)."""
    if user_id is not None and model:
        owner, billed_model = user_id, model
    else:
        row = (
            Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING)
            .values("model", "conversation__user_id")
            .first()
        )
        if row is None:
            return None
        owner, billed_model = row["conversation__user_id"], model or row["model"]
    usage = TokenUsage(
        input=input_tokens or 0,
        output=output_tokens or 0,
        cache_creation=cache_creation_tokens or 0,
        cache_read=cache_read_tokens or 0,
    )
    # Nothing billed (the demo provider, or a failure before any usage): no price needed, nothing recorded.
    prices = prices_of(billed_model) if usage.total else None
    cost = cost_of(usage, prices) if prices else Decimal(0)
    finished_at = timezone.now()
    fields: dict[str, object] = {
        "content": content,
        "status": status,
        "error_code": error.code if error else "",
        "error_message": error.message if error else "",
        "stop_reason": stop_reason or "",
        "note": note[:300],
        "finished_at": finished_at,
        "lease_expires_at": None,
        "duration_ms": duration_ms,
    }
    if model:
        fields["model"] = model
    if blocks is not None:
        fields["blocks"] = blocks
    if thinking is not None:
        fields["thinking"] = thinking
    if ttft_ms is not None:
        fields["ttft_ms"] = ttft_ms
    # Continue adds to the usage of the attempts before it rather than overwriting it.
    if input_tokens is not None:
        fields["input_tokens"] = Coalesce(F("input_tokens"), 0) + input_tokens
    if output_tokens is not None:
        fields["output_tokens"] = Coalesce(F("output_tokens"), 0) + output_tokens
    if cache_creation_tokens is not None:
        fields["cache_creation_tokens"] = Coalesce(F("cache_creation_tokens"), 0) + cache_creation_tokens
    if cache_read_tokens is not None:
        fields["cache_read_tokens"] = Coalesce(F("cache_read_tokens"), 0) + cache_read_tokens
    money = DecimalField(max_digits=14, decimal_places=8)
    fields["cost"] = Coalesce(F("cost"), Value(Decimal(0), output_field=money)) + Value(
        cost, output_field=money
    )
    if prices is not None:
        fields["prices"] = prices.snapshot()
    if not Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(**fields):
        return None
    record_attempt(
        user_id=owner,
        model=billed_model,
        usage=usage,
        cost=cost,
        failed=status == Message.Status.ERROR,
        ttft_ms=ttft_ms,
    )
    return finished_at


def reply_final_html(reply_id: int) -> str | None:
    """A finished reply as its page shows it (the `message` partial), or None if the row is gone. The
    partial reads the message's own columns only (`conversation_id`, not the conversation). Read with
    `get`, not `filter(...).first()`, whose ORDER BY and slice the ORM compiles on every call: measured
    (issue 15, SQLite, one thread) 0.31 ms against 0.60 ms with `select_related("conversation")`."""
    try:
        message = Message.objects.get(pk=reply_id)
    except Message.DoesNotExist:
        return None
    return render_to_string("chat/conversation.html#message", {"message": message})


@dataclass(frozen=True)
class FinalRender:
    """A finished reply's final HTML, and the version it shows: when it finished and how long its text and
    its thinking are (what a subscriber compares with what it has sent)."""

    finished_at: datetime
    length: int
    thinking_length: int
    html: str | None


def reply_close(*, reply_id: int, content: str, thinking: str, **final: Any) -> FinalRender | None:
    """`reply_finish` (`final`: its other keywords), then the final rendering of what it saved, in one
    call: the producer's one trip to the background database thread at a reply's end. Every subscriber
    shows this rendering at `end`; rendered here, a subscriber that has followed the reply to its end needs
    no trip of its own (measured, issue 15: the subscriber's read of the row and its render were two trips,
    ~3 ms of CPU per reply in the flow, for a render of ~0.8 ms). None if nothing was written (the reply
    is no longer streaming)."""
    finished_at = reply_finish(reply_id=reply_id, content=content, thinking=thinking, **final)
    if finished_at is None:
        return None
    try:
        html = reply_final_html(reply_id)
    except Exception:  # the reply is saved either way; each subscriber then renders it itself, as before
        logger.exception("reply %s: rendering the finished reply failed", reply_id)
        html = None
    return FinalRender(finished_at, len(content), len(thinking), html)


def reply_check_budget(*, reply_id: int, user_id: int, model: str, usage: TokenUsage) -> ReplyFailure | None:
    """Before a later tool round: why the reply must end now (a budget is used up), or None."""
    return check_next_round(reply_id=reply_id, user_id=user_id, model=model, usage_so_far=usage)


def replies_reap_expired(*, exclude: list[int] | tuple[int, ...] = ()) -> list[int]:
    """Mark streaming replies whose lease lapsed (their process died) as interrupted, keeping the text.
    `exclude`: replies this process is generating — alive, whatever their lease says."""
    now = timezone.now()
    stale = Q(status=Message.Status.STREAMING) & (
        Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
    )
    ids = list(Message.objects.filter(stale).exclude(pk__in=exclude).values_list("pk", flat=True)[:500])
    if not ids:
        return []
    Message.objects.filter(stale, pk__in=ids).update(
        status=Message.Status.INTERRUPTED,
        error_code="interrupted",
        error_message=INTERRUPTED_MESSAGE,
        finished_at=now,
        lease_expires_at=None,
    )
    return ids


areplies_save_batch = background_db(replies_save_batch)
areply_save_blocks = background_db(reply_save_blocks)
areply_finish = background_db(reply_finish)
areply_close = background_db(reply_close)
areplies_reap_expired = background_db(replies_reap_expired)
areply_check_budget = background_db(reply_check_budget)
