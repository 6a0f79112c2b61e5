"""Thin views: parse the request, call a selector or service, render a page or one of its partials."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import OperationalError, connections
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from chat import lifecycle, pubsub, selectors, services
from chat.exports import export_json, export_markdown
from chat.forms import ConversationSettingsForm, SignupForm
from chat.models import Conversation, Message
from chat.subscriber import reply_events

PAGE = "chat/conversation.html"
DATABASE_BUSY = ValidationError(
    "The server is too busy to save your message right now. Nothing was saved; try again in a moment.",
    code="database_busy",
)


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def signup(request: HtmxHttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("chat:home")
    return render(request, "registration/signup.html", {"form": form})


def _page_context(request: HtmxHttpRequest, conversation: Conversation | None) -> dict[str, Any]:
    query = request.GET.get("q", "")
    context: dict[str, Any] = {
        "conversation": conversation,
        "conversations": selectors.conversation_list(user=request.user, query=query),
        "query": query,
    }
    if conversation is not None:
        context["messages"] = list(selectors.transcript(conversation=conversation))
        context["settings_form"] = ConversationSettingsForm(
            initial={
                "title": conversation.title,
                "model": conversation.model,
                "system_prompt": conversation.system_prompt,
            }
        )
    return context


@login_required
@require_GET
def home(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, PAGE, _page_context(request, None))


@login_required
@require_GET
def conversation_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    return render(request, PAGE, _page_context(request, conversation))


@login_required
@require_GET
def conversation_search(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, PAGE + "#conversation-list", _page_context(request, None))


def _error(request: HtmxHttpRequest, error: ValidationError, *, status: int = 422) -> HttpResponse:
    response = render(request, PAGE + "#composer-error", {"error": " ".join(error.messages)}, status=status)
    if request.htmx:
        response["HX-Retarget"] = "#composer-error"
        response["HX-Reswap"] = "outerHTML"
    return response


async def _render(
    request: HtmxHttpRequest, template: str, context: dict[str, Any], **kwargs: Any
) -> HttpResponse:
    # Templates may touch request.user (a lazy sync lookup), so render where sync code is allowed.
    return await sync_to_async(render)(request, template, context, **kwargs)


async def _owned_conversation(request: HtmxHttpRequest, pk: int) -> Conversation:
    user = await request.auser()
    return await database_sync_to_async(selectors.conversation_get)(user=user, pk=pk)


async def _owned_message(request: HtmxHttpRequest, pk: int, message_pk: int) -> Message:
    user = await request.auser()
    return await database_sync_to_async(selectors.message_get)(user=user, conversation_pk=pk, pk=message_pk)


@login_required
@require_POST
async def conversation_start(request: HtmxHttpRequest) -> HttpResponse:
    """The first message of a new conversation: create both, then show the new conversation's pane."""
    user = await request.auser()
    text = request.POST.get("text", "")
    try:
        sent = await database_sync_to_async(services.conversation_start)(
            user=user, text=text, model=request.POST.get("model", "")
        )
    except ValidationError as error:
        return await sync_to_async(_error)(request, error)
    except OperationalError:  # e.g. SQLite's write lock timed out under load: the transaction rolled back
        return await sync_to_async(_error)(request, DATABASE_BUSY, status=503)
    lifecycle.start_reply(sent.reply.pk)
    conversation = sent.reply.conversation
    url = reverse("chat:conversation", args=[conversation.pk])
    if not request.htmx:
        return redirect(url)
    context = await sync_to_async(_page_context)(request, conversation)
    response = await _render(request, PAGE + "#chat-pane", {**context, "oob_sidebar": True})
    response["HX-Push-Url"] = url
    return response


