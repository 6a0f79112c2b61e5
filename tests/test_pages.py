"""Pages, ownership (404), CSRF, validation and hostile text, through Django's test client."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from chat.models import Conversation, Message

# Transactional: async views release their connection after each query, which needs no wrapping atomic block.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_web(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def make_conversation(user: User, *, title: str = "Plans", reply: str = "Sure.") -> Conversation:
    conversation = Conversation.objects.create(user=user, title=title)
    Message.objects.create(conversation=conversation, role="user", content="Hello?")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content=reply,
        status="complete",
        model="claude-sonnet-5-5",
        input_tokens=5,
        output_tokens=2,
        ttft_ms=120,
    )
    return conversation


def test_signup_login_logout() -> None:
    client = Client()
    response = client.post(
        "/accounts/signup/",
        {"username": "carol", "password1": "a-long-pass-phrase-9", "password2": "a-long-pass-phrase-9"},
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302
    response = client.post("/accounts/login/", {"username": "carol", "password": "a-long-pass-phrase-9"})
    assert response.status_code == 302 and response["Location"] == "/"


def test_chat_pages_need_login(alice: User) -> None:
    conversation = make_conversation(alice)
    client = Client()
    for url in ["/", f"/c/{conversation.pk}/", f"/c/{conversation.pk}/export.md", "/search/?q=x"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url


def test_conversation_page_shows_saved_messages_newest_conversation_first(
    alice: User, alice_web: Client
) -> None:
    older = make_conversation(alice, title="Older")
    newer = make_conversation(alice, title="Newer", reply="**bold** and `code`")
    page = alice_web.get(f"/c/{newer.pk}/").content.decode()
    assert page.index("Newer") < page.index("Older")
    assert "<strong>bold</strong>" in page and "<code>code</code>" in page
    assert "first token 120 ms" in page
    assert str(older.pk) in page


def test_demo_banner_without_key(alice_web: Client, settings: Any) -> None:
    settings.ANTHROPIC_API_KEY = ""
    settings.CHAT_PROVIDER = ""
    assert "Demo mode." in alice_web.get("/").content.decode()
    settings.ANTHROPIC_API_KEY = "sk-test"
    assert "Demo mode." not in alice_web.get("/").content.decode()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/c/{c}/"),
        ("get", "/c/{c}/export.md"),
        ("get", "/c/{c}/export.json"),
        ("get", "/c/{c}/delete/"),
        ("post", "/c/{c}/delete/"),
        ("get", "/c/{c}/settings/"),
        ("post", "/c/{c}/settings/"),
        ("post", "/c/{c}/send/"),
        ("get", "/c/{c}/m/{m}/stream/"),
        ("post", "/c/{c}/m/{m}/stop/"),
        ("post", "/c/{c}/m/{m}/retry/"),
        ("post", "/c/{c}/m/{m}/continue/"),
    ],
)
def test_another_users_urls_answer_404_and_change_nothing(
    alice: User, make_user: Any, method: str, path: str
) -> None:
    conversation = make_conversation(alice)
    reply = conversation.messages.get(role="assistant")
    mallory = Client()
    mallory.force_login(make_user("mallory"))
    url = path.format(c=conversation.pk, m=reply.pk)
    response = getattr(mallory, method)(url, {"text": "hijack", "title": "pwned"})
    assert response.status_code == 404
    conversation.refresh_from_db()
    assert conversation.title == "Plans" and conversation.messages.count() == 2


def test_message_of_another_conversation_is_404(alice: User, alice_web: Client) -> None:
    first, second = make_conversation(alice), make_conversation(alice)
    reply = first.messages.get(role="assistant")
    assert alice_web.get(f"/c/{second.pk}/m/{reply.pk}/stream/").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/c/start/",
        "/c/{c}/send/",
        "/c/{c}/settings/",
        "/c/{c}/delete/",
        "/c/{c}/m/{m}/stop/",
        "/c/{c}/m/{m}/retry/",
        "/c/{c}/m/{m}/continue/",
        "/accounts/logout/",
    ],
)
def test_every_post_enforces_csrf(alice: User, path: str) -> None:
    conversation = make_conversation(alice)
    reply = conversation.messages.get(role="assistant")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(path.format(c=conversation.pk, m=reply.pk), {"text": "hi", "title": "x"})
    assert response.status_code == 403
    assert Conversation.objects.count() == 1 and Message.objects.count() == 2
    conversation.refresh_from_db()
    assert conversation.title == "Plans"


@pytest.mark.parametrize("text", ["", "   ", "\n\t\n", "x" * 101])
def test_empty_or_too_long_message_gets_inline_error_and_saves_nothing(
    alice: User, alice_web: Client, settings: Any, text: str
) -> None:
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    conversation = make_conversation(alice)
    for url in ["/c/start/", f"/c/{conversation.pk}/send/"]:
        response = alice_web.post(url, {"text": text}, HTTP_HX_REQUEST="true")
        assert response.status_code == 422
        body = response.content.decode()
        assert 'id="composer-error"' in body
        assert ("limit is 100" in body) if text.strip() else ("Type a message" in body)
        assert response["HX-Retarget"] == "#composer-error"
    assert Conversation.objects.count() == 1 and Message.objects.count() == 2


XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&"


def test_hostile_text_is_inert_in_user_and_model_messages(alice: User, alice_web: Client) -> None:
    conversation = Conversation.objects.create(user=alice, title=XSS)
    Message.objects.create(conversation=conversation, role="user", content=XSS)
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content=XSS + "\n\n[x](javascript:alert(3))",
        status="complete",
    )
    page = alice_web.get(f"/c/{conversation.pk}/").content.decode()
    assert (
        "<script>alert" not in page
        and "<img src=x" not in page
        and "onerror=alert" not in page.replace("onerror=alert(2)&gt;", "")
    )
    assert 'href="javascript:' not in page  # markdown-it refuses the link; it stays inert text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_rename_and_delete_with_confirmation(alice: User, alice_web: Client) -> None:
    conversation = make_conversation(alice)
    alice_web.post(
        f"/c/{conversation.pk}/settings/",
        {"title": "  New   name ", "model": "", "system_prompt": "Be brief."},
    )
    conversation.refresh_from_db()
    assert conversation.title == "New name" and conversation.system_prompt == "Be brief."
    confirm = alice_web.get(f"/c/{conversation.pk}/delete/")
    assert "Delete this conversation?" in confirm.content.decode()
    assert Conversation.objects.filter(pk=conversation.pk).exists()  # GET changes nothing
    alice_web.post(f"/c/{conversation.pk}/delete/")
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()


def test_unknown_model_is_refused(alice: User, alice_web: Client) -> None:
    conversation = make_conversation(alice)
    response = alice_web.post(f"/c/{conversation.pk}/settings/", {"title": "x", "model": "gpt-9"})
    assert response.status_code in (200, 302, 422)
    conversation.refresh_from_db()
    assert conversation.model == ""


def test_search_only_finds_own_conversations(alice: User, make_user: Any, alice_web: Client) -> None:
    make_conversation(alice, title="Trip to Lisbon")
    make_conversation(alice, title="Taxes", reply="Remember the receipts for Lisbon")
    make_conversation(make_user("bob"), title="Lisbon secrets")
    body = alice_web.get("/search/?q=lisbon").content.decode()
    assert "Trip to Lisbon" in body and "Taxes" in body and "Lisbon secrets" not in body


def test_export_markdown_and_json(alice: User, alice_web: Client) -> None:
    conversation = make_conversation(alice)
    md = alice_web.get(f"/c/{conversation.pk}/export.md")
    assert md["Content-Type"].startswith("text/markdown") and "## You\n\nHello?" in md.content.decode()
    data = alice_web.get(f"/c/{conversation.pk}/export.json").json()
    assert [m["content"] for m in data["messages"]] == ["Hello?", "Sure."]
    assert data["messages"][1]["output_tokens"] == 2


def test_admin_is_staff_only_and_shows_messages_and_totals(alice: User) -> None:
    conversation = make_conversation(alice)
    client = Client()
    client.force_login(alice)
    assert client.get("/admin/chat/conversation/").status_code == 302  # not staff
    staff = User.objects.create_superuser("root", "root@example.com", "pw-long-enough-1")
    client.force_login(staff)
    listing = client.get("/admin/chat/conversation/?q=Sure").content.decode()
    assert "Plans" in listing
    detail = client.get(reverse("admin:chat_conversation_change", args=[conversation.pk])).content.decode()
    assert detail.index("Hello?") < detail.index("Sure.")
    assert client.get("/admin/chat/conversation/?messages__status__exact=complete").status_code == 200
    assert client.get("/admin/chat/message/").status_code == 200


def test_a_locked_database_gets_a_clear_503_and_saves_nothing(
    alice: User, alice_web: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    from chat import services

    def locked(**kwargs: object) -> None:
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "conversation_start", locked)
    response = alice_web.post("/c/start/", {"text": "hello"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 503
    assert "too busy to save your message" in response.content.decode()
    assert Conversation.objects.count() == 0 and Message.objects.count() == 0
