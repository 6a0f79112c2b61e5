"""First-token latency: the time from the bench upstream writing a reply's first token to an SSE client
receiving it, through one live daphne process running chatsite (SQLite, in-memory layer), over real
loopback sockets. Each run is one reply of a single delta; the upstream stamps the delta with its write
time (see `bench.upstream`), the client with its receive time, both time.time() on this machine.

    .venv/bin/python -m bench.first_token [--runs 20]

It reuses the sweep's processes (`bench.sweep.Sweep`: upstream, database set-up, server, load client)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.sweep import Sweep, parse_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.first_token", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chatsite-first-token-") as out:
        sweep = Sweep(parse_args(["--targets", "ours", "--levels", "1", "--no-restart", "--out", out]))
        samples: list[float] = []
        try:
            sweep.start()
            url = sweep.server("ours").urls[0]
            for run in range(args.runs + 1):  # run 0 warms up imports, templates and pools: not counted
                summary = sweep.load("ours", url, 1, 1, 100.0, 0.0, f"first-token-{run}", timeout=120)
                first = summary["latency_ms"]["p50"]
                if run and first is not None:
                    samples.append(float(first))
        finally:
            sweep.close()
        print(f"logs: {Path(out) / 'logs'} (removed on exit)")
    if not samples:
        print("no sample: see the logs of a run with --runs 1")
        return 1
    samples.sort()
    print(f"first token, upstream write -> client receive, {len(samples)} runs (ms):")
    print(
        f"  median {statistics.median(samples):.2f}  min {samples[0]:.2f}  max {samples[-1]:.2f}  "
        f"p90 {samples[int(0.9 * (len(samples) - 1))]:.2f}"
    )
    print("  all: " + ", ".join(f"{s:.2f}" for s in samples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
