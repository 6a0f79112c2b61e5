"""Run tests/support/oidc_provider.py as a real process on a free loopback port, and drive its login page
over HTTP the way a browser would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "chatsite"
CLIENT_SECRET = "chatsite-test-secret"
PASSWORD = "provider password 1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OIDCProvider:
    redirect_uris: list[str]
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="oidc-provider-")))

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> OIDCProvider:
        config = self.workdir / "provider.json"
        config.write_text(
            json.dumps(
                {
                    "clients": [
                        {
                            "client_id": CLIENT_ID,
                            "client_secret": CLIENT_SECRET,
                            "redirect_uris": self.redirect_uris,
                        }
                    ],
                    "users": self.users,
                }
            )
        )
        log = open(self.workdir / "provider.log", "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.oidc_provider",
                "--port",
                str(self.port),
                "--config",
                str(config),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"OIDC provider exited:\n{self.log()}")
            try:
                if requests.get(self.issuer + "/.well-known/openid-configuration", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"OIDC provider did not come up:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        path = self.workdir / "provider.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def add_user(self, username: str, **claims: Any) -> None:
        """A person at the provider; `sub` defaults to a fresh value (a new identity)."""
        claims.setdefault("password", PASSWORD)
        claims.setdefault("sub", f"{username}-{time.monotonic_ns()}")
        requests.post(self.issuer + "/_control/users", json={username: claims}, timeout=5).raise_for_status()

    def add_redirect_uri(self, uri: str) -> None:
        self.redirect_uris.append(uri)
        requests.post(
            self.issuer + "/_control/clients",
            json={
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": self.redirect_uris,
            },
            timeout=5,
        ).raise_for_status()

    def issue_next_id_token_with_nonce(self, nonce: str) -> None:
        """Make the provider misbehave once: its next ID token carries this nonce instead of the request's."""
        requests.post(
            self.issuer + "/_control/next-nonce", json={"nonce": nonce}, timeout=5
        ).raise_for_status()

    def log_in(self, authorize_url: str, username: str, password: str = PASSWORD) -> str:
        """Open the login page at `authorize_url`, submit it, and return where the provider redirects
        (our callback with code and state)."""
        page = requests.get(authorize_url, timeout=10)
        assert page.status_code == 200, page.text
        assert "Test Identity Provider" in page.text
        answer = requests.post(
            authorize_url,
            data={"username": username, "password": password},
            allow_redirects=False,
            timeout=10,
        )
        assert answer.status_code == 302, f"{answer.status_code}: {answer.text}"
        return urljoin(authorize_url, answer.headers["Location"])
