"""Run the streaming benchmark: upstream, server(s) and load client in separate processes; sweep N.

    python -m bench.sweep                       # full sweep (see --help), ~15-30 min on 2 cores
    python -m bench.sweep --smoke               # seconds: N=1,2, 20-delta replies at 100/s, all targets

Targets: ``sdk`` (AsyncAnthropic straight at the upstream, no web tier: the floor), ``relay`` (raw-ASGI relay,
``bench/relay_asgi.py``, under daphne), ``ours`` (the app under daphne), ``uvicorn`` (the app under uvicorn);
``--redis [--processes P]`` adds ``scaled`` (P daphne processes on Redis, no sticky routing) and
``--admission K`` adds ``bounded`` (the app with ``CHAT_MAX_ACTIVE_REPLIES=K``).
Results (Markdown table, JSON, PNG plot) go to ``bench/results/<timestamp>/``; the table is also printed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import report
from bench.common import free_ports, raise_nofile_limit, wait_for_file, write_atomic

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("sdk", "relay", "ours", "uvicorn")  # chosen with --targets
# Added by flags: `scaled` (--redis, --processes P) and `bounded` (--admission K). Both run the app.
ALL_TARGETS = (*TARGETS, "scaled", "bounded")
APP_TARGETS = ("ours", "uvicorn", "scaled", "bounded")
DEFAULT_LEVELS = (1, 10, 50, 100, 250, 500, 1000)
# The default levels go on doubling past the last one while the relay still holds it, so that "streams held"
# compares against the relay's real limit (not against the largest level run); this far at most (file
# descriptors: ~3 per stream in the server, hard limit permitting).
MAX_LEVEL = 5000
# An app target other than `bounded` must never be refused by admission control (issue 15's
# CHAT_MAX_ACTIVE_REPLIES has a finite default): what it measures is the process unbounded.
UNBOUNDED = "1000000"

# /metrics cross-check: after each level the sweep scrapes every server process's /metrics (Prometheus text
# format, `Authorization: Bearer $METRICS_TOKEN`) before and after the load and compares the counters' growth,
# summed over the processes, with its own counts. The names are the app's (chat/streaming/metrics.py); adjust
# them here if those change.   bench count -> (sample name, labels the sample must carry)
METRICS: dict[str, tuple[str, dict[str, str]]] = {
    # replies the DB check found saved `complete` (+ the load client's warm-up reply)
    "replies_complete": ("chat_replies_total", {"status": "complete"}),
    # the next three: what the clients received (+ the warm-up's); compared when the level had no errors
    "upstream_deltas": ("chat_upstream_deltas_total", {}),  # text deltas (each carries one "w<i>@" token)
    "delta_events": ("chat_deltas_sent_total", {"kind": "text"}),  # SSE `delta` events
    "delta_chars": ("chat_delta_chars_sent_total", {"kind": "text"}),  # their characters (unescaped)
    # starts answered 503 + Retry-After
    "refused": ("chat_admission_refusals_total", {}),
}

# Variables of the caller's environment that must never reach the bench processes (e.g. the test suite's
# DATABASE_URL points at the `test` database, which the bench must not touch).
SCRUB = (
    "DATABASE_URL",
    "DATABASE_URL_TEST",
    "REDIS_URL",
    "REDIS_URL_TEST",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "CHAT_PROVIDER",
    "DJANGO_SETTINGS_MODULE",
)


@dataclass
class Options:
    levels: list[int]
    deltas: int
    rate: float
    ttft: float
    ramp: float
    grace: float
    targets: list[str]
    db: str
    out: Path
    restart: bool
    error_limit: float
    smoke: bool
    profile: list[int] = field(default_factory=list)  # levels at which to record the server with py-spy
    profile_rate: int = 100  # py-spy samples per second
    profile_gil: bool = False  # py-spy --gil: sample only while the GIL is held (Python's own CPU, no waits)
    processes: int = 1  # server processes of `scaled`
    routing: str = "cross"  # how the load client spreads `scaled`'s requests (bench.load.process_for)
    redis: bool = False  # run `scaled`: the app on a private redis-server (channel layer, rate limits)
    admission: int | None = None  # run `bounded`: the app with CHAT_MAX_ACTIVE_REPLIES=admission
    extend: bool = False  # default levels: go on doubling past the last while the relay holds
    relay_http: str = "httpx"  # the relay's SDK transport: its default (httpx), or aiohttp as the app uses
    # With --redis: `ours` and `scaled` run this many times in all at the scale-out verdict's level,
    # alternately; the verdict is on the median pair's ratio (see `Sweep._more_pairs`).
    pairs: int = 1


def machine_cpu_times() -> list[int] | None:
    """The machine's CPU times (the `cpu` line of /proc/stat, in clock ticks); None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    return [int(v) for v in fields[1:]] if fields and fields[0] == "cpu" else None


def steal_pct(before: list[int] | None, after: list[int] | None) -> float | None:
    """Stolen time (the 8th field) as a share of all CPU time between two `machine_cpu_times`; guest time
    is already counted in user time, so the first eight fields are the whole."""
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    spent = [b - a for a, b in zip(before[:8], after[:8], strict=True)]
    total = sum(spent)
    return spent[7] / total * 100 if total > 0 else None


