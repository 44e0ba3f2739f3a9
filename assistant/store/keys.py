"""API keys for /v1 and /api: made (shown once), listed, looked up on every request, revoked.

Looked up in SQL on each request (one indexed row by prefix), so a revocation holds from the
very next request in every web process; ``last_used_at`` is written at most once a minute per
key, not on every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from assistant.envelope import utcnow
from assistant.identity.credentials import NewKey, key_matches, key_prefix, new_api_key
from assistant.limits import parse_rate
from assistant.store.db import Store
from assistant.store.identity_models import ApiKey

LAST_USED_EVERY = timedelta(minutes=1)
OWNER_KINDS = ("person", "service")


@dataclass(frozen=True)
class KeyInfo:
    """What a request needs of a valid key."""

    prefix: str
    name: str
    owner: str
    owner_kind: str
    rate_limit: str
    daily_tokens: int | None


class ApiKeys:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, name: str, owner: str, created_by: str, owner_kind: str = "person",
               rate_limit: str = "", daily_tokens: int | None = None) -> tuple[NewKey, ApiKey]:
        """A new key; the returned ``NewKey.token`` is the only copy of the secret."""
        if owner_kind not in OWNER_KINDS:
            raise ValueError(f"a key belongs to a person or a service, not {owner_kind!r}")
        if not owner.strip():
            raise ValueError("a key needs an owner (a person's handle or a service's name)")
        parse_rate(rate_limit, "the key's rate limit")  # ConfigError on a bad one
        if daily_tokens is not None and daily_tokens < 0:
            raise ValueError("a token quota cannot be negative")
        new = new_api_key()
        row = ApiKey(prefix=new.prefix, secret_hash=new.secret_hash, name=name.strip()[:128],
                     owner=owner.strip()[:128], owner_kind=owner_kind,
                     rate_limit=rate_limit.strip(), daily_tokens=daily_tokens,
                     created_by=created_by, created_at=utcnow())
        with self.store.session() as session:
            session.add(row)
        return new, row

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        statement = select(ApiKey).order_by(ApiKey.id.desc())
        if not include_revoked:
            statement = statement.where(ApiKey.revoked_at.is_(None))
        with self.store.session() as session:
            return list(session.scalars(statement))

    def get(self, prefix: str) -> ApiKey | None:
        with self.store.session() as session:
            return session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))

    def revoke(self, prefix: str, by: str) -> ApiKey | None:
        """Revoke the key (None if there is no such key); revoking twice keeps the first time."""
        with self.store.session() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
            if row is not None and row.revoked_at is None:
                row.revoked_at = utcnow()
                row.revoked_by = by
            return row

    def authenticate(self, token: str, now: datetime | None = None) -> KeyInfo | None:
        """The key's details if ``token`` is a live key, else None (malformed, unknown,
        revoked or wrong secret: the caller says 401 to all alike)."""
        prefix = key_prefix(token)
        if prefix is None:
            return None
        now = now or utcnow()
        with self.store.session() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
            if row is None or row.revoked_at is not None or not key_matches(token,
                                                                           row.secret_hash):
                return None
            if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
                session.execute(update(ApiKey).where(ApiKey.id == row.id)
                                .values(last_used_at=now))
            return KeyInfo(row.prefix, row.name, row.owner, row.owner_kind, row.rate_limit,
                           row.daily_tokens)
