"""API key format and hashing, and local passwords (argon2id through argon2-cffi).

A key is ``sk-ast-<8 lowercase hex>-<43 url-safe characters>``: OpenAI's ``sk-`` shape, so
clients that check the look of a key accept it. ``sk-ast-<8 hex>`` is its visible prefix (what
admins see, what its messages carry as their user id); the rest is 256 random bits. Only the
sha256 of the whole key is stored: a key is random, not chosen by a person, so a slow password
hash adds nothing against guessing and would cost every API request its time
(https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html applies to
passwords). Passwords, chosen by people, get argon2id.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

KEY_PREFIX = "sk-ast-"
_KEY = re.compile(r"^(sk-ast-[0-9a-f]{8})-([A-Za-z0-9_-]{43})$")
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024


@dataclass(frozen=True)
class NewKey:
    """A key just made: ``token`` is shown once and never stored."""

    token: str
    prefix: str
    secret_hash: str


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_api_key() -> NewKey:
    prefix = KEY_PREFIX + secrets.token_hex(4)
    token = f"{prefix}-{secrets.token_urlsafe(32)}"
    return NewKey(token, prefix, sha256_hex(token))


def key_prefix(token: str) -> str | None:
    """The prefix of a well-formed key, else None (a malformed key is refused unread)."""
    match = _KEY.match(token)
    return match.group(1) if match else None


def key_matches(token: str, secret_hash: str) -> bool:
    return hmac.compare_digest(sha256_hex(token), secret_hash)


def new_token() -> str:
    """A random token for sessions, CSRF and invitations (256 bits)."""
    return secrets.token_urlsafe(32)


_hasher = PasswordHasher()  # argon2id with argon2-cffi's RFC 9106 "low memory" profile


def hash_password(password: str) -> str:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ValueError(f"a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} "
                         "characters")
    return _hasher.hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the person has a password (no hint that a name exists)."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, verified when the name is unknown so that takes as long."""
    return _hasher.hash(secrets.token_urlsafe(16))
