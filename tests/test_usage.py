"""Usage end to end through the real SDK and the fake Anthropic server: cache breakpoints on the wire,
exact costs across tool rounds and a Continue, budgets before the first call and at a later tool round,
the usage page, the staff dashboard (constant query count), the CSV export and the finance report."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat.models import Conversation, Message
from tests.support.asgi_client import AsgiClient
from tests.support.caching import breakpoints
from tests.support.fake_anthropic import End, ErrorEvent, FakeAnthropic, Text, ToolUse
from tests.support.streams import follow, reload, start_conversation, stream_path
from usage.budgets import period_end
from usage.models import Budget, ModelPrice, UsageDaily

pytestmark = pytest.mark.django_db(transaction=True)

EPHEMERAL = {"type": "ephemeral"}


def calculator(tool_id: str, expression: str) -> ToolUse:
    return ToolUse(tool_id, "calculator", [json.dumps({"expression": expression})])


async def test_fake_server_reports_cache_usage_in_the_real_wire_format(upstream: FakeAnthropic) -> None:
    """The real SDK parses the fake's cache fields, streamed (message_start and message_delta) and not."""
    client = anthropic.AsyncAnthropic(api_key="k", base_url=upstream.url, max_retries=0)
    upstream.enqueue(
        Text("hi"), End(input_tokens=7, cache_creation_input_tokens=1500, cache_read_input_tokens=300)
    )
    stream = await client.messages.create(
        model="claude-sonnet-5-5", max_tokens=10, messages=[{"role": "user", "content": "x"}], stream=True
    )
    seen: dict[str, Any] = {}
    async with stream:
        async for event in stream:
            if event.type == "message_start":
                seen["start"] = event.message.usage
            elif event.type == "message_delta":
                seen["delta"] = event.usage
    for usage in (seen["start"], seen["delta"]):
        assert (usage.input_tokens, usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (
            7,
            1500,
            300,
        )
    assert seen["start"].cache_creation.ephemeral_5m_input_tokens == 1500
    upstream.enqueue(Text("hi"), End(cache_read_input_tokens=42))
    message = await client.messages.create(
        model="claude-sonnet-5-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert message.usage.cache_read_input_tokens == 42
    await client.close()


async def test_costs_and_cache_tokens_across_tool_rounds_and_a_continue(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, alice: User
) -> None:
    """Sonnet at $3 in / $15 out / $3.75 cache write / $0.30 cache read per million tokens:

    attempt 1, round 1 (tool_use): 100 in, 50 out, 2,000 cache write             -> $0.00930... see below
    attempt 1, round 2: cut off by an error after message_start announced 10 in and 2,100 cache read
    attempt 2 (Continue): 5 in, 20 out, 40 cache write, 2,200 cache read
    attempt 1 = (110x3 + 50x15 + 2000x3.75 + 2100x0.30) / 1M = (330 + 750 + 7500 + 630) / 1M = $0.00921
    attempt 2 = (5x3 + 20x15 + 40x3.75 + 2200x0.30) / 1M = (15 + 300 + 150 + 660) / 1M = $0.001125
    """
    upstream.enqueue(
        Text("Let me add that."),
        calculator("toolu_1", "2+2"),
        End(stop_reason="tool_use", input_tokens=100, output_tokens=50, cache_creation_input_tokens=2000),
    )
    upstream.enqueue(Text("It is "), ErrorEvent(), End(input_tokens=10, cache_read_input_tokens=2100))
    conversation, reply, path = await start_conversation(alice_client, "What is 2+2?")
    await follow(alice_client, path)
    reply = await reload(reply)
    assert reply.status == Message.Status.ERROR
    assert (reply.input_tokens, reply.output_tokens) == (110, 50)
    assert (reply.cache_creation_tokens, reply.cache_read_tokens) == (2000, 2100)
    assert reply.cost == Decimal("0.00921")
    assert reply.prices == {"input": "3", "output": "15", "cache_write": "3.75", "cache_read": "0.30"}

    upstream.enqueue(
        Text(" 4."),
        End(input_tokens=5, output_tokens=20, cache_creation_input_tokens=40, cache_read_input_tokens=2200),
    )
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/continue/")
    assert response.status == 200
    _, events = await follow(alice_client, f"/c/{conversation.pk}/m/{reply.pk}/stream/")
    reply = await reload(reply)
    assert reply.status == Message.Status.COMPLETE
    assert (reply.input_tokens, reply.output_tokens) == (115, 70)
    assert (reply.cache_creation_tokens, reply.cache_read_tokens) == (2040, 4300)
    assert reply.cost == Decimal("0.00921") + Decimal("0.001125") == Decimal("0.010335")
    # The reply's details show the cache usage and the cost.
    assert "cache 2040 written / 4300 read" in events[-1].data and "$0.0103" in events[-1].data

    # The rollup holds both attempts: the first ended in an error.
    day = await UsageDaily.objects.aget(user=alice)
    assert (day.replies, day.errors, day.cost) == (2, 1, Decimal("0.010335"))
    assert (day.input_tokens, day.output_tokens, day.cache_creation_tokens, day.cache_read_tokens) == (
        115,
        70,
        2040,
        4300,
    )
    assert day.ttft_count == 2

    # Breakpoints: on the system prompt and the last block of the history, in every request; never saved.
    first, tool_round, continued = (r["body"] for r in upstream.requests)
    assert first["system"] == [
        {"type": "text", "text": "You are a helpful assistant.", "cache_control": EPHEMERAL}
    ]
    assert breakpoints(first) == [("system", 0, 0), ("messages", 0, 0)]
    assert first["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?", "cache_control": EPHEMERAL}]}
    ]
    assert breakpoints(tool_round) == [("system", 0, 0), ("messages", 2, 0)]
    assert tool_round["messages"][2]["content"][0]["type"] == "tool_result"
    assert tool_round["messages"][1]["content"][-1] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "calculator",
        "input": {"expression": "2+2"},
    }
    assert breakpoints(continued) == [("system", 0, 0), ("messages", 3, 0)]
    assert continued["messages"][3] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "It is", "cache_control": EPHEMERAL}],
    }
    assert "cache_control" not in json.dumps(reply.blocks)

    # A later price change does not rewrite history.
    await ModelPrice.objects.acreate(
        model="claude-sonnet-5-5",
        input=Decimal(30),
        output=Decimal(150),
        cache_write=Decimal(1),
        cache_read=0,
    )
    page = await alice_client.request("GET", f"/c/{conversation.pk}/", htmx=False)
    assert "$0.0103" in page.text
    assert (await reload(reply)).cost == Decimal("0.010335")


