"""Where a server's memory went between two heap snapshots (chatsite/memtrace.py), per stream.

    python -m bench.memdiff IDLE.pickle BUSY.pickle --n 50 [--top 10] [--frames 8]

Prints, in Markdown: the traced heap's growth and the RSS growth (from the snapshots' .json sidecars); the
growth grouped by the library of the allocating line and, separately, by our innermost frame (chat/,
chatsite/, accounts/, usage/, bench/) on the stack; then the top allocation lines with the largest traceback
behind each. KB per stream = growth / N.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tracemalloc
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

OURS = ("chat", "chatsite", "accounts", "usage", "bench")
_SITE = re.compile(r"/site-packages/([^/]+)")
_STDLIB = re.compile(r"/lib/python3\.\d+/([^/]+)")


def library(filename: str) -> str:
    """A short name for the code a file belongs to: a distribution's top package, stdlib:<module>, or ours."""
    match = _SITE.search(filename)
    if match:
        name = match[1].removesuffix(".py")
        return name.split(".")[0] if not name.startswith("_") else name
    match = _STDLIB.search(filename)
    if match:
        return "stdlib:" + match[1].removesuffix(".py")
    if filename.startswith("<frozen"):
        return "stdlib:" + filename.strip("<>").removeprefix("frozen ")
    if filename.startswith("<"):
        return filename
    parts = Path(filename).parts
    for part in OURS:
        if part in parts:
            return part
    return "other"


def short(filename: str) -> str:
    """The path from the package directory on (site-packages/, lib/python3.x/ or the repository)."""
    for pattern in (_SITE, _STDLIB):
        match = pattern.search(filename)
        if match:
            return filename[match.start(1) :]
    parts = Path(filename).parts
    for i, part in enumerate(parts):
        if part in OURS:
            return "/".join(parts[i:])
    return filename


def ours(tb: tracemalloc.Traceback) -> str:
    """Our innermost frame on the stack (frames run oldest to newest), as path:line; "-" if none."""
    for frame in reversed(tb):
        if library(frame.filename) in OURS:
            return f"{short(frame.filename)}:{frame.lineno}"
    return "-"


def caller(tb: tracemalloc.Traceback) -> str:
    """The innermost frame outside the standard library, as library path:line: who asked asyncio, copy,
    weakref... for the memory (the allocating line itself when it is not stdlib)."""
    for frame in reversed(tb):
        if not library(frame.filename).startswith(("stdlib:", "<")):
            return f"{short(frame.filename)}:{frame.lineno}"
    return "(stdlib only: " + short(tb[0].filename) + ")"


def kb(size: float, n: int) -> str:
    return f"{size / 1024 / n:,.1f}"


def _table(rows: Iterable[tuple[str, int, int]], n: int, total: int, limit: int) -> list[str]:
    out = ["| where | KB/stream | blocks/stream | share |", "|---|---:|---:|---:|"]
    ranked = sorted(rows, key=lambda r: -r[1])
    for name, size, count in ranked[:limit]:
        out.append(f"| `{name}` | {kb(size, n)} | {count / n:,.1f} | {size / total:.0%} |")
    rest = ranked[limit:]
    if rest:
        size = sum(r[1] for r in rest)
        out.append(
            f"| ({len(rest)} more) | {kb(size, n)} | {sum(r[2] for r in rest) / n:,.1f} | "
            f"{size / total:.0%} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memdiff", description=__doc__.split("\n")[0])
    parser.add_argument("idle", type=Path)
    parser.add_argument("busy", type=Path)
    parser.add_argument("--n", type=int, required=True, help="streams open in BUSY (and not in IDLE)")
    parser.add_argument("--top", type=int, default=10, help="allocation lines to show")
    parser.add_argument("--frames", type=int, default=8, help="frames of each top line's traceback")
    args = parser.parse_args(argv)
    n = args.n
    idle = tracemalloc.Snapshot.load(str(args.idle))
    busy = tracemalloc.Snapshot.load(str(args.busy))
    meta = [json.loads(p.with_suffix(".json").read_text()) for p in (args.idle, args.busy)]
    diffs = busy.compare_to(idle, "traceback")
    grown = sum(d.size_diff for d in diffs)
    total = sum(d.size_diff for d in diffs if d.size_diff > 0) or 1

    lines = [
        f"N = {n}; traced heap {meta[0]['traced'] / 2**20:.1f} -> {meta[1]['traced'] / 2**20:.1f} MiB "
        f"(net +{kb(grown, n)} KB/stream; growing tracebacks +{kb(total, n)}, shrinking "
        f"{kb(grown - total, n)}); RSS {meta[0]['rss'] / 2**20:.1f} -> {meta[1]['rss'] / 2**20:.1f} MiB "
        f"(+{kb(meta[1]['rss'] - meta[0]['rss'], n)} KB/stream, tracemalloc's own "
        f"+{kb(meta[1]['tracemalloc_overhead'] - meta[0]['tracemalloc_overhead'], n)} KB/stream of it)",
        "",
    ]
    by_lib: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_ours: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_line: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_caller_lib: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_caller: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    biggest: dict[str, tuple[int, tracemalloc.Traceback]] = {}
    for d in diffs:
        if d.size_diff <= 0:
            continue
        site = d.traceback[-1]
        line = f"{short(site.filename)}:{site.lineno}"
        who = caller(d.traceback)
        keys = (
            (by_lib, library(site.filename)),
            (by_ours, ours(d.traceback)),
            (by_line, line),
            (by_caller, who),
            (by_caller_lib, who.split("/")[0].split(".py:")[0]),
        )
        for table, key in keys:
            table[key][0] += d.size_diff
            table[key][1] += d.count_diff
        if line not in biggest or d.size_diff > biggest[line][0]:
            biggest[line] = (d.size_diff, d.traceback)

    lines += ["### By library of the allocating line (growing tracebacks)", ""]
    lines += _table(((k, v[0], v[1]) for k, v in by_lib.items()), n, total, 20)
    lines += ["", "### By the library of the innermost non-stdlib frame (who called asyncio etc.)", ""]
    lines += _table(((k, v[0], v[1]) for k, v in by_caller_lib.items()), n, total, 20)
    lines += ["", "### By the innermost non-stdlib frame", ""]
    lines += _table(((k, v[0], v[1]) for k, v in by_caller.items()), n, total, 25)
    lines += ["", "### By our innermost frame on the stack", ""]
    lines += _table(((k, v[0], v[1]) for k, v in by_ours.items()), n, total, 20)
    lines += ["", f"### Top {args.top} allocation lines", ""]
    lines += _table(((k, v[0], v[1]) for k, v in by_line.items()), n, total, args.top)
    ranked = sorted(by_line.items(), key=lambda kv: -kv[1][0])[: args.top]
    for i, (line, (size, _count)) in enumerate(ranked, 1):
        top_size, tb = biggest[line]
        lines += [
            "",
            f"{i}. `{line}` {kb(size, n)} KB/stream; its largest traceback "
            f"({kb(top_size, n)} KB/stream), newest frame last:",
            "",
            "```",
        ]
        for frame in list(tb)[-args.frames :]:
            lines.append(f"  {short(frame.filename)}:{frame.lineno}")
        lines.append("```")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
