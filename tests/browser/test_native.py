"""Attachments and extended thinking in a real browser: paste an image, attach a PDF, send, see the thumbnail,
reload; thinking streams live into its section, folds when the answer begins, and resumes after a reload."""

from __future__ import annotations

import base64
import threading

import pytest
from playwright.sync_api import FilePayload, Page, Route, expect

from tests.browser.conftest import LiveServer, finished_reply, last_reply, send, shot, wait_ready
from tests.support.caching import without_breakpoints
from tests.support.fake_anthropic import End, FakeAnthropic, Signature, Text, Thinking, Wait
from tests.support.files import image_bytes, pdf_bytes

pytestmark = pytest.mark.browser

SIG = "EqQBCkgIARABGAIiQLbrowser"

# Build a File from bytes in the page and dispatch a real paste event carrying it, as a pasted screenshot is.
PASTE_JS = """
([data, name, type]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type }));
  const box = document.getElementById("composer-text");
  box.focus();
  const event = new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true });
  return box.dispatchEvent(event);
}
"""


def paste_file(page: Page, data: bytes, name: str, media_type: str) -> None:
    page.evaluate(PASTE_JS, [base64.b64encode(data).decode(), name, media_type])


DROP_JS = """
([data, name, type]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type }));
  const target = document.getElementById("composer-text");
  for (const kind of ["dragenter", "dragover", "drop"]) {
    target.dispatchEvent(new DragEvent(kind, { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }
}
"""


