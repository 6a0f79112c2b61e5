"""The flusher's periodic save (`replies_save_batch`): one hand-written UPDATE run with `executemany` for the
whole batch. What each row gets, what it keeps, and what it never touches. Runs on SQLite and, in the
second pass of scripts/test, on PostgreSQL (the SQL is the vendors' own quoting and COALESCE)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from chat.models import Conversation, Message
from chat.streaming.store import replies_save_batch


def _reply(conversation: Conversation, **fields: Any) -> Message:
    values: dict[str, Any] = {
        "status": Message.Status.STREAMING,
        "lease_expires_at": timezone.now() - timedelta(seconds=1),
        **fields,
    }
    return Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, **values)


@pytest.mark.django_db(transaction=True)
def test_a_batch_save_writes_each_row_its_own_text_and_keeps_what_it_was_not_given(alice: Any) -> None:
    conversation = Conversation.objects.create(user=alice)
    first = _reply(conversation, ttft_ms=120, thinking="thought so far")
    second = _reply(conversation)
    third = _reply(conversation, thinking="old thinking")
    before = timezone.now()

    result = replies_save_batch(
        saves=[(first.pk, "first's text", None), (second.pk, "second's text", 45), (third.pk, "third", None)],
        renew=[],
        thinking={third.pk: "new thinking"},
    )

    assert (result.gone, result.stop_requested, result.failed) == ([], [], [])
    rows = {m.pk: m for m in Message.objects.filter(pk__in=[first.pk, second.pk, third.pk])}
    # Each row its own text; a time to first token or thinking not given is kept, never blanked.
    assert (rows[first.pk].content, rows[first.pk].ttft_ms, rows[first.pk].thinking) == (
        "first's text",
        120,
        "thought so far",
    )
    assert (rows[second.pk].content, rows[second.pk].ttft_ms, rows[second.pk].thinking) == (
        "second's text",
        45,
        "",
    )
    assert (rows[third.pk].content, rows[third.pk].thinking) == ("third", "new thinking")
    for row in rows.values():  # the lease renewed in the same UPDATE
        assert row.status == Message.Status.STREAMING
        assert row.lease_expires_at is not None and row.lease_expires_at > before


@pytest.mark.django_db(transaction=True)
def test_a_batch_save_never_writes_a_finished_or_deleted_reply_and_reports_it_gone(alice: Any) -> None:
    conversation = Conversation.objects.create(user=alice)
    live = _reply(conversation, stop_requested=True)
    finished = _reply(
        conversation, status=Message.Status.COMPLETE, content="final text", lease_expires_at=None
    )
    deleted = _reply(conversation)
    deleted_pk = deleted.pk
    deleted.delete()

    result = replies_save_batch(
        saves=[(live.pk, "partial", 10), (finished.pk, "stale partial", 10), (deleted_pk, "x", 10)], renew=[]
    )

    assert sorted(result.gone) == sorted([finished.pk, deleted_pk])
    assert result.stop_requested == [live.pk]
    finished.refresh_from_db()
    assert (finished.content, finished.ttft_ms, finished.lease_expires_at) == ("final text", None, None)
    live.refresh_from_db()
    assert live.content == "partial"
    assert not Message.objects.filter(pk=deleted_pk).exists()
