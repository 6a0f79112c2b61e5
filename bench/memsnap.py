"""Run one bench level with heap tracing on the server and take its snapshots at the right moments.

    python -m bench.memsnap --target ours --n 50 --out /tmp/mem-ours [--at 6,9] [-- extra sweep args]

Starts ``python -m bench.sweep --levels N --targets T --deltas 300 --ttft 0.7`` with
``CHAT_TRACEMALLOC_DIR=<out>/snaps`` (chatsite/memtrace.py), then sends SIGUSR1 to the level's server: once
idle (just after the warm-up stream, before the load), and at each ``--at`` second after the load started
(default 6 and 9: all N streams open, the last one 4 s into its 10 s reply). Then prints
``python -m bench.memdiff`` of idle against each. See docs/notes/memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


def _wait(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.05)


def _server(sweep: subprocess.Popen[bytes], app: str) -> psutil.Process:
    """The sweep's daphne child serving `app` (the level's server is started fresh per level)."""
    for child in psutil.Process(sweep.pid).children(recursive=True):
        if any(app in part for part in child.cmdline()):
            return child
    raise RuntimeError(f"no server process for {app}")


def _snap_count(snaps: Path) -> int:
    return len(list(snaps.glob("*.json")))


def _proc_state(pid: int) -> dict[str, Any]:
    """The process's threads and its resident memory by kind of mapping (/proc/<pid>/smaps), in KiB: the
    brk heap, anonymous mappings (pymalloc arenas, glibc's per-thread arenas, large blocks, thread stacks)
    by size class, and file-backed mappings."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
    kinds: dict[str, int] = {}
    kind = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
        if head:
            size = (int(head[2], 16) - int(head[1], 16)) // 1024
            name = head[3]
            if name == "[heap]":
                kind = "heap (brk)"
            elif name.startswith("["):
                kind = name
            elif name:
                kind = "file-backed"
            elif size >= 8192:
                kind = "anon >= 8 MiB (thread stacks, glibc thread arenas)"
            elif size >= 1024:
                kind = "anon 1-8 MiB (pymalloc arenas, large blocks)"
            else:
                kind = "anon < 1 MiB"
        elif line.startswith("Rss:"):
            kinds[kind] = kinds.get(kind, 0) + int(line.split()[1])
    return {"threads": threads, "rss_kib": kinds}


def _signal(server: psutil.Process, snaps: Path, label: str, trace: bool) -> None:
    state = _proc_state(server.pid)
    (snaps / f"proc-{label.replace(' ', '')}.json").write_text(json.dumps(state))
    print(f"[memsnap] {label}: {state}", flush=True)
    if not trace:
        return
    before = _snap_count(snaps)
    t0 = time.monotonic()
    os.kill(server.pid, signal.SIGUSR1)
    while _snap_count(snaps) == before and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    print(f"[memsnap] {label}: snapshot written in {time.monotonic() - t0:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memsnap", description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=["ours", "relay"], default="ours")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--at", default="6,9", help="seconds after the load's start for busy snapshots")
    parser.add_argument("--no-trace", action="store_true", help="only /proc figures, no tracemalloc")
    parser.add_argument("extra", nargs="*", help="more `bench.sweep` arguments (after --)")
    args = parser.parse_args(argv)
    snaps = args.out / "snaps"
    snaps.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not args.no_trace:
        env["CHAT_TRACEMALLOC_DIR"] = str(snaps)
    cmd = [
        sys.executable,
        "-m",
        "bench.sweep",
        "--levels",
        str(args.n),
        "--targets",
        args.target,
        "--deltas",
        "300",
        "--ttft",
        "0.7",
        "--out",
        str(args.out / "bench"),
        *args.extra,
    ]
    sweep = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        tag = f"{args.target}-{args.n}"
        _wait(args.out / "bench" / "loads" / f"load-{tag}-warm0.json", sweep, 300)
        server = _server(sweep, "chatsite.asgi" if args.target == "ours" else "relay_asgi")
        time.sleep(0.2)
        _signal(server, snaps, "idle", not args.no_trace)
        # The sweep sleeps 1.5 s after the warm-up, samples the idle RSS, then starts the load client.
        started = time.monotonic()
        while not any(
            "bench.load" in " ".join(c.cmdline())
            and f"{tag}" in " ".join(c.cmdline())
            and "warm" not in " ".join(c.cmdline())
            for c in psutil.Process(sweep.pid).children()
        ):
            if time.monotonic() - started > 60:
                raise RuntimeError("the load never started")
            time.sleep(0.05)
        load_t0 = time.monotonic()
        for at in (float(v) for v in args.at.split(",")):
            time.sleep(max(0.0, load_t0 + at - time.monotonic()))
            _signal(server, snaps, f"load +{at:g} s", not args.no_trace)
        sweep.wait()
    finally:
        if sweep.poll() is None:
            sweep.terminate()
            sweep.wait(30)
    files = sorted(snaps.glob("snap-*.pickle"))
    for busy in files[1:]:
        print(f"\n## {files[0].name} -> {busy.name}\n", flush=True)
        subprocess.run(
            [sys.executable, "-m", "bench.memdiff", str(files[0]), str(busy), "--n", str(args.n)],
            cwd=ROOT,
            check=False,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