@dataclass
class Row:
    target: str
    n: int
    # 0: the sweep's own run of this level; k >= 1: the k-th extra run of the scale-out pair (`--pairs`),
    # which only the scale-out verdict reads (bench.report keeps it out of every other table)
    pair: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    refused: int = 0  # starts answered 503 + Retry-After (admission control): not errors
    processes: int = 1
    same_process: int = 0  # streams read from the process their start was posted to (`scaled`)
    # Each server process's share of `server_cpu_us_per_delta` (P of them for `scaled`): how the load split.
    process_cpu_us_per_delta: list[float] = field(default_factory=list)
    error_kinds: list[str] = field(default_factory=list)
    lat_p50: float | None = None
    lat_p95: float | None = None
    lat_p99: float | None = None
    lat_max: float | None = None
    ttft_p50: float | None = None
    ttft_p99: float | None = None
    deltas_expected: int = 0
    deltas_received: int = 0
    exact: int = 0  # streams whose received text == the upstream's (and, for the app, whose saved text too)
    saved_exact: int | None = None
    saved_complete: int | None = None  # replies the DB check found with status `complete`
    server_cpu_us_per_delta: float | None = None  # summed over the target's server processes
    server_kinstr_per_delta: float | None = None  # thousands of instructions, ditto (perf; None without it)
    redis_cpu_us_per_delta: float | None = None  # the private redis-server's (target `scaled`)
    rss_idle_mb: float | None = None
    rss_peak_mb: float | None = None
    rss_per_stream_kb: float | None = None
    writes_mean: float | None = None
    writes_max: int | None = None
    writes_over_budget: int | None = None  # complete replies with more than 4/s of streaming + 2 writes
    stream_s_mean: float | None = None
    upstream_lateness_p99: float | None = None
    upstream_cpu_pct: float | None = None
    client_cpu_pct: float | None = None
    loadavg_1m: float | None = None  # the machine's load at the end of the level (other work shows here)
    # Of the machine's CPU time during the level, the share the hypervisor gave to other guests (/proc/stat's
    # `steal`). One cause of a slow host, not the only one: the relay's own CPU per delta gauges the rest.
    steal_pct: float | None = None
    metrics: str = "n/a"  # /metrics cross-check: "ok", "mismatch (...)" or "n/a (...)"
    # The app's request database threads during the level (/metrics, see `request_pool_calls`): the mean
    # wait of a call for a thread, and the calls' running time over their CPU time.
    db_wait_ms: float | None = None
    db_run_per_cpu: float | None = None
    wall_s: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.n if self.n else 0.0

    @property
    def held(self) -> bool:
        """This level's streams were all held: p99 <= 100 ms, no errors, every admitted reply exact (and
        saved). Only `bounded` may refuse starts; its refused streams are not counted, but one must run."""
        admitted = self.n - self.refused
        return (
            self.errors == 0
            and (self.refused == 0 or self.target == "bounded")
            and admitted > 0
            and self.exact == admitted
            and self.lat_p99 is not None
            and self.lat_p99 <= 100.0
            and (self.saved_exact is None or self.saved_exact == admitted)
        )


# ------------------------------------------------------------------------------------------- processes


def _preexec() -> None:
    raise_nofile_limit()


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=_preexec
        )
        self.ps = psutil.Process(self.popen.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 8.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.log.close()

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        total = int(self.ps.memory_info().rss)
        for child in self.ps.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += int(child.memory_info().rss)
        return total


@dataclass
class Servers:
    """One target's server processes (P of them for `scaled`) and their base URLs; CPU and RSS are summed."""

    procs: list[Proc]
    urls: list[str]

    def alive(self) -> bool:
        return all(proc.alive() for proc in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    def cpu_s(self) -> float:
        return sum(proc.cpu_s() for proc in self.procs)

    def rss(self) -> int:
        return sum(proc.rss() for proc in self.procs)


class InstructionCounter:
    """Instructions retired by a target's server processes while a level runs (`perf stat -p`, summed over
    the processes), when this machine's perf can count them (not every virtual machine exposes the
    counter; then None). Unlike CPU seconds, the count does not change with how fast the host happens to
    be: on a shared 2-core machine the same code gave the relay 401-607 µs of CPU per delta from one run to
    the next, so a ratio of instructions is the steadier cross-check of the CPU goal."""

    _works: bool | None = None

    def __init__(self, servers: Servers, out: Path) -> None:
        self.out = out
        self.popen: subprocess.Popen[bytes] | None = None
        if not self.available():
            return
        pids = ",".join(str(proc.popen.pid) for proc in servers.procs)
        self.popen = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-e", "instructions", "-p", pids, "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @classmethod
    def available(cls) -> bool:
        if cls._works is None:
            cls._works = False
            if shutil.which("perf"):
                probe = subprocess.run(
                    ["perf", "stat", "-x", ",", "-e", "instructions", "true"], capture_output=True, text=True
                )
                cls._works = probe.returncode == 0 and _perf_count(probe.stderr) is not None
        return cls._works

    def stop(self) -> int | None:
        """Stop counting; the total, or None."""
        if self.popen is None:
            return None
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return None
        try:
            return _perf_count(self.out.read_text())
        except OSError:
            return None


def _perf_count(text: str) -> int | None:
    """The instruction count in `perf stat -x ,` output (`<count>,<unit>,instructions,...`)."""
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
            return int(fields[0])
    return None


class RssSampler(threading.Thread):
    """Peak RSS of a target's server processes (summed) while a load runs (sampled every 0.2 s)."""

    def __init__(self, proc: Servers) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.2):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.rss())


