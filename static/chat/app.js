// chatsite page behaviour: composer keys, resumable SSE, scrolling, code copy. Kept small on purpose.
(() => {
  "use strict";

  // --- Resume streams without gaps or duplicates -------------------------------------------------
  // The browser's own reconnect sends Last-Event-ID; the SSE extension's reconnect (after the browser
  // gives up) re-reads only the URL. Remember each stream's last event id (a character offset) and put
  // it in the URL of any new EventSource for the same stream.
  const lastIds = new Map();
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
  document.addEventListener("htmx:sseMessage", (event) => {
    const source = event.detail.target;
    if (source && source.url && event.detail.lastEventId) {
      lastIds.set(new URL(source.url).pathname, event.detail.lastEventId);
    }
  });
  const createEventSource = (url) => {
    const target = new URL(url, window.location.href);
    const lastId = lastIds.get(target.pathname);
    if (lastId) target.searchParams.set("offset", lastId);
    return new EventSource(target.toString(), { withCredentials: true });
  };
  if (window.htmx) window.htmx.createEventSource = createEventSource;

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
  const scroller = () => document.getElementById("messages");
  const jump = () => document.querySelector(".jump-latest");
  const scrollToLatest = () => {
    const box = scroller();
    if (box) box.scrollTop = box.scrollHeight;
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
  const follow = () => { if (pinned) scrollToLatest(); };
  document.addEventListener("htmx:sseMessage", follow);
  document.addEventListener("htmx:afterSettle", follow);

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
