"""A tool can never freeze the process: computation runs in a child process, killed at the tool's timeout;
the calculator bounds every integer before computing it and refuses complex results."""

from __future__ import annotations

import asyncio
import html
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat.models import Message
from chat.tools import ToolError
from chat.tools.calculator import evaluate
from chat.tools.registry import Tool, ToolContext, register
from chat.tools.runner import run_tool_call
from chat.tools.sandbox import run_isolated
from tests.support.asgi_client import AsgiClient
from tests.support.fake_anthropic import End, FakeAnthropic, Text, ToolUse, Wait
from tests.support.live_client import LiveClient, ids, sse_path
from tests.support.live_server import DaphneProcess, manage
from tests.support.streams import eventually, reload, start_conversation, streamed_text

CTX = ToolContext(user_id=0, conversation_id=0)
HOSTILE = "round(1, -10**300)"  # on the old calculator: 10**(10**300), computed on the event loop


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        (HOSTILE, r"round\(\) takes at most 330 digits"),
        ("round(1.5, 10**300)", r"round\(\) takes at most 330 digits"),
        ("9**9**9", "Exponents above"),
        ("(10**300)**2", "too large"),
        ("(10**200)**(2**13)", "too large"),
        ("10**299 * 10**299", "too large"),
        ("1" * 400, "too large"),
        ("floor(1e308)", "too large"),
        ("1e308 * 10", "too large"),
        ("(-8) ** 0.5", "complex number"),
        ("sqrt(-1)", "Cannot compute"),
        ("round(2.5, 0.5)", "whole number of digits"),
        ("(" * 220 + "1" + ")" * 220, "Not an arithmetic expression"),
    ],
)
def test_calculator_refuses_what_would_be_slow_huge_or_complex(expression: str, words: str) -> None:
    with pytest.raises(ToolError, match=words):
        evaluate(expression)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("round(12345, -2)", 12300),
        ("2**996", 2**996),
        ("10**300 - 1", 10**300 - 1),
        ("round(2.675, 2)", 2.67),
    ],
)
def test_calculator_still_computes_within_its_bounds(expression: str, value: Any) -> None:
    assert evaluate(expression) == value


# --- The sandbox: the child process really ends --------------------------------------------------------


async def _spin(context: ToolContext, arguments: dict[str, Any]) -> str:
    return await run_isolated("tests.support.hostile_tools:spin", arguments, cpu_seconds=60)


@pytest.fixture
def spin_tool(settings: Any) -> Iterator[None]:
    register(
        Tool(
            name="spin",
            label="the spinning tool",
            description="Burns CPU forever.",
            run=_spin,
            input_schema={"type": "object", "properties": {"pid_file": {"type": "string"}}},
        )
    )
    settings.CHAT_TOOLS = [*settings.CHAT_TOOLS, "spin"]
    yield


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): it has exited when its state is Z.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


