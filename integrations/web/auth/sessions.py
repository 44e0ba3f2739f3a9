"""Web chat sessions: server-side in Redis, the cookie holds only a random id.

``assistant:web:session:<sha256 of the id>`` (so a Redis dump holds no usable cookie) expires
after ASSISTANT_SESSION_HOURS; signing out deletes it. The cookie is HttpOnly, SameSite=Lax
(the OIDC provider's redirect back to us is a cross-site top-level GET that must carry the
sign-in state) and Secure over HTTPS. Each session has a CSRF token that the chat page sends
in ``X-CSRF-Token`` on every state-changing call.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import asdict, dataclass

import redis

from assistant import keys
from assistant.identity.credentials import new_token, sha256_hex
from assistant.store.people import SignedIn

SESSION_COOKIE = "assistant_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_key(session_id: str) -> str:
    return keys.web_session(sha256_hex(session_id))


@dataclass(frozen=True)
class WebSession:
    person_id: int
    handle: str
    display_name: str
    admin: bool
    csrf_token: str
    method: str  # "password" | "oidc"


def start(client: redis.Redis, person: SignedIn, method: str, ttl_seconds: int
          ) -> tuple[str, WebSession]:
    """A new session: (the cookie value, the session)."""
    session_id = new_token()
    session = WebSession(person.person_id, person.handle, person.display_name, person.admin,
                         new_token(), method)
    client.set(session_key(session_id), json.dumps(asdict(session)), ex=ttl_seconds)
    return session_id, session


def load(client: redis.Redis, cookie: str | None) -> WebSession | None:
    if not cookie or len(cookie) > 128:
        return None
    raw = client.get(session_key(cookie))
    if raw is None:
        return None
    try:
        return WebSession(**json.loads(raw))
    except (TypeError, ValueError):
        return None  # written by another version: sign in again


def end(client: redis.Redis, cookie: str | None) -> None:
    if cookie:
        client.delete(session_key(cookie))


def csrf_ok(session: WebSession, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf_token.encode(),
                                               (given or "").encode())
