"""Pure functions of the benchmark harness, and the sessions it signs its users in with."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from bench import report
from bench.load import ROUTINGS, Config, process_for
from bench.profile_summary import LOOP_NATIVE, compare, owner_of
from bench.sweep import (
    Row,
    Scrape,
    machine_cpu_times,
    parse_args,
    parse_metrics,
    request_pool_calls,
    steal_pct,
)
from chat.middleware import LAST_SEEN_KEY
from chatsite.sessions import SessionStore

REACTOR = "AsyncioSelectorReactor.run (twisted/internet/asyncioreactor.py:271)"
SEND = "_publish_text (chat/streaming/producer.py:400)"


def test_a_sample_belongs_to_the_innermost_layer_that_is_not_borrowed() -> None:
    # The loop's own C code: nothing under its run.
    assert owner_of(["main (chatsite/serve.py:10)", REACTOR]) == LOOP_NATIVE
    # asyncio and contextlib work for whoever called them: the SDK here.
    sdk = ["AsyncStream.__stream__ (anthropic/_streaming.py:90)", "sleep (asyncio/tasks.py:600)"]
    assert owner_of([REACTOR, *sdk]) == "anthropic SDK + pydantic"
    # Our channel layers are told apart from the rest of chat/, whatever the file.
    assert owner_of([REACTOR, SEND, "RedisPubSubLayer._publish (chat/streaming/layers.py:358)"]) == (
        "our channel layers (layers.py, resp.py, msgpack)"
    )
    assert owner_of([REACTOR, SEND, "Connection.post (chat/streaming/resp.py:220)"]) == (
        "our channel layers (layers.py, resp.py, msgpack)"
    )
    assert owner_of([REACTOR, SEND]) == "our code (chat/)"


def test_compare_scales_the_second_profile_and_ranks_what_it_adds(tmp_path: Path) -> None:
    one = tmp_path / "one.txt"
    two = tmp_path / "two.txt"
    post = "Connection.post (chat/streaming/resp.py:1)"
    one.write_text(f"{REACTOR} 10\n{REACTOR};{SEND} 30\n")
    # Half the streams: 5 + 15 samples are the same work, doubled; the layer's 5 (10 doubled) are new.
    two.write_text(f"{REACTOR} 5\n{REACTOR};{SEND} 15\n{REACTOR};{SEND};{post} 5\n")
    table = compare(one, two, 2.0)
    assert "50 samples against 40 (1.25x)" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| owner")]
    assert rows[0] == "| our channel layers (layers.py, resp.py, msgpack) | 0 | 10 | +10 | - | 100% |"
    assert sorted(rows[1:]) == [
        f"| {LOOP_NATIVE} | 10 | 10 | +0 | 1.00 | 0% |",
        "| our code (chat/) | 30 | 30 | +0 | 1.00 | 0% |",
    ]


def _routes(routing: str, processes: int, streams: int) -> list[tuple[int, int]]:
    cfg = Config(
        "ours", [f"http://p{i}" for i in range(processes)], streams, 1, 1.0, 0.0, 0.0, 1.0, "r", [], routing
    )
    return [(process_for(cfg, slot, 0), process_for(cfg, slot, 1)) for slot in range(streams)]


def test_the_load_clients_routings_put_starts_and_streams_where_their_names_say() -> None:
    """(start's process, stream's process) per stream, for `scaled`'s `--routing` choices."""
    assert _routes("cross", 2, 4) == [(0, 1), (1, 0), (0, 1), (1, 0)]  # every stream crosses
    assert _routes("same", 3, 4) == [(0, 0), (1, 1), (2, 2), (0, 0)]  # none does
    assert _routes("split", 2, 3) == [(0, 1)] * 3  # two pools: starts on one, streams on the other
    assert _routes("split", 4, 2) == [(0, 2), (1, 3)]
    random_routes = _routes("random", 2, 200)
    assert random_routes == _routes("random", 2, 200)  # seeded: every run draws alike
    read_where_started = sum(start == stream for start, stream in random_routes)
    assert 70 <= read_where_started <= 130  # about 1/P of them
    for routing in ROUTINGS:  # one process: nowhere else to go
        assert set(_routes(routing, 1, 5)) == {(0, 0)}


def test_steal_is_the_share_of_all_cpu_time_the_hypervisor_took() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    before = [100, 0, 50, 800, 10, 0, 5, 35, 40, 0]
    after = [400, 0, 150, 1300, 10, 0, 5, 135, 90, 0]  # guest time is already inside user time
    assert steal_pct(before, after) == 100 / 1000 * 100
    assert steal_pct(before, before) is None  # no time passed
    assert steal_pct(None, after) is None and steal_pct(before, None) is None


def _db_scrape(calls: float, wait: float, run: float, cpu: float) -> Scrape:
    return Scrape(
        samples=parse_metrics(
            f'chat_db_calls_total{{pool="request"}} {calls}\n'
            f'chat_db_call_wait_seconds_total{{pool="request"}} {wait}\n'
            f'chat_db_call_seconds_total{{pool="request"}} {run}\n'
            f'chat_db_call_cpu_seconds_total{{pool="request"}} {cpu}\n'
            'chat_db_calls_total{pool="background"} 999\n'
        )
    )


