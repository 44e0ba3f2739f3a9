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

from assistant import keys
from assistant.errors import ConfigError
from assistant.limits import Rate
from assistant.settings import PLACEHOLDER_SECRETS, Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "assistant_admin"
LOGIN_COOKIE = "assistant_admin_login"
COOKIE_PATH = "/admin"
SESSION_TTL_SECONDS = 8 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Failed logins (only failures count: issue 15, where charging every attempt to the username
# let anyone lock the admin out). Per client address: a few failures, then that address waits.
# Per username: more failures over a longer window (guessing spread over many addresses); it
# never refuses a browser or an address the username logged in from before (``KNOWN_TTL``),
# so an attacker cannot lock out the admin's correct password there.
LOGIN_FAILURES_PER_ADDRESS = Rate(10, 900)
LOGIN_FAILURES_PER_USERNAME = Rate(30, 3600)
KNOWN_TTL_SECONDS = 30 * 86400
DEVICE_COOKIE = "assistant_admin_device"
# Outside development the panel stays off with a shorter password (a passphrase of a few
# words is longer; the login limits slow guessing, they do not make a short password safe).
MIN_PASSWORD_LENGTH = 12


session_key = keys.admin_session


def username_digest(username: str) -> str:
    """Keys name a username by its hash: any text may be typed into the form."""
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]


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
    if settings.environment != "development" and len(password) < MIN_PASSWORD_LENGTH:
        return f"ADMIN_PASSWORD is shorter than {MIN_PASSWORD_LENGTH} characters: set a longer one"
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

def login_wait_seconds(client: redis.Redis, ip: str, username: str,
                       device: str | None = None) -> float:
    """0 if this login may be checked, else the seconds until it may. Counts nothing.

    ``device``: the digest a known browser's cookie vouches for (``known_device``), if any.
    """
    address_key = keys.admin_login_failures_by_address(ip)
    digest = username_digest(username)
    user_key = keys.admin_login_failures_by_username(digest)
    with client.pipeline(transaction=False) as pipe:
        pipe.get(address_key)
        pipe.ttl(address_key)
        pipe.get(user_key)
        pipe.ttl(user_key)
        pipe.exists(keys.admin_known_address(digest, ip))
        by_address, address_ttl, by_user, user_ttl, known_address = pipe.execute()
    known_device = device is not None and device == digest
    if known_device:
        return 0.0  # the admin's own browser: neither limit can lock it out
    if int(by_address or 0) >= LOGIN_FAILURES_PER_ADDRESS.capacity:
        return float(max(1, int(address_ttl)))
    if int(by_user or 0) >= LOGIN_FAILURES_PER_USERNAME.capacity and not known_address:
        return float(max(1, int(user_ttl)))
    return 0.0


def record_login_failure(client: redis.Redis, ip: str, username: str) -> None:
    """Count a failed login against its address and its username (fixed windows)."""
    address_key = keys.admin_login_failures_by_address(ip)
    user_key = keys.admin_login_failures_by_username(username_digest(username))
    with client.pipeline(transaction=True) as pipe:
        pipe.incr(address_key)
        pipe.expire(address_key, LOGIN_FAILURES_PER_ADDRESS.period_seconds, nx=True)
        pipe.incr(user_key)
        pipe.expire(user_key, LOGIN_FAILURES_PER_USERNAME.period_seconds, nx=True)
        pipe.execute()


def record_login_success(client: redis.Redis, signer: Signer, ip: str, username: str) -> str:
    """After a successful login: the address's failures are forgotten, the address and this
    browser become known-good for the username. Returns the device cookie's value."""
    digest = username_digest(username)
    device_id = secrets.token_urlsafe(24)
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.admin_login_failures_by_address(ip))
        pipe.set(keys.admin_known_address(digest, ip), "1", ex=KNOWN_TTL_SECONDS)
        pipe.set(keys.admin_known_device(device_id), digest, ex=KNOWN_TTL_SECONDS)
        pipe.execute()
    return _device_signer(signer).sign(device_id).decode()


def _device_signer(signer: Signer) -> Signer:
    """Device cookies are signed apart from session cookies: one can never pass as the other."""
    return Signer(signer.secret_keys[-1], salt="assistant.admin.device")


def known_device(client: redis.Redis, signer: Signer, cookie: str | None) -> str | None:
    """The username digest a browser's device cookie vouches for, or None."""
    if not cookie:
        return None
    try:
        device_id = _device_signer(signer).unsign(cookie).decode()
    except BadSignature:
        return None
    value = client.get(keys.admin_known_device(device_id))
    return value.decode() if isinstance(value, bytes) else value


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
