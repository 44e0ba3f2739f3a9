"""Everyone the assistant has talked to, per platform and workspace, and what admins set.

Counts are bumped by the worker after each archived turn (``seen``); bans and per-user quotas
are set from the admin panel (through ``assistant.admin_actions``, which also mirrors them in
Redis for the dispatcher's hot path).
"""

from __future__ import annotations

import builtins
from contextlib import nullcontext
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from assistant.envelope import utcnow
from assistant.store.db import Store, dialect_insert
from assistant.store.models import User


class Users:
    def __init__(self, store: Store) -> None:
        self.store = store

    def seen(self, platform: str, workspace: str, user_id: str, messages: int = 0,
             tokens: int = 0, display_name: str | None = None,
             transaction: Session | None = None) -> None:
        """Add to the user's counts (creating the user on first sight) and mark them seen now.

        With ``transaction``, the write joins that transaction; otherwise it commits on return.
        """
        now = utcnow()
        with self.store.session() if transaction is None else nullcontext(transaction) as session:
            insert = dialect_insert(session, User).values(
                platform=platform, workspace=workspace, user_id=user_id,
                display_name=display_name, first_seen=now, last_seen=now,
                message_count=messages, token_count=tokens, banned=False)
            changes = {
                "last_seen": now,
                "message_count": User.message_count + messages,
                "token_count": User.token_count + tokens,
            }
            if display_name:
                changes["display_name"] = display_name
            session.execute(insert.on_conflict_do_update(
                index_elements=["platform", "workspace", "user_id"], set_=changes))

    def list(self, platform: str | None = None, query: str | None = None,
             limit: int = 50, offset: int = 0, banned: bool | None = None) -> list[User]:
        """Users, most recently seen first; ``query`` matches the id or the display name."""
        statement = self._filtered(select(User), platform, query, banned)
        statement = statement.order_by(User.last_seen.desc(), User.id.desc())
        with self.store.session() as session:
            return list(session.scalars(statement.limit(limit).offset(offset)))

    def count(self, platform: str | None = None, query: str | None = None,
              banned: bool | None = None) -> int:
        statement = self._filtered(select(func.count()).select_from(User), platform, query,
                                   banned)
        with self.store.session() as session:
            return int(session.scalar(statement) or 0)

    def get(self, platform: str, workspace: str, user_id: str) -> User | None:
        with self.store.session() as session:
            return _find(session, platform, workspace, user_id)

    def set_banned(self, platform: str, workspace: str, user_id: str, banned: bool, by: str
                   ) -> User:
        """Ban or unban (a user never seen yet is created, e.g. banned from the moderation log)."""
        with self.store.session() as session:
            user = _find_or_create(session, platform, workspace, user_id)
            user.banned = banned
            user.banned_at = utcnow() if banned else None
            user.banned_by = by if banned else None
            return user

    def set_quota(self, platform: str, workspace: str, user_id: str, tokens: int | None
                  ) -> User:
        """The user's own daily token quota: None for the global one, 0 for no quota."""
        if tokens is not None and tokens < 0:
            raise ValueError("a token quota cannot be negative")
        with self.store.session() as session:
            user = _find_or_create(session, platform, workspace, user_id)
            user.daily_token_quota = tokens
            return user

    def forget(self, platform: str, workspace: str, user_id: str) -> None:
        """Drop what is known about the user ("forget me"), except a ban or quota admins set."""
        with self.store.session() as session:
            user = _find(session, platform, workspace, user_id)
            if user is None:
                return
            if user.banned or user.daily_token_quota is not None:
                user.display_name = None
                user.message_count = user.token_count = 0
            else:
                session.delete(user)

    def flagged(self) -> builtins.list[User]:
        """Users with a ban or an own quota (what ``admin_actions.sync_redis`` mirrors)."""
        with self.store.session() as session:
            return builtins.list(session.scalars(select(User).where(
                or_(User.banned.is_(True), User.daily_token_quota.is_not(None)))))

    @staticmethod
    def _filtered(statement: Select[Any], platform: str | None, query: str | None,
                  banned: bool | None) -> Select[Any]:
        if platform:
            statement = statement.where(User.platform == platform)
        if banned is not None:
            statement = statement.where(User.banned.is_(banned))
        if query:
            # The users table is small next to the archive: a plain LIKE is fine here.
            pattern = f"%{_escape_like(query)}%"
            statement = statement.where(or_(User.user_id.ilike(pattern, escape="\\"),
                                            User.display_name.ilike(pattern, escape="\\")))
        return statement


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _find(session: Session, platform: str, workspace: str, user_id: str) -> User | None:
    return session.scalar(select(User).where(
        User.platform == platform, User.workspace == workspace, User.user_id == user_id))


def _find_or_create(session: Session, platform: str, workspace: str, user_id: str) -> User:
    session.execute(dialect_insert(session, User).values(
        platform=platform, workspace=workspace, user_id=user_id, first_seen=utcnow(),
        last_seen=utcnow(), message_count=0, token_count=0, banned=False,
    ).on_conflict_do_nothing(index_elements=["platform", "workspace", "user_id"]))
    user = _find(session, platform, workspace, user_id)
    assert user is not None
    return user