def _http(url: str, method: str = "GET", timeout: float = 10.0) -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


# One sample line of the Prometheus text format: name, optional {labels}, value (timestamps are not used).
_SAMPLE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Scrape:
    """One process's /metrics: its samples, or the HTTP status / error that stood for them."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    failure: str = ""  # "" when the scrape answered 200

    def total(self, name: str, labels: dict[str, str]) -> float | None:
        """Sum of the samples called `name` carrying `labels` (other labels summed over); None if absent."""
        found = [v for n, lab, v in self.samples if n == name and labels.items() <= lab.items()]
        return sum(found) if found else None


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            continue
        with contextlib.suppress(ValueError):
            labels = dict(_LABEL_RE.findall(match[2] or ""))
            samples.append((match[1], labels, float(match[3])))
    return samples


def scrape(base: str, token: str) -> Scrape:
    req = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Scrape(samples=parse_metrics(resp.read().decode()))
    except urllib.error.HTTPError as exc:
        return Scrape(failure=f"HTTP {exc.code}")
    except OSError as exc:
        return Scrape(failure=type(exc).__name__)


def cross_check(before: list[Scrape], after: list[Scrape], counts: dict[str, int | None]) -> str:
    """The /metrics verdict for one level: "ok", "mismatch (...)" or "n/a (...)".

    Each mapped counter's growth over the level, summed over the processes, must equal the bench's own count
    (counts of None are not compared). A mapped name missing from a /metrics that answers is a mismatch too:
    the mapping at the top of this module has fallen behind the app."""
    failures = sorted({s.failure for s in (*before, *after) if s.failure})
    if failures:
        return "n/a (" + ", ".join("no /metrics" if f == "HTTP 404" else f for f in failures) + ")"
    wrong: list[str] = []
    for key, count in counts.items():
        if count is None:
            continue
        name, labels = METRICS[key]
        shown = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        grown = 0.0
        for old, new in zip(before, after, strict=True):
            value = new.total(name, labels)
            if value is None:
                if key != "refused" or count:  # no refusal counted: a missing refusal counter is fine
                    wrong.append(f"{shown} missing")
                break
            grown += value - (old.total(name, labels) or 0.0)
        else:
            if round(grown) != count:
                wrong.append(f"{shown} +{grown:g} vs bench {count}")
    return "ok" if not wrong else "mismatch (" + "; ".join(wrong) + ")"


def request_pool_calls(before: list[Scrape], after: list[Scrape]) -> tuple[float | None, float | None]:
    """The calls the app's request database threads ran during a level (the growth of its
    `chat_db_call*_total{pool="request"}` counters, summed over the processes): their mean wait for a
    thread, in ms, and their running time divided by their CPU time. A ratio well above 1 says the calls
    waited for the GIL: the process was short of CPU (chat/streaming/db.py, `PoolStats`). (None, None)
    when a scrape failed or nothing ran."""
    grown = dict.fromkeys(
        (
            "chat_db_calls_total",
            "chat_db_call_wait_seconds_total",
            "chat_db_call_seconds_total",
            "chat_db_call_cpu_seconds_total",
        ),
        0.0,
    )
    if len(before) != len(after) or any(s.failure for s in (*before, *after)):
        return None, None
    for old, new in zip(before, after, strict=True):
        for name in grown:
            value = new.total(name, {"pool": "request"})
            if value is None:
                return None, None
            grown[name] += value - (old.total(name, {"pool": "request"}) or 0.0)
    calls, wait, run, cpu = grown.values()
    if calls <= 0:
        return None, None
    return wait / calls * 1000, (run / cpu if cpu > 0 else None)


def _wait_ready(url: str, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early; see {proc.log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{proc.name} not ready at {url} within {timeout:g} s")


# ------------------------------------------------------------------------------------------- the sweep


class Sweep:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.work = Path(tempfile.mkdtemp(prefix="chatsite-bench-"))
        self.logs = opts.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.run_id = dt.datetime.now().strftime("r%H%M%S")
        self.upstream: Proc | None = None
        self.upstream_url = ""
        self.redis: Proc | None = None
        self.redis_url = ""
        self.servers: dict[str, Servers] = {}
        self.sessions_file = self.work / "sessions.json"
        self.users = 0
        self.pg_db = f"chatsite_bench_{os.getpid()}" if opts.db == "postgres" else ""
        self.metrics_token = secrets.token_hex(16)
        self.env = self._env()
        self.levels = sorted(set(opts.levels) | self._bound_level())
        self.rows: list[Row] = []
        self.on_row: Callable[[list[Row]], None] | None = None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUB}
        env.update(
            DATA_DIR=str(self.work / "data"),
            CHAT_PROVIDER="anthropic",
            ANTHROPIC_API_KEY="bench",
            CHAT_UPSTREAM_MAX_RETRIES="0",
            # Production-like: DEBUG off (no per-query logging), plain HTTP on loopback.
            DEBUG="False",
            SECRET_KEY="bench-only-secret-key-not-for-production-0123456789abcdef",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            SECURE_SSL_REDIRECT="False",
            SESSION_COOKIE_SECURE="False",
            CSRF_COOKIE_SECURE="False",
            SECURE_HSTS_SECONDS="0",
            CHAT_MAX_CONCURRENT_PER_USER="100000",
            CHAT_MESSAGES_PER_MINUTE="100000000",
            CHAT_MAX_ACTIVE_REPLIES=UNBOUNDED,
            METRICS_TOKEN=self.metrics_token,
            LOG_LEVEL="WARNING",
            RELAY_UPSTREAM_HTTP=self.opts.relay_http,
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(ROOT),
        )
        if self.pg_db:
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{self.pg_db}"
        (self.work / "data").mkdir(parents=True, exist_ok=True)
        return env

    def _bound_level(self) -> set[int]:
        """`bounded` also runs at N=K when the levels go past K: its p99 there is what "admitted streams keep
        their p99" compares with."""
        k = self.opts.admission
        return {k} if k is not None and k < max(self.opts.levels) else set()

    def runs_at(self, target: str, n: int) -> bool:
        return target == "bounded" or n not in self._bound_level() - set(self.opts.levels)

    def target_env(self, target: str) -> dict[str, str]:
        env = dict(self.env)
        if target == "scaled":
            env["REDIS_URL"] = self.redis_url
        elif target == "bounded":
            assert self.opts.admission is not None
            env["CHAT_MAX_ACTIVE_REPLIES"] = str(self.opts.admission)
        return env

    def log(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)

    # --- setup / teardown

    def start(self) -> None:
        if self.pg_db:
            import psycopg

            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_db}"')
        port_file = self.work / "upstream.url"
        self.upstream = Proc(
            "upstream",
            [sys.executable, "-m", "bench.upstream", "--port-file", str(port_file)],
            self.env,
            self.logs,
        )
        self.upstream_url = wait_for_file(port_file, 30)
        self.env["ANTHROPIC_BASE_URL"] = self.upstream_url
        if self.opts.redis:
            self._start_redis()
        self.ensure_users(max(self.levels))

    def ensure_users(self, n: int) -> None:
        """Bench users with a logged-in session each: one per stream of the largest level so far."""
        if n <= self.users or not set(APP_TARGETS) & set(self.opts.targets):
            return
        self.log(f"database setup ({self.opts.db}), {n} users")
        users_file = self.sessions_file
        subprocess.run(
            [sys.executable, "-m", "bench.dbtool", "setup", "--users", str(n), "--out", str(users_file)],
            cwd=ROOT,
            env=self.env,
            check=True,
            timeout=600,
        )
        self.users = n

    def _start_redis(self) -> None:
        """A private redis-server on a free port, nothing saved to disk, stopped in close()."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("--redis needs redis-server on PATH (apt-get install -y redis-server)")
        (port,) = free_ports(1)
        self.redis = Proc(
            "redis",
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            self.env,
            self.logs,
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 15
        while not self._redis_call("PING"):
            if not self.redis.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer; see {self.redis.log_path}")
            time.sleep(0.1)

    def _redis_call(self, command: str) -> bool:
        import redis

        try:
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
            with client:
                return bool(client.execute_command(command))
        except redis.RedisError:
            return False

    def close(self) -> None:
        for servers in self.servers.values():
            servers.stop()
        self.servers.clear()
        if self.upstream is not None:
            self.upstream.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.pg_db:
            import psycopg

            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn,
            ):
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def server(self, target: str) -> Servers:
        if target in self.servers and self.servers[target].alive():
            return self.servers[target]
        self.stop_server(target)
        env = self.target_env(target)
        count = self.opts.processes if target == "scaled" else 1
        bin_dir = Path(sys.executable).parent
        if target != "relay":
            subprocess.run(
                [sys.executable, "-m", "bench.dbtool", "migrate"],
                cwd=ROOT,
                env=env,
                check=True,
                timeout=300,
            )
        if target == "scaled":
            self._redis_call("FLUSHALL")  # nothing left over from the previous level's processes
        procs, urls = [], []
        for i, port in enumerate(free_ports(count)):
            if target == "uvicorn":
                cmd = [
                    str(bin_dir / "uvicorn"),
                    "chatsite.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--lifespan",
                    "off",
                ]
            else:
                app = "bench.relay_asgi:application" if target == "relay" else "chatsite.asgi:application"
                # daphne as the README starts it (on uvloop), the relay too: the same server under both.
                cmd = [sys.executable, "-m", "chatsite.serve", "-b", "127.0.0.1", "-p", str(port), app]
            procs.append(Proc(f"server-{target}" + (f"-{i}" if count > 1 else ""), cmd, env, self.logs))
            urls.append(f"http://127.0.0.1:{port}")
        servers = Servers(procs, urls)
        self.servers[target] = servers  # stopped by close() even when a process fails to come up
        for proc, url in zip(procs, urls, strict=True):
            _wait_ready(url + ("/" if target == "relay" else "/accounts/login/"), proc)
        return servers

    def stop_server(self, target: str) -> None:
        if target in self.servers:
            self.servers.pop(target).stop()

    # --- one load run

    def load(
        self, target: str, url: str, n: int, deltas: int, rate: float, ramp: float, tag: str, timeout: float
    ) -> dict[str, Any]:
        # Kept with the results: each stream's outcome (error, deltas, TTFT) for a closer look at a bad level.
        out = self.opts.out / "loads" / f"load-{tag}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "bench.load",
            "--target",
            "ours" if target in APP_TARGETS else target,
            "--base-url",
            url,
            "--n",
            str(n),
            "--deltas",
            str(deltas),
            "--rate",
            str(rate),
            "--ttft",
            str(self.opts.ttft),
            "--ramp",
            str(ramp),
            "--grace",
            str(self.opts.grace),
            "--run-id",
            f"{self.run_id}-{tag}",
            "--out",
            str(out),
            "--routing",
            self.opts.routing,
        ]
        if target in APP_TARGETS:
            cmd += ["--sessions", str(self.sessions_file)]
        with (self.logs / f"load-{target}.log").open("ab") as log:
            subprocess.run(
                cmd,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=timeout,
                preexec_fn=_preexec,
            )
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def run_level(self, target: str, n: int, *, pair: int = 0) -> Row:
        opts = self.opts
        row = Row(target=target, n=n, pair=pair)
        tag = f"{target}-{n}" + (f"-pair{pair + 1}" if pair else "")  # names its load and perf files
        assert self.upstream is not None
        server: Servers | None = None
        base = self.upstream_url
        if target != "sdk":
            server = self.server(target)
            row.processes = len(server.procs)
            base = ",".join(server.urls)
            if not opts.smoke:  # warm before the idle RSS sample (the client warms up again in any case)
                for i in range(len(server.urls)):  # every process: imports, templates, pools
                    rotated = ",".join(server.urls[i:] + server.urls[:i])
                    self.load(target, rotated, 1, 5, 100.0, 0.0, f"{tag}-warm{i}", 60)
        _http(self.upstream_url + "/_bench/reset", "POST")
        time.sleep(0.5 if opts.smoke else 1.5)
        app = server is not None and target in APP_TARGETS
        before = [scrape(url, self.metrics_token) for url in server.urls] if app and server else []
        rss_idle = server.rss() if server else 0
        cpu0 = server.cpu_s() if server else 0.0
        each_cpu0 = [proc.cpu_s() for proc in server.procs] if server else []
        redis_cpu0 = self.redis.cpu_s() if self.redis and target == "scaled" else None
        up_cpu0 = self.upstream.cpu_s()
        sampler = RssSampler(server) if server else None
        if sampler:
            sampler.start()
        nominal = opts.ttft + deltas_time(opts) + opts.ramp
        spy = self._profile(server, target, n) if server and n in opts.profile and not pair else None
        counter = InstructionCounter(server, self.logs / f"perf-{tag}.txt") if server else None
        t0, cpu_times0 = time.monotonic(), machine_cpu_times()
        try:
            summary = self.load(
                target, base, n, opts.deltas, opts.rate, opts.ramp, tag, timeout=nominal + opts.grace + 120
            )
        finally:
            if sampler:
                sampler.halt.set()
                sampler.join()
            if spy is not None:
                spy.wait(60)
            instructions = counter.stop() if counter else None
        wall = time.monotonic() - t0
        row.wall_s = round(wall, 1)
        if server:
            cpu = server.cpu_s() - cpu0
            row.rss_idle_mb = rss_idle / 2**20
            assert sampler is not None
            peak = max(sampler.peak, server.rss())
            row.rss_peak_mb = peak / 2**20
            row.rss_per_stream_kb = (peak - rss_idle) / 1024 / n
            if summary["deltas_received"]:
                row.server_cpu_us_per_delta = cpu / summary["deltas_received"] * 1e6
                row.process_cpu_us_per_delta = [
                    (proc.cpu_s() - before) / summary["deltas_received"] * 1e6
                    for proc, before in zip(server.procs, each_cpu0, strict=True)
                ]
                if instructions is not None:
                    row.server_kinstr_per_delta = instructions / summary["deltas_received"] / 1e3
                if self.redis is not None and redis_cpu0 is not None:
                    redis_cpu = self.redis.cpu_s() - redis_cpu0
                    row.redis_cpu_us_per_delta = redis_cpu / summary["deltas_received"] * 1e6
        row.upstream_cpu_pct = (self.upstream.cpu_s() - up_cpu0) / wall * 100
        row.client_cpu_pct = summary["client_cpu_s"] / summary["wall_s"] * 100
        row.loadavg_1m = summary["loadavg_1m"]
        row.steal_pct = steal_pct(cpu_times0, machine_cpu_times())
        lat, ttft = summary["latency_ms"], summary["ttft_added_ms"]
        row.lat_p50, row.lat_p95, row.lat_p99, row.lat_max = lat["p50"], lat["p95"], lat["p99"], lat["max"]
        row.ttft_p50, row.ttft_p99 = ttft["p50"], ttft["p99"]
        row.deltas_expected, row.deltas_received = summary["deltas_expected"], summary["deltas_received"]
        row.timeouts = summary["timeouts"]
        row.refused = summary["refused"]
        row.same_process = summary.get("same_process", 0)
        kinds = set(summary["error_kinds"])
        sent: dict[str, dict[str, Any]] = _http(self.upstream_url + "/_bench/sent")
        stats = _http(self.upstream_url + "/_bench/stats")
        row.upstream_lateness_p99 = stats["lateness_ms_p99"]
        streams: list[dict[str, Any]] = summary["streams"]
        bad: set[str] = set()
        streams = [s for s in streams if not s["refused"]]  # refused: never started, nothing to check
        for s in streams:
            up = sent.get(s["key"])
            if not s["ok"]:
                bad.add(s["key"])
            elif up is None or not up["complete"] or up["sha256"] != s["sha256"]:
                bad.add(s["key"])
                kinds.add("received text differs from the upstream's")
        if target in APP_TARGETS:
            self._check_saved(row, streams, sent, bad, kinds)
        admitted = n - row.refused
        row.exact = admitted - len(bad)
        row.errors = len(bad)
        row.ok = admitted - row.errors
        row.error_kinds = sorted(kinds)
        if app and server:
            row.metrics, after = self._cross_check(server, before, row, summary)
            row.db_wait_ms, row.db_run_per_cpu = request_pool_calls(before, after)
        if opts.restart and server:
            self.stop_server(target)
        return row

    def _cross_check(
        self, server: Servers, before: list[Scrape], row: Row, summary: dict[str, Any]
    ) -> tuple[str, list[Scrape]]:
        """Compare /metrics with the bench's counts; counters may trail the client's `done` by a moment (the
        final save), so a mismatch is scraped again a few times before it stands. Returns the verdict and
        the last scrapes (the level's other /metrics figures are read from them)."""
        warm = summary["warmup"]
        clean = row.errors == 0 and warm["ok"]
        counts: dict[str, int | None] = {
            "replies_complete": (row.saved_complete or 0) + int(warm["ok"]),
            "upstream_deltas": summary["deltas_received"] + warm["deltas"] if clean else None,
            "delta_events": summary["delta_events"] + warm["events"] if clean else None,
            "delta_chars": summary["delta_chars"] + warm["chars"] if clean else None,
            "refused": row.refused,
        }
        verdict, after = "n/a", before
        for attempt in range(4):
            if attempt:
                time.sleep(0.5)
            after = [scrape(url, self.metrics_token) for url in server.urls]
            verdict = cross_check(before, after, counts)
            if not verdict.startswith("mismatch"):
                break
        return verdict, after

    def _profile(self, server: Servers, target: str, n: int) -> subprocess.Popen[bytes]:
        """py-spy (raw collapsed stacks, `--profile-rate` Hz, non-blocking) on the (first) server process
        while the level streams.

        It costs CPU on the same cores: profiled levels are for finding where time goes, not for the table."""
        seconds = max(2, round(self.opts.ramp + self.opts.ttft + self.opts.deltas / self.opts.rate))
        out = self.opts.out / f"profile-{target}-{n}.txt"
        spy = Path(sys.executable).parent / "py-spy"
        with (self.logs / "py-spy.log").open("ab") as log:
            return subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(server.procs[0].popen.pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    str(self.opts.profile_rate),
                    "--format",
                    "raw",
                    "--nonblocking",
                    *(["--gil"] if self.opts.profile_gil else []),
                    "--output",
                    str(out),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _check_saved(
        self,
        row: Row,
        streams: list[dict[str, Any]],
        sent: dict[str, dict[str, Any]],
        bad: set[str],
        kinds: set[str],
    ) -> None:
        ids = [s["reply_id"] for s in streams if s["reply_id"] is not None]
        ids_file, out_file = self.work / "ids.json", self.work / "check.json"
        ids_file.write_text(json.dumps(ids))
        subprocess.run(
            [sys.executable, "-m", "bench.dbtool", "check", "--ids", str(ids_file), "--out", str(out_file)],
            cwd=ROOT,
            env=self.env,
            check=True,
            timeout=120,
        )
        saved: dict[str, dict[str, Any]] = json.loads(out_file.read_text())
        writes: list[int] = []
        durations: list[float] = []
        over = 0
        exact = 0
        complete = 0
        for s in streams:
            db = saved.get(str(s["reply_id"])) if s["reply_id"] is not None else None
            up = sent.get(s["key"])
            if db is not None and db["status"] == "complete":
                complete += 1
            if db is None or up is None:
                bad.add(s["key"])
                continue
            if db["status"] == "complete" and up["complete"] and db["sha256"] == up["sha256"]:
                exact += 1
            else:
                bad.add(s["key"])
                kinds.add(f"saved reply not exact (status {db['status']})")
            if db["status"] != "complete" or db["duration_ms"] is None:
                continue  # the write budget needs the reply's streaming time: judged on complete replies
            writes.append(db["writes"])
            seconds = db["duration_ms"] / 1000
            durations.append(seconds)
            if db["writes"] > 4 * seconds + 2:
                over += 1
        row.saved_exact = exact
        row.saved_complete = complete
        if writes:
            row.writes_mean = sum(writes) / len(writes)
            row.writes_max = max(writes)
            row.writes_over_budget = over
            row.stream_s_mean = sum(durations) / len(durations)

    def run(self) -> list[Row]:
        try:
            self._run()
        except KeyboardInterrupt:
            self.log("interrupted: reporting the levels done so far")
        return self.rows

    def _run(self) -> None:
        active = list(self.opts.targets)
        i = 0
        while i < len(self.levels):
            n = self.levels[i]
            i += 1
            for target in list(active):
                if not self.runs_at(target, n):
                    continue
                self.log(f"{target}: N={n} ...")
                row = self._level_or_failure(target, n)
                self.rows.append(row)
                self.log(
                    f"{target}: N={n} p50/p99 {_f(row.lat_p50)}/{_f(row.lat_p99)} ms, errors {row.errors}, "
                    f"refused {row.refused}, cpu/delta {_f(row.server_cpu_us_per_delta)} us "
                    f"({_f(row.server_kinstr_per_delta)} k instructions), rss/stream "
                    f"{_f(row.rss_per_stream_kb)} KB, metrics {row.metrics}, db calls wait "
                    f"{_f(row.db_wait_ms)} ms, wall/cpu {_f(row.db_run_per_cpu)}, wall {row.wall_s} s"
                )
                if row.error_rate > self.opts.error_limit:
                    self.log(
                        f"{target}: errors {row.error_rate:.1%} > {self.opts.error_limit:.0%}: stop here"
                    )
                    active.remove(target)
                    self.stop_server(target)
                if self.on_row is not None:
                    self.on_row(self.rows)
            if not active:
                break
            if i == len(self.levels) and self._relay_still_holds(active, n):
                nxt = min(2 * n, MAX_LEVEL)
                self.log(f"the relay held N={n}: extending the levels to N={nxt}")
                self.ensure_users(nxt)
                self.levels.append(nxt)
        self._more_pairs()

    def _more_pairs(self) -> None:
        """`--pairs K`: run `ours` and `scaled` K-1 more times at the scale-out verdict's level, alternating
        which goes first, so that the verdict can be on the median of K ratios taken minutes apart.

        Why: the ratio divides two CPU figures measured a minute apart on a shared 2-core host, and each
        drifted by ±15 % between consecutive runs of the same code (issue 15, session 21: the in-memory
        process 134-211 µs per delta within half an hour), so one pair's verdict flipped with the host,
        not with the code. Alternating the order keeps a steady drift from favouring either side."""
        if self.opts.pairs < 2 or "scaled" not in self.opts.targets:
            return
        n = report.ref_level_of(
            [r.n for r in self.rows if r.target == "scaled"], [r.n for r in self.rows if r.target == "ours"]
        )
        if n is None:
            return
        for k in range(1, self.opts.pairs):
            for target in ("scaled", "ours") if k % 2 else ("ours", "scaled"):
                self.log(f"{target}: N={n}, pair {k + 1} of {self.opts.pairs} ...")
                row = self._level_or_failure(target, n, pair=k)
                self.rows.append(row)
                self.log(f"{target}: N={n} pair {k + 1}: cpu/delta {_f(row.server_cpu_us_per_delta)} us")
                if self.on_row is not None:
                    self.on_row(self.rows)

    def _level_or_failure(self, target: str, n: int, *, pair: int = 0) -> Row:
        """`run_level`, or, when the harness itself fails (a server that never comes up, a load client that
        crashes), a row that counts every stream as an error, with the server stopped for the next run."""
        try:
            return self.run_level(target, n, pair=pair)
        except Exception as exc:
            which = f"N={n}" + (f" pair {pair + 1}" if pair else "")
            self.log(f"{target}: {which} failed: {type(exc).__name__}: {exc}")
            self.stop_server(target)
            return Row(
                target=target, n=n, pair=pair, errors=n, error_kinds=[f"harness: {type(exc).__name__}"]
            )

    def _relay_still_holds(self, active: list[str], n: int) -> bool:
        if not self.opts.extend or "relay" not in active or n >= MAX_LEVEL:
            return False
        last = next((r for r in reversed(self.rows) if r.target == "relay"), None)
        return last is not None and last.n == n and last.held


def deltas_time(opts: Options) -> float:
    return opts.deltas / opts.rate


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--levels",
        help="comma-separated N values (default 1,10,50,...,1000, then doubling while the relay holds)",
    )
    parser.add_argument("--deltas", type=int, help="text deltas per reply (default 600)")
    parser.add_argument("--rate", type=float, help="deltas per second per stream (default 30)")
    parser.add_argument("--ttft", type=float, default=0.0, help="the upstream's own time to first token (s)")
    parser.add_argument("--ramp", type=float, help="spread each level's N starts over this many seconds (2)")
    parser.add_argument("--grace", type=float, help="per-stream timeout beyond its nominal length (30 s)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: " + ",".join(TARGETS))
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="postgres: a fresh database chatsite_bench_<pid> on 127.0.0.1:5432, dropped after",
    )
    parser.add_argument("--out", help="results directory (default bench/results/<timestamp>)")
    parser.add_argument("--no-restart", action="store_true", help="reuse each server across levels")
    parser.add_argument("--error-limit", type=float, default=0.01, help="stop a target above this error rate")
    parser.add_argument("--profile", help="comma-separated levels at which to py-spy the server(s)")
    parser.add_argument(
        "--profile-rate", type=int, default=100, help="py-spy samples per second with --profile (default 100)"
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only while the server holds the GIL (py-spy --gil): the CPU that"
        " Python spends, without threads that wait on a socket or the database",
    )
    parser.add_argument("--smoke", action="store_true", help="N=1,2, 20 deltas at 100/s: checks the harness")
    parser.add_argument(
        "--redis",
        action="store_true",
        help="add target `scaled`: the app on a private redis-server the bench starts (needs --db postgres)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes of `scaled` (needs --redis); no sticky routing (see --routing)",
    )
    parser.add_argument(
        "--routing",
        choices=["cross", "random", "same", "split"],
        default="cross",
        help="how `scaled`'s requests are spread: cross (each stream read from another process than its "
        "start's: every delta crosses Redis; the default), random (each request to a process drawn at "
        "random, seeded: about 1/P of the streams are read where they started), same (each stream read "
        "where it started, as sticky routing would: no delta crosses) or split (starts to one half of the "
        "processes, streams to the other, as a proxy routing by path to two pools)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        metavar="K",
        help="with --redis: run ours and scaled K times in all, alternately, at the scale-out verdict's "
        "level, and judge the Redis-mode CPU ratio on the median pair (default 3; 1 for one pair)",
    )
    parser.add_argument(
        "--admission",
        type=int,
        metavar="K",
        help="add target `bounded`: the app with CHAT_MAX_ACTIVE_REPLIES=K (also run at N=K)",
    )
    parser.add_argument(
        "--relay-http",
        choices=["httpx", "aiohttp"],
        default="httpx",
        help="the relay's SDK transport: httpx (the SDK's default) or aiohttp (the app's default, "
        "CHAT_UPSTREAM_HTTP), to compare the web tiers on the same HTTP client",
    )
    args = parser.parse_args(argv)
    smoke = bool(args.smoke)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown or not targets:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))} (scaled and bounded come with flags)")
    if args.processes < 1 or (args.processes > 1 and not args.redis):
        parser.error("--processes P > 1 needs --redis: processes share replies only through Redis")
    if args.redis and args.db != "postgres":
        parser.error("--redis needs --db postgres: the processes share the real PostgreSQL")
    if args.admission is not None and args.admission < 1:
        parser.error("--admission must be at least 1")
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if args.redis and "ours" not in targets:
        targets.append("ours")  # `scaled` is judged against one in-memory process in the same run
    if args.redis:
        targets.append("scaled")
    if args.admission is not None:
        targets.append("bounded")
    levels = (
        [int(v) for v in args.levels.split(",")]
        if args.levels
        else ([1, 2] if smoke else list(DEFAULT_LEVELS))
    )
    if any(n < 1 or n > 5000 for n in levels):
        parser.error("each level must be in 1..5000")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / stamp
    return Options(
        levels=levels,
        deltas=args.deltas or (20 if smoke else 600),
        rate=args.rate or (100.0 if smoke else 30.0),
        ttft=args.ttft,
        ramp=args.ramp if args.ramp is not None else (0.2 if smoke else 2.0),
        grace=args.grace or (20.0 if smoke else 30.0),
        targets=[t for t in ALL_TARGETS if t in targets],
        db=args.db,
        out=out,
        restart=not (args.no_restart or smoke),
        error_limit=args.error_limit,
        smoke=smoke,
        profile=[int(v) for v in args.profile.split(",")] if args.profile else [],
        profile_rate=args.profile_rate,
        profile_gil=bool(args.profile_gil),
        processes=args.processes,
        routing=args.routing,
        redis=bool(args.redis),
        admission=args.admission,
        extend=not args.levels and not smoke,
        relay_http=args.relay_http,
        pairs=1 if smoke or not args.redis else args.pairs,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    raise_nofile_limit()
    opts.out.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    sweep = Sweep(opts)
    started = dt.datetime.now()
    sweep.on_row = lambda rows: _write(opts, started, rows, final=False)
    try:
        sweep.start()
        rows = sweep.run()
    finally:
        sweep.close()
    _write(opts, started, rows, final=True)
    return 0


def _git_state() -> str:
    """The commit measured, and whether app files differed from it (the working tree is what runs)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "chat", "chatsite", "templates"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + uncommitted changes in {len(dirty.splitlines())} app files" if dirty else head


def _write(opts: Options, started: dt.datetime, rows: list[Row], *, final: bool) -> None:
    meta = report.machine() | {
        "date": started.isoformat(timespec="seconds"),
        "db": opts.db,
        "deltas": opts.deltas,
        "rate": opts.rate,
        "ttft": opts.ttft,
        "ramp": opts.ramp,
        "levels": sorted({r.n for r in rows} | set(opts.levels)),
        "targets": opts.targets,
        "processes": opts.processes,
        "routing": opts.routing,
        "redis": opts.redis,
        "admission": opts.admission,
        "extend": opts.extend,
        "relay_http": opts.relay_http,
        "pairs": opts.pairs,
        "restart_per_level": opts.restart,
        "minutes": round((dt.datetime.now() - started).total_seconds() / 60, 1),
        "code": _git_state(),
    }
    data = {"meta": meta, "rows": [asdict(r) | {"held": r.held} for r in rows]}
    write_atomic(opts.out / "results.json", json.dumps(data, indent=1))
    text = report.markdown(data)
    write_atomic(opts.out / "results.md", text)
    if not final:
        return
    plotted = report.plot(data, opts.out / "plot.png")
    print(text)
    print(f"results: {opts.out / 'results.md'}" + (f", plot: {opts.out / 'plot.png'}" if plotted else ""))


if __name__ == "__main__":
    raise SystemExit(main())
