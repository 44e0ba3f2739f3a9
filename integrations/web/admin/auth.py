"""Who may use the panel: the password check, login rate limits, sessions and CSRF tokens.

Sessions live in Redis (``assistant:admin:session:<id>``, expiring), so logging out really
ends one; the cookie carries only the session id, signed with ``ADMIN_SESSION_SECRET``
(itsdangerous), scoped to ``/admin``, HttpOnly, SameSite=Strict, and Secure when the request
came over HTTPS. Each session has its own CSRF token, required on every state-changing
request (a form field or the ``X-CSRF-Token`` header). The login form, which has no session
yet, uses a double-submit token: a random value in a cookie and in the form.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
from dataclasses import dataclass

import redis
from itsdangerous import BadSignature, Signer
from starlette.requests import Request

from assistant.errors import ConfigError
from assistant.limits import Rate, take_tokens
from assistant.settings import PLACEHOLDER_SECRETS, Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "assistant_admin"
LOGIN_COOKIE = "assistant_admin_login"
COOKIE_PATH = "/admin"
SESSION_TTL_SECONDS = 8 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Login attempts, as token buckets (assistant.limits): a few tries per username (guessing one
# account's password) and a few more per client address (trying many names from one place).
# Every attempt takes a token; a successful login refills both buckets.
LOGIN_RATE_PER_USERNAME = Rate(5, 300)
LOGIN_RATE_PER_IP = Rate(20, 300)


def session_key(session_id: str) -> str:
    return f"assistant:admin:session:{session_id}"


def login_bucket_keys(ip: str, username: str) -> tuple[str, str]:
    return (f"assistant:admin:login:ip:{ip}", f"assistant:admin:login:user:{username.lower()}")


@dataclass(frozen=True)
class AdminSession:
    session_id: str
    username: str
    csrf_token: str


def password_problem(settings: Settings) -> str | None:
    """Why the panel must stay off with these settings, or None when it may run."""
    password = settings.admin_password.get_secret_value()
    if not password.strip():
        return "ADMIN_PASSWORD is empty: set it to use the admin panel"
    if settings.environment != "development" and password.strip().lower() in PLACEHOLDER_SECRETS:
        return "ADMIN_PASSWORD holds a placeholder: set a real one"  # Settings refuses it too
    return None


def session_signer(settings: Settings) -> Signer:
    secret = settings.admin_session_secret.get_secret_value()
    if not secret and password_problem(settings) is None:
        log.warning("ADMIN_SESSION_SECRET is empty: using a random one for this process; admin "
                    "sessions end when it restarts and are not shared between web processes")
    secret = secret or secrets.token_urlsafe(32)
    return Signer(secret, salt="assistant.admin.session")


def credentials_match(settings: Settings, username: str, password: str) -> bool:
    """Both compared in constant time, and both always compared (no early exit on the name)."""
    name_ok = hmac.compare_digest(username.encode(), settings.admin_username.encode())
    password_ok = hmac.compare_digest(password.encode(),
                                      settings.admin_password.get_secret_value().encode())
    return name_ok and password_ok and password_problem(settings) is None


# -- the client, behind a proxy or not -----------------------------------------------------------

def trusted_proxies(settings: Settings) -> frozenset[str]:
    found = set()
    for entry in settings.admin_trusted_proxies.split(","):
        if entry.strip():
            try:
                found.add(str(ipaddress.ip_address(entry.strip())))
            except ValueError:
                raise ConfigError(f"ADMIN_TRUSTED_PROXIES: {entry.strip()!r} is not an IP "
                                  "address") from None
    return frozenset(found)


def _from_trusted_proxy(request: Request, proxies: frozenset[str]) -> bool:
    return request.client is not None and request.client.host in proxies


def client_ip(request: Request, proxies: frozenset[str]) -> str:
    """The peer's address; behind a trusted proxy, the last address it put in X-Forwarded-For."""
    peer = request.client.host if request.client else "unknown"
    if _from_trusted_proxy(request, proxies):
        forwarded = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",")
                     if part.strip()]
        if forwarded:
            return forwarded[-1]
    return peer


def is_https(request: Request, proxies: frozenset[str]) -> bool:
    if request.url.scheme == "https":
        return True
    if _from_trusted_proxy(request, proxies):
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        return proto == "https"
    return False


# -- login attempts ------------------------------------------------------------------------------

def login_wait_seconds(client: redis.Redis, ip: str, username: str) -> float:
    """Take an attempt from the address's and the username's buckets: 0 if allowed, else the
    seconds until another attempt is allowed."""
    ip_key, user_key = login_bucket_keys(ip, username)
    refused, wait = take_tokens(client, [(ip_key, LOGIN_RATE_PER_IP),
                                         (user_key, LOGIN_RATE_PER_USERNAME)])
    return wait if refused else 0.0


def forget_login_attempts(client: redis.Redis, ip: str, username: str) -> None:
    """After a successful login: earlier attempts no longer count against the next one."""
    client.delete(*login_bucket_keys(ip, username))


# -- sessions ------------------------------------------------------------------------------------

def credentials_fingerprint(settings: Settings, signer: Signer) -> str:
    """Changes when ADMIN_USERNAME or ADMIN_PASSWORD does: sessions made before are refused.

    Keyed with the session secret (HMAC), so what Redis holds says nothing about the password.
    """
    key = signer.secret_keys[-1]
    credentials = (settings.admin_username + "\0" +
                   settings.admin_password.get_secret_value()).encode()
    return hmac.new(key, credentials, hashlib.sha256).hexdigest()


def start_session(client: redis.Redis, signer: Signer, username: str, fingerprint: str
                  ) -> tuple[str, AdminSession]:
    """A new session: (the cookie value, the session)."""
    session = AdminSession(secrets.token_urlsafe(32), username, secrets.token_urlsafe(32))
    record = {"username": session.username, "csrf_token": session.csrf_token,
              "credentials": fingerprint}
    client.set(session_key(session.session_id), json.dumps(record), ex=SESSION_TTL_SECONDS)
    return signer.sign(session.session_id).decode(), session


def load_session(client: redis.Redis, signer: Signer, cookie: str | None, fingerprint: str
                 ) -> AdminSession | None:
    if not cookie:
        return None
    try:
        session_id = signer.unsign(cookie).decode()
    except BadSignature:
        return None
    raw = client.get(session_key(session_id))
    if raw is None:
        return None
    record = json.loads(raw)
    if not hmac.compare_digest(str(record.get("credentials", "")), fingerprint):
        return None  # made before the admin's name or password changed
    return AdminSession(session_id, str(record["username"]), str(record["csrf_token"]))


def end_session(client: redis.Redis, session: AdminSession) -> None:
    client.delete(session_key(session.session_id))


def tokens_match(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
