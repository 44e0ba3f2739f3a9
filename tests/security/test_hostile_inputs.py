"""Attack: every route the web server publishes, fed what a hostile or broken caller sends.

The routes come from the server's own OpenAPI document (so a new route is covered the day it
is added), plus the ones it does not list. Each gets bodies that are not JSON, invalid UTF-8,
the wrong JSON types, NUL bytes and lone surrogates, absurd numbers, deep nesting, and path
parameters with traversal and odd characters. What must hold: never a 5xx (a 500 means an
unhandled path; 503 would mean we blamed a dependency for the caller's input), always a JSON
error body the caller can read, and the server still answers afterwards. No worker runs: a
request that is accepted waits and times out (504 is allowed only for requests that were
accepted into the queue, and the timeout is short).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auxil.stack import Stack

pytestmark = pytest.mark.integration

# Bodies, as raw bytes with their content type.
BODIES: list[tuple[str, bytes, str]] = [
    ("not json", b"{this is not json", "application/json"),
    ("invalid utf-8", b'{"text": "\xff\xfe\xfd"}', "application/json"),
    ("array", b"[1, 2, 3]", "application/json"),
    ("null", b"null", "application/json"),
    ("string", b'"hello"', "application/json"),
    ("empty", b"", "application/json"),
    ("form", b"text=hello&user_id=x", "application/x-www-form-urlencoded"),
    ("wrong types", json.dumps({"text": 5, "messages": "x", "model": [], "stream": "yes",
                                "max_tokens": "many", "input": {"a": 1},
                                "conversation_id": 7}).encode(), "application/json"),
    ("nul and surrogate", b'{"text": "a\\u0000b\\ud800c", "messages": [{"role": "user", '
                          b'"content": "x\\u0000\\udfff"}], "input": "\\ud800"}',
     "application/json"),
    ("absurd numbers", json.dumps({"text": "hi", "max_tokens": 10**30, "temperature": -1e308,
                                   "top_p": 1e300, "n": -5,
                                   "messages": [{"role": "user", "content": "hi"}],
                                   "seed": 2**80, "input": "x"}).encode(), "application/json"),
    ("deep nesting", ("[" * 5000 + "]" * 5000).encode(), "application/json"),
    ("deep object", ('{"a":' * 3000 + "1" + "}" * 3000).encode(), "application/json"),
    ("unknown role", json.dumps({"messages": [{"role": "root", "content": "hi"}],
                                 "model": "x"}).encode(), "application/json"),
    ("huge key count", json.dumps({f"k{i}": i for i in range(20000)}).encode(),
     "application/json"),
]
PATH_VALUES = ["..%2F..%2Fetc%2Fpasswd", "%00", "a" * 5000, "%ff%fe", "💥", "' OR 1=1 --",
               "${jndi:ldap://x}", "{{7*7}}"]
# Routes the OpenAPI document does not list (the platforms' webhooks, sign-in) and a few that
# must not exist.
EXTRA = [("POST", "/slack/events"), ("POST", "/telegram/webhook"),
         ("POST", "/v1/completions"), ("POST", "/v1/responses"),
         ("GET", "/../../etc/passwd"), ("POST", "/admin/login")]


@pytest.fixture(scope="module")
def web_only(redis_server: str, model_path: Path) -> Iterator[Stack]:
    from tests.conftest import _new_stack

    # The admin panel on (an unconfigured panel answers 503 "off", by design).
    stack = _new_stack(redis_server, model_path, "security-hostile",
                       ASSISTANT_REPLY_TIMEOUT="2", ADMIN_PASSWORD="hostile-sweep-admin-pw",
                       ADMIN_SESSION_SECRET="s" * 48)
    try:
        stack.start_web()
        yield stack
    finally:
        stack.close()


def routes(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every route of the app the server runs (the admin panel's too, which the OpenAPI
    document leaves out), built here with the server's own environment."""
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    from fastapi.routing import APIRoute

    from integrations.web.app import create_app

    found = set(EXTRA)

    def walk(routes: list[Any]) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI ≥ 0.16x includes
            if included is not None:  # routers lazily; their routes carry the full path
                walk(included.routes)
            elif isinstance(route, APIRoute):
                found.update((method, route.path) for method in route.methods
                             if method in ("POST", "PUT", "PATCH", "DELETE", "GET"))

    walk(create_app().routes)
    return sorted(found)


def fill(path: str, value: str) -> str:
    parts = []
    for part in path.split("/"):
        parts.append(value if part.startswith("{") and part.endswith("}") else part)
    return "/".join(parts)


def check(response: httpx.Response, what: str) -> None:
    if response.request.url.path == "/readyz":
        return  # 503 is its honest answer here: no worker runs
    assert response.status_code < 500 or response.status_code == 504, (
        f"{what}: {response.status_code} {response.text[:300]}")
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
            "application/json"):
        body: Any = response.json()
        assert body, what  # an error says something


def test_no_route_answers_garbage_with_a_server_error(web_only: Stack,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url = web_only.url
    tried = 0
    listed = routes(web_only, monkeypatch)
    assert any(path.startswith("/admin/") for _, path in listed)
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as client:
        for method, path in listed:
            concrete = fill(path, "c0ffee")
            if method in ("POST", "PUT", "PATCH"):
                for name, body, kind in BODIES:
                    response = client.request(method, concrete, content=body,
                                               headers={"content-type": kind})
                    check(response, f"{method} {path} with {name}")
                    tried += 1
            else:
                response = client.request(method, concrete)
                check(response, f"{method} {concrete}")
                tried += 1
            if "{" in path:
                for value in PATH_VALUES:
                    response = client.request(method, fill(path, value), json={})
                    check(response, f"{method} {path} with path value {value[:20]!r}")
                    tried += 1
        # Headers a proxy or a client might garble.
        for headers in ({"authorization": "Bearer"}, {"authorization": "Basic Zm9vOmJhcg=="},
                        {"authorization": "Bearer " + "x" * 8000},
                        {"x-forwarded-for": "not an address, ::::"},
                        {"cookie": "assistant_session=" + "%" * 4000}):
            response = client.post("/api/chat", json={"text": "hi"}, headers=headers)
            check(response, f"/api/chat with {list(headers)}")
            tried += 1
        assert client.get("/healthz").status_code == 200  # still serving
    assert tried > 100, listed  # the sweep covered the routes, not a handful
