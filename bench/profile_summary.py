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
    ("our code (chat/)", re.compile(r"/work/main/chat/|\(chat/")),
    ("bench relay", re.compile(r"bench/relay_asgi")),
    ("channels", re.compile(r"site-packages/channels/")),
    ("django", re.compile(r"site-packages/django/")),
    ("asgiref", re.compile(r"site-packages/asgiref/")),
    ("daphne/twisted", re.compile(r"site-packages/(daphne|twisted|autobahn|txaio)/")),
    ("uvicorn", re.compile(r"site-packages/uvicorn/")),
    ("anthropic SDK", re.compile(r"site-packages/anthropic/")),
    ("pydantic", re.compile(r"site-packages/pydantic")),
    ("httpx2/httpcore", re.compile(r"site-packages/(httpx2|httpcore|h11|anyio)")),
    ("database driver", re.compile(r"sqlite3|site-packages/psycopg")),
    ("asyncio", re.compile(r"/asyncio/")),
    ("threading/concurrent", re.compile(r"/(threading|concurrent)")),
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
