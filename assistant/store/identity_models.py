"""Tables of who may talk to the assistant: people, their API keys, their platform identities.

Kept beside ``models.py`` (same ``Base``, same migrations folder: 0003_identity) so the identity
tables read as one piece. docs/security.md describes what each one is for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from assistant.store.models import Base, UTCDateTime, utcnow


class Person(Base):
    """Someone who signs in: a local account (password) or a company identity (OIDC).

    ``handle`` is the user id the person's web messages carry (platform ``web``), so rate
    limits, quotas, bans and the moderation log hang on it; it never changes.
    """

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    handle: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    # argon2id (argon2-cffi); None: no local password (OIDC only, or an invitation not taken).
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # sha256 of a one-time invitation token, and when it stops working.
    invite_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    invite_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    oidc_issuer: Mapped[str | None] = mapped_column(String(512), nullable=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(256), nullable=True)
    groups: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Set by an admin; an OIDC person in ASSISTANT_OIDC_ADMIN_GROUP is an admin too.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_people_oidc"),
    )


class ApiKey(Base):
    """A key for ``/v1`` and ``/api``. Only its sha256 is kept; ``prefix`` is what admins see
    and what the key's messages carry as their user id (so every use is attributable)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128), default="")
    # A person's handle, or a service's name (owner_kind "service").
    owner: Mapped[str] = mapped_column(String(128))
    owner_kind: Mapped[str] = mapped_column(String(16), default="person")
    rate_limit: Mapped[str] = mapped_column(String(32), default="")  # "" = the global one
    daily_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None = global
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)

    __table_args__ = (Index("ix_api_keys_owner", "owner"),)


class LinkedIdentity(Base):
    """A Slack or Telegram user an admin recorded as this person (for features that follow a
    person across platforms); the platforms keep vouching for their own users."""

    __tablename__ = "linked_identities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[int] = mapped_column(Integer, ForeignKey("people.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(128), default="")
    user_id: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")

    __table_args__ = (
        UniqueConstraint("platform", "workspace", "user_id", name="uq_linked_identity"),
        Index("ix_linked_person", "person_id"),
    )
