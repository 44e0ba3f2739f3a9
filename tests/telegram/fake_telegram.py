"""A local fake Telegram Bot API on 127.0.0.1, and factories for the updates it serves.

Serves ``/bot<TOKEN>/<method>`` for the methods the assistant uses, records every call with a
timestamp, serves queued updates through ``getUpdates`` (long polling, capped at ~1 s), and can
answer 429 (``retry_after``) or 400 (entities) for the next N calls of a method. It checks
``parse_mode=HTML`` texts the way Telegram does: unknown or unbalanced tags are a 400.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

BOT_ID = 123
TOKEN = f"{BOT_ID}:TEST"
BOT_USERNAME = "assistant_bot"
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "Assistant", "username": BOT_USERNAME}
_STRING_FIELDS = {"text", "parse_mode", "action", "url", "secret_token", "description"}
_HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
              "span", "tg-spoiler", "blockquote", "tg-emoji"}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    status: int = 0  # the HTTP status answered (0 while being answered)


class _HtmlCheck(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_TAGS:
            self.error = f"Unsupported start tag \"{tag}\""
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.error = f"Unexpected end tag \"{tag}\""


def html_error(text: str) -> str | None:
    """Why Telegram would reject ``text`` in HTML mode, or None."""
    if re.search(r"&(?!(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)", text):
        return "Unsupported HTML entity"
    check = _HtmlCheck()
    check.feed(text)
    check.close()
    if check.error is None and check.stack:
        check.error = f"Can't find end tag corresponding to start tag \"{check.stack[-1]}\""
    return check.error


class FakeTelegram:
    """The fake server; use as a context manager or call ``close``."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.failures: dict[str, list[dict[str, Any]]] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._ids = itertools.count(1000)
        self._update_ids = itertools.count(1)
        self._lock = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}/bot"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    # -- test controls -----------------------------------------------------------------------

    def next_update_id(self) -> int:
        return next(self._update_ids)

    def queue_update(self, update: dict[str, Any]) -> None:
        with self._lock:
            self.updates.append(update)
            self._lock.notify_all()

    def fail_next(self, method: str, times: int = 1, retry_after: int | None = None,
                  description: str | None = None) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 (or 400 with a description)."""
        if retry_after is not None:
            answer = {"ok": False, "error_code": 429,
                      "description": f"Too Many Requests: retry after {retry_after}",
                      "parameters": {"retry_after": retry_after}}
        else:
            answer = {"ok": False, "error_code": 400,
                      "description": description or "Bad Request: can't parse entities"}
        with self._lock:
            self.failures.setdefault(method, []).extend([answer] * times)

    def calls_of(self, method: str, ok_only: bool = False, **match: Any) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method
                    and (c.status == 200 or not ok_only)
                    and all(c.params.get(k) == v for k, v in match.items())]

    def wait_for(self, method: str, timeout: float = 60, count: int = 1,
                  **match: Any) -> list[Call]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.calls_of(method, **match)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no {count}x {method} {match} within {timeout}s; calls: "
                             f"{[(c.method, c.params) for c in self.calls]}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeTelegram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API -----------------------------------------------------------------------------

    def answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        call = Call(method, params)
        if method != "getUpdates":
            with self._lock:
                self.calls.append(call)
                failures = self.failures.get(method)
                failure = failures.pop(0) if failures else None
            if failure is not None:
                call.status = int(failure["error_code"])
                return call.status, failure
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            call.status = 404
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        result = handler(params)
        status, answer = result if isinstance(result, tuple) else (200, {"ok": True,
                                                                          "result": result})
        call.status = status
        return status, answer

    def _api_getMe(self, params: dict[str, Any]) -> Any:
        return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}

    def _api_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        wait = min(float(params.get("timeout") or 0), 1.0)
        deadline = time.monotonic() + wait
        with self._lock:
            while True:
                # Like Telegram: asking for an offset confirms every update before it.
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
                if self.updates or time.monotonic() >= deadline:
                    return list(self.updates)
                self._lock.wait(timeout=max(deadline - time.monotonic(), 0.01))

    def _message(self, params: dict[str, Any], message_id: int) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        chat = ({"id": chat_id, "type": "private", "first_name": "User"} if chat_id > 0
                else {"id": chat_id, "type": "supergroup", "title": "Group"})
        message: dict[str, Any] = {"message_id": message_id, "date": int(time.time()),
                                   "chat": chat, "from": BOT_USER, "text": params["text"]}
        if params.get("message_thread_id"):
            message["message_thread_id"] = int(params["message_thread_id"])
            message["is_topic_message"] = True
        return message

    def _check_text(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        text = params.get("text", "")
        visible = text
        if params.get("parse_mode") == "HTML":
            visible = html.unescape(re.sub(r"<[^>]*>", "", text))
        if not visible.strip() or _utf16(visible) > 4096:
            return 400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: message is too long or empty"}
        if params.get("parse_mode") == "HTML":
            error = html_error(text)
            if error:
                return 400, {"ok": False, "error_code": 400,
                             "description": f"Bad Request: can't parse entities: {error}"}
        return None

    def _api_sendMessage(self, params: dict[str, Any]) -> Any:
        if rejected := self._check_text(params):
            return rejected
        message = self._message(params, next(self._ids))
        with self._lock:
            self.messages[(int(params["chat_id"]), message["message_id"])] = message
        return message

    def _api_editMessageText(self, params: dict[str, Any]) -> Any:
        if rejected := self._check_text(params):
            return rejected
        key = (int(params["chat_id"]), int(params["message_id"]))
        with self._lock:
            old = self.messages.get(key)
            if old is None:
                return 400, {"ok": False, "error_code": 400,
                             "description": "Bad Request: message to edit not found"}
            if old["text"] == params["text"]:
                return 400, {"ok": False, "error_code": 400,
                             "description": "Bad Request: message is not modified"}
            message = {**old, "text": params["text"], "edit_date": int(time.time())}
            self.messages[key] = message
        return message

    def _api_sendChatAction(self, params: dict[str, Any]) -> Any:
        return True

    def _api_setMyCommands(self, params: dict[str, Any]) -> Any:
        return True

    def _api_setWebhook(self, params: dict[str, Any]) -> Any:
        return True

    def _api_deleteWebhook(self, params: dict[str, Any]) -> Any:
        return True

    def _api_close(self, params: dict[str, Any]) -> Any:
        return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self._serve()

            def do_GET(self) -> None:  # noqa: N802
                self._serve()

            def _serve(self) -> None:
                prefix = f"/bot{fake.token}/"
                if not self.path.startswith(prefix):
                    self._reply(404, {"ok": False, "error_code": 401,
                                      "description": "Unauthorized"})
                    return
                method = self.path[len(prefix):].split("?")[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                params = _parse_body(self.headers.get("Content-Type", ""), body)
                status, answer = fake.answer(method, params)
                self._reply(status, answer)

            def _reply(self, status: int, answer: dict[str, Any]) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a stopped long poll)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """PTB posts form fields whose non-string values are JSON; accept JSON bodies too."""
    if not body:
        return {}
    if content_type.startswith("application/json"):
        parsed: dict[str, Any] = json.loads(body)
        return parsed
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=email_policy).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        raw = {part.get_param("name", header="content-disposition"): part.get_content()
               for part in message.iter_parts()}
    else:
        raw = dict(parse_qsl(body.decode(), keep_blank_values=True))
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _STRING_FIELDS:
            params[str(key)] = value
            continue
        try:
            params[str(key)] = json.loads(value)
        except (TypeError, ValueError):
            params[str(key)] = value
    return params


# -- update factories --------------------------------------------------------------------------

_next_message_id = itertools.count(1)


def user(user_id: int = 42, first_name: str = "Ada") -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name}


def private_chat(user_id: int = 42) -> dict[str, Any]:
    return {"id": user_id, "type": "private", "first_name": "Ada"}


def group_chat(chat_id: int = -100123, forum: bool = False) -> dict[str, Any]:
    chat: dict[str, Any] = {"id": chat_id, "type": "supergroup", "title": "Group"}
    if forum:
        chat["is_forum"] = True
    return chat


def message(text: str | None, chat: dict[str, Any], sender: dict[str, Any] | None = None,
            *, thread_id: int | None = None, reply_to: dict[str, Any] | None = None,
            entities: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"message_id": next(_next_message_id), "date": int(time.time()),
                            "chat": chat, "from": sender or user(), **extra}
    if text is not None:
        body["text"] = text
    if thread_id is not None:
        body["message_thread_id"] = thread_id
        body["is_topic_message"] = True
    if reply_to is not None:
        body["reply_to_message"] = reply_to
    if entities is None and text is not None:
        entities = _entities(text)
    if entities:
        body["entities"] = entities
    return body


def _entities(text: str) -> list[dict[str, Any]]:
    found = []
    for match in re.finditer(r"@\w+", text):
        found.append({"type": "mention", "offset": _utf16(text[:match.start()]),
                      "length": _utf16(match.group())})
    if text.startswith("/"):
        command = text.split()[0]
        found.append({"type": "bot_command", "offset": 0, "length": _utf16(command)})
    return found


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def update(update_id: int, body: dict[str, Any], kind: str = "message") -> dict[str, Any]:
    return {"update_id": update_id, kind: body}


def bot_message(chat: dict[str, Any], text: str = "earlier answer") -> dict[str, Any]:
    return {"message_id": next(_next_message_id), "date": int(time.time()), "chat": chat,
            "from": BOT_USER, "text": text}