@login_required
@require_POST
async def message_send(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    conversation = await _owned_conversation(request, pk)
    try:
        sent = await database_sync_to_async(services.message_send)(
            conversation=conversation, text=request.POST.get("text", "")
        )
    except ValidationError as error:
        return await sync_to_async(_error)(request, error)
    except OperationalError:  # e.g. SQLite's write lock timed out under load: the transaction rolled back
        return await sync_to_async(_error)(request, DATABASE_BUSY, status=503)
    lifecycle.start_reply(sent.reply.pk)
    if not request.htmx:
        return redirect("chat:conversation", pk=pk)
    return await _render(request, PAGE + "#exchange", {"exchange": [sent.user_message, sent.reply]})


@login_required
@require_GET
async def message_stream(request: HtmxHttpRequest, pk: int, message_pk: int) -> StreamingHttpResponse:
    """Server-sent events for one reply, from the client's offset: `Last-Event-ID` (the browser's own
    reconnect) wins over `?offset=` (what the page knew when it rendered)."""
    message = await _owned_message(request, pk, message_pk)
    if message.role != Message.Role.ASSISTANT:
        raise Http404("Not a reply")
    offset = _int(request.headers.get("Last-Event-ID")) or _int(request.GET.get("offset")) or 0
    # Loading the session and user opened a connection in this request's thread, and Django would keep it
    # until the response ends: for a stream, its whole life (a pooled PostgreSQL connection, or an SQLite
    # connection and its page cache, per open stream). Give it back before streaming.
    await sync_to_async(connections.close_all)()
    response = StreamingHttpResponse(reply_events(message.pk, offset), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response


def _int(value: str | None) -> int | None:
    try:
        return max(0, int(value)) if value is not None else None
    except ValueError:
        return None


@login_required
@require_POST
async def message_stop(request: HtmxHttpRequest, pk: int, message_pk: int) -> HttpResponse:
    message = await _owned_message(request, pk, message_pk)
    # Both paths: the channel layer reaches the producer at once, the database flag within a save interval.
    if await database_sync_to_async(services.message_request_stop)(reply=message):
        await pubsub.request_stop(message.pk)
    return HttpResponse(status=204)


@login_required
@require_POST
async def message_retry(request: HtmxHttpRequest, pk: int, message_pk: int) -> HttpResponse:
    message = await _owned_message(request, pk, message_pk)
    try:
        reply = await database_sync_to_async(services.message_retry)(reply=message)
    except ValidationError as error:
        return await sync_to_async(_error)(request, error, status=409)
    lifecycle.start_reply(reply.pk)
    return await _reply_fragment(request, reply)


@login_required
@require_POST
async def message_continue(request: HtmxHttpRequest, pk: int, message_pk: int) -> HttpResponse:
    message = await _owned_message(request, pk, message_pk)
    try:
        reply = await database_sync_to_async(services.message_continue)(reply=message)
    except ValidationError as error:
        return await sync_to_async(_error)(request, error, status=409)
    lifecycle.start_reply(reply.pk)
    return await _reply_fragment(request, reply)


async def _reply_fragment(request: HtmxHttpRequest, reply: Message) -> HttpResponse:
    if not request.htmx:
        return redirect("chat:conversation", pk=reply.conversation_id)
    return await _render(request, PAGE + "#message", {"message": reply})


@login_required
@require_POST
def conversation_update(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    form = ConversationSettingsForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.conversation_update(
                conversation=conversation,
                title=data["title"] or conversation.title or None,
                model=data["model"],
                system_prompt=data["system_prompt"],
            )
        except ValidationError as error:
            return render(request, PAGE + "#composer-error", {"error": " ".join(error.messages)}, status=422)
    return redirect("chat:conversation", pk=pk)


@login_required
@require_http_methods(["GET", "POST"])
def conversation_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    if request.method == "POST":
        services.conversation_delete(conversation=conversation)
        if request.htmx:
            return HttpResponseClientRedirect(reverse("chat:home"))
        return redirect("chat:home")
    return render(request, "chat/conversation_confirm_delete.html", {"conversation": conversation})


@login_required
@require_GET
def conversation_export(request: HtmxHttpRequest, pk: int, fmt: str) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    if fmt == "json":
        body, content_type = export_json(conversation), "application/json; charset=utf-8"
    else:
        body, content_type = export_markdown(conversation), "text/markdown; charset=utf-8"
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="conversation-{conversation.pk}.{fmt}"'
    return response
