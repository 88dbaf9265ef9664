"""Interop harness: starts the real `qunfa serve` binary with rules written by a test, and
offers a mock platform API that records the calls qunfa makes (replies, token fetches).

The binary comes from $QUNFA_BIN (CI builds it first); tests drive it with callbacks
produced by the platforms' official SDKs from PyPI, acting as the platform.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib import request as urlrequest
from urllib.error import HTTPError

import pytest


def _binary() -> str:
    path = os.environ.get("QUNFA_BIN")
    if not path or not Path(path).is_file():
        pytest.fail("QUNFA_BIN must point at a built qunfa binary (bash .ci/run sets it)")
    return path


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> Response:
    """One HTTP call that returns error statuses instead of raising."""
    req = urlrequest.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urlrequest.urlopen(req, timeout=10) as resp:
            return Response(resp.status, dict(resp.headers), resp.read())
    except HTTPError as err:
        return Response(err.code, dict(err.headers), err.read())


@dataclass
class Server:
    url: str
    db_path: Path
    log_path: Path
    process: subprocess.Popen

    def webhook(self, account: str) -> str:
        return f"{self.url}/webhooks/{account}"

    def post(self, account: str, body: bytes, headers: dict | None = None, query: str = "") -> Response:
        suffix = f"?{query}" if query else ""
        return http("POST", self.webhook(account) + suffix, body, headers)

    def get(self, account: str, query: str = "") -> Response:
        suffix = f"?{query}" if query else ""
        return http("GET", self.webhook(account) + suffix)

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql, params).fetchall()

    def audit(self) -> list[tuple]:
        """(platform, account, sender, command, outcome) of every audited command."""
        return self.rows("SELECT platform, account, sender, command, outcome FROM command_audit ORDER BY id")

    def settled_audit(self) -> list[tuple]:
        """The audit trail once everything is written: qunfa answers read-only commands before
        their audit rows commit, and a graceful stop (SIGTERM) writes whatever is still queued.
        Stops the server, which must exit cleanly."""
        assert self.stop() == 0, self.log()
        return self.audit()

    def audit_when(self, count: int, timeout: float = 10.0) -> list[tuple]:
        """The audit trail once it holds at least `count` rows, for a test that goes on using
        the server (a row may be committed just after the answer it belongs to)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.audit()
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)

    def platform_events(self) -> list[tuple]:
        return self.rows("SELECT platform, account, kind, event_id, payload FROM platform_events ORDER BY id")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def qunfa(tmp_path):
    """Factory: qunfa(rules_toml, env) -> Server running on a free loopback port."""
    servers: list[Server] = []

    def start(rules_toml: str, env: dict | None = None) -> Server:
        n = len(servers)
        rules_dir = tmp_path / f"rules-{n}"
        rules_dir.mkdir()
        (rules_dir / "rules.toml").write_text(rules_toml)
        db_path = tmp_path / f"qunfa-{n}.db"
        log_path = tmp_path / f"qunfa-{n}.log"
        token_file = Path(f"{db_path}.shell-token")
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("QUNFA_")}
        child_env.update({"RUST_LOG": "info"})
        child_env.update(env or {})
        log = open(log_path, "wb")
        process = subprocess.Popen(
            [_binary(), "serve", "--listen", "127.0.0.1:0", "--rules", str(rules_dir), "--database", str(db_path)],
            env=child_env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while not token_file.exists():
            if process.poll() is not None:
                pytest.fail(f"qunfa serve exited with {process.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"qunfa serve did not start:\n{log_path.read_text()}")
            time.sleep(0.02)
        url = json.loads(token_file.read_text())["url"]
        server = Server(url=url, db_path=db_path, log_path=log_path, process=process)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class MockApi:
    """A stand-in for a platform's HTTP API: answers by path, records every request."""

    url: str
    answers: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)

    def answer(self, path: str, body: dict, status: int = 200) -> None:
        self.answers[path] = (status, body)

    def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matching = [c for c in self.calls if c.path.split("?")[0] == path]
            if len(matching) >= count:
                return matching
            time.sleep(0.02)
        pytest.fail(f"no call to {path} within {timeout}s; calls: {[c.path for c in self.calls]}")


@pytest.fixture
def mock_api():
    api = MockApi(url="")

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            api.calls.append(Recorded(self.command, self.path, dict(self.headers), body))
            status, answer = api.answers.get(self.path.split("?")[0], (200, {"code": 0, "msg": "ok"}))
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    server.shutdown()
