"""The durable store: what admins read and what must outlive Redis (docs/admin-store.md).

SQL through SQLAlchemy, SQLite by default and PostgreSQL in production (``DATABASE_URL``), with
Alembic migrations that every process runs (under a lock) before it first touches the store.
"""

from assistant.store.db import Store, connect_store, migrate, shared_store
from assistant.store.models import (
    AuditEntry,
    Conversation,
    Message,
    ModerationEvent,
    PersonaVersion,
    User,
)

__all__ = ["AuditEntry", "Conversation", "Message", "ModerationEvent", "PersonaVersion", "Store",
           "User", "connect_store", "migrate", "shared_store"]
