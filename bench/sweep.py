"""Run the streaming benchmark: upstream, server(s) and load client in separate processes; sweep N.

    python -m bench.sweep                       # full sweep (see --help), ~15-30 min on 2 cores
    python -m bench.sweep --smoke               # seconds: N=1,2, 20-delta replies at 100/s, all targets

Targets: ``sdk`` (AsyncAnthropic straight at the upstream, no web tier: the floor), ``relay`` (raw-ASGI relay,
``bench/relay_asgi.py``, under daphne), ``ours`` (the app under daphne), ``uvicorn`` (the app under uvicorn).
Results (Markdown table, JSON, PNG plot) go to ``bench/results/<timestamp>/``; the table is also printed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import report
from bench.common import free_port, raise_nofile_limit, wait_for_file, write_atomic

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("sdk", "relay", "ours", "uvicorn")
DEFAULT_LEVELS = (1, 10, 50, 100, 250, 500, 1000)
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


@dataclass
class Row:
    target: str
    n: int
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
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
    server_cpu_us_per_delta: float | None = None
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
    wall_s: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.n if self.n else 0.0

    @property
    def held(self) -> bool:
        """This level's streams were all held: p99 <= 100 ms, no errors, every reply exact (and saved)."""
        return (
            self.errors == 0
            and self.exact == self.n
            and self.lat_p99 is not None
            and self.lat_p99 <= 100.0
            and (self.saved_exact is None or self.saved_exact == self.n)
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


class RssSampler(threading.Thread):
    """Peak RSS of a process while a load runs (sampled every 0.2 s)."""

    def __init__(self, proc: Proc) -> None:
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
        self.servers: dict[str, tuple[Proc, str]] = {}
        self.sessions_file = self.work / "sessions.json"
        self.pg_db = f"chatsite_bench_{os.getpid()}" if opts.db == "postgres" else ""
        self.env = self._env()
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
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(ROOT),
        )
        if self.pg_db:
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{self.pg_db}"
        (self.work / "data").mkdir(parents=True, exist_ok=True)
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
        if {"ours", "uvicorn"} & set(self.opts.targets):
            self.log(f"database setup ({self.opts.db}), {max(self.opts.levels)} users")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.dbtool",
                    "setup",
                    "--users",
                    str(max(self.opts.levels)),
                    "--out",
                    str(self.sessions_file),
                ],
                cwd=ROOT,
                env=self.env,
                check=True,
                timeout=300,
            )

    def close(self) -> None:
        for proc, _ in self.servers.values():
            proc.stop()
        self.servers.clear()
        if self.upstream is not None:
            self.upstream.stop()
        if self.pg_db:
            import psycopg

            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn,
            ):
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
        shutil.rmtree(self.work, ignore_errors=True)

    def server(self, target: str) -> tuple[Proc, str]:
        if target in self.servers and self.servers[target][0].alive():
            return self.servers[target]
        port = free_port()
        bin_dir = Path(sys.executable).parent
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
            cmd = [str(bin_dir / "daphne"), "-b", "127.0.0.1", "-p", str(port), app]
        if target != "relay":
            subprocess.run(
                [sys.executable, "-m", "bench.dbtool", "migrate"],
                cwd=ROOT,
                env=self.env,
                check=True,
                timeout=300,
            )
        proc = Proc(f"server-{target}", cmd, self.env, self.logs)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url + ("/" if target == "relay" else "/accounts/login/"), proc)
        self.servers[target] = (proc, url)
        return proc, url

    def stop_server(self, target: str) -> None:
        if target in self.servers:
            self.servers.pop(target)[0].stop()

    # --- one load run

    def load(
        self, target: str, url: str, n: int, deltas: int, rate: float, ramp: float, tag: str, timeout: float
    ) -> dict[str, Any]:
        out = self.work / f"load-{tag}.json"
        cmd = [
            sys.executable,
            "-m",
            "bench.load",
            "--target",
            "ours" if target == "uvicorn" else target,
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
        ]
        if target in ("ours", "uvicorn"):
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

    def run_level(self, target: str, n: int) -> Row:
        opts = self.opts
        row = Row(target=target, n=n)
        assert self.upstream is not None
        server: Proc | None = None
        base = self.upstream_url
        if target != "sdk":
            server, base = self.server(target)
            if not opts.smoke:  # warm before the idle RSS sample (the client warms up again in any case)
                self.load(
                    target, base, 1, 5, 100.0, 0.0, f"{target}-{n}-warm", 60
                )  # imports, templates, pools
        _http(self.upstream_url + "/_bench/reset", "POST")
        time.sleep(0.5 if opts.smoke else 1.5)
        rss_idle = server.rss() if server else 0
        cpu0 = server.cpu_s() if server else 0.0
        up_cpu0 = self.upstream.cpu_s()
        sampler = RssSampler(server) if server else None
        if sampler:
            sampler.start()
        nominal = opts.ttft + deltas_time(opts) + opts.ramp
        tag = f"{target}-{n}"
        spy = self._profile(server, target, n) if server and n in opts.profile else None
        t0 = time.monotonic()
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
        row.upstream_cpu_pct = (self.upstream.cpu_s() - up_cpu0) / wall * 100
        row.client_cpu_pct = summary["client_cpu_s"] / summary["wall_s"] * 100
        row.loadavg_1m = summary["loadavg_1m"]
        lat, ttft = summary["latency_ms"], summary["ttft_added_ms"]
        row.lat_p50, row.lat_p95, row.lat_p99, row.lat_max = lat["p50"], lat["p95"], lat["p99"], lat["max"]
        row.ttft_p50, row.ttft_p99 = ttft["p50"], ttft["p99"]
        row.deltas_expected, row.deltas_received = summary["deltas_expected"], summary["deltas_received"]
        row.timeouts = summary["timeouts"]
        kinds = set(summary["error_kinds"])
        sent: dict[str, dict[str, Any]] = _http(self.upstream_url + "/_bench/sent")
        stats = _http(self.upstream_url + "/_bench/stats")
        row.upstream_lateness_p99 = stats["lateness_ms_p99"]
        streams: list[dict[str, Any]] = summary["streams"]
        bad: set[str] = set()
        for s in streams:
            up = sent.get(s["key"])
            if not s["ok"]:
                bad.add(s["key"])
            elif up is None or not up["complete"] or up["sha256"] != s["sha256"]:
                bad.add(s["key"])
                kinds.add("received text differs from the upstream's")
        if target in ("ours", "uvicorn"):
            self._check_saved(row, streams, sent, bad, kinds)
        row.exact = n - len(bad)
        row.errors = len(bad)
        row.ok = n - row.errors
        row.error_kinds = sorted(kinds)
        if opts.restart and server:
            self.stop_server(target)
        return row

    def _profile(self, server: Proc, target: str, n: int) -> subprocess.Popen[bytes]:
        """py-spy (raw collapsed stacks, 100 Hz, non-blocking) on the server while the level streams.

        It costs CPU on the same cores: profiled levels are for finding where time goes, not for the table."""
        seconds = max(2, int(self.opts.deltas / self.opts.rate))
        out = self.opts.out / f"profile-{target}-{n}.txt"
        spy = Path(sys.executable).parent / "py-spy"
        with (self.logs / "py-spy.log").open("ab") as log:
            return subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(server.popen.pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "100",
                    "--format",
                    "raw",
                    "--nonblocking",
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
        for s in streams:
            db = saved.get(str(s["reply_id"])) if s["reply_id"] is not None else None
            up = sent.get(s["key"])
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
        for n in self.opts.levels:
            for target in list(active):
                self.log(f"{target}: N={n} ...")
                try:
                    row = self.run_level(target, n)
                except Exception as exc:
                    self.log(f"{target}: N={n} failed: {type(exc).__name__}: {exc}")
                    row = Row(target=target, n=n, errors=n, error_kinds=[f"harness: {type(exc).__name__}"])
                    self.stop_server(target)
                self.rows.append(row)
                self.log(
                    f"{target}: N={n} p50/p99 {_f(row.lat_p50)}/{_f(row.lat_p99)} ms, errors {row.errors}, "
                    f"cpu/delta {_f(row.server_cpu_us_per_delta)} us, rss/stream "
                    f"{_f(row.rss_per_stream_kb)} KB, wall {row.wall_s} s"
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


def deltas_time(opts: Options) -> float:
    return opts.deltas / opts.rate


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--levels", help="comma-separated N values (default 1,10,50,100,250,500,1000)")
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
    parser.add_argument("--smoke", action="store_true", help="N=1,2, 20 deltas at 100/s: checks the harness")
    args = parser.parse_args(argv)
    smoke = bool(args.smoke)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown or not targets:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
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
        targets=[t for t in TARGETS if t in targets],
        db=args.db,
        out=out,
        restart=not (args.no_restart or smoke),
        error_limit=args.error_limit,
        smoke=smoke,
        profile=[int(v) for v in args.profile.split(",")] if args.profile else [],
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
        "levels": opts.levels,
        "targets": opts.targets,
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