async def test_admin_price_wins_and_is_recorded_with_the_reply(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    await ModelPrice.objects.acreate(
        model="claude-sonnet-5-5", input=Decimal(2), output=Decimal(10), cache_write=Decimal(4), cache_read=1
    )
    upstream.enqueue(Text("ok"), End(input_tokens=1000, output_tokens=100, cache_read_input_tokens=1000))
    _, reply, path = await start_conversation(alice_client)
    await follow(alice_client, path)
    reply = await reload(reply)
    # (1000x2 + 100x10 + 1000x1) / 1M = $0.004
    assert reply.cost == Decimal("0.004") and reply.prices["input"] == "2.0000"


async def test_a_stopped_reply_is_billed_for_what_its_upstream_announced(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    import threading

    from tests.support.fake_anthropic import Wait

    gate = threading.Event()
    upstream.enqueue(
        Text("Partial"), Wait(gate, timeout=30), End(input_tokens=1000, cache_read_input_tokens=5000)
    )
    conversation, reply, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    while (await stream.next_event()).event != "delta":
        pass
    assert (await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/stop/")).status == 204
    await stream.events_until("done")
    gate.set()
    reply = await reload(reply)
    assert reply.status == Message.Status.STOPPED
    # message_start's input usage counts; output is only reported at the end: (1000x3 + 5000x0.3) / 1M
    assert (reply.input_tokens, reply.cache_read_tokens, reply.cost) == (1000, 5000, Decimal("0.0045"))


def _spent(user: User, cost: str, *, day: date | None = None, model: str = "claude-sonnet-5-5") -> None:
    UsageDaily.objects.create(
        day=day or timezone.localdate(),
        user=user,
        model=model,
        replies=1,
        cost=Decimal(cost),
        input_tokens=10,
    )


def _resets(period: str) -> str:
    return f"It resets on {period_end(period, timezone.localdate()):%-d %B %Y} at 00:00 (UTC)."


async def test_budget_refuses_the_first_call_saves_nothing_and_says_when_it_resets(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, alice: User
) -> None:
    budget = await Budget.objects.acreate(user=alice, period="monthly", limit_usd=Decimal("0.50"))
    await sync_to_async(_spent)(alice, "0.50")
    response = await alice_client.request("POST", "/c/start/", data={"text": "Hello?"})
    assert response.status == 422
    assert "Your monthly budget of $0.50 is used up, so this message was not sent." in response.text
    assert _resets("monthly") in response.text
    assert await Conversation.objects.acount() == 0 and await Message.objects.acount() == 0
    assert upstream.requests == []

    # In an existing conversation too, and nothing is added to it.
    conversation = await Conversation.objects.acreate(user=alice, title="Old")
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "More?"})
    assert response.status == 422 and "used up" in response.text
    assert await Message.objects.acount() == 0

    # Staff lift the budget: the same message goes through.
    budget.limit_usd = Decimal("5.00")
    await budget.asave()
    response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": "More?"})
    assert response.status == 200
    await follow(alice_client, f"/c/{conversation.pk}/m/{(await Message.objects.alast()).pk}/stream/")  # type: ignore[union-attr]


async def test_the_tightest_budget_wins_group_daily_over_user_monthly(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, alice: User
) -> None:
    interns = await Group.objects.acreate(name="Interns")
    await sync_to_async(alice.groups.add)(interns)
    await Budget.objects.acreate(user=alice, period="monthly", limit_usd=Decimal("100"))
    await Budget.objects.acreate(group=interns, period="daily", limit_tokens=1000)
    await sync_to_async(_spent)(alice, "0.01", day=timezone.localdate() - timedelta(days=1))  # other days
    await UsageDaily.objects.acreate(day=timezone.localdate(), user=alice, model="m", output_tokens=1000)
    response = await alice_client.request("POST", "/c/start/", data={"text": "Hello?"})
    assert response.status == 422
    assert "The Interns group&#x27;s daily budget of 1,000 tokens per member is used up" in response.text
    assert _resets("daily") in response.text


async def test_a_shared_group_budget_counts_every_members_spend(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, alice: User, bob: User
) -> None:
    team = await Group.objects.acreate(name="Team")
    await sync_to_async(team.user_set.add)(alice, bob)
    budget = await Budget.objects.acreate(group=team, period="monthly", limit_usd=Decimal("10"), pooled=True)
    await sync_to_async(_spent)(alice, "1.00")
    await sync_to_async(_spent)(bob, "9.00")  # alice's own spend is far from $10; the team's is not
    response = await alice_client.request("POST", "/c/start/", data={"text": "Hello?"})
    assert response.status == 422
    assert "The Team group&#x27;s monthly budget of $10.00 shared by its members is used up" in response.text
    assert await Message.objects.acount() == 0

    # Per member, the same budget leaves alice room: her message goes through.
    budget.pooled = False
    await budget.asave()
    upstream.enqueue(Text("Hi."), End())
    response = await alice_client.request("POST", "/c/start/", data={"text": "Hello?"})
    assert response.status == 200
    conversation = await Conversation.objects.aget(user=alice)
    reply = await Message.objects.aget(conversation=conversation, role="assistant")
    await follow(alice_client, f"/c/{conversation.pk}/m/{reply.pk}/stream/")


async def test_budget_ends_the_reply_before_a_later_tool_round_keeping_its_text(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, alice: User
) -> None:
    await Budget.objects.acreate(user=alice, period="monthly", limit_usd=Decimal("0.01"))
    # Round 1 costs (2000x3 + 400x15) / 1M = $0.012: over the $0.01 budget once it is done.
    upstream.enqueue(
        Text("Let me compute."),
        calculator("toolu_b", "6*7"),
        End(stop_reason="tool_use", input_tokens=2000, output_tokens=400),
    )
    upstream.enqueue(Text("Never sent."), End())
    _, reply, path = await start_conversation(alice_client, "6*7?")
    _, events = await follow(alice_client, path)
    reply = await reload(reply)
    assert len(upstream.requests) == 1  # the second round was never called
    assert reply.status == Message.Status.ERROR and reply.error_code == "budget"
    assert reply.content == "Let me compute."
    assert reply.error_message.startswith("Your monthly budget of $0.01 ran out, so the reply stopped")
    assert _resets("monthly") in reply.error_message
    assert [turn["role"] for turn in reply.blocks] == ["assistant", "user"]  # tool result kept, valid history
    assert reply.blocks[1]["content"][0]["content"] == "6*7 = 42"
    assert reply.cost == Decimal("0.012")
    assert "ran out" in events[-1].data and "Let me compute." in events[-1].data
    # And the next message is refused before any call.
    response = await alice_client.request("POST", "/c/start/", data={"text": "again"})
    assert response.status == 422 and len(upstream.requests) == 1


async def test_a_streaming_reply_reserves_its_worst_round(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, alice: User, settings: Any
) -> None:
    """$1.00 budget, $0.95 spent: one reply fits; while it streams it reserves 4096 x $15 / 1M = $0.06144,
    so a second is refused with a sentence that says why; once the first is done, sending works again."""
    import threading

    from tests.support.fake_anthropic import Wait

    settings.CHAT_MAX_TOKENS = 4096
    await Budget.objects.acreate(user=alice, period="monthly", limit_usd=Decimal("1.00"))
    await sync_to_async(_spent)(alice, "0.95")
    gate = threading.Event()
    upstream.enqueue(Text("first"), Wait(gate, timeout=30), End())
    _, _, path = await start_conversation(alice_client, "one")
    response = await alice_client.request("POST", "/c/start/", data={"text": "two"})
    assert response.status == 422
    assert "nearly used up, and replies still being written may use the rest" in response.text
    gate.set()
    await follow(alice_client, path)
    upstream.enqueue(Text("third"), End())
    _, _, path = await start_conversation(alice_client, "three")
    await follow(alice_client, path)


def _staff_client() -> Client:
    staff = User.objects.create_user("staff", password="x", is_staff=True)
    client = Client()
    client.force_login(staff)
    return client


def _population(count: int, start: int = 0) -> None:
    groups = [Group.objects.get_or_create(name=name)[0] for name in ("Research", "Support")]
    today = timezone.localdate()
    for i in range(start, start + count):
        user = User.objects.create_user(f"user{i:03d}")
        user.groups.add(groups[i % 2])
        for offset, model in ((0, "claude-sonnet-5-5"), (1, "claude-haiku-5-5")):
            UsageDaily.objects.create(
                day=today - timedelta(days=offset),
                user=user,
                model=model,
                replies=10,
                errors=1,
                cost=Decimal("1.25"),
                input_tokens=100,
                ttft_count=10,
                ttft_sum_ms=5000,
                ttft_le_500=9,
                ttft_le_3000=1,
            )


def test_dashboard_query_count_is_constant_in_the_number_of_users() -> None:
    client = _staff_client()
    _population(2)
    with CaptureQueriesContext(connection) as two:
        response = client.get("/usage/staff/")
    assert response.status_code == 200
    _population(18, start=2)
    with CaptureQueriesContext(connection) as twenty:
        response = client.get("/usage/staff/")
    assert response.status_code == 200
    assert len(twenty) == len(two), [q["sql"] for q in twenty.captured_queries]
    page = response.content.decode()
    assert "$50.00" in page  # 20 users x 2 rows x $1.25
    assert "≤ 500 ms" in page and "≤ 3 s" in page  # p50 and p95 of 90% under 500 ms, 10% under 3 s
    assert page.count('<rect class="bar"') == 2  # two days with spend, one model each


def test_dashboard_period_groups_and_csv(settings: Any) -> None:
    client = _staff_client()
    _population(3)
    today = timezone.localdate()
    response = client.get("/usage/staff/", {"start": str(today), "end": str(today)})
    page = response.content.decode()
    assert "Research" in page and "Support" in page
    assert "$3.75" in page  # today only: 3 users x $1.25
    bad = client.get("/usage/staff/", {"start": str(today), "end": str(today - timedelta(days=2))})
    assert "must not be after its end" in bad.content.decode()
    export = client.get(
        "/usage/staff/users.csv", {"start": str(today - timedelta(days=1)), "end": str(today)}
    )
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    assert rows[0][:3] == ["scope", "name", "replies"]
    assert {r[1] for r in rows[1:]} == {"user000", "user001", "user002"}
    assert all(r[-1] == "2.50000000" for r in rows[1:])
    # Not for members.
    member = Client()
    member.force_login(User.objects.get(username="user000"))
    assert member.get("/usage/staff/").status_code == 302


def test_usage_report_command_per_user_and_per_group() -> None:
    _population(4)
    old = User.objects.create_user("last-month")
    UsageDaily.objects.create(day=date(2026, 10, 31), user=old, model="claude-sonnet-5-5", cost=Decimal(9))
    UsageDaily.objects.filter(user__username__startswith="user").update(day=date(2026, 11, 15))
    out = io.StringIO()
    call_command("usage_report", "--month", "2026-11", stdout=out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0][0] == "scope"
    users = {r[1]: r for r in rows if r[0] == "user"}
    groups = {r[1]: r for r in rows if r[0] == "group"}
    assert set(users) == {"user000", "user001", "user002", "user003"}
    assert users["user000"][2] == "20" and users["user000"][-1] == "2.50000000"
    assert groups["Research"][-1] == "5.00000000" and groups["Support"][-1] == "5.00000000"
    with pytest.raises(Exception, match="YYYY-MM"):
        call_command("usage_report", "--month", "November")


def test_usage_page_shows_spend_chart_budget_and_costliest_conversations(alice: User, settings: Any) -> None:
    client = Client()
    client.force_login(alice)
    Budget.objects.create(user=alice, period="monthly", limit_usd=Decimal("10"))
    cheap = Conversation.objects.create(user=alice, title="Cheap chat")
    dear = Conversation.objects.create(user=alice, title="Dear chat")
    for conversation, cost in ((cheap, "0.10"), (dear, "2.40")):
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            model="claude-sonnet-5-5",
            cost=Decimal(cost),
            input_tokens=1,
        )
    _spent(alice, "2.50")
    page = client.get("/usage/").content.decode()
    assert "$2.50" in page and "25% used" in page and "$7.50 left of your monthly budget of $10.00" in page
    assert page.index("Dear chat") < page.index("Cheap chat")
    assert page.count('<rect class="bar"') == 1 and 'role="img"' in page
    # The composer says nothing at 25% used; under 10% left it shows the remaining budget.
    assert "budget-notice" not in client.get("/").content.decode()
    _spent(alice, "6.60", model="claude-haiku-5-5")
    home = client.get("/").content.decode()
    assert 'id="budget-notice"' in home and "$0.90 left of your monthly budget of $10.00" in home


