"""Real server processes for multi-process tests: daphne subprocesses on loopback ports, with their own
database, talking to the fake upstream in the test process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclass
class DaphneProcess:
    env: dict[str, str]
    log_dir: Path
    name: str
    port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()  # extra daphne options, e.g. ("--proxy-headers",)
    ready_path: str = "/accounts/login/"  # answers 200 once the process serves (/healthz needs no database)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> DaphneProcess:
        log = open(self.log_dir / f"daphne-{self.name}.log", "wb")
        self.process = subprocess.Popen(
            [
                str(BIN / "python"),
                "-m",
                "chatsite.serve",  # daphne on uvloop, as the README starts it
                *self.args,
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "chatsite.asgi:application",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne {self.name} exited: {self.log()}")
            try:
                with urlopen(self.url + self.ready_path, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne {self.name} did not answer in {timeout}s: {self.log()}")

    def log(self) -> str:
        path = self.log_dir / f"daphne-{self.name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def terminate(self) -> None:
        """SIGTERM, as a process manager stops a server on deploy; returns at once (see `wait`)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit code, once the process has exited (subprocess.TimeoutExpired after `timeout` seconds)."""
        assert self.process is not None
        return self.process.wait(timeout)

    def log_text(self) -> str:
        path = self.log_dir / f"daphne-{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the process."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
