"""Deactivation in the admin takes effect at once: the user's open streams end with a reason, the reply
being written for them stops (keeping its text), and their next request is refused."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import User

from chat.models import Message
from tests.support.asgi_client import AsgiClient, session_cookies
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.streams import eventually, reload, start_conversation

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff_client(asgi_app: Any, db: None) -> AsgiClient:
    root = User.objects.create_superuser("root", "root@example.com", "x" * 20)
    return AsgiClient(asgi_app, session_cookies(root))


def admin_change_form(user: User, *, active: bool) -> dict[str, str | list[str]]:
    """The admin's user change form as a browser submits it (an unticked checkbox is simply absent)."""
    form: dict[str, str | list[str]] = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": user.email,
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "sso_identities-TOTAL_FORMS": "0",
        "sso_identities-INITIAL_FORMS": "0",
        "sso_identities-MIN_NUM_FORMS": "0",
        "sso_identities-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    if active:
        form["is_active"] = "on"
    return form


async def _status_is(pk: int, status: str) -> bool:
    return await Message.objects.filter(pk=pk, status=status).aexists()


async def test_deactivating_in_the_admin_ends_open_streams_stops_the_reply_and_signs_out(
    alice: User,
    alice_client: AsgiClient,
    bob_client: AsgiClient,
    staff_client: AsgiClient,
    upstream: FakeAnthropic,
    background: Any,
) -> None:
    gate = threading.Event()
    upstream.enqueue(Text("Before. "), Wait(gate, timeout=30), Text("After."), End())
    _, reply, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    seen = ""
    while seen != "Before. ":
        seen += (await stream.next_event()).data
    assert (await bob_client.request("GET", "/", htmx=False)).status == 200

    saved = await staff_client.request(
        "POST",
        f"/admin/auth/user/{alice.pk}/change/",
        data=admin_change_form(alice, active=False),
        htmx=False,
    )
    assert saved.status == 302, saved.text

    # The open stream ends at once, saying why, while the upstream is still holding back "After.".
    event = await stream.next_event()
    assert event.event == "ended" and 'data-reason="deactivated"' in event.data
    assert "This account was deactivated" in event.data
    await stream.drain()
    # The reply stops before the model sends more, so nothing more is spent; its text is kept.
    await eventually(lambda: _status_is(reply.pk, Message.Status.STOPPED))
    assert not gate.is_set()
    gate.set()
    assert (await reload(reply)).content == "Before. "

    # The next request, to a sync page or an async endpoint, finds nobody signed in.
    page = await alice_client.request("GET", "/", htmx=False)
    assert page.status == 302 and page.headers["location"].startswith("/accounts/login/")
    again = await alice_client.open_stream(path)
    assert again.status == 302
    # Someone else is untouched.
    assert (await bob_client.request("GET", "/", htmx=False)).status == 200


async def test_saving_an_active_user_ends_nothing(
    alice: User, alice_client: AsgiClient, staff_client: AsgiClient, upstream: FakeAnthropic, background: Any
) -> None:
    gate = threading.Event()
    upstream.enqueue(Text("Before. "), Wait(gate, timeout=30), Text("After."), End())
    _, reply, path = await start_conversation(alice_client)
    stream = await alice_client.open_stream(path)
    saved = await staff_client.request(
        "POST", f"/admin/auth/user/{alice.pk}/change/", data=admin_change_form(alice, active=True), htmx=False
    )
    assert saved.status == 302, saved.text
    gate.set()
    events = await stream.events_until("done")
    assert "ended" not in {e.event for e in events}
    await eventually(lambda: _status_is(reply.pk, Message.Status.COMPLETE))
    assert (await reload(reply)).content == "Before. After."
