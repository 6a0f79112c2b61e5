"""Long use: history fitted to the context window, the superseded flag migrated to branches, the sidebar
paged and searched on the server, pinning."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import get_script_prefix, reverse, set_script_prefix

from chat.models import Conversation, Message
from chat.selectors import conversation_page, estimate_tokens, fit_to_context
from chat.templatetags.chat_tags import conversation_url
from tests.support.asgi_client import AsgiClient, stream_path
from tests.support.caching import without_breakpoints
from tests.support.fake_anthropic import End, FakeAnthropic, Text
from tests.support.streams import follow, start_conversation


def test_fitting_drops_the_oldest_exchanges_whole_and_keeps_the_question() -> None:
    tool_round = [
        ("user", "What is 2+2?"),
        ("assistant", [{"type": "tool_use", "id": "t1", "name": "calculator", "input": {"e": "2+2"}}]),
        ("user", [{"type": "tool_result", "tool_use_id": "t1", "content": "4"}]),
        ("assistant", "It is 4."),
    ]
    old = [("user", "x" * 3000), ("assistant", "y" * 3000)]
    question = [("user", "And now?")]
    kept, dropped = fit_to_context([old, tool_round, question], [], budget=200)
    assert dropped == 1 and kept == [tool_round, question]  # the tool exchange stays whole
    kept, dropped = fit_to_context([old, tool_round, question], [], budget=10)
    assert dropped == 2 and kept == [question]  # never a tool_result without its tool_use
    kept, dropped = fit_to_context([old, question], [], budget=0)
    assert kept == [question]  # the question being answered is always sent
    assert estimate_tokens("abc" * 100) >= 100


@pytest.mark.django_db(transaction=True)
async def test_a_conversation_longer_than_the_context_window_is_answered_and_says_so(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any, settings: Any
) -> None:
    settings.CHAT_MAX_TOKENS = 100
    settings.CHAT_CONTEXT_TOKENS = {settings.CHAT_MODEL: 2000}  # about 5,000 characters of history
    long = "word " * 500  # 2,500 characters: two such exchanges do not fit
    for _ in range(3):
        upstream.enqueue(Text("Noted. " + long), End())
    upstream.enqueue(Text("Short answer."), End())
    conversation, _, path = await start_conversation(alice_client, "First " + long)
    await follow(alice_client, path)
    for text in ("Second " + long, "Third " + long, "Fourth, short?"):
        response = await alice_client.request("POST", f"/c/{conversation.pk}/send/", data={"text": text})
        await follow(alice_client, stream_path(response.text))
    sent = without_breakpoints(upstream.requests[-1]["body"]["messages"])
    assert sent[0]["role"] == "user" and sent[0]["content"].startswith("Third ")  # oldest turns left out
    assert sent[-1] == {"role": "user", "content": "Fourth, short?"}
    assert sum(len(str(m["content"])) for m in sent) < 2000 * 3
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert reply is not None and reply.status == "complete" and reply.content == "Short answer."
    assert reply.context_dropped == 2
    page = (await alice_client.request("GET", f"/c/{conversation.pk}/", htmx=False)).text
    assert "2 older exchanges left out to fit the model\u2019s context window." in page


@pytest.mark.django_db(transaction=True)
def test_superseded_replies_become_alternatives_when_migrated() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("chat", "0004_attachments_and_thinking")])
    apps = executor.loader.project_state([("chat", "0004_attachments_and_thinking")]).apps
    OldUser = apps.get_model("auth", "User")
    OldConversation = apps.get_model("chat", "Conversation")
    OldMessage = apps.get_model("chat", "Message")
    owner = OldUser.objects.create(username="legacy")
    conv = OldConversation.objects.create(user=owner, title="Legacy")
    q1 = OldMessage.objects.create(conversation=conv, role="user", content="Q1")
    failed = OldMessage.objects.create(conversation=conv, role="assistant", content="Half", superseded=True)
    a1 = OldMessage.objects.create(conversation=conv, role="assistant", content="Whole")
    q2 = OldMessage.objects.create(conversation=conv, role="user", content="Q2")
    a2 = OldMessage.objects.create(conversation=conv, role="assistant", content="A2")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    parents = dict(Message.objects.filter(conversation_id=conv.pk).values_list("pk", "parent_id"))
    assert parents == {q1.pk: None, failed.pk: q1.pk, a1.pk: q1.pk, q2.pk: a1.pk, a2.pk: q2.pk}
    conversation = Conversation.objects.get(pk=conv.pk)
    assert conversation.current_id == a2.pk
    from chat.selectors import transcript

    assert [m.content for m in transcript(conversation=conversation)] == ["Q1", "Whole", "Q2", "A2"]


@pytest.fixture
def alice_web(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def _many(user: User, count: int) -> None:
    Conversation.objects.bulk_create(
        [Conversation(user=user, title=f"Chat {i:05d}") for i in range(count)], batch_size=1000
    )


@pytest.mark.django_db
def test_the_sidebar_pages_through_every_conversation_once_pinned_first(alice: User, bob: User) -> None:
    _many(alice, 130)
    _many(bob, 5)
    pinned = Conversation.objects.filter(user=alice).order_by("pk")[7]
    Conversation.objects.filter(pk=pinned.pk).update(pinned=True)
    seen: list[int] = []
    cursor = ""
    pages = 0
    while True:
        page = conversation_page(user=alice, cursor=cursor, size=50)
        seen.extend(c.pk for c in page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3 and len(seen) == len(set(seen)) == 130
    assert seen[0] == pinned.pk
    assert set(seen) == set(Conversation.objects.filter(user=alice).values_list("pk", flat=True))


def test_sidebar_links_are_the_reversed_urls_under_any_script_prefix() -> None:
    """The sidebar's links are reversed once and filled in per conversation (`conversation_url`)."""
    before = get_script_prefix()
    try:
        for prefix in ("/", "/chat/", "/9876543210/"):
            set_script_prefix(prefix)
            for pk in (1, 42, 9_876_543_210, 10**12):
                assert conversation_url(pk) == reverse("chat:conversation", args=[pk])
    finally:
        set_script_prefix(before)


