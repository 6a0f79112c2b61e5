"""The last cent: two sends race through two real server processes on PostgreSQL, when the budget has room
for one reply only. The user-row lock serializes the budget checks (and, for a team budget shared by two
members, the budget row's lock), so exactly one reply starts and the other is refused with a sentence saying
why; nothing of the refused message is saved."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.cluster import fresh_database, services_or_skip
from tests.support.fake_anthropic import End, FakeAnthropic, Text, Wait
from tests.support.live_client import LiveClient
from tests.support.live_server import DaphneProcess, manage

pytestmark = pytest.mark.postgres

PG_URL = os.environ.get("DATABASE_URL_TEST", "postgres://postgres@127.0.0.1:5432/test")
PASSWORD = "last-cent-pass-1"
ROUNDS = 5


@pytest.fixture(scope="module")
def budget_db() -> Iterator[str]:
    services_or_skip(PG_URL)
    with fresh_database(PG_URL) as url:
        yield url


@pytest.fixture(scope="module")
def budget_upstream() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_servers(
    budget_db: str, budget_upstream: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[DaphneProcess]]:
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "CHAT_", "ANTHROPIC_", "REDIS_"))
        },
        "DATABASE_URL": budget_db,
        "DEBUG": "True",
        "DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "CHAT_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": budget_upstream.url,
        "CHAT_UPSTREAM_MAX_RETRIES": "0",
        "CHAT_MAX_TOKENS": "4096",
        "CHAT_MAX_CONCURRENT_PER_USER": "10",
        "PYTHONUNBUFFERED": "1",
    }
    manage(env, "migrate", "--noinput")
    # $1.00 a month, $0.95 spent: one reply (reserving 4096 x $15 / 1M = $0.06144) fits, not two.
    manage(
        env,
        "shell",
        "-c",
        "from decimal import Decimal; from django.contrib.auth.models import User; "
        "from django.utils import timezone; from usage.models import Budget, UsageDaily; "
        f"u = User.objects.create_user('edge', password='{PASSWORD}'); "
        "Budget.objects.create(user=u, period='monthly', limit_usd=Decimal('1.00')); "
        "UsageDaily.objects.create(day=timezone.localdate(), user=u, model='claude-sonnet-5-5', "
        "cost=Decimal('0.95'))",
    )
    # A team budget shared by two members: $1.00, $0.95 of it spent by the first.
    manage(
        env,
        "shell",
        "-c",
        "from decimal import Decimal; from django.contrib.auth.models import Group, User; "
        "from django.utils import timezone; from usage.models import Budget, UsageDaily; "
        "g = Group.objects.create(name='Team'); "
        f"members = [User.objects.create_user(n, password='{PASSWORD}') for n in ('ann', 'ben')]; "
        "g.user_set.add(*members); "
        "Budget.objects.create(group=g, period='monthly', limit_usd=Decimal('1.00'), pooled=True); "
        "UsageDaily.objects.create(day=timezone.localdate(), user=members[0], model='claude-sonnet-5-5', "
        "cost=Decimal('0.95'))",
    )
    log_dir = Path(tmp_path_factory.mktemp("logs"))
    procs = [DaphneProcess(env, log_dir, name).start() for name in ("a", "b")]
    yield procs
    for proc in procs:
        proc.stop()


@pytest.fixture
async def edge_user(two_servers: list[DaphneProcess]) -> AsyncIterator[LiveClient]:
    client = LiveClient()
    await client.login(two_servers[0].url, "edge", PASSWORD)
    yield client
    await client.close()


def _streaming_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM chat_message WHERE status = 'streaming'").fetchone()
    assert row is not None
    return int(row[0])


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


async def _until_none_streaming(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while _streaming_count(url):
        assert time.monotonic() < deadline, "a reply is still streaming"
        await asyncio.sleep(0.05)


async def test_two_sends_at_the_last_cent_start_exactly_one_reply(
    two_servers: list[DaphneProcess], budget_upstream: FakeAnthropic, budget_db: str, edge_user: LiveClient
) -> None:
    a, b = two_servers
    for round_number in range(1, ROUNDS + 1):
        budget_upstream.reset()
        gate = threading.Event()
        for _ in range(2):  # whichever is accepted streams until the gate opens
            budget_upstream.enqueue(
                Text("fits"), Wait(gate, timeout=30), End(input_tokens=10, output_tokens=1)
            )
        results = await asyncio.gather(
            edge_user.post(a.url + "/c/start/", {"text": f"via A, round {round_number}"}),
            edge_user.post(b.url + "/c/start/", {"text": f"via B, round {round_number}"}),
        )
        statuses = sorted(status for status, _ in results)
        assert statuses == [200, 422], results
        refused = next(body for status, body in results if status == 422)
        assert "nearly used up, and replies still being written may use the rest" in refused
        assert _count(budget_db, "chat_conversation") == round_number  # the refused one saved nothing
        assert _count(budget_db, "chat_message") == 2 * round_number
        gate.set()
        # Once the reply is done its reservation is gone and its real cost (a few millionths) is billed.
        await _until_none_streaming(budget_db)


async def test_two_members_at_their_shared_budgets_last_cent_start_exactly_one_reply(
    two_servers: list[DaphneProcess], budget_upstream: FakeAnthropic, budget_db: str
) -> None:
    a, b = two_servers
    ann, ben = LiveClient(), LiveClient()
    await ann.login(a.url, "ann", PASSWORD)
    await ben.login(b.url, "ben", PASSWORD)
    try:
        before = _count(budget_db, "chat_message")
        for round_number in range(1, ROUNDS + 1):
            budget_upstream.reset()
            gate = threading.Event()
            for _ in range(2):
                budget_upstream.enqueue(
                    Text("fits"), Wait(gate, timeout=30), End(input_tokens=10, output_tokens=1)
                )
            results = await asyncio.gather(
                ann.post(a.url + "/c/start/", {"text": f"ann, round {round_number}"}),
                ben.post(b.url + "/c/start/", {"text": f"ben, round {round_number}"}),
            )
            assert sorted(status for status, _ in results) == [200, 422], results
            refused = next(body for status, body in results if status == 422)
            assert "shared by its members is nearly used up" in refused
            assert _count(budget_db, "chat_message") == before + 2 * round_number
            gate.set()
            await _until_none_streaming(budget_db)
    finally:
        await ann.close()
        await ben.close()
