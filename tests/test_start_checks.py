"""A start's checks, read in one query (`selectors.start_state`): the same answers as the reads they
replace; and a generating reply's stream, opened for its owner alone."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError

from chat import selectors, services
from chat.models import Conversation, Message
from chat.streaming import flusher
from tests.support.asgi_client import AsgiClient
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.streams import start_conversation
from usage.models import Budget


def _conversation(user: User, *, streaming: int = 0, finished: int = 1) -> Conversation:
    conversation = Conversation.objects.create(user=user, title="t")
    for status, count in ((Message.Status.STREAMING, streaming), (Message.Status.COMPLETE, finished)):
        for _ in range(count):
            Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, status=status)
    return conversation


@pytest.mark.django_db
def test_start_state_counts_the_users_generating_replies_in_every_conversation(make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    quiet = _conversation(alice)
    assert selectors.start_state(user_id=alice.pk, conversation_id=quiet.pk) == selectors.StartState(
        streaming=0, conversation_busy=False, budgeted=False
    )
    busy = _conversation(alice, streaming=2)
    _conversation(alice, streaming=1, finished=3)
    _conversation(bob, streaming=4)  # another user's replies never count
    state = selectors.start_state(user_id=alice.pk, conversation_id=quiet.pk)
    assert (state.streaming, state.conversation_busy) == (3, False)
    assert selectors.start_state(user_id=alice.pk, conversation_id=busy.pk).conversation_busy
    assert not selectors.start_state(user_id=alice.pk, conversation_id=None).conversation_busy
    assert selectors.start_state(user_id=bob.pk, conversation_id=None).streaming == 4


@pytest.mark.django_db
def test_start_state_sees_a_users_own_budget_and_their_groups_but_no_one_elses(make_user: Any) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    team, other_team = Group.objects.create(name="team"), Group.objects.create(name="other")
    team.user_set.add(bob)

    def budgeted(user: User) -> bool:
        return selectors.start_state(user_id=user.pk, conversation_id=None).budgeted

    Budget.objects.create(user=carol, limit_usd=1)
    Budget.objects.create(group=other_team, limit_usd=1)  # a group with no member here
    assert not budgeted(alice) and not budgeted(bob) and budgeted(carol)
    Budget.objects.create(group=team, limit_usd=1, pooled=True)
    assert budgeted(bob) and not budgeted(alice)
    Budget.objects.create(user=alice, limit_tokens=10)
    assert budgeted(alice)


@pytest.mark.django_db
def test_a_start_is_refused_by_the_same_checks(make_user: Any, settings: Any) -> None:
    """Through the service: busy conversation, per-user capacity, a used-up budget; nothing written."""
    settings.CHAT_MAX_CONCURRENT_PER_USER = 2
    alice = make_user("alice")
    busy = _conversation(alice, streaming=1)
    with pytest.raises(ValidationError) as refused:
        services.message_send(conversation=busy, text="again")
    assert refused.value.code == "busy"
    _conversation(alice, streaming=1)
    with pytest.raises(ValidationError) as refused:
        services.conversation_start(user=alice, text="a third")
    assert refused.value.code == "capacity"
    Message.objects.filter(status=Message.Status.STREAMING).update(status=Message.Status.COMPLETE)
    Budget.objects.create(user=alice, limit_tokens=0)
    messages = Message.objects.count()
    with pytest.raises(ValidationError) as refused:
        services.conversation_start(user=alice, text="over budget")
    assert refused.value.code == "budget"
    assert Message.objects.count() == messages and Conversation.objects.filter(user=alice).count() == 2
    Budget.objects.all().delete()
    assert services.conversation_start(user=alice, text="now").budgeted is False


@pytest.mark.django_db(transaction=True)
async def test_a_generating_replys_stream_opens_for_its_owner_alone(
    asgi_app: Any,
    alice_client: AsgiClient,
    bob_client: AsgiClient,
    upstream: FakeAnthropic,
    background: Any,
) -> None:
    """While the reply is generated here, another user, or the right reply under another of the owner's
    conversations, gets a 404; its owner gets the stream."""
    gate = threading.Event()
    upstream.enqueue(Text("Held "), Wait(gate, 30), Text("open."), End())
    conversation, reply, path = await start_conversation(alice_client)
    other = await Conversation.objects.acreate(user_id=conversation.user_id, title="another")
    assert flusher.is_local(reply.pk)
    try:
        assert (await bob_client.request("GET", path)).status == 404
        wrong = await alice_client.request("GET", f"/c/{other.pk}/m/{reply.pk}/stream/")
        assert wrong.status == 404
        stream = await alice_client.open_stream(path)
        assert stream.status == 200 and (await stream.next_event()).data == "Held "
    finally:
        gate.set()
    events = await stream.events_until("done")
    assert events[-1].event == "done"
    await stream.drain()
