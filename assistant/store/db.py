"""Open the durable store and bring its schema up to date (Alembic, under a lock)."""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from assistant.errors import ConfigError

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# Any fixed 64-bit number: PostgreSQL's advisory lock that serialises concurrent migrations.
MIGRATION_LOCK_ID = 7_046_215_993


def create(url: str) -> Engine:
    """An SQLAlchemy engine; SQLite gets WAL and a busy timeout so several processes share it."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql" or parsed.drivername == "postgres":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 15})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL: readers (the admin panel) never block the writer (a worker), and writers
            # wait (busy_timeout) instead of failing (https://sqlite.org/wal.html).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=15000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(parsed, pool_pre_ping=True)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
                )
                connection.commit()
    else:
        yield


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest migration; safe to call from many processes at once."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE / "migrations"))
    with _migration_lock(engine), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@dataclass
class Store:
    """The store's engine and a session factory; repositories take one of these."""

    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions.begin() as session:
            yield session


def connect_store(url: str, *, upgrade: bool = True) -> Store:
    """Open the store at ``url`` (and migrate it, unless told not to)."""
    try:
        engine = create(url)
    except Exception as exc:  # a malformed URL or a missing driver
        raise ConfigError(f"DATABASE_URL {make_url(url).render_as_string()!r}: {exc}") from exc
    if upgrade:
        migrate(engine)
    return Store(engine, sessionmaker(engine, expire_on_commit=False))


def dialect_insert(session: Session, model: Any) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the session's database (SQLite/PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgres_insert

        return postgres_insert(model)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model)


_shared: dict[str, Store] = {}
_shared_lock = threading.Lock()


def shared_store(url: str) -> Store:
    """One store per URL per process, opened (and migrated) on first use: for edges (the
    Slack and Telegram adapters, the web chat) that touch the store now and then."""
    with _shared_lock:
        if url not in _shared:
            _shared[url] = connect_store(url)
        return _shared[url]
