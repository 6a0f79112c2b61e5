"""Summarise a py-spy raw (collapsed stacks) profile: where the server's time goes, by layer and function.

    python -m bench.profile_summary bench/results/<run>/profile-ours-100.txt [--top 25]
    python -m bench.profile_summary A.txt --against B.txt [--scale 2]

Layers are judged by the innermost frame's file (self time) and by whether a layer appears anywhere on the
stack (inclusive time): our code (chat/), Django, channels, daphne/twisted, uvicorn, the Anthropic SDK and its
HTTP layer (anthropic/, httpx2, httpcore), asyncio, sqlite3/psycopg, other.

`--against B`: where B's samples went against A's, by *owner*: the innermost frame that belongs to a known
layer (so asyncio or contextlib called by the SDK counts as the SDK's), and "event loop, native" for samples
with no Python frame under the loop's `run` (uvloop's C code: polling, dispatching callbacks, socket reads
and writes made there). B's counts are multiplied by `--scale`: 2 compares one of `scaled`'s two processes,
each carrying half of the streams, with the single in-memory process. Best with `--profile-gil` profiles
(only the CPU that Python spends); made for issue 15's Redis-mode question, see docs/notes/perf.md.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

LAYERS: list[tuple[str, re.Pattern[str]]] = [
    # py-spy frames read "function (path:line)", paths relative to site-packages or the project.
    (
        "our channel layers (layers.py, resp.py, msgpack)",
        re.compile(
            r"^(RedisPubSubLayer|LocalChannelLayer)\.|\((/work/main/)?chat/streaming/resp\.py|\(msgpack/"
        ),
    ),
    ("our code (chat/)", re.compile(r"\((/work/main/)?chat/")),
    ("bench relay", re.compile(r"\((/work/main/)?bench/")),
    ("channel layer (channels/layers.py)", re.compile(r"\(channels/layers")),
    ("channels.db (close_old_connections)", re.compile(r"\(channels/")),
    ("django db + sqlite3/psycopg", re.compile(r"\((django/db/|sqlite3/|psycopg)")),
    ("django (other)", re.compile(r"\(django/")),
    ("asgiref (sync_to_async)", re.compile(r"\(asgiref/")),
    ("daphne/twisted", re.compile(r"\((daphne|twisted|autobahn|txaio)/")),
    ("uvicorn", re.compile(r"\(uvicorn/")),
    ("anthropic SDK + pydantic", re.compile(r"\((anthropic|pydantic|pydantic_core)/")),
    ("SDK HTTP (httpx2/httpcore2/h11/anyio)", re.compile(r"\((httpx2?|httpcore2?|h11|anyio)/")),
    ("threads (concurrent/threading)", re.compile(r"\((concurrent|threading)")),
    ("asyncio", re.compile(r"\(asyncio/|\(selectors")),
]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def layer_of(frame: str) -> str:
    for name, pattern in LAYERS:
        if pattern.search(frame):
            return name
    return "other"


# The frame a sample is in when uvloop's (or asyncio's) own code runs, below no Python callback.
LOOP_DRIVER = re.compile(
    r"^(AsyncioSelectorReactor\.run \(twisted/internet/asyncioreactor|BaseEventLoop\.run_forever \(asyncio/|"
    r"Runner\.run \(asyncio/|run \(uvloop/)"
)
# Layers that do work on behalf of whoever called them: a sample there belongs to the caller's layer.
BORROWED = {"other", "asyncio", "threads (concurrent/threading)"}
LOOP_NATIVE = "event loop, native (no Python frame under its run)"


def owner_of(frames: list[str]) -> str:
    if LOOP_DRIVER.search(frames[-1]):
        return LOOP_NATIVE
    for frame in reversed(frames):
        name = layer_of(frame)
        if name not in BORROWED:
            return name
    return "other"


def samples(path: Path) -> Iterator[tuple[list[str], int]]:
    """Each stack of a py-spy raw profile (outermost frame first) and how many samples it got."""
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            yield [f for f in stack.split(";") if f], int(count_text)


def owners(path: Path) -> tuple[int, Counter[str]]:
    counts: Counter[str] = Counter()
    for frames, count in samples(path):
        if frames:
            counts[owner_of(frames)] += count
    return sum(counts.values()), counts


def compare(a: Path, b: Path, scale: float) -> str:
    """B against A, by owner layer (see the module docstring), B's samples times `scale`."""
    total_a, by_a = owners(a)
    total_b, by_b = owners(b)
    if not total_a or not total_b:
        return f"{a if not total_a else b}: no samples\n"
    lines = [
        f"# {b.name} (x{scale:g}) against {a.name}: {total_b * scale:.0f} samples against {total_a} "
        f"({total_b * scale / total_a:.2f}x)",
        "",
        "| owner | A | B x scale | B - A | B / A | share of the difference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    difference = total_b * scale - total_a
    for name in sorted(set(by_a) | set(by_b), key=lambda k: -(by_b[k] * scale - by_a[k])):
        mine, theirs = by_a[name], by_b[name] * scale
        ratio = f"{theirs / mine:.2f}" if mine else "-"
        share = f"{(theirs - mine) / difference * 100:.0f}%" if difference else "-"
        lines.append(f"| {name} | {mine} | {theirs:.0f} | {theirs - mine:+.0f} | {ratio} | {share} |")
    return "\n".join(lines) + "\n"


def summarise(path: Path, top: int) -> str:
    self_layers: Counter[str] = Counter()
    incl_layers: Counter[str] = Counter()
    self_funcs: Counter[str] = Counter()
    incl_funcs: Counter[str] = Counter()
    total = 0
    idle = 0
    for frames, count in samples(path):
        total += count
        if not frames:
            continue
        leaf = frames[-1]
        if re.search(r"\b(select|poll|epoll|_run_once|wait)\b", leaf) and "selectors" in leaf:
            idle += count
        self_layers[layer_of(leaf)] += count
        self_funcs[leaf] += count
        for name in {layer_of(f) for f in frames}:
            incl_layers[name] += count
        for frame in set(frames):
            incl_funcs[frame] += count
    if not total:
        return f"{path}: no samples\n"
    pct = 100.0 / total
    lines = [
        f"# {path.name}: {total} samples (idle in the selector: {idle * pct:.1f}%)",
        "",
        "| layer | self % | on stack % |",
        "|---|---:|---:|",
    ]
    for name, count in incl_layers.most_common():
        lines.append(f"| {name} | {self_layers[name] * pct:.1f} | {count * pct:.1f} |")
    lines += ["", f"Top {top} functions by self time:", ""]
    lines += [f"- {count * pct:5.1f}%  {frame}" for frame, count in self_funcs.most_common(top)]
    lines += ["", f"Top {top} of our code (chat/) by inclusive time:", ""]
    ours = [(f, c) for f, c in incl_funcs.most_common() if layer_of(f) == "our code (chat/)"][:top]
    lines += [f"- {count * pct:5.1f}%  {frame}" for frame, count in ours]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_summary", description=__doc__.split("\n")[0]
    )
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--against", help="compare this profile with the (one) profile given, by owner layer")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply --against's samples (default 1)")
    args = parser.parse_args(argv)
    if args.against:
        if len(args.profiles) != 1:
            parser.error("--against compares with exactly one profile")
        print(compare(Path(args.profiles[0]), Path(args.against), args.scale))
        return 0
    for name in args.profiles:
        print(summarise(Path(name), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
