"""Thin views: parse the request, call a selector or service, render a page or one of its partials."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial, wraps
from typing import Any, Concatenate, ParamSpec

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import OperationalError
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, push_url, reswap, retarget
from django_htmx.middleware import HtmxDetails

from chat import selectors, services, throttling
from chat.decorators import signed_in_required
from chat.exports import export_json, export_markdown
from chat.forms import ConversationSettingsForm
from chat.middleware_inline import request_user
from chat.models import Conversation, Message
from chat.streaming import (
    REQUEST_ARRIVED,
    PreparedReply,
    astart_reply,
    end_reply_streams,
    holding_reply_slot,
    is_draining,
    open_stream_slot,
    prepare_reply,
    reply_events,
    request_stop,
    reserve_reply_slot,
    sse,
    start_reply,
    starting_reply,
)
from chat.streaming.db import request_db, start_db
from usage import selectors as usage_selectors

logger = logging.getLogger(__name__)

PAGE = "chat/conversation.html"
DATABASE_BUSY = ValidationError(
    "The server is too busy to save your message right now. Nothing was saved; try again in a moment.",
    code="database_busy",
)
# While the process drains before exiting (SIGTERM), it starts no reply; the next process will.
DRAINING = ValidationError(
    "The server is restarting, so it is not starting new replies right now. Nothing was saved; try again "
    "in a moment.",
    code="draining",
)


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


P = ParamSpec("P")
StartView = Callable[Concatenate[HtmxHttpRequest, P], Coroutine[Any, Any, HttpResponse]]


def admitted(view: StartView[P]) -> StartView[P]:
    """For every view that starts a reply: reserve one of this process's CHAT_MAX_ACTIVE_REPLIES slots
    before the view runs, so that a refusal costs no database work and saves nothing (503, Retry-After,
    the composer's error); then wait for one of CHAT_MAX_CONCURRENT_STARTS places to run the view (see
    `admission.starting`). The reply's generation task takes the slot over (`start_reply`) and gives it
    back when it ends; a start that fails (invalid, over budget, database busy, any error) gives it back
    when the view returns. See chat/streaming/admission.py."""

    @wraps(view)
    async def wrapped(request: HtmxHttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        scope = getattr(request, "scope", None) or {}
        slot = reserve_reply_slot(requested_at=scope.get(REQUEST_ARRIVED) or time.monotonic())
        if slot is None:
            return await _refused_as_busy(request)
        with holding_reply_slot(slot):
            async with starting_reply():  # CHAT_MAX_CONCURRENT_STARTS: a burst of starts takes turns
                return await view(request, *args, **kwargs)

    return wrapped


def login_locked_out(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    """django-axes' lockout response (AXES_LOCKOUT_CALLABLE) for the login and admin login forms. Every
    attempt during a lockout restarts it, so the wait is always the whole lockout time."""
    return throttling.too_many_attempts(
        request, what="failed login attempts", minutes=settings.LOGIN_LOCKOUT_MINUTES
    )


def _settings_form(conversation: Conversation) -> ConversationSettingsForm:
    return ConversationSettingsForm(
        initial={
            "title": conversation.title,
            "model": conversation.model,
            "system_prompt": conversation.system_prompt,
            "thinking_budget": conversation.thinking_budget or 0,
        }
    )


def _page_context(
    request: HtmxHttpRequest,
    conversation: Conversation | None,
    *,
    messages: list[Message] | None = None,
    settings_inline: bool = True,
    budgeted: bool = True,
    sidebar: bool = True,
) -> dict[str, Any]:
    """The page's context; `messages`: the visible path when the caller has it already. Without
    `settings_inline`, the settings panel loads when it is first opened (`conversation_update`'s GET).
    `budgeted=False`: no budget applies to the user (a start's check just found none), so no notice.
    `sidebar=False`: no conversation list (a pane that leaves the page's list in place)."""
    query = request.GET.get("q", "")
    context: dict[str, Any] = {
        "conversation": conversation,
        "sidebar": selectors.conversation_page(user=request.user, query=query) if sidebar else None,
        "query": query,
        # Called by the template only where the composer is drawn (not for a sidebar search).
        "budget_notice": partial(usage_selectors.budget_notice, user=request.user) if budgeted else None,
    }
    if conversation is not None:
        context["messages"] = (
            messages if messages is not None else selectors.transcript(conversation=conversation)
        )
        if settings_inline:
            context["settings_form"] = _settings_form(conversation)
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
    """The sidebar list (first page, for a search), or with `cursor` the next page of it (load more)."""
    cursor = request.GET.get("cursor", "")
    if not cursor:
        return render(request, PAGE + "#conversation-list", _page_context(request, None))
    query = request.GET.get("q", "")
    page = selectors.conversation_page(user=request.user, query=query, cursor=cursor)
    return render(request, PAGE + "#conversation-items", {"sidebar": page, "query": query})


@login_required
@require_POST
def conversation_pin(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    services.conversation_pin(conversation=conversation, pinned=request.POST.get("pinned") == "1")
    return redirect("chat:conversation", pk=pk)


async def _message_list(request: HtmxHttpRequest, conversation_pk: int) -> HttpResponse:
    """The visible path, re-rendered whole (after an edit or a branch switch)."""
    if not request.htmx:
        return redirect("chat:conversation", pk=conversation_pk)
    conversation = await _owned_conversation(request, conversation_pk)
    messages = await request_db(selectors.transcript)(conversation=conversation)
    return await _render(request, PAGE + "#message-list", {"messages": messages})


@signed_in_required
@require_POST
@admitted
async def message_edit(request: HtmxHttpRequest, pk: int, message_pk: int) -> HttpResponse:
    """Edit a sent question: a new branch from there, with a new reply; the old branch is kept."""
    message = await _owned_message(request, pk, message_pk)
    if refused := await _refused_while_draining(request):
        return refused
    try:
        sent = await services.amessage_edit(message=message, text=request.POST.get("text", ""))
    except ValidationError as error:
        return await _aerror(request, error)
    except OperationalError:
        return await _aerror(request, DATABASE_BUSY, status=503)
    response = await _message_list(request, pk)  # before the reply starts: see message_retry
    start_reply(sent.reply.pk)
    return response


@signed_in_required
@require_POST
async def branch_switch(request: HtmxHttpRequest, pk: int, message_pk: int) -> HttpResponse:
    """Show another alternative ("< 2 / 3 >"): the visible path and the next history follow it."""
    message = await _owned_message(request, pk, message_pk)
    await services.abranch_switch(message=message)
    return await _message_list(request, pk)


def _error(request: HtmxHttpRequest, error: ValidationError, *, status: int = 422) -> HttpResponse:
    rate_limited = getattr(error, "code", None) == "rate_limited"
    retry_after = (error.params or {}).get("retry_after") if rate_limited else None
    if retry_after is not None:
        status = 429
    response = render(request, PAGE + "#composer-error", {"error": " ".join(error.messages)}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if request.htmx:
        response = retarget(reswap(response, "outerHTML"), "#composer-error")
    return response


_aerror = request_db(_error)


async def _refused_as_busy(request: HtmxHttpRequest) -> HttpResponse:
    """503 with Retry-After and the composer's error: this process runs as many replies as it may."""
    seconds = settings.CHAT_BUSY_RETRY_AFTER
    busy = ValidationError(
        f"The server is busy with too many replies right now. Nothing was saved; try again in {seconds} "
        f"second{'s' if seconds != 1 else ''}.",
        code="busy",
    )
    response = await _aerror(request, busy, status=503)
    response["Retry-After"] = str(seconds)
    return response


async def _refused_while_draining(request: HtmxHttpRequest) -> HttpResponse | None:
    """A 503 with the composer's error, before anything is saved, if this process is shutting down."""
    if not is_draining():
        return None
    response = await _aerror(request, DRAINING, status=503)
    response["Retry-After"] = "5"
    return response


# Renders (and the reads a template makes) run on the request database threads: no new thread, no new
# SQLite connection, per render.
_arender = request_db(render)


async def _render(
    request: HtmxHttpRequest, template: str, context: dict[str, Any], **kwargs: Any
) -> HttpResponse:
    # Templates may touch request.user (a lazy sync lookup) and run queries: render where sync code may run.
    return await _arender(request, template, context, **kwargs)


async def _owned_conversation(request: HtmxHttpRequest, pk: int) -> Conversation:
    return await selectors.aconversation_get(user=await request.auser(), pk=pk)


async def _owned_message(request: HtmxHttpRequest, pk: int, message_pk: int) -> Message:
    return await selectors.amessage_get(user=await request.auser(), conversation_pk=pk, pk=message_pk)


@dataclass(frozen=True)
class Committed:
    """A new exchange, committed (`sent`), and its reply's first upstream request, built (`prepared`; None
    if building it failed: the producer then loads the reply itself, and fails it with a reason if it
    must)."""

    sent: services.SentMessage
    prepared: PreparedReply | None


@start_db  # on the first token's path: ahead of renders and stream opens waiting for a thread
def _commit_and_prepare(
    request: HttpRequest, commit: Callable[[User], services.SentMessage], *, new_conversation: bool = False
) -> Committed | None:
    """Everything a new message needs from the database before its reply can start, in one trip to the
    request database threads (each trip is a hand-off of the GIL, which under load waits up to the
    interpreter's switch interval): the session and user (None: not signed in), the service that commits
    the exchange (`commit(user)`), then the reply's first upstream request (`prepare_reply`), so the
    producer starts without reading anything. `new_conversation`: the service created the conversation,
    so the user's message is the reply's whole history (held in memory: no read at all)."""
    user = request_user(request)
    if not isinstance(user, User):
        return None
    sent = commit(user)
    try:
        ancestors = [sent.user_message] if new_conversation else None
        return Committed(sent, prepare_reply(sent.reply, ancestors=ancestors))
    except Exception:
        logger.exception("preparing reply %s failed; its producer will load it", sent.reply.pk)
        return Committed(sent, None)


@request_db
def _render_pane(
    request: HtmxHttpRequest, conversation: Conversation, path: list[Message], *, budgeted: bool
) -> HttpResponse:
    """The new conversation's pane and, out of band, its entry in the sidebar: its reads and its render in
    one trip to the request database threads (each trip is a hand-off of the GIL between threads). This
    render is part of every new conversation's start, so it reads and draws only what is new: the entry
    goes into the page's list where its unpinned conversations begin (re-rendering the list was a query
    and ~50 items, 1.4 of this render's 2.3 ms), and the settings panel loads when it is opened."""
    context = {
        **_page_context(
            request, conversation, messages=path, settings_inline=False, budgeted=budgeted, sidebar=False
        ),
        "sidebar_new": True,
    }
    return render(request, PAGE + "#chat-pane", context)


async def _commit_new_message(
    request: HtmxHttpRequest,
    commit: Callable[[User], services.SentMessage],
    *,
    new_conversation: bool = False,
) -> Committed | HttpResponse:
    """`_commit_and_prepare`, or the answer when there is nothing to start: the login page for a stranger
    (as `login_required`, whose check would cost the request a thread of its own: see chat.handlers), a
    503 while the process drains, the composer's error for a refused message."""
    if refused := await _refused_while_draining(request):
        return refused
    try:
        committed = await _commit_and_prepare(request, commit, new_conversation=new_conversation)
    except ValidationError as error:
        return await _aerror(request, error)
    except OperationalError:  # e.g. SQLite's write lock timed out under load: the transaction rolled back
        return await _aerror(request, DATABASE_BUSY, status=503)
    if committed is None:
        return redirect_to_login(request.get_full_path())
    return committed


@require_POST
@admitted
async def conversation_start(request: HtmxHttpRequest) -> HttpResponse:
    """The first message of a new conversation: create both, then show the new conversation's pane."""
    commit = partial(
        _conversation_start,
        text=request.POST.get("text", ""),
        model=request.POST.get("model", ""),
        attachment_ids=_attachment_ids(request),
    )
    committed = await _commit_new_message(request, commit, new_conversation=True)
    if isinstance(committed, HttpResponse):
        return committed
    sent = committed.sent
    await astart_reply(sent.reply.pk, prepared=committed.prepared)
    conversation = sent.reply.conversation
    url = reverse("chat:conversation", args=[conversation.pk])
    if not request.htmx:
        return redirect(url)
    # The whole path is the two new rows: shown as the service returned them (no read, and the reply is
    # always shown streaming, with its stream to follow, however fast it finishes).
    path = selectors.fresh_path([sent.user_message, sent.reply])
    return push_url(await _render_pane(request, conversation, path, budgeted=sent.budgeted), url)


def _conversation_start(user: User, **fields: Any) -> services.SentMessage:
    return services.conversation_start(user=user, **fields)


def _message_send(user: User, *, pk: int, **fields: Any) -> services.SentMessage:
    """Send in one of `user`'s conversations (404 for anyone else's, before anything is written)."""
    return services.message_send(conversation=selectors.conversation_get(user=user, pk=pk), **fields)


@require_POST
@admitted
async def message_send(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    commit = partial(
        _message_send, pk=pk, text=request.POST.get("text", ""), attachment_ids=_attachment_ids(request)
    )
    committed = await _commit_new_message(request, commit)
    if isinstance(committed, HttpResponse):
        return committed
    sent = committed.sent
    await astart_reply(sent.reply.pk, prepared=committed.prepared)
    if not request.htmx:
        return redirect("chat:conversation", pk=pk)
    return await _render(request, PAGE + "#exchange", {"exchange": [sent.user_message, sent.reply]})


@request_db
def _stream_subject(request: HttpRequest, pk: int, message_pk: int) -> tuple[Any, str | None]:
    """The signed-in user (session and user row) and their message's role, in one call on the request
    database threads; no role for an anonymous request (a 404 for a message not theirs). Always read, even
    for a reply this process is generating: a conversation deleted behind the app's back (no `ended` sent)
    must give a reconnecting page the deleted notice, not the text generated after it (session 13 skipped
    this read for local replies; a browser test caught the difference). One plain SELECT: 0.03 ms of CPU."""
    user = request_user(request)
    if not user.is_authenticated:
        return user, None
    return user, selectors.message_role(user=user, conversation_pk=pk, pk=message_pk)


@require_GET
async def message_stream(request: HtmxHttpRequest, pk: int, message_pk: int) -> HttpResponseBase:
    """Server-sent events for one reply, from the client's offset: `Last-Event-ID` (the browser's own
    reconnect) wins over `?offset=` (what the page knew when it rendered). A user has at most
    CHAT_MAX_STREAMS_PER_USER streams open in this process; beyond that, 429.

    It holds no thread and no database connection while it streams (measured: a thread and ~150 KB of RSS
    per open stream otherwise; chat/handlers.py): the session, user and message are loaded in one call on
    the request database threads, and nothing here calls `sync_to_async` (hence no `login_required`)."""
    user, role = await _stream_subject(request, pk, message_pk)
    if role is None:
        return redirect_to_login(request.get_full_path())
    if role != Message.Role.ASSISTANT:
        raise Http404("Not a reply")
    position = sse.parse_position(request.headers.get("Last-Event-ID"))
    if not position or position == (0, 0):
        raw_offset = request.GET.get("offset", "")
        text_at, thinking_at = sse.parse_position(raw_offset) or (0, 0)
        if "." not in raw_offset:
            thinking_at = _int(request.GET.get("thinking")) or 0
        position = (text_at, thinking_at)
    offset, thinking_offset = position
    # `done`: where the page's rendered Markdown blocks end (a stale, smaller value only resends blocks).
    done = _int(request.GET.get("done")) or 0
    events = reply_events(
        message_pk,
        offset,
        user_id=user.pk,
        session_key=request.session.session_key,
        thinking_offset=thinking_offset,
        done=done,
    )
    slot = open_stream_slot(user.pk, events)
    if slot is None:
        limit = settings.CHAT_MAX_STREAMS_PER_USER
        return HttpResponse(
            f"Too many open streams: at most {limit} per user. Close some tabs, then reload this page.",
            status=429,
            content_type="text/plain; charset=utf-8",
        )
    response = StreamingHttpResponse(slot, content_type="text/event-stream")
    response["Cache-Control"] = "private, no-store"  # a user's reply: never in any cache
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response


def _attachment_ids(request: HttpRequest) -> list[int]:
    """The pending attachments the composer sends with a message (chips' hidden inputs)."""
    return [pk for pk in (_int(v) for v in request.POST.getlist("attachment")) if pk]


def _int(value: str | None) -> int | None:
    try:
        return max(0, int(value)) if value is not None else None
    except ValueError:
        return None


@signed_in_required
@require_POST
async def message_stop(request: HtmxHttpRequest, pk: int, message_pk: int) -> HttpResponse:
    message = await _owned_message(request, pk, message_pk)
    # Both paths: the channel layer reaches the producer at once, the database flag within a save interval.
    if await services.amessage_request_stop(reply=message):
        await request_stop(message.pk)
    return HttpResponse(status=204)


@signed_in_required
@require_POST
@admitted
async def message_retry(request: HtmxHttpRequest, pk: int, message_pk: int) -> HttpResponse:
    message = await _owned_message(request, pk, message_pk)
    if refused := await _refused_while_draining(request):
        return refused
    answered_later = await message.children.aexists()  # regenerating a reply in the middle of the path
    try:
        reply = await services.amessage_retry(reply=message)
    except ValidationError as error:
        return await _aerror(request, error, status=409)
    if answered_later:  # what followed the old reply leaves the page with it
        # Rendered before the reply starts, as the other answers are: a fast reply could otherwise be over
        # before the list is read, and the page would get no stream to follow (the text is the same).
        response = retarget(reswap(await _message_list(request, pk), "outerHTML"), "#messages")
        start_reply(reply.pk)
        return response
    await astart_reply(reply.pk)
    return await _reply_fragment(request, reply)


@signed_in_required
@require_POST
@admitted
async def message_continue(request: HtmxHttpRequest, pk: int, message_pk: int) -> HttpResponse:
    message = await _owned_message(request, pk, message_pk)
    if refused := await _refused_while_draining(request):
        return refused
    try:
        reply = await services.amessage_continue(reply=message)
    except ValidationError as error:
        return await _aerror(request, error, status=409)
    await astart_reply(reply.pk)
    return await _reply_fragment(request, reply)


async def _reply_fragment(request: HtmxHttpRequest, reply: Message) -> HttpResponse:
    if not request.htmx:
        return redirect("chat:conversation", pk=reply.conversation_id)
    return await _render(request, PAGE + "#message", {"message": reply})


@login_required
@require_http_methods(["GET", "POST"])
def conversation_update(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET: the settings panel (for a pane rendered without it; the whole page has it inline). POST: save."""
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    if request.method == "GET":
        if not request.htmx:
            return redirect("chat:conversation", pk=pk)
        context = {"conversation": conversation, "settings_form": _settings_form(conversation)}
        return render(request, PAGE + "#settings-panel", context)
    form = ConversationSettingsForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.conversation_update(
                conversation=conversation,
                title=data["title"] or conversation.title or None,
                model=data["model"],
                system_prompt=data["system_prompt"],
                thinking_budget=int(data["thinking_budget"] or 0) or None,
            )
        except ValidationError as error:
            return render(request, PAGE + "#composer-error", {"error": " ".join(error.messages)}, status=422)
    return redirect("chat:conversation", pk=pk)


@login_required
@require_http_methods(["GET", "POST"])
def conversation_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    if request.method == "POST":
        streaming = services.conversation_delete(conversation=conversation)
        end_reply_streams(reply_ids=streaming, reason="deleted")  # open tabs say so, instead of retrying
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
        branches = request.GET.get("branches") == "all"
        body, content_type = export_markdown(conversation, branches=branches), "text/markdown; charset=utf-8"
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="conversation-{conversation.pk}.{fmt}"'
    return response


# --- Attachments ------------------------------------------------------------------------------------


UPLOAD_OVERHEAD = 64 * 1024  # multipart boundaries and headers around one file


def _user(request: HttpRequest) -> User:
    """The signed-in user of a view behind `login_required`."""
    if not isinstance(request.user, User):
        raise PermissionDenied
    return request.user


@login_required
@require_POST
def attachment_upload(request: HtmxHttpRequest) -> HttpResponse:
    """One file from the composer (attach button, drop or paste). Answers the chip that goes into the
    composer, or the composer's error (422) saying what is wrong; a refused file leaves nothing behind."""
    limit = settings.CHAT_ATTACHMENT_MAX_BYTES
    try:
        # Refuse an oversized body before Django parses (and spools) it: the multipart framing is small.
        declared = _int(request.META.get("CONTENT_LENGTH")) or 0
        if declared > limit + UPLOAD_OVERHEAD:
            raise ValidationError(
                f"That file is {filesizeformat(declared)}; the limit is {filesizeformat(limit)} per file.",
                code="too_large",
            )
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationError("Choose a file to attach.", code="missing")
        # Read at most one byte past the limit: a huge upload is refused without being read whole.
        data = upload.read(limit + 1)
        attachment = services.attachment_create(owner=_user(request), data=data, name=upload.name or "")
    except ValidationError as error:
        return _error(request, error)
    return render(request, PAGE + "#attachment-chip", {"attachment": attachment, "removable": True})


@login_required
@require_POST
def attachment_discard(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Remove a chip from the composer before sending: its row and file go."""
    services.attachment_discard(owner=_user(request), pk=pk)
    return HttpResponse("")


@login_required
@require_GET
def attachment_file(request: HtmxHttpRequest, pk: int) -> FileResponse:
    """The file, to its owner or staff only (404 for anyone else). Images inline, PDFs as downloads; the
    type is the one found by content at upload, and the browser may not sniff another."""
    attachment = selectors.attachment_for_viewer(user=request.user, pk=pk)
    response = FileResponse(
        attachment.file.open("rb"),
        content_type=attachment.media_type,
        as_attachment=not attachment.is_image,
        filename=attachment.original_name,
    )
    return _private_file_headers(response)


@login_required
@require_GET
def attachment_thumbnail(request: HtmxHttpRequest, pk: int) -> FileResponse:
    """An image's small preview, under the same rule as the file itself (owner or staff)."""
    attachment = selectors.attachment_for_viewer(user=request.user, pk=pk)
    if not attachment.thumbnail:
        raise Http404("No preview")
    response = FileResponse(attachment.thumbnail.open("rb"), content_type="image/webp")
    return _private_file_headers(response)


def _private_file_headers(response: FileResponse) -> FileResponse:
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    # Even an inline image never runs as a document: a sandboxed, script-free context if opened directly.
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    return response


# --- Read-only share links ---------------------------------------------------------------------------


@login_required
@require_POST
def share_create(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    conversation = selectors.conversation_get(user=request.user, pk=pk)
    try:
        services.share_create(conversation=conversation)
    except ValidationError as error:
        return _error(request, error)
    return redirect("chat:shares")


@login_required
@require_GET
def share_list(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "chat/shares.html", {"shares": selectors.share_list(user=request.user)})


@login_required
@require_POST
def share_revoke(request: HtmxHttpRequest, share_pk: int) -> HttpResponse:
    services.share_revoke(share=selectors.share_get(user=request.user, pk=share_pk))
    return redirect("chat:shares")


@require_GET
def share_view(request: HttpRequest, token: str) -> HttpResponse:
    """The snapshot, for anyone with the link: no composer, no sidebar, no account data; not indexed, not
    cached (a revoked link is gone at once), and the token never leaves in a Referer."""
    share = selectors.share_get_public(token=token)
    response = render(request, "chat/shared.html", {"share": share, "messages": share.messages()})
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
