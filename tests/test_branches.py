"""Edit and branch: edits and regenerations make alternatives; the history sent is the visible path."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from chat.models import Conversation, Message
from tests.support.asgi_client import AsgiClient, stream_path
from tests.support.caching import without_breakpoints
from tests.support.fake_anthropic import End, FakeAnthropic, Text
from tests.support.streams import follow, start_conversation

pytestmark = [pytest.mark.django_db(transaction=True)]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


async def _latest_reply(conversation: Conversation) -> Message:
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    assert reply is not None
    return reply


async def _send(client: AsgiClient, conversation: Conversation, text: str) -> Message:
    response = await client.request("POST", f"/c/{conversation.pk}/send/", data={"text": text})
    assert response.status == 200, response.text
    await follow(client, stream_path(response.text))
    return await _latest_reply(conversation)


async def _page(client: AsgiClient, conversation: Conversation) -> str:
    return (await client.request("GET", f"/c/{conversation.pk}/", htmx=False)).text


def _positions(page: str) -> list[str]:
    return re.findall(r'class="branch-position">(\d+ / \d+)<', page)


async def test_edit_starts_a_branch_switching_back_restores_the_old_one(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(Text("Answer one."), End())
    upstream.enqueue(Text("Answer two."), End())
    upstream.enqueue(Text("Answer two, edited."), End())
    upstream.enqueue(Text("Answer three."), End())
    conversation, _, path = await start_conversation(alice_client, "Question one?")
    await follow(alice_client, path)
    await _send(alice_client, conversation, "Question two?")
    q2 = await Message.objects.aget(conversation=conversation, content="Question two?")

    response = await alice_client.request(
        "POST", f"/c/{conversation.pk}/m/{q2.pk}/edit/", data={"text": "Question two, better?"}
    )
    assert response.status == 200, response.text
    assert 'id="messages"' in response.text and "Question two, better?" in response.text
    assert "Answer two." not in response.text  # the old branch leaves the page...
    await follow(alice_client, stream_path(response.text))
    history = [user("Question one?"), assistant("Answer one."), user("Question two, better?")]
    assert without_breakpoints(upstream.requests[2]["body"]["messages"]) == history  # ...and the request
    page = await _page(alice_client, conversation)
    assert "Answer two, edited." in page and "Answer two." not in page
    assert _positions(page) == ["2 / 2"]  # under the edited question

    # Back to the first version: its reply comes back with it, and the next question follows that path.
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{q2.pk}/switch/")
    assert response.status == 200
    assert "Answer two." in response.text and "Answer two, edited." not in response.text
    assert _positions(response.text) == ["1 / 2"]
    await _send(alice_client, conversation, "Question three?")
    assert without_breakpoints(upstream.requests[3]["body"]["messages"]) == [
        user("Question one?"),
        assistant("Answer one."),
        user("Question two?"),
        assistant("Answer two."),
        user("Question three?"),
    ]
    assert await Message.objects.filter(conversation=conversation).acount() == 8  # nothing was lost


async def test_regenerate_makes_an_alternative_reply_and_switching_changes_the_history(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(Text("First try."), End())
    upstream.enqueue(Text("Second try."), End())
    upstream.enqueue(Text("Follow-up answer."), End())
    conversation, first, path = await start_conversation(alice_client, "Tell me.")
    await follow(alice_client, path)
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{first.pk}/retry/")
    assert response.status == 200
    second = await _latest_reply(conversation)
    assert f'id="msg-{second.pk}"' in response.text  # the new reply takes the old one's place
    await follow(alice_client, stream_path(response.text))
    assert without_breakpoints(upstream.requests[1]["body"]["messages"]) == [user("Tell me.")]
    page = await _page(alice_client, conversation)
    assert "Second try." in page and "First try." not in page and _positions(page) == ["2 / 2"]

    await alice_client.request("POST", f"/c/{conversation.pk}/m/{first.pk}/switch/")
    await _send(alice_client, conversation, "And then?")
    assert without_breakpoints(upstream.requests[2]["body"]["messages"]) == [
        user("Tell me."),
        assistant("First try."),
        user("And then?"),
    ]


async def test_regenerating_a_reply_in_the_middle_replaces_the_rest_of_the_path(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    for text in ("One.", "Two.", "One, again."):
        upstream.enqueue(Text(text), End())
    conversation, first, path = await start_conversation(alice_client, "Q1")
    await follow(alice_client, path)
    await _send(alice_client, conversation, "Q2")
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{first.pk}/retry/")
    assert response.status == 200
    assert response.headers["hx-retarget"] == "#messages"
    # As element text: a bare "Q2" can occur by chance in the page's random CSRF token.
    assert ">Q2<" not in response.text and ">Q1<" in response.text
    await follow(alice_client, stream_path(response.text))
    assert without_breakpoints(upstream.requests[2]["body"]["messages"]) == [user("Q1")]


async def test_export_shows_the_path_and_can_show_every_branch(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    upstream.enqueue(Text("Old answer."), End())
    upstream.enqueue(Text("New answer."), End())
    conversation, first, path = await start_conversation(alice_client, "Q")
    await follow(alice_client, path)
    response = await alice_client.request("POST", f"/c/{conversation.pk}/m/{first.pk}/retry/")
    await follow(alice_client, stream_path(response.text))
    data = json.loads((await alice_client.request("GET", f"/c/{conversation.pk}/export.json")).text)
    assert [m["content"] for m in data["messages"]] == ["Q", "New answer."]
    assert [m["content"] for m in data["branches"]] == ["Q", "Old answer.", "New answer."]
    assert data["branches"][1]["parent"] == data["branches"][2]["parent"] == data["branches"][0]["id"]
    path_md = (await alice_client.request("GET", f"/c/{conversation.pk}/export.md")).text
    assert "New answer." in path_md and "Old answer." not in path_md
    all_md = (await alice_client.request("GET", f"/c/{conversation.pk}/export.md?branches=all")).text
    assert "Old answer." in all_md and "New answer." in all_md


async def test_another_users_message_cannot_be_edited_or_switched_to(
    alice_client: AsgiClient, bob_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    conversation, _, path = await start_conversation(alice_client, "Mine")
    await follow(alice_client, path)
    question = await Message.objects.aget(conversation=conversation, role="user")
    attempts: list[tuple[str, dict[str, str | list[str]]]] = [("edit", {"text": "Hijacked"}), ("switch", {})]
    for action, data in attempts:
        response = await bob_client.request(
            "POST", f"/c/{conversation.pk}/m/{question.pk}/{action}/", data=data
        )
        assert response.status == 404
    assert await Message.objects.filter(conversation=conversation).acount() == 2


async def test_an_empty_edit_is_refused_and_changes_nothing(
    alice_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    conversation, _, path = await start_conversation(alice_client, "Original")
    await follow(alice_client, path)
    question = await Message.objects.aget(conversation=conversation, role="user")
    response = await alice_client.request(
        "POST", f"/c/{conversation.pk}/m/{question.pk}/edit/", data={"text": "   "}
    )
    assert response.status == 422 and "Type a message" in response.text
    assert await Message.objects.filter(conversation=conversation).acount() == 2