def test_budget_constraints_in_the_database(alice: User) -> None:
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.create(user=alice, group=Group.objects.create(name="g"), limit_usd=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.create(user=alice, limit_usd=1, limit_tokens=5)
    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.create(user=alice)
    with pytest.raises(IntegrityError), transaction.atomic():  # only a group's budget can be shared
        Budget.objects.create(user=alice, limit_usd=1, pooled=True)


def test_admin_pages_show_cache_usage_and_cost(alice: User) -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="x"))
    conversation = Conversation.objects.create(user=alice, title="Cached")
    message = Message.objects.create(
        conversation=conversation,
        role="assistant",
        model="claude-sonnet-5-5",
        cache_creation_tokens=1234,
        cache_read_tokens=5678,
        cost=Decimal("0.01234567"),
    )
    listing = client.get("/admin/chat/message/").content.decode()
    assert "1234" in listing and "5678" in listing and "0.01234567" in listing
    detail = client.get(f"/admin/chat/message/{message.pk}/change/").content.decode()
    assert "cache write tokens" in detail.lower() and "5678" in detail
    assert "0.01234567" in client.get("/admin/chat/conversation/").content.decode()  # per-conversation cost
    for path in ("/admin/usage/budget/add/", "/admin/usage/modelprice/add/", "/admin/usage/usagedaily/"):
        assert client.get(path).status_code == 200, path


