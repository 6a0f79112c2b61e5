"""Summarise a py-spy raw (collapsed stacks) profile: where the server's time goes, by layer and function.

    python -m bench.profile_summary bench/results/<run>/profile-ours-100.txt [--top 25]

Layers are judged by the innermost frame's file (self time) and by whether a layer appears anywhere on the
stack (inclusive time): our code (chat/), Django, channels, daphne/twisted, uvicorn, the Anthropic SDK and its
HTTP layer (anthropic/, httpx2, httpcore), asyncio, sqlite3/psycopg, other.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

LAYERS: list[tuple[str, re.Pattern[str]]] = [
    # py-spy frames read "function (path:line)", paths relative to site-packages or the project.
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


def summarise(path: Path, top: int) -> str:
    self_layers: Counter[str] = Counter()
    incl_layers: Counter[str] = Counter()
    self_funcs: Counter[str] = Counter()
    incl_funcs: Counter[str] = Counter()
    total = 0
    idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
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
    args = parser.parse_args(argv)
    for name in args.profiles:
        print(summarise(Path(name), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