async def test_a_spinning_tool_answers_with_an_error_at_its_timeout_and_its_process_is_gone(
    spin_tool: None, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    call = asyncio.create_task(
        run_tool_call(
            tool_use_id="t", name="spin", arguments={"pid_file": str(pid_file)}, context=CTX, timeout=1
        )
    )
    await eventually(pid_file.exists)  # the event loop runs while the tool computes
    pid = int(pid_file.read_text())
    assert not call.done() and _alive(pid)
    result = await call
    assert result.is_error and "did not finish within 1 seconds" in result.content
    assert not _alive(pid)  # killed, not left burning CPU


async def test_a_tool_over_its_cpu_limit_is_stopped_by_the_child_itself(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="used more than 1 s of CPU"):
        await run_isolated(
            "tests.support.hostile_tools:spin", {"pid_file": str(tmp_path / "pid")}, cpu_seconds=1
        )


@pytest.mark.django_db(transaction=True)
async def test_while_a_tool_spins_another_users_stream_keeps_receiving_deltas(
    alice_client: AsgiClient,
    bob_client: AsgiClient,
    upstream: FakeAnthropic,
    background: Any,
    spin_tool: None,
    settings: Any,
    tmp_path: Path,
) -> None:
    settings.CHAT_TOOL_TIMEOUT = 3
    bob_gate = threading.Event()
    upstream.enqueue(Text("b1 "), Wait(bob_gate, 30), Text("b2"), End())
    _, bob_reply, bob_path = await start_conversation(bob_client, "Talk to me")
    bob_stream = await bob_client.open_stream(bob_path)
    assert (await bob_stream.next_event()).data == "b1 "

    pid_file = tmp_path / "pid"
    spin_input = '{"pid_file": "' + str(pid_file) + '"}'
    upstream.enqueue(ToolUse("toolu_spin", "spin", [spin_input]), End(stop_reason="tool_use"))
    upstream.enqueue(Text("The tool gave up."), End())
    _, _, alice_path = await start_conversation(alice_client, "Spin")
    alice_stream = await alice_client.open_stream(alice_path)
    await eventually(pid_file.exists)  # alice's tool is running now
    bob_gate.set()  # the fake sends "b2" only now, while the tool spins
    assert (await bob_stream.next_event()).data == "b2"
    assert _alive(int(pid_file.read_text()))  # received while the tool still spins: the loop was free
    alice_events = await alice_stream.events_until("done")
    tool_results = [e.data for e in alice_events if e.event == "tool" and "did not finish" in e.data]
    assert tool_results and "within 3 seconds" in html.unescape(tool_results[-1])
    assert not _alive(int(pid_file.read_text()))
    alice_reply = await Message.objects.aget(pk=ids(alice_path)[1])
    assert alice_reply.status == Message.Status.COMPLETE and alice_reply.content.endswith("The tool gave up.")
    await bob_stream.events_until("done")
    assert (await reload(bob_reply)).content == "b1 b2"


# --- A real server process: the calculator that froze it ---------------------------------------------------


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaphneProcess, FakeAnthropic]]:
    """One daphne process on its own SQLite file, with the fake upstream in this test process."""
    fake = FakeAnthropic().start()
    data = tmp_path_factory.mktemp("tool-server")
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "CHAT_", "ANTHROPIC_", "DATABASE_"))
        },
        "DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}",
        "REDIS_URL": "",
        "DEBUG": "True",
        "DATA_DIR": str(data),
        "CHAT_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": fake.url,
        "CHAT_UPSTREAM_MAX_RETRIES": "0",
        "CHAT_SAVE_INTERVAL": "0.1",
        "CHAT_TOOL_TIMEOUT": "2",
        "PYTHONUNBUFFERED": "1",
    }
    manage(env, "migrate", "--noinput")
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "[User.objects.create_user(n, password='tool-server-pass-1') for n in ('alice', 'bob')]",
    )
    server = DaphneProcess(env, data, "tools").start()
    yield server, fake
    server.stop()
    fake.stop()


async def _signed_in(server: DaphneProcess, name: str) -> LiveClient:
    client = LiveClient()
    await client.login(server.url, name, "tool-server-pass-1")
    return client


async def _start(client: LiveClient, server: DaphneProcess, text: str) -> AsyncIterator[Any]:
    status, page = await client.post(server.url + "/c/start/", {"text": text})
    assert status == 200, page[:500]
    return client.events(server.url + sse_path(page))


async def test_during_a_hostile_calculator_call_the_server_keeps_streaming_to_others(
    tool_server: tuple[DaphneProcess, FakeAnthropic],
) -> None:
    """On the old calculator, `round(1, -10**300)` ran on the event loop and never returned: bob's stream
    froze with everything else in the process."""
    server, fake = tool_server
    fake.reset()
    alice, bob = await _signed_in(server, "alice"), await _signed_in(server, "bob")
    try:
        bob_gate = threading.Event()
        fake.enqueue(Text("b1 "), Wait(bob_gate, 30), Text("b2"), End())
        bob_events = await _start(bob, server, "Talk to me")
        assert (await asyncio.wait_for(anext(bob_events), 15)).data == "b1 "

        call = '{"expression": "' + HOSTILE + '"}'
        fake.enqueue(
            Text("Let me compute. "), ToolUse("toolu_h", "calculator", [call]), End(stop_reason="tool_use")
        )
        fake.enqueue(Text("That cannot be computed."), End())
        alice_events = await _start(alice, server, "Compute it")
        seen: list[Any] = []
        while not any(e.event == "tool" and HOSTILE in html.unescape(e.data) for e in seen):
            seen.append(await asyncio.wait_for(anext(alice_events), 15))  # the call has begun
        bob_gate.set()  # the fake sends "b2" only now
        assert (await asyncio.wait_for(anext(bob_events), 10)).data == "b2"

        while not (seen and seen[-1].event == "done"):
            seen.append(await asyncio.wait_for(anext(alice_events), 15))
        results = [html.unescape(e.data) for e in seen if e.event == "tool"]
        assert "round() takes at most 330 digits" in results[-1]  # a clear error, within the timeout
        assert streamed_text(seen).endswith("That cannot be computed.")
    finally:
        await alice.close()
        await bob.close()