@pytest.mark.django_db
def test_sidebar_load_more_and_server_search(alice: User, alice_web: Client) -> None:
    _many(alice, 60)
    conversation = Conversation.objects.create(user=alice, title="Tides")
    Message.objects.create(conversation=conversation, role="user", content="Why is the sea salty?")
    page = alice_web.get("/").content.decode()
    assert page.count('href="/c/') == 50
    more = re.search(r'hx-get="(/search/\?q=&amp;cursor=[^"]+)"\s+hx-trigger="revealed"', page)
    assert more, "no load-more trigger"
    rest = alice_web.get(more.group(1).replace("&amp;", "&")).content.decode()
    assert rest.count('href="/c/') == 11 and 'hx-trigger="revealed"' not in rest
    found = alice_web.get("/search/?q=salty").content.decode()
    assert "Tides" in found and "Chat 00001" not in found


@pytest.mark.django_db
def test_the_first_page_marks_where_a_new_conversation_goes(alice: User, alice_web: Client) -> None:
    """A start answers with only the new conversation's sidebar entry, put after the marker: the first
    page has exactly one, after the pinned conversations (or after all of them, or alone when there are
    none); later pages have none (one id per page)."""
    marker = '<li id="conversation-list-start" hidden></li>'

    def before_marker(html: str) -> list[str]:
        assert html.count(marker) == 1, html
        return re.findall(r">(?:<span[^>]*>📌</span> )?([^<]+)</a></li>", html[: html.index(marker)])

    assert before_marker(alice_web.get("/").content.decode()) == []
    _many(alice, 55)
    for title in ("Pinned A", "Pinned B"):
        Conversation.objects.create(user=alice, title=title, pinned=True)
    assert sorted(before_marker(alice_web.get("/").content.decode())) == ["Pinned A", "Pinned B"]
    first = conversation_page(user=alice)
    assert first.first and first.pinned == 2 and first.next_cursor
    rest = alice_web.get("/search/", {"q": "", "cursor": first.next_cursor}).content.decode()
    assert marker not in rest and 'href="/c/' in rest
    found = alice_web.get("/search/?q=Pinned").content.decode()  # a search's list: all pinned
    assert sorted(before_marker(found)) == ["Pinned A", "Pinned B"]


@pytest.mark.django_db
def test_pinning_puts_a_conversation_on_top_without_touching_its_date(alice: User, alice_web: Client) -> None:
    old = Conversation.objects.create(user=alice, title="Old but important")
    Conversation.objects.create(user=alice, title="Newer")
    updated = Conversation.objects.get(pk=old.pk).updated_at
    response = alice_web.post(f"/c/{old.pk}/pin/", {"pinned": "1"})
    assert response.status_code == 302
    page = alice_web.get("/").content.decode()
    assert page.index("Old but important") < page.index("Newer")
    assert Conversation.objects.get(pk=old.pk).updated_at == updated
    alice_web.post(f"/c/{old.pk}/pin/", {"pinned": "0"})
    page = alice_web.get("/").content.decode()
    assert page.index("Newer") < page.index("Old but important")


@pytest.mark.django_db
def test_another_user_cannot_pin(alice: User, bob: User) -> None:
    conversation = Conversation.objects.create(user=alice, title="Private")
    client = Client()
    client.force_login(bob)
    assert client.post(f"/c/{conversation.pk}/pin/", {"pinned": "1"}).status_code == 404
    assert not Conversation.objects.get(pk=conversation.pk).pinned
