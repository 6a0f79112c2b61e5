"""Set-up promises: the deploy check is clean with production-like settings; the demo runs with no key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chat.models import Message
from tests.support.asgi_client import AsgiClient
from tests.support.streams import follow, reload, start_conversation, streamed_text

ROOT = Path(__file__).resolve().parent.parent


def test_check_deploy_is_clean_with_production_settings() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")},
        "DEBUG": "False",
        "SECRET_KEY": "x" * 20 + "-a-long-random-production-secret-key-9f8e7d6c5b4a",
        "ALLOWED_HOSTS": "chat.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"} | {"DEBUG": "False"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


@pytest.mark.django_db(transaction=True)
async def test_demo_provider_streams_a_labelled_reply_without_key_or_network(
    alice_client: AsgiClient, background: Any, settings: Any
) -> None:
    settings.ANTHROPIC_API_KEY = ""
    settings.CHAT_PROVIDER = ""
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:9"  # nothing may be contacted
    settings.CHAT_DEMO_TOKEN_DELAY = 0.02  # about a second in all: several deltas even on a loaded machine
    _, reply, path = await start_conversation(alice_client, "Hello demo")
    _, events = await follow(alice_client, path)
    reply = await reload(reply)
    assert reply.status == Message.Status.COMPLETE and reply.model == "demo"
    assert reply.content == streamed_text(events)
    assert reply.content.startswith("**Demo mode — this is a simulated reply, not Claude.**")
    assert "Hello demo" in reply.content
    # It streams in pieces. (How many pieces depends on load: queued deltas go out in one write.)
    assert len([e for e in events if e.event == "delta"]) >= 2
