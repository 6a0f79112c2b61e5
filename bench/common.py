"""Small helpers shared by every bench process."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from pathlib import Path

# Each upstream text delta carries its own emit time (and the first one also the request's arrival time), so
# latency is exact: client receive time minus the upstream's time.time() at the moment it wrote the delta.
TOKEN_RE = re.compile(r"w(\d+)@(\d+\.\d+)(?:@(\d+\.\d+))? ")

# The user message text the load client sends; the upstream reads its stream parameters from it.
KEY_RE = re.compile(r"bench key=(\S+) n=(\d+) rate=([\d.]+) ttft=([\d.]+)")


def make_key_text(key: str, deltas: int, rate: float, ttft: float) -> str:
    return f"bench key={key} n={deltas} rate={rate:g} ttft={ttft:g}"


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (1000 streams need ~3000 descriptors)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open while choosing, so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def wait_for_file(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text().strip()
            if text:
                return text
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout:g} s")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]
