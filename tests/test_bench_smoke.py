"""The benchmark harness works: a smoke sweep (N=1 and N=2, 20-delta replies at 100/s, every target) runs all
its processes, writes the Markdown table and JSON, and every reply arrives and is saved exactly.

No timing thresholds: the numbers only have to be sane (present, finite, non-negative where they must be)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psutil", reason="the bench needs psutil (dev extra)")

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("sdk", "relay", "ours", "uvicorn")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], str, Path]:
    out = tmp_path_factory.mktemp("bench-smoke")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sweep", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads((out / "results.json").read_text()), proc.stdout, out


def test_every_target_and_level_ran(smoke: tuple[dict[str, object], str, Path]) -> None:
    data, _, _ = smoke
    rows = data["rows"]
    assert isinstance(rows, list)
    assert sorted((r["target"], r["n"]) for r in rows) == sorted((t, n) for t in TARGETS for n in (1, 2))


def test_every_reply_received_and_saved_exactly(smoke: tuple[dict[str, object], str, Path]) -> None:
    data, _, _ = smoke
    rows = data["rows"]
    assert isinstance(rows, list)
    for row in rows:
        where = f"{row['target']} N={row['n']}: {row['error_kinds']}"
        assert row["errors"] == 0 and row["timeouts"] == 0, where
        assert row["exact"] == row["n"], where
        assert row["deltas_received"] == row["deltas_expected"] == 20 * row["n"], where
        if row["target"] in ("ours", "uvicorn"):
            assert row["saved_exact"] == row["n"], where
            # Counted by the triggers: at least the INSERT and the final UPDATE of each reply.
            assert row["writes_max"] is not None and row["writes_max"] >= 2, where


def test_numbers_are_sane(smoke: tuple[dict[str, object], str, Path]) -> None:
    data, _, _ = smoke
    rows = data["rows"]
    assert isinstance(rows, list)
    for row in rows:
        for key in ("lat_p50", "lat_p95", "lat_p99", "ttft_p50"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (row["target"], key)
        # Receive after emit, on one clock (allowing for the 6-decimal rounding of the emit stamp).
        assert row["lat_p50"] >= -0.01
        assert row["lat_p50"] <= row["lat_p95"] <= row["lat_p99"] <= row["lat_max"]
        if row["target"] != "sdk":
            assert row["server_cpu_us_per_delta"] > 0
            assert row["rss_peak_mb"] > 10 and row["rss_idle_mb"] > 10


def test_markdown_table_and_plot(smoke: tuple[dict[str, object], str, Path]) -> None:
    _, stdout, out = smoke
    text = (out / "results.md").read_text()
    assert "| target | N |" in text and "## Targets" in text and "## Ratios to the baselines" in text
    for target in TARGETS:
        assert f"| {target} | 1 |" in text and f"| {target} | 2 |" in text
    assert "| target | N |" in stdout  # also printed
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "plot.png").stat().st_size > 1000


# --- scale-out and admission: `--processes 2 --redis --db postgres --admission 1` ---------------------------

# The bench makes its own database beside this one (it always uses the local PostgreSQL as `postgres`).
BENCH_PG = "postgres://postgres@127.0.0.1:5432/postgres"
K = 1  # the admission bound: at N=2 with both starts at once, one of the two is refused


@pytest.fixture(scope="module")
def cluster_smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One smoke sweep of the scale-out and admission targets: `ours` and `scaled` (2 processes on a private
    redis-server) at N=2, `bounded` (CHAT_MAX_ACTIVE_REPLIES=1) at N=1 and 2. Both starts at once (ramp 0),
    and the upstream waits 1 s before its first token, so the second start finds the first reply active."""
    from tests.support.cluster import services_or_skip

    services_or_skip(BENCH_PG)
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install -y redis-server)")
    out = tmp_path_factory.mktemp("bench-cluster-smoke")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    args = [
        "--smoke",
        "--levels",
        "2",
        "--targets",
        "ours",
        "--processes",
        "2",
        "--redis",
        "--db",
        "postgres",
    ]
    args += ["--admission", str(K), "--ttft", "1", "--ramp", "0", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sweep", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads((out / "results.json").read_text()), out


def _app_serves(path: str) -> bool:
    """Whether this checkout's app routes `path` (the bench measures the same code)."""
    from django.urls import Resolver404, resolve

    try:
        resolve(path)
    except Resolver404:
        return False
    return True


@pytest.mark.postgres
@pytest.mark.redis
def test_scale_out_and_admission_levels_ran_with_every_admitted_reply_exact(
    cluster_smoke: tuple[dict[str, Any], Path],
) -> None:
    data, out = cluster_smoke
    rows = data["rows"]
    assert sorted((r["target"], r["n"]) for r in rows) == [
        ("bounded", 1),
        ("bounded", 2),
        ("ours", 2),
        ("scaled", 2),
    ]
    for row in rows:
        where = f"{row['target']} N={row['n']}: {row['error_kinds']}"
        admitted = row["n"] - row["refused"]
        assert row["errors"] == 0 and row["timeouts"] == 0, where
        assert row["exact"] == row["saved_exact"] == row["ok"] == admitted >= 1, where
        assert row["deltas_received"] == 20 * admitted, where
        assert row["server_cpu_us_per_delta"] > 0 and row["rss_peak_mb"] > 10, where
        assert row["refused"] == 0 or row["target"] == "bounded", where
    scaled = next(r for r in rows if r["target"] == "scaled")
    assert scaled["processes"] == 2
    assert scaled["redis_cpu_us_per_delta"] is not None and scaled["redis_cpu_us_per_delta"] >= 0
    # The bench's redis-server was started for the run and stopped at its end (SIGTERM: it says goodbye).
    assert "bye" in (out / "logs" / "redis.log").read_text()


@pytest.mark.postgres
@pytest.mark.redis
def test_past_the_bound_a_start_counts_as_refused_not_as_an_error(
    cluster_smoke: tuple[dict[str, Any], Path],
) -> None:
    from django.conf import settings

    data, _ = cluster_smoke
    at_bound, past = (
        next(r for r in data["rows"] if r["target"] == "bounded" and r["n"] == n) for n in (K, 2)
    )
    assert at_bound["refused"] == 0
    if hasattr(settings, "CHAT_MAX_ACTIVE_REPLIES"):  # admission control is in this checkout's app
        assert (past["refused"], past["ok"], past["errors"]) == (1, 1, 0)
    else:
        assert (past["refused"], past["ok"]) == (0, 2)


@pytest.mark.postgres
@pytest.mark.redis
def test_metrics_cross_check_and_report_sections(cluster_smoke: tuple[dict[str, Any], Path]) -> None:
    data, out = cluster_smoke
    has_metrics = _app_serves("/metrics")
    for row in data["rows"]:
        # The app's counters agree with the bench's own counts, or the app has no /metrics at all.
        if has_metrics:
            assert row["metrics"] == "ok", row
        else:
            assert row["metrics"].startswith("n/a"), row
    text = (out / "results.md").read_text()
    assert "| refused |" in text and "| metrics |" in text
    assert "## Scale-out: 2 processes on Redis" in text and "Redis-mode CPU per delta" in text
    assert f"## Admission: `bounded` (CHAT_MAX_ACTIVE_REPLIES={K})" in text
