"""The built-in demo provider: no key, no network. Its reply says plainly that it is simulated."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from chat.providers.base import Finished, ReplyRequest, StreamEvent, TextDelta, ThinkingDelta

DEMO_MODEL = "demo"


def demo_reply(prompt: str) -> str:
    quoted = " ".join(prompt.split())[:120]
    return (
        "**Demo mode — this is a simulated reply, not Claude.** No `ANTHROPIC_API_KEY` is set, so chatsite "
        "streams this text locally to show how replies arrive.\n\n"
        f"You wrote: “{quoted}”\n\n"
        "With a key in `.env`, this page streams Claude's answer token by token, and every reply — finished "
        "or cut off — is saved. Markdown renders once the reply ends:\n\n"
        '```python\ndef greet(name: str) -> str:\n    return f"Hello, {name}!"\n```\n\n'
        "- Stop ends a reply at once and keeps what arrived.\n- Reload mid-reply and it carries on.\n"
    )


DEMO_THINKING = (
    "(Simulated thinking.) With a key set, Claude's extended thinking streams here before the answer, "
    "and folds away once the answer begins."
)


class DemoProvider:
    name = "demo"
    is_demo = True

    def __init__(self, *, token_delay: float) -> None:
        self.token_delay = token_delay

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[StreamEvent, None]:
        last_user = next((m for m in reversed(request.messages) if m["role"] == "user"), None)
        content = last_user["content"] if last_user else ""
        if isinstance(content, list):  # attachments (image/document blocks) come before the text
            prompt = " ".join(b["text"] for b in content if b.get("type") == "text")
            files = sum(1 for b in content if b.get("type") in ("image", "document"))
            if files:
                prompt = f"[{files} attachment{'s' if files > 1 else ''}] {prompt}"
        else:
            prompt = content
        # Words with their following whitespace: about the size of model tokens.
        tokens = re.findall(r"\S+\s*|\s+", demo_reply(prompt))
        if request.on_sending is not None:
            request.on_sending()
        await asyncio.sleep(self.token_delay * 10)  # a realistic pause before the first token
        if request.thinking_budget:  # extended thinking on: a short simulated thought first
            for word in re.findall(r"\S+\s*", DEMO_THINKING):
                yield ThinkingDelta(word)
                await asyncio.sleep(self.token_delay)
        for token in tokens:
            yield TextDelta(token)
            await asyncio.sleep(self.token_delay)
        yield Finished(
            stop_reason="end_turn",
            model=DEMO_MODEL,
            input_tokens=len(prompt.split()),
            output_tokens=len(tokens),
        )
