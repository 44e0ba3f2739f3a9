"""Who is calling ``/api`` and ``/v1``: an API key, a signed-in person, or the local user.

Identity is the server's (docs/security.md): a key or a session names the caller, and the request
body cannot name another. Without either, only local mode (loopback, no sign-in configured)
lets a request through, as before sign-in existed. Everything here runs before the route, so a
refused request queues nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

import redis
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from assistant import keys
from assistant.envelope import ConversationKey, Inbound
from assistant.errors import QueueUnavailable, QuotaExceeded, RateLimited
from assistant.identity.credentials import key_prefix
from assistant.identity.modes import is_local_peer, sign_in_mode
from assistant.limits import (
    describe_wait,
    parse_rate,
    seconds_until_utc_midnight,
    take_tokens,
    used_tokens,
    user_quota_key,
)
from assistant.store import shared_store
from assistant.store.keys import ApiKeys, KeyInfo
from assistant.store.people import People
from integrations.web.auth import sessions
from integrations.web.auth.errors import AuthError
from integrations.web.deps import WebState, get_state

# The platforms a key's messages arrive on (/api and /v1): its daily quota counts both.
KEY_PLATFORMS = ("web", "openai")


@dataclass(frozen=True)
class Principal:
    """The caller. ``user_id`` is what its messages carry (None: the local user, who names
    itself as before); ``scope`` owns conversations (None: local mode's shared space)."""

    kind: Literal["local", "person", "key"]
    user_id: str | None = None
    scope: str | None = None
    display_name: str = ""
    admin: bool = False
    key: KeyInfo | None = None

    def web_conversation(self, conversation_id: str) -> ConversationKey:
        """The caller's own conversation of that id: another caller's id names another one,
        so nobody reads, continues or deletes someone else's (they get 404)."""
        return ConversationKey(platform="web", channel=conversation_id, user=self.scope)

    def claim(self, inbound: Inbound) -> Inbound:
        """The inbound as this caller's: its user id replaced by the server's."""
        if self.user_id is None:
            return inbound
        return inbound.model_copy(update={"user_id": self.user_id})


LOCAL = Principal(kind="local")


def bearer_token(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
        raise AuthError(401, "Malformed Authorization header: send 'Authorization: Bearer "
                        "<API key>'.")
    return token.strip()


def check_key_limits(client: redis.Redis, key: KeyInfo, now: datetime | None = None) -> None:
    """The key's own rate limit and daily token quota (over /api and /v1 together).

    The quota is also mirrored where the dispatcher and the worker's quota counter look
    (``user-quota:<platform>:default:<prefix>``), so the tokens are counted after each turn.
    """
    now = now or datetime.now(UTC)
    rate = parse_rate(key.rate_limit, "the key's rate limit")
    if rate is not None:
        refused, wait = take_tokens(client, [(keys.key_bucket(key.prefix), rate)])
        if refused:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(seconds, "key", "This API key is over its rate limit; try "
                              f"again in {describe_wait(seconds)}.")
    if key.daily_tokens is None:
        return
    with client.pipeline(transaction=False) as pipe:
        for platform in KEY_PLATFORMS:
            pipe.set(user_quota_key(platform, "default", key.prefix), key.daily_tokens)
        pipe.execute()
    if key.daily_tokens == 0:
        return  # 0: no quota for this key
    spent = sum(used_tokens(client, platform, "default", key.prefix, now)
                for platform in KEY_PLATFORMS)
    if spent >= key.daily_tokens:
        wait = seconds_until_utc_midnight(now)
        raise QuotaExceeded(wait, "This API key has used its daily token quota; it renews in "
                            f"{describe_wait(wait)}.")


def key_principal(state: WebState, token: str, method: str) -> Principal:
    """Runs in a thread: the store and Redis are synchronous."""
    key = ApiKeys(shared_store(state.settings.sql_url)).authenticate(token)
    if key is None:
        raise AuthError(401, "Incorrect API key provided. Ask an admin for a key (the panel's "
                        "Keys page or `assistant keys create`).")
    if method not in sessions.SAFE_METHODS:
        try:
            check_key_limits(state.client, key)
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
    return Principal(kind="key", user_id=key.prefix, scope=key.prefix,
                     display_name=key.name or key.prefix, key=key)


def session_principal(request: Request, state: WebState) -> Principal | None:
    try:
        session = sessions.load(state.client, request.cookies.get(sessions.SESSION_COOKIE))
    except redis.RedisError as exc:
        raise QueueUnavailable(f"Redis is unavailable: {exc}") from exc
    if session is None:
        return None
    # Looked up on each request, like a key: a disabled person is refused from the next one.
    if not People(shared_store(state.settings.sql_url)).is_active(session.person_id):
        raise AuthError(401, "This account is disabled or gone: ask an admin.",
                        code="account_disabled")
    if request.method not in sessions.SAFE_METHODS and not sessions.csrf_ok(
            session, request.headers.get(sessions.CSRF_HEADER)):
        raise AuthError(403, "Missing or wrong CSRF token: reload the page and try again.",
                        code="csrf_failed")
    return Principal(kind="person", user_id=session.handle, scope=session.handle,
                     display_name=session.display_name, admin=session.admin)


async def resolve_caller(request: Request) -> Principal:
    """The caller of this request, or ``AuthError`` (401/403) before anything is done."""
    state = get_state(request)
    header = request.headers.get("authorization")
    local = sign_in_mode(state.settings) == "local"
    if header is not None:
        token = bearer_token(header)
        # OpenAI's clients always send some key: in local mode (where no credential is
        # needed) a token that is not one of ours counts as none; one of ours is checked.
        if not (local and key_prefix(token) is None):
            return await run_in_threadpool(key_principal, state, token, request.method)
    person = await run_in_threadpool(session_principal, request, state)
    if person is not None:
        return person
    settings = state.settings
    if local:
        peer = request.client.host if request.client else ""
        if settings.auth != "none" and not is_local_peer(peer):
            raise AuthError(403, "This assistant runs in local mode (no sign-in) and answers "
                            "only its own computer; configure sign-in to share it "
                            "(docs/security.md).", code="local_mode")
        return LOCAL
    raise AuthError(401, "Sign in, or send an API key: 'Authorization: Bearer <key>'.")


Caller = Annotated[Principal, Depends(resolve_caller)]