def loaded(page: Page, selector: str) -> bool:
    """The image really loaded (through the authorised view), not just an <img> tag."""
    return bool(page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0"))


def test_paste_an_image_send_it_see_the_thumbnail_and_reload(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    png = image_bytes("PNG", (120, 80), "#2563eb")
    upstream.enqueue(Text("A blue rectangle."), End())
    wait_ready(page)
    paste_file(page, png, "image.png", "image/png")
    chip = page.locator("#composer-attachments .attachment-chip")
    expect(chip).to_have_count(1)
    expect(chip.locator("img")).to_have_attribute("alt", "image.png")
    expect(page.locator("#composer-text")).to_have_value("")  # pasted as an attachment, not as text
    shot(page, "attachment-pasted")
    send(page, "What is in this picture?")
    user = page.locator("#messages > article.msg-user").last
    expect(user.locator(".attachment-thumb img")).to_be_visible()
    expect(page.locator("#composer-attachments .attachment-chip")).to_have_count(0)  # the chip went with it
    expect(finished_reply(page).locator(".msg-body")).to_have_text("A blue rectangle.")
    page.wait_for_function(
        "() => { const i = document.querySelector('article.msg-user .attachment-thumb img');"
        " return i && i.complete && i.naturalWidth === 120; }"
    )
    content = without_breakpoints(upstream.requests[0]["body"]["messages"])[0]["content"]
    assert [block["type"] for block in content] == ["image", "text"]
    assert base64.b64decode(content[0]["source"]["data"]) == png
    shot(page, "attachment-sent")
    page.reload()
    expect(page.locator("article.msg-user .attachment-thumb img")).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.querySelector('article.msg-user .attachment-thumb img');"
        " return i && i.complete && i.naturalWidth === 120; }"
    )
    assert loaded(page, "article.msg-user .attachment-thumb img")


def test_attach_button_takes_a_pdf_and_refuses_a_disguised_file(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer, username: str
) -> None:
    upstream.enqueue(Text("A two-page paper."), End())
    wait_ready(page)
    page.set_input_files(
        "#composer-file",
        files=[FilePayload(name="notes.png", mimeType="image/png", buffer=b"not an image at all")],
    )
    expect(page.locator("#composer-error")).to_contain_text("named like a PNG image but is not one")
    expect(page.locator("#composer-attachments .attachment-chip")).to_have_count(0)
    page.set_input_files(
        "#composer-file",
        files=[FilePayload(name="paper.pdf", mimeType="application/pdf", buffer=pdf_bytes(2))],
    )
    chip = page.locator("#composer-attachments .attachment-chip")
    expect(chip).to_contain_text("paper.pdf")
    expect(chip).to_contain_text("2 pages")
    expect(page.locator("#composer-error")).to_have_text("")
    send(page, "Summarise")
    expect(page.locator("article.msg-user .file-chip")).to_contain_text("paper.pdf")
    expect(finished_reply(page).locator(".msg-body")).to_have_text("A two-page paper.")
    content = without_breakpoints(upstream.requests[0]["body"]["messages"])[0]["content"]
    assert [block["type"] for block in content] == ["document", "text"]
    # Only the PDF was stored for this user: the refused file left no row (the server's DB is shared).
    rows = chat_server.rows(
        "SELECT a.original_name, a.media_type, a.pages, a.message_id IS NOT NULL FROM chat_attachment a"
        " JOIN auth_user u ON u.id = a.owner_id WHERE u.username = ?",
        username,
    )
    assert rows == [("paper.pdf", "application/pdf", 2, 1)]


def test_thinking_streams_live_folds_when_the_answer_begins_and_resumes_after_reload(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    upstream.enqueue(Text("Hello."), End())
    send(page, "Hi")
    expect(finished_reply(page).locator(".msg-body")).to_have_text("Hello.")
    # Turn thinking on in the conversation's Settings panel.
    page.get_by_text("Settings", exact=True).click()
    page.get_by_label("Extended thinking").select_option("1024")
    page.get_by_role("button", name="Save").click()
    wait_ready(page)
    expect(page.get_by_label("Extended thinking")).to_have_value("1024")

    more, answer = threading.Event(), threading.Event()
    upstream.enqueue(
        Thinking("First idea. "),
        Wait(more, timeout=30),
        Thinking("Second idea."),
        Signature(SIG),
        Text("The answer "),
        Wait(answer, timeout=30),
        Text("is 42."),
        End(),
    )
    send(page, "Think about it")
    live = last_reply(page)
    box = live.locator("details.msg-thinking")
    expect(box.locator(".thinking-text")).to_have_text("First idea. ")
    expect(box).to_have_attribute("open", "")
    shot(page, "thinking-live")
    page.reload()  # mid-thinking: the saved thinking shows, open, and the stream resumes from its offset
    live = last_reply(page)
    box = live.locator("details.msg-thinking")
    expect(box.locator(".thinking-text")).to_have_text("First idea. ")
    expect(box).to_have_attribute("open", "")
    wait_ready(page)
    more.set()
    expect(live.locator(".msg-streaming")).to_have_text("The answer ")
    expect(box.locator(".thinking-text")).to_have_text("First idea. Second idea.")  # no gap, no duplicate
    expect(box).not_to_have_attribute("open", "")  # folded when the answer began
    shot(page, "thinking-folded")
    answer.set()
    done = finished_reply(page)
    expect(done.locator(".msg-body")).to_have_text("The answer is 42.")
    done_box = done.locator("details.msg-thinking")
    expect(done_box).not_to_have_attribute("open", "")
    done_box.locator("summary").click()
    expect(done_box.locator(".thinking-text")).to_have_text("First idea. Second idea.")
    body = upstream.requests[1]["body"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    page.reload()
    expect(finished_reply(page).locator("details.msg-thinking .thinking-text")).to_have_text(
        "First idea. Second idea.", use_inner_text=False
    )


def test_a_dropped_image_is_attached_and_sending_waits_for_an_upload_in_flight(
    page: Page, upstream: FakeAnthropic, chat_server: LiveServer
) -> None:
    held: list[Route] = []
    page.route("**/attachments/", lambda route: held.append(route))  # hold the upload until we let it go
    wait_ready(page)
    jpeg = image_bytes("JPEG", (50, 40))
    page.evaluate(DROP_JS, [base64.b64encode(jpeg).decode(), "photo.jpg", "image/jpeg"])
    page.wait_for_function("() => document.querySelector('#composer-attachments.is-uploading') !== null")
    for _ in range(200):  # the route handler runs while Playwright waits: let it see the request
        if held:
            break
        page.wait_for_timeout(25)
    assert len(held) == 1
    send(page, "Describe it")  # too early: the message would go without its photo
    expect(page.locator("#composer-error")).to_have_text(
        "Wait for the attachment to finish uploading, then send."
    )
    expect(page.locator("#messages > article")).to_have_count(0)
    assert upstream.request_count == 0
    held[0].continue_()
    expect(page.locator("#composer-attachments .attachment-chip img")).to_have_attribute("alt", "photo.jpg")
    upstream.enqueue(Text("A photo."), End())
    page.locator("#composer-text").press("Enter")
    expect(page.locator("article.msg-user .attachment-thumb img")).to_be_visible()
    expect(finished_reply(page).locator(".msg-body")).to_have_text("A photo.")
    content = without_breakpoints(upstream.requests[0]["body"]["messages"])[0]["content"]
    assert content[0]["source"]["media_type"] == "image/jpeg"
    assert base64.b64decode(content[0]["source"]["data"]) == jpeg
    assert content[1] == {"type": "text", "text": "Describe it"}
