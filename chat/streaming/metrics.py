"""What this server process's streaming engine did, for `/metrics` (Prometheus text format, chat/ops.py).

One registry per process (`REGISTRY`, not prometheus-client's global one, and not its multiprocess mode):
each daphne process answers for itself, and a scraper sums over processes. The numbers:

- `chat_active_replies` (gauge): replies starting or generating here (what CHAT_MAX_ACTIVE_REPLIES
  bounds); `chat_max_active_replies` (gauge): that bound, 0 = none;
- `chat_active_subscribers` (gauge): open SSE streams of replies;
- `chat_first_token_seconds{part}` (histogram), two parts of the time to a reply's first token:
  - `upstream`: the provider's own — from the request to the provider being sent (the round that brought
    the first token; the moment the SDK hands the built request to its HTTP transport, `on_sending`) to its
    first text or thinking delta being received here;
  - `added`: ours — from the start request arriving at this process (the ASGI scope's stamp, before any
    middleware) to the first delta being sent to a subscriber, minus the `upstream` part. So it holds the
    start path (session, transaction, loading the history), the hand-off from producer to subscriber, and
    the wait for the page to open its stream if the first delta came before that. Observed once per reply,
    only when its first subscriber is on this process and connects before the reply ends;
- `chat_upstream_deltas_total` (counter): text and thinking deltas received from the provider;
- `chat_deltas_sent_total{kind}` and `chat_delta_chars_sent_total{kind}` (counters): `delta` (answer text)
  and `thinking` SSE events sent to subscribers, and their characters (kind = text | thinking);
- `chat_stream_snapshot_reads_total` (counter): subscribers' reads of a reply's row (a trip to the
  background database thread): at open, unless the reply is being generated here; at the end, unless the
  stream has sent the whole reply and `end` carried its rendering; and now and then on a quiet stream;
- `chat_replies_total{status}` (counter): replies that ended here, by final status (complete, stopped,
  incomplete, error, interrupted; `gone` = deleted or reaped elsewhere, nothing saved);
- `chat_upstream_errors_total{kind}` (counter): provider failures by the producer's kinds (timeout,
  connection, stalled, dropped, overloaded, rate_limited, upstream_error, stream_error, configuration,
  rejected, and `truncated` for a stream that ended without its stop reason);
- `chat_flush_seconds` (histogram): the flusher's batched saves (one database call for every local reply);
- `chat_admission_refusals_total` (counter): starts refused at the bound;
- `chat_starts_waiting` (gauge): starts waiting for one of CHAT_MAX_CONCURRENT_STARTS places (a burst of
  new messages queues there instead of stalling the running streams);
- `chat_db_calls_waiting{pool}` (gauge): calls waiting for a database thread (`chat.streaming.db`), by
  pool: `request` (a request's reads, writes and renders; a new message's commit goes first) and
  `background` (the engine's saves and reads). Above zero for long: the process's database work is behind;
- `chat_db_calls_total{pool}`, `chat_db_call_wait_seconds_total{pool}`, `chat_db_call_seconds_total{pool}`
  and `chat_db_call_cpu_seconds_total{pool}` (counters): the calls run on those threads, their wait for a
  thread, their running time and the CPU time spent on them (`chat.streaming.db.PoolStats`). Running time
  far above CPU time: the calls waited for the GIL, because the event loop keeps the process's one core
  busy (session 14, bench N=100: a commit of ~3 ms of CPU ran for 14-52 ms); more processes, not more
  threads, is the remedy;
- `process_*`: prometheus-client's process collector (CPU seconds, resident memory, open files).

Cheap on the hot path, by construction: what changes per delta is a plain int attribute incremented on the
event loop (no lock, no allocation) and read by the collector at scrape time; prometheus-client's own
Counter takes a lock on every `inc`. Histograms, observed once per reply or per flush, are the library's."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from django.conf import settings
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chat.streaming import admission, db

__all__ = [
    "FIRST_TOKEN",
    "FLUSH",
    "REGISTRY",
    "counts",
    "first_delta_sent",
    "forget",
    "reply_ended",
    "reply_requested",
    "upstream_error",
    "upstream_first_token",
]

# Final statuses listed from the start (at 0), so a rate over them exists before the first such reply.
STATUSES = ("complete", "stopped", "incomplete", "error", "interrupted", "gone")


class Counts:
    """The engine's running totals, as plain ints (see the module docstring for why)."""

    __slots__ = (
        "snapshot_reads",
        "subscribers",
        "text_chars",
        "text_events",
        "thinking_chars",
        "thinking_events",
        "upstream_deltas",
    )

    def __init__(self) -> None:
        self.subscribers = 0
        self.upstream_deltas = 0
        self.text_events = 0
        self.text_chars = 0
        self.thinking_events = 0
        self.thinking_chars = 0
        self.snapshot_reads = 0


counts = Counts()
replies: Counter[str] = Counter({status: 0 for status in STATUSES})
upstream_errors: Counter[str] = Counter()