def test_request_pool_calls_is_the_levels_growth_summed_over_processes() -> None:
    before = [_db_scrape(10, 1.0, 2.0, 1.0), _db_scrape(0, 0, 0, 0)]
    after = [_db_scrape(110, 2.0, 6.0, 1.5), _db_scrape(100, 1.0, 4.0, 0.5)]
    wait_ms, ratio = request_pool_calls(before, after)
    assert wait_ms == 2.0 / 200 * 1000  # 2 s of waiting over 200 calls
    assert ratio == 8.0 / 1.0  # 8 s running for 1 s of CPU: the calls waited for the GIL
    assert request_pool_calls(before, before) == (None, None)  # nothing ran
    assert request_pool_calls([Scrape(failure="HTTP 404")], after[:1]) == (None, None)
    assert request_pool_calls([Scrape()], [Scrape()]) == (None, None)  # an app without these counters


def _scale_out_data(cpu: list[tuple[int, str, int, float, float | None]]) -> dict[str, Any]:
    """Rows of a Redis-mode sweep: (pair, target, N, CPU µs per delta, the redis-server's or None)."""
    rows = []
    for pair, target, n, server, redis in cpu:
        row = asdict(Row(target=target, n=n, pair=pair, ok=n, processes=2 if target == "scaled" else 1))
        row |= {"server_cpu_us_per_delta": server, "redis_cpu_us_per_delta": redis, "held": True}
        rows.append(row)
    return {"meta": {"routing": "cross", "processes": 2, "targets": ["ours", "scaled"]}, "rows": rows}


def test_the_scale_out_verdict_is_on_the_median_pair_and_other_tables_see_only_the_sweeps_own_runs() -> None:
    data = _scale_out_data(
        [
            (0, "ours", 10, 150.0, None),
            (0, "scaled", 10, 280.0, 20.0),
            (0, "ours", 50, 100.0, None),
            (0, "scaled", 50, 150.0, 10.0),  # 1.6x: this pair alone would fail
            (1, "scaled", 50, 130.0, 10.0),
            (1, "ours", 50, 100.0, None),  # 1.4x
            (2, "ours", 50, 125.0, None),
            (2, "scaled", 50, 170.0, 10.0),  # 1.44x: the median
        ]
    )
    lines = report.scale_out(data)
    verdict = next(line for line in lines if line.startswith("| Redis-mode CPU"))
    assert "(at N=50, routing cross) | **PASS** 1.44x, the median of 3 pairs" in verdict
    assert [line for line in lines if line.startswith("| 1 |") or line.startswith("| 3 |")] == [
        "| 1 | 100.0 | 160.0 | 1.60x |",
        "| 3 | 125.0 | 180.0 | 1.44x |",
    ]
    # The per-level table has one row per level, from the sweep's own runs, and so has every other reader.
    assert [line.split(" | ")[3:5] for line in lines if line.startswith("| 50 |")] == [
        ["100", "150 + 10 = 160"]
    ]
    assert report.ref_level(data, "scaled", "ours") == 50
    assert report.held(data, "scaled") == 50
    first = report._at(data, "ours", 50)
    assert first is not None and first["pair"] == 0


def test_one_pair_is_judged_as_before_and_pairs_need_redis() -> None:
    data = _scale_out_data([(0, "ours", 50, 100.0, None), (0, "scaled", 50, 150.0, 10.0)])
    verdict = next(line for line in report.scale_out(data) if line.startswith("| Redis-mode CPU"))
    assert verdict.endswith("| **FAIL** 160.0 vs 100.0 µs (1.6x) |")
    assert not any(line.startswith("| pair |") for line in report.scale_out(data))
    assert parse_args(["--redis", "--db", "postgres", "--processes", "2"]).pairs == 3
    assert parse_args(["--redis", "--db", "postgres", "--pairs", "1"]).pairs == 1
    assert parse_args([]).pairs == 1  # no `scaled`, nothing to pair
    assert parse_args(["--smoke", "--redis", "--db", "postgres"]).pairs == 1
    with pytest.raises(SystemExit):
        parse_args(["--redis", "--db", "postgres", "--pairs", "0"])


def test_machine_cpu_times_reads_the_cpu_line() -> None:
    times = machine_cpu_times()
    if times is not None:  # Linux
        assert len(times) >= 8 and all(t >= 0 for t in times)


@pytest.mark.django_db
def test_bench_sessions_are_signed_in_as_the_login_page_signs_in(client: Client) -> None:
    """The bench's users are signed in by Django's `login` (with the app's receivers): a first request
    renews nothing, as after a real sign-in. A session written by hand, without the idle clock the login
    starts, is renewed (saved) by its first request: that was every bench start's extra write."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    from bench.dbtool import signed_in_sessions

    keys = signed_in_sessions(2)
    assert len(set(keys)) == 2
    for key, name in zip(keys, ["bench00000", "bench00001"], strict=True):
        session = SessionStore(key)
        user = User.objects.get(username=name)
        assert session[SESSION_KEY] == str(user.pk)
        assert session[BACKEND_SESSION_KEY] == "django.contrib.auth.backends.ModelBackend"
        assert session[HASH_SESSION_KEY] == user.get_session_auth_hash()
        assert isinstance(session[LAST_SEEN_KEY], int)
    client.cookies[settings.SESSION_COOKIE_NAME] = keys[0]
    response = client.get(reverse("chat:home"))
    assert response.status_code == 200
    assert settings.SESSION_COOKIE_NAME not in response.cookies  # signed in, nothing saved

    by_hand = SessionStore()
    by_hand.update({key: value for key, value in SessionStore(keys[1]).items() if key != LAST_SEEN_KEY})
    by_hand.create()
    assert by_hand.session_key is not None
    client.cookies[settings.SESSION_COOKIE_NAME] = by_hand.session_key
    response = client.get(reverse("chat:home"))
    assert response.status_code == 200 and settings.SESSION_COOKIE_NAME in response.cookies  # renewed
