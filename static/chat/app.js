// chatsite page behaviour: composer keys, resumable SSE, scrolling, code copy. Kept small on purpose.
(() => {
  "use strict";

  // --- Resume streams without gaps or duplicates -------------------------------------------------
  // The browser's own reconnect sends Last-Event-ID; the SSE extension's reconnect (after the browser
  // gives up) re-reads the element's `sse-connect` URL. So each stream's last event id (a character
  // offset) is written into that element's own URL: a reconnect resumes from there, and an element the
  // server renders afresh (Continue rewrites a reply's text, so its offset may go down) starts from the
  // offset the server put in it - never from an id a previous stream of the same reply left behind.
  // Tool-call boxes come whole, again after a reconnect: replace one already shown instead of adding it.
  document.addEventListener("htmx:sseBeforeMessage", (event) => {
    if (event.detail.type !== "tool") return;
    const template = document.createElement("template");
    template.innerHTML = event.detail.data;
    const box = template.content.firstElementChild;
    const shown = box && box.id ? document.getElementById(box.id) : null;
    if (shown) {
      shown.replaceWith(box);
      event.preventDefault();
    }
  });
  const streamOf = (node) => (node instanceof Element ? node.closest("[sse-connect]") : null);
  // A finished Markdown block arrives rendered: drop its text from the open tail (offsets count code
  // points, like the server), or skip it if the page already has it. The stream's URL remembers where
  // the page's blocks end (`done`), for a reconnect.
  document.addEventListener("htmx:sseBeforeMessage", (event) => {
    if (event.detail.type !== "block") return;
    const article = event.target instanceof Element ? event.target.closest("article") : null;
    const tail = article ? article.querySelector(".md-tail") : null;
    const template = document.createElement("template");
    template.innerHTML = event.detail.data;
    const block = template.content.firstElementChild;
    if (!tail || !block) return;
    const end = Number(block.dataset.end);
    const start = Number(tail.dataset.start);
    if (!(end > start)) {
      event.preventDefault();
      return;
    }
    tail.textContent = Array.from(tail.textContent).slice(end - start).join("");
    tail.dataset.start = String(end);
    const stream = streamOf(event.target);
    if (stream) {
      const url = new URL(stream.getAttribute("sse-connect"), window.location.href);
      url.searchParams.set("done", String(end));
      stream.setAttribute("sse-connect", url.pathname + url.search);
    }
  });
  document.addEventListener("htmx:sseMessage", (event) => {
    const stream = streamOf(event.target);
    const lastId = event.detail.lastEventId;
    if (!stream || !lastId) return;
    const url = new URL(stream.getAttribute("sse-connect"), window.location.href);
    url.searchParams.set("offset", lastId);
    stream.setAttribute("sse-connect", url.pathname + url.search);
  });
  // A stream ended on purpose (logout, deactivation, deletion): show why, and never reconnect.
  document.addEventListener("htmx:sseMessage", (event) => {
    if (event.detail.type !== "ended") return;
    if (event.detail.target) event.detail.target.close();
    const stream = streamOf(event.target);
    if (stream) stream.removeAttribute("sse-connect");  // nothing reopens it: not a stall, not a wake-up
    const article = event.target instanceof Element ? event.target.closest("article") : null;
    if (article) {
      article.setAttribute("aria-busy", "false");
      article.classList.add("is-ended");
    }
  });

  // --- Keep streams alive: heartbeats, stalls, coming back ----------------------------------------
  // The server sends `heartbeat` after data-heartbeat seconds of silence. A stream silent for 1.75 of
  // those is stalled somewhere on the way (a proxy, a sleeping laptop, a changed network): reopen it,
  // from the offset in its URL. Coming back (tab shown, page restored, network up) reopens at once
  // instead of waiting out the extension's backoff (up to 64 s). When a reconnect fails, ask the server
  // why: signed out, conversation gone or too many streams is said plainly, and the stream stops.
  const watched = new WeakMap();  // stream element -> { source, seen }
  const watch = (event) => {
    const stream = streamOf(event.target);
    if (!stream || !event.detail || !event.detail.source) return;
    const state = watched.get(stream);
    if (state && state.source === event.detail.source) return;
    const fresh = { source: event.detail.source, seen: Date.now() };
    watched.set(stream, fresh);
    fresh.source.addEventListener("heartbeat", () => { fresh.seen = Date.now(); });
  };
  document.addEventListener("htmx:sseOpen", watch);
  document.addEventListener("htmx:sseError", watch);
  document.addEventListener("htmx:sseMessage", (event) => {
    const state = watched.get(streamOf(event.target));
    if (state) state.seen = Date.now();
  });
  const heartbeatMs = (stream) => 1000 * (parseFloat(stream.dataset.heartbeat) || 15);
  const reopen = (stream) => {
    if (!stream.isConnected || !stream.hasAttribute("sse-connect")) return;
    const state = watched.get(stream);
    if (state) state.source.close();
    const fresh = stream.cloneNode(true);  // its sse-connect URL carries the offset reached so far
    stream.removeAttribute("sse-connect");  // a retry the extension has pending on the old node does nothing
    watched.delete(stream);
    stream.replaceWith(fresh);
    window.htmx.process(fresh);
  };
  const healthy = (stream) => {
    const state = watched.get(stream);
    return !!state && state.source.readyState === EventSource.OPEN
      && Date.now() - state.seen < 1.75 * heartbeatMs(stream);
  };
  setInterval(() => {
    document.querySelectorAll("[sse-connect][data-heartbeat]").forEach((stream) => {
      const state = watched.get(stream);
      if (state && state.source.readyState === EventSource.OPEN && !healthy(stream)) reopen(stream);
    });
  }, 250);
  const wake = () => {
    document.querySelectorAll("[sse-connect]").forEach((stream) => {
      if (!healthy(stream)) reopen(stream);
    });
  };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") wake();
  });
  window.addEventListener("pageshow", (event) => { if (event.persisted) wake(); });
  window.addEventListener("online", wake);

  const STOPPED_BECAUSE = {
    signed_out: "You are signed out, so this reply stopped updating here. Sign in again to see it.",
    gone: "This conversation no longer exists: it was deleted.",
    too_many: "Too many open streams for your account. Close some tabs, then reload this page.",
  };
  const stopStream = (stream, reason) => {
    const state = watched.get(stream);
    if (state) state.source.close();
    stream.removeAttribute("sse-connect");  // no reconnect, by the extension or by us
    stream.setAttribute("aria-busy", "false");
    stream.classList.add("is-ended");
    const slot = stream.querySelector(".stream-ended-slot");
    if (!slot) return;
    const notice = document.createElement("p");
    notice.className = "stream-ended";
    notice.setAttribute("role", "alert");
    notice.dataset.reason = reason;
    notice.textContent = STOPPED_BECAUSE[reason];
    slot.replaceChildren(notice);
  };
  const probing = new WeakSet();
  document.addEventListener("htmx:sseError", async (event) => {
    const stream = streamOf(event.target);
    if (!stream || probing.has(stream) || !stream.hasAttribute("sse-connect")) return;
    probing.add(stream);
    // EventSource never shows a status code: fetch the same URL, read the status, drop the body.
    const abort = new AbortController();
    try {
      const response = await fetch(stream.getAttribute("sse-connect"), {
        redirect: "manual", signal: abort.signal, headers: { Accept: "text/event-stream" },
      });
      abort.abort();
      const status = response.status;
      const reason = response.type === "opaqueredirect" || status === 401 || status === 403 ? "signed_out"
        : status === 404 ? "gone" : status === 429 ? "too_many" : null;
      if (reason) stopStream(stream, reason);
    } catch {
      // Offline or the server is away: the reconnects go on, and `online` reopens at once.
    } finally {
      probing.delete(stream);
    }
  });

  // --- Composer: Enter sends, Shift+Enter makes a new line ---------------------------------------
  document.addEventListener("keydown", (event) => {
    const box = event.target;
    if (!(box instanceof HTMLTextAreaElement) || box.id !== "composer-text") return;
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      box.form.requestSubmit();
    }
  });
  document.addEventListener("input", (event) => {
    const box = event.target;
    if (box instanceof HTMLTextAreaElement && box.id === "composer-text") grow(box);
  });
  const grow = (box) => {
    box.style.height = "auto";
    box.style.height = Math.min(box.scrollHeight, 240) + "px";
  };
  document.addEventListener("htmx:afterRequest", (event) => {
    const form = event.detail.elt;
    if (!(form instanceof HTMLFormElement) || form.id !== "composer") return;
    if (event.detail.successful && event.detail.xhr.status < 300) {
      form.reset();
      const error = document.getElementById("composer-error");
      if (error) error.textContent = "";
      const box = document.getElementById("composer-text");
      if (box) { grow(box); box.focus(); }
      pinned = true;
      scrollToLatest();
    }
  });

  // --- Auto-scroll that pauses when the user scrolls up ------------------------------------------
  let pinned = true;
  const autoTop = new WeakMap();  // box → where our last automatic scroll left it (a swapped-in box: none)
  const scroller = () => document.getElementById("messages");
  const jump = () => document.querySelector(".jump-latest");
  const scrollToLatest = () => {
    const box = scroller();
    if (!box) return;
    box.scrollTop = box.scrollHeight;
    autoTop.set(box, box.scrollTop);
  };
  document.addEventListener("scroll", (event) => {
    const box = scroller();
    if (event.target !== box) return;
    pinned = box.scrollHeight - box.scrollTop - box.clientHeight < 48;
    const button = jump();
    if (button) button.hidden = pinned;
  }, true);
  document.addEventListener("click", (event) => {
    const target = event.target;
    if (target instanceof HTMLElement && target.classList.contains("jump-latest")) {
      pinned = true;
      target.hidden = true;
      scrollToLatest();
    }
  });
  // Scroll events arrive a frame late: a delta landing between the reader's scroll up and its event must
  // not pull the page back down. Scrolled up since our last automatic scroll (by more than the 48 px that
  // count as "at the bottom") means the reader has left the bottom, whatever `pinned` still says.
  const follow = () => {
    const box = scroller();
    if (!box || !pinned) return;
    if (autoTop.has(box) && box.scrollTop < autoTop.get(box) - 48) {
      pinned = false;
      const button = jump();
      if (button) button.hidden = false;
      return;
    }
    scrollToLatest();
  };
  document.addEventListener("htmx:sseMessage", follow);
  document.addEventListener("htmx:afterSettle", follow);

  // --- Extended thinking (issue 13) -------------------------------------------------------------
  // Thinking text streams into a <details> above the answer (event `thinking`). It opens when thinking
  // starts and folds once when the answer's first delta arrives; after that the reader decides.
  document.addEventListener("htmx:sseMessage", (event) => {
    const type = event.detail.type;
    if (type !== "thinking" && type !== "delta") return;
    const article = event.target instanceof Element ? event.target.closest("article") : null;
    const box = article ? article.querySelector("details.msg-thinking") : null;
    if (!box) return;
    if (type === "thinking") {
      if (box.hidden) {
        box.hidden = false;
        box.open = !article.querySelector(".msg-streaming")?.textContent;
      }
    } else if (!box.dataset.folded && event.detail.data) {
      box.dataset.folded = "1";
      box.open = false;
    }
  });

  // --- Attachments (issue 13): attach button, drag and drop, pasted images --------------------------
  // Each file is uploaded at once; the server checks it by content and answers a chip (with a hidden
  // `attachment` input sent with the message) or the composer's error saying what is wrong.
  let uploading = 0;
  const csrfToken = () => {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch {
      return "";
    }
  };
  const showComposerError = (html) => {  // the server's error partial; "" clears; null: a network failure
    const error = document.getElementById("composer-error");
    if (!error) return;
    if (html === "") { error.textContent = ""; return; }
    const template = document.createElement("template");
    template.innerHTML = html || "";
    const fresh = template.content.querySelector("#composer-error");
    error.textContent = fresh ? fresh.textContent : "The file could not be attached. Try again.";
  };
  const upload = async (file) => {
    const input = document.getElementById("composer-file");
    const chips = document.getElementById("composer-attachments");
    if (!input || !chips) return;
    const body = new FormData();
    body.append("file", file, file.name || "pasted-image");
    uploading += 1;
    chips.classList.add("is-uploading");
    try {
      const response = await fetch(input.dataset.uploadUrl, {
        method: "POST",
        body,
        headers: { "X-CSRFToken": csrfToken(), "HX-Request": "true" },
        credentials: "same-origin",
      });
      const html = await response.text();
      if (response.ok) {
        const template = document.createElement("template");
        template.innerHTML = html.trim();
        const chip = template.content.firstElementChild;
        if (chip) {
          chips.appendChild(chip);
          if (window.htmx) window.htmx.process(chip);
        }
        showComposerError("");
      } else {
        showComposerError(html);
      }
    } catch {
      showComposerError(null);
    } finally {
      uploading -= 1;
      if (!uploading) chips.classList.remove("is-uploading");
    }
  };
  const uploadAll = (files) => { for (const file of files) upload(file); };
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement) || input.id !== "composer-file" || !input.files) return;
    uploadAll(Array.from(input.files));
    input.value = "";
  });
  document.addEventListener("paste", (event) => {
    const form = event.target instanceof Element ? event.target.closest("#composer") : null;
    const files = Array.from(event.clipboardData ? event.clipboardData.files : []);
    if (!form || !files.length) return;
    event.preventDefault();  // a pasted image is attached, not inserted as text
    uploadAll(files);
  });
  document.addEventListener("dragover", (event) => {
    const form = event.target instanceof Element ? event.target.closest("#composer") : null;
    if (!form || !event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
    event.preventDefault();
    form.classList.add("is-dropping");
  });
  document.addEventListener("dragleave", (event) => {
    const form = event.target instanceof Element ? event.target.closest("#composer") : null;
    if (form) form.classList.remove("is-dropping");
  });
  document.addEventListener("drop", (event) => {
    const form = event.target instanceof Element ? event.target.closest("#composer") : null;
    if (!form || !event.dataTransfer || !event.dataTransfer.files.length) return;
    event.preventDefault();
    form.classList.remove("is-dropping");
    uploadAll(Array.from(event.dataTransfer.files));
  });
  // Sending while a file is still uploading would send the message without it: wait instead.
  document.addEventListener("htmx:confirm", (event) => {
    const form = event.detail.elt;
    if (!(form instanceof HTMLFormElement) || form.id !== "composer" || !uploading) return;
    event.preventDefault();
    const error = document.getElementById("composer-error");
    if (error) error.textContent = "Wait for the attachment to finish uploading, then send.";
  });
  // Once sent, the chips belong to the message (shown in the transcript): clear them from the composer.
  document.addEventListener("htmx:afterRequest", (event) => {
    const form = event.detail.elt;
    if (!(form instanceof HTMLFormElement) || form.id !== "composer") return;
    if (event.detail.successful && event.detail.xhr.status < 300) {
      const chips = document.getElementById("composer-attachments");
      if (chips) chips.replaceChildren();
    }
  });

  // --- Copy buttons on code blocks --------------------------------------------------------------
  const addCopyButtons = (root) => {
    root.querySelectorAll(".markdown pre:has(> code)").forEach((pre) => {  // code blocks, not tool boxes
      if (pre.querySelector(".copy")) return;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy code");
      button.addEventListener("click", async () => {
        const code = pre.querySelector("code") || pre;
        try {
          await navigator.clipboard.writeText(code.innerText);
          button.textContent = "Copied";
        } catch {
          button.textContent = "Copy failed";
        }
        setTimeout(() => { button.textContent = "Copy"; }, 1500);
      });
      pre.appendChild(button);
    });
  };
  document.addEventListener("htmx:load", (event) => addCopyButtons(event.detail.elt));
  document.addEventListener("DOMContentLoaded", () => {
    addCopyButtons(document);
    scrollToLatest();
    const box = document.getElementById("composer-text");
    if (box) box.focus();
  });
})();