REGISTRY = CollectorRegistry()
FIRST_TOKEN = Histogram(
    "chat_first_token_seconds",
    "Time to a reply's first token: part=upstream is the provider's, part=added is ours (see chat/streaming/"
    "metrics.py).",
    ["part"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
_UPSTREAM = FIRST_TOKEN.labels(part="upstream")
_ADDED = FIRST_TOKEN.labels(part="added")
FLUSH = Histogram(
    "chat_flush_seconds",
    "Duration of the flusher's batched saves of the streaming replies (one database call each).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)


class _FirstToken:
    __slots__ = ("requested_at", "upstream")

    def __init__(self, requested_at: float) -> None:
        self.requested_at = requested_at
        self.upstream: float | None = None


# Replies of this process whose `added` first-token time is not observed yet.
_first_token: dict[int, _FirstToken] = {}


def reply_requested(reply_id: int, requested_at: float) -> None:
    """A reply started here by a request that arrived at `requested_at` (time.monotonic())."""
    _first_token[reply_id] = _FirstToken(requested_at)


def upstream_first_token(reply_id: int, seconds: float) -> None:
    """The producer received the reply's first delta `seconds` after it sent the request to the provider."""
    _UPSTREAM.observe(seconds)
    pending = _first_token.get(reply_id)
    if pending is not None:
        pending.upstream = seconds


def first_delta_sent(reply_id: int) -> bool:
    """A subscriber sends a delta of the reply: observes `added` if it is the first one after the first
    token. Returns whether the subscriber should call again with its next delta (it is a Continue's old
    text, sent before the new first token arrived)."""
    pending = _first_token.get(reply_id)
    if pending is None:
        return False
    if pending.upstream is None:
        return True
    del _first_token[reply_id]
    _ADDED.observe(max(0.0, time.monotonic() - pending.requested_at - pending.upstream))
    return False


def forget(reply_id: int) -> None:
    """The reply's generation ended here: no `added` time for it after this."""
    _first_token.pop(reply_id, None)


def reply_ended(status: str | None) -> None:
    """A reply's generation ended with final `status` (None: gone, nothing saved)."""
    replies[str(status) if status else "gone"] += 1


def upstream_error(kind: str) -> None:
    upstream_errors[kind] += 1


class _EngineCollector(Collector):
    """Reads the engine's plain counters at scrape time."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "chat_active_replies", "Replies starting or generating in this process.", value=admission.active()
        )
        yield GaugeMetricFamily(
            "chat_max_active_replies",
            "CHAT_MAX_ACTIVE_REPLIES, the bound on active replies (0: none).",
            value=settings.CHAT_MAX_ACTIVE_REPLIES,
        )
        yield GaugeMetricFamily(
            "chat_starts_waiting",
            "Starts waiting for one of CHAT_MAX_CONCURRENT_STARTS places.",
            value=admission.starts_waiting(),
        )
        yield GaugeMetricFamily(
            "chat_active_subscribers", "Open SSE streams of replies here.", value=counts.subscribers
        )
        yield CounterMetricFamily(
            "chat_upstream_deltas",
            "Text and thinking deltas received from the model provider.",
            value=counts.upstream_deltas,
        )
        events = CounterMetricFamily(
            "chat_deltas_sent", "Delta events sent to subscribers (text: answer, thinking).", labels=["kind"]
        )
        events.add_metric(["text"], counts.text_events)
        events.add_metric(["thinking"], counts.thinking_events)
        yield events
        chars = CounterMetricFamily(
            "chat_delta_chars_sent", "Characters sent to subscribers in delta events.", labels=["kind"]
        )
        chars.add_metric(["text"], counts.text_chars)
        chars.add_metric(["thinking"], counts.thinking_chars)
        yield chars
        yield CounterMetricFamily(
            "chat_stream_snapshot_reads",
            "Subscribers' reads of a reply's row: at open unless the reply is generated here, at its end if "
            "the stream is behind or on another process, and now and then on a quiet stream.",
            value=counts.snapshot_reads,
        )
        ended = CounterMetricFamily("chat_replies", "Replies that ended, by final status.", labels=["status"])
        for status, number in sorted(replies.items()):
            ended.add_metric([status], number)
        yield ended
        errors = CounterMetricFamily(
            "chat_upstream_errors", "Model provider failures, by kind.", labels=["kind"]
        )
        for kind, number in sorted(upstream_errors.items()):
            errors.add_metric([kind], number)
        yield errors
        queued = GaugeMetricFamily(
            "chat_db_calls_waiting",
            "Calls waiting for a database thread, by pool (request: a request's reads, writes and renders, "
            "a new message's commit first; background: the engine's saves and reads).",
            labels=["pool"],
        )
        for kind, number in db.waiting().items():
            queued.add_metric([kind], number)
        yield queued
        pools = db.stats()
        for name, text, value in (
            ("chat_db_calls", "Calls run on the database threads, by pool.", lambda s: s.calls),
            (
                "chat_db_call_wait_seconds",
                "Time calls waited for a database thread, by pool.",
                lambda s: s.wait_seconds,
            ),
            (
                "chat_db_call_seconds",
                "Time calls ran on a database thread (wall clock), by pool.",
                lambda s: s.run_seconds,
            ),
            (
                "chat_db_call_cpu_seconds",
                "CPU time the database threads spent on calls, by pool: far below chat_db_call_seconds, the "
                "calls waited for the GIL (the process is short of CPU).",
                lambda s: s.cpu_seconds,
            ),
        ):
            family = CounterMetricFamily(name, text, labels=["pool"])
            for kind, stats in pools.items():
                family.add_metric([kind], value(stats))
            yield family
        yield CounterMetricFamily(
            "chat_admission_refusals",
            "Reply starts refused because CHAT_MAX_ACTIVE_REPLIES were active.",
            value=admission.refusals(),
        )


REGISTRY.register(_EngineCollector())
ProcessCollector(registry=REGISTRY)
