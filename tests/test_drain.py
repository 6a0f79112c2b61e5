"""Deploys lose no reply: a real daphne process told to stop (SIGTERM) refuses new replies, lets the running
ones finish for up to CHAT_DRAIN_SECONDS, saves what is still running then as interrupted, and exits.

One daphne process on a SQLite file and the in-memory layer (the drain is the same with PostgreSQL and
Redis); the fake upstream holds the reply at a gate so the order of events is the test's to decide."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat.models import Message
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.live_client import LiveClient, ids, sse_path
from tests.support.live_server import DaphneProcess, manage
from tests.support.waiting import until

INTERRUPTED_BY_RESTART = "The server restarted before this response finished."


@pytest.fixture(scope="module")
def drain_upstream() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def drain_env(drain_upstream: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated SQLite database with one user, for daphne processes started by each test."""
    data_dir = tmp_path_factory.mktemp("drain-data")
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "CHAT_", "ANTHROPIC_", "DATABASE_", "REDIS_"))
        },
        "DEBUG": "True",
        "DATA_DIR": str(data_dir),
        "CHAT_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": drain_upstream.url,
        "CHAT_UPSTREAM_MAX_RETRIES": "0",
        "CHAT_SAVE_INTERVAL": "0.1",
        "PYTHONUNBUFFERED": "1",
    }
    manage(env, "migrate", "--noinput")
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('drain', password='drain-pass-1')",
    )
    return env


@pytest.fixture
async def user() -> AsyncIterator[LiveClient]:
    client = LiveClient()
    yield client
    await client.close()


def db_row(env: dict[str, str], reply_id: int) -> dict[str, Any]:
    with sqlite3.connect(Path(env["DATA_DIR"]) / "db.sqlite3") as conn:
        row = conn.execute(
            "SELECT content, status, error_message FROM chat_message WHERE id = ?", (reply_id,)
        ).fetchone()
    assert row is not None
    return {"content": row[0], "status": row[1], "error_message": row[2]}


def message_count(env: dict[str, str], conversation_id: int) -> int:
    with sqlite3.connect(Path(env["DATA_DIR"]) / "db.sqlite3") as conn:
        row = conn.execute(
            "SELECT count(*) FROM chat_message WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()
    return int(row[0])


def conversation_count(env: dict[str, str]) -> int:
    with sqlite3.connect(Path(env["DATA_DIR"]) / "db.sqlite3") as conn:
        row = conn.execute("SELECT count(*) FROM chat_conversation").fetchone()
    return int(row[0])


def wait_until_sent(upstream: FakeAnthropic, text: str, timeout: float = 10.0) -> None:
    """Until the fake upstream has written `text` (its recorded deltas) to the server process."""
    deadline = time.monotonic() + timeout
    while "".join(t for t, _ in upstream.sent) != text:
        assert time.monotonic() < deadline, f"upstream sent {upstream.sent!r}, not {text!r}"
        time.sleep(0.01)


def drained_line(proc: DaphneProcess) -> str:
    match = re.search(r"drained in [0-9.]+s: \d+ replies finished, \d+ saved as interrupted", proc.log_text())
    assert match, proc.log()
    return match.group(0)


async def test_sigterm_refuses_new_replies_and_lets_the_running_one_finish(
    drain_env: dict[str, str], drain_upstream: FakeAnthropic, user: LiveClient, tmp_path: Path
) -> None:
    drain_upstream.reset()
    gate = threading.Event()
    drain_upstream.enqueue(
        Text("Finished "), Text("during "), Wait(gate, timeout=60), Text("the drain."), End()
    )
    proc = DaphneProcess({**drain_env, "CHAT_DRAIN_SECONDS": "60"}, tmp_path, "draining").start()
    try:
        await user.login(proc.url, "drain", "drain-pass-1")
        status, fragment = await user.post(proc.url + "/c/start/", {"text": "Deploy during me"})
        assert status == 200, fragment
        conversation_id, reply_id = ids(sse_path(fragment))
        wait_until_sent(drain_upstream, "Finished during ")

        proc.terminate()
        terminated_at = time.monotonic()
        process = proc.process
        assert process is not None
        await until(lambda: "draining:" in proc.log_text() or process.poll() is not None, "SIGTERM handled")
        assert process.poll() is None, f"exited at SIGTERM, leaving the reply {db_row(drain_env, reply_id)}"
        # While the reply is held upstream, the process is alive and refuses a new message, saving nothing.
        status, body = await user.post(f"{proc.url}/c/{conversation_id}/send/", {"text": "One more"})
        assert status == 503, body
        assert 'id="composer-error"' in body and "restarting" in body and "Nothing was saved" in body
        assert message_count(drain_env, conversation_id) == 2  # the first message and its reply, no more
        conversations = conversation_count(drain_env)
        status, body = await user.post(proc.url + "/c/start/", {"text": "A new conversation"})
        assert status == 503 and "restarting" in body, body
        assert conversation_count(drain_env) == conversations
        assert process.poll() is None
        assert db_row(drain_env, reply_id)["status"] == "streaming"

        gate.set()
        released_at = time.monotonic()
        exit_code = proc.wait(timeout=30)
        exited_at = time.monotonic()
        assert exit_code == 0, proc.log()
        row = db_row(drain_env, reply_id)
        assert row["status"] == "complete" and row["content"] == "Finished during the drain."
        assert drain_upstream.client_disconnects == 0  # the reply was not cut: it ran to its end
        line = drained_line(proc)
        assert "1 replies finished, 0 saved as interrupted" in line
        print(
            f"SIGTERM→gate release {released_at - terminated_at:.2f}s (held), release→exit "
            f"{exited_at - released_at:.2f}s; {line}"
        )
    finally:
        gate.set()
        proc.stop()


async def test_sigterm_saves_a_reply_still_running_at_the_deadline_as_interrupted(
    drain_env: dict[str, str], drain_upstream: FakeAnthropic, user: LiveClient, tmp_path: Path
) -> None:
    drain_upstream.reset()
    gate = threading.Event()
    drain_upstream.enqueue(
        Text("Partial when "), Text("the drain ended"), Wait(gate, timeout=60), Text(" never sent"), End()
    )
    proc = DaphneProcess({**drain_env, "CHAT_DRAIN_SECONDS": "1"}, tmp_path, "deadline").start()
    try:
        await user.login(proc.url, "drain", "drain-pass-1")
        status, fragment = await user.post(proc.url + "/c/start/", {"text": "Outlast the drain"})
        assert status == 200, fragment
        _, reply_id = ids(sse_path(fragment))
        wait_until_sent(drain_upstream, "Partial when the drain ended")

        proc.terminate()
        terminated_at = time.monotonic()
        exit_code = proc.wait(timeout=30)  # the gate is never opened: only the drain's deadline ends it
        exited_at = time.monotonic()
        assert exit_code == 0, proc.log()
        row = db_row(drain_env, reply_id)
        assert row["status"] == "interrupted", row
        assert row["content"] == "Partial when the drain ended"
        assert row["error_message"] == INTERRUPTED_BY_RESTART
        assert Message(role=Message.Role.ASSISTANT, status=row["status"], content=row["content"]).can_continue
        assert drain_upstream.client_disconnects == 1  # the upstream request was closed, not left running
        line = drained_line(proc)
        assert "0 replies finished, 1 saved as interrupted" in line
        print(f"SIGTERM→exit {exited_at - terminated_at:.2f}s with CHAT_DRAIN_SECONDS=1; {line}")
    finally:
        gate.set()
        proc.stop()
