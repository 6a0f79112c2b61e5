"""Run a pure tool function in a fresh child process, so the work is really ended at the tool's timeout.

A tool that computes (the calculator) runs here, never on the server's event loop, where a slow
computation would freeze every stream of the process and no asyncio timeout could interrupt it. Each call
starts `python -m chat.tools.sandbox <module:function>`, writes the arguments as JSON to its stdin and
reads one JSON answer from its stdout. The parent kills the child when the caller's timeout cancels the
wait; the child also caps its own CPU time and memory (`resource.setrlimit`), in case the parent dies.

Invariant: when `run_isolated` returns or raises, its child process has exited. A function run here takes
a JSON-able dict and returns a string; it raises `ToolError` to answer the model with an error."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import math
import os
import resource  # POSIX only, like the deployment
import sys
from pathlib import Path
from typing import Any

from chat.tools.errors import ToolError

# The directory holding the `chat` package: the child imports the function from there.
_IMPORT_ROOT = str(Path(__file__).resolve().parents[2])
MEMORY_LIMIT = 512 * 1024 * 1024  # address space of the child, bytes
MAX_ANSWER = 1024 * 1024  # bytes read from the child


class SandboxError(RuntimeError):
    """The child failed in a way that is not the tool's answer (it crashed, or answered nonsense)."""


async def run_isolated(function: str, arguments: dict[str, Any], *, cpu_seconds: float) -> str:
    """The answer of `function` ("package.module:name") to `arguments`, computed in a child process that
    may use at most `cpu_seconds` of CPU. Cancel the await (e.g. `asyncio.timeout`) to kill it sooner."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chat.tools.sandbox",
        function,
        str(max(1, math.ceil(cpu_seconds))),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=_IMPORT_ROOT,
        env={**os.environ, "PYTHONPATH": _IMPORT_ROOT, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        stdout, stderr = await process.communicate(json.dumps(arguments).encode())
    finally:
        if process.returncode is None:  # cancelled (timed out) or failed while waiting: end the work now
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
    if process.returncode is not None and process.returncode < 0:  # killed by its own CPU or memory limit
        raise ToolError(
            f"The tool was stopped: it used more than {cpu_seconds:g} s of CPU time or its memory."
        )
    if process.returncode != 0:
        raise SandboxError(
            f"tool process exited with {process.returncode}: {stderr[-500:].decode(errors='replace')}"
        )
    try:
        answer = json.loads(stdout[:MAX_ANSWER])
    except ValueError as exc:
        raise SandboxError(f"tool process answered {stdout[:200]!r}") from exc
    if "error" in answer:
        raise ToolError(str(answer["error"]))
    return str(answer["result"])


def _limit_resources(cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    with contextlib.suppress(ValueError, OSError):  # some platforms refuse RLIMIT_AS
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _main(argv: list[str]) -> int:
    target, cpu_seconds = argv[0], int(argv[1])
    _limit_resources(cpu_seconds)
    module_name, _, name = target.partition(":")
    function = getattr(importlib.import_module(module_name), name)
    arguments = json.loads(sys.stdin.buffer.read())
    try:
        answer = {"result": str(function(arguments))}
    except ToolError as exc:
        answer = {"error": str(exc)}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
