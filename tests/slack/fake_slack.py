"""A fake Slack Web API on 127.0.0.1, and a fake Socket Mode WebSocket endpoint.

``FakeSlack`` answers ``POST /api/<method>`` (form or JSON, as slack_sdk sends them), records
every call with its arguments and arrival time, and can answer 429 with ``Retry-After`` for the
next N calls of a method. ``apps.connections.open`` hands out the URL of a ``FakeSocketMode``
server when one is attached.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
TEAM_ID = "T1"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeSlack:
    """Start with ``FakeSlack()``; ``api_url`` is what SLACK_API_URL should be; ``close()``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._rate_limited: dict[str, int] = {}
        self.socket_url: str | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    args = json.loads(raw or "{}")
                else:
                    args = dict(parse_qsl(raw))
                method = self.path.rsplit("/", 1)[-1]
                status, body, headers = fake._answer(method, args)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.api_url = f"http://127.0.0.1:{self.port}/api/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def rate_limit(self, method: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and Retry-After: 1."""
        with self._lock:
            self._rate_limited[method] = times

    def _answer(self, method: str, args: dict[str, Any]) -> tuple[int, dict[str, Any],
                                                                   dict[str, str]]:
        with self._lock:
            self.calls.append(Call(method, args))
            if self._rate_limited.get(method, 0) > 0:
                self._rate_limited[method] -= 1
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}
            if method == "auth.test":
                return 200, {"ok": True, "user_id": BOT_USER_ID, "bot_id": BOT_ID,
                             "team_id": TEAM_ID, "user": "assistant", "team": "Test"}, {}
            if method == "chat.postMessage":
                ts = f"{int(time.time())}.{next(self._ts):06d}"
                return 200, {"ok": True, "channel": args.get("channel"), "ts": ts,
                             "message": {"text": args.get("text"), "ts": ts}}, {}
            if method == "chat.postEphemeral":
                return 200, {"ok": True, "message_ts": f"{int(time.time())}.000000"}, {}
            if method == "chat.update":
                return 200, {"ok": True, "channel": args.get("channel"), "ts": args.get("ts"),
                             "text": args.get("text")}, {}
            if method == "apps.connections.open" and self.socket_url:
                return 200, {"ok": True, "url": self.socket_url}, {}
            return 200, {"ok": False, "error": "unknown_method"}, {}

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise TimeoutError(f"condition not met; calls: {[(c.method, c.args) for c in self.calls]}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request signature: ``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest(),
            "Content-Type": "application/json"}


def event_body(event: dict[str, Any], event_id: str, team_id: str = TEAM_ID) -> dict[str, Any]:
    """An Events API ``event_callback`` payload around ``event``."""
    return {"token": "legacy", "team_id": team_id, "api_app_id": "A1", "event": event,
            "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
            "authorizations": [{"team_id": team_id, "user_id": BOT_USER_ID, "is_bot": True}]}


class FakeSocketMode:
    """A WebSocket endpoint speaking just enough Socket Mode: hello, one envelope, its ack."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.acks: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.acked = threading.Event()
        self._outbox: list[dict[str, Any]] = []
        self._server = serve(self._session, "127.0.0.1", 0)
        self.port = self._server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/link"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def send(self, envelope: dict[str, Any]) -> None:
        self._outbox.append(envelope)

    def _session(self, websocket: Any) -> None:
        websocket.send(json.dumps({"type": "hello", "num_connections": 1,
                                   "connection_info": {"app_id": "A1"}}))
        self.connected.set()
        while not self.acked.is_set():
            while self._outbox:
                websocket.send(json.dumps(self._outbox.pop(0)))
            try:
                message = websocket.recv(timeout=0.1)
            except TimeoutError:
                continue
            except Exception:
                return
            data = json.loads(message)
            if "envelope_id" in data:
                self.acks.append(data)
                self.acked.set()
        try:
            websocket.recv(timeout=30)  # keep the connection until the client closes it
        except Exception:
            return

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