async def test_rebuilt_rollup_equals_the_one_kept_live(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, alice: User
) -> None:
    for usage in ((100, 10, 2000, 0), (50, 5, 0, 2000)):
        upstream.enqueue(
            Text("ok"),
            End(
                input_tokens=usage[0],
                output_tokens=usage[1],
                cache_creation_input_tokens=usage[2],
                cache_read_input_tokens=usage[3],
            ),
        )
        _, _, path = await start_conversation(alice_client)
        await follow(alice_client, path)
    fields = [f.name for f in UsageDaily._meta.fields if f.name != "id"]
    live = [row async for row in UsageDaily.objects.values(*fields)]
    await sync_to_async(call_command)("usage_rollup", "--rebuild", stdout=io.StringIO())
    rebuilt = [row async for row in UsageDaily.objects.values(*fields)]
    assert rebuilt == live
    # (100x3 + 10x15 + 2000x3.75) + (50x3 + 5x15 + 2000x0.30) = 7950 + 825 millionths of a dollar
    assert live[0]["replies"] == 2 and live[0]["cost"] == Decimal("0.008775")


async def test_a_retried_reply_stays_billed(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, alice: User
) -> None:
    """The earlier attempt (now an alternative) keeps its cost and counts in the spend."""
    upstream.enqueue(Text("Half"), ErrorEvent(), End(input_tokens=1000))  # $0.003 announced, then cut off
    upstream.enqueue(Text("Whole."), End(input_tokens=1000, output_tokens=100))  # $0.003 + $0.0015
    conversation, reply, path = await start_conversation(alice_client)
    await follow(alice_client, path)
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{reply.pk}/retry/")
    assert response.status == 200
    new = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert new is not None
    await follow(alice_client, f"/c/{conversation.pk}/m/{new.pk}/stream/")
    costs = [m.cost async for m in Message.objects.filter(role="assistant").order_by("pk")]
    assert costs == [Decimal("0.003"), Decimal("0.0045")]
    day = await UsageDaily.objects.aget(user=alice)
    assert (day.replies, day.errors, day.cost) == (2, 1, Decimal("0.0075"))
    page = await alice_client.request("GET", "/usage/", htmx=False)
    assert "$0.0075" in page.text  # the conversation's cost counts both attempts


async def test_a_new_conversations_pane_shows_the_budget_notice_only_where_a_budget_applies(
    alice: User, alice_client: Any, bob_client: Any, upstream: Any, background: Any
) -> None:
    """The start finds out, in its budget check, whether any budget applies; the pane it answers with
    shows the notice as every page would, and skips looking when none applies."""
    await Budget.objects.acreate(user=alice, period="monthly", limit_usd=Decimal("10"))
    await sync_to_async(_spent)(alice, "9.40")
    for client, budgeted in ((alice_client, True), (bob_client, False)):
        upstream.enqueue(Text("Hi."), End())
        response = await client.request("POST", "/c/start/", data={"text": "Hello"})
        assert response.status == 200, response.text
        assert ('id="budget-notice"' in response.text) is budgeted
        if budgeted:
            # What is left after the new reply's reservation (usage.budgets: one round's maximum output).
            assert " left of your monthly budget of $10.00" in response.text
        await follow(client, stream_path(response.text))
