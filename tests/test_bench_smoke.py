"""The benchmark harness works: a smoke sweep (N=1 and N=2, 20-delta replies at 100/s, every target) runs all
its processes, writes the Markdown table and JSON, and every reply arrives and is saved exactly.

No timing thresholds: the numbers only have to be sane (present, finite, non-negative where they must be)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

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
