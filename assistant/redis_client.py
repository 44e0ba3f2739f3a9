"""Redis clients from ``REDIS_URL``: plain, TLS, Unix socket, or Redis Sentinel.

redis-py's ``from_url`` knows ``redis://``, ``rediss://`` and ``unix://``. A Sentinel URL uses
kombu's syntax (Celery's broker reads the same ``REDIS_URL``)::

    sentinel://[[user]:password@]host:26379[/db];sentinel://host2:26379;...

one ``sentinel://host:port`` entry per sentinel, separated by ``;``. As in kombu, the database
number and the credentials are those of the **first** entry (they authenticate to the Redis
master, not to the sentinels); a later entry may repeat them but not differ, so that Celery and
our clients can never end up in different databases. The master's name is not in the URL: it is
``REDIS_SENTINEL_MASTER`` (the ``master_name`` argument here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

DEFAULT_MASTER_NAME = "mymaster"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel(url: str) -> bool:
    return url.strip().lower().startswith("sentinel://")


def _db_of(path: str, entry: str) -> int | None:
    path = path.strip("/")
    if not path:
        return None
    if not path.isdigit():
        raise ValueError(f"Sentinel URL entry {entry!r}: the database must be a number, "
                         f"got {path!r}")
    return int(path)


def parse_sentinel_url(url: str) -> SentinelURL:
    """The sentinels, database and master credentials of a ``sentinel://`` URL."""
    entries = [entry.strip() for entry in url.split(";") if entry.strip()]
    if not entries:
        raise ValueError("empty Sentinel URL")
    sentinels: list[tuple[str, int]] = []
    first: tuple[int | None, str | None, str | None] | None = None
    for entry in entries:
        parts = urlsplit(entry)
        if parts.scheme.lower() != "sentinel":
            raise ValueError(f"Sentinel URL entry {entry!r} must start with sentinel:// "
                             "(entries are separated by ';')")
        if parts.query or parts.fragment:
            raise ValueError(f"Sentinel URL entry {entry!r}: query options are not supported")
        if not parts.hostname:
            raise ValueError(f"Sentinel URL entry {entry!r} has no host")
        try:
            port = parts.port or SENTINEL_PORT
        except ValueError as error:
            raise ValueError(f"Sentinel URL entry {entry!r}: {error}") from None
        sentinels.append((parts.hostname, port))
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        db = _db_of(parts.path, entry)
        if first is None:
            first = (db, username, password)
            continue
        # kombu uses the first entry's database and credentials and ignores the others': a
        # later entry that differs would silently put Celery and us in different places.
        if db is not None and db != (first[0] or 0):
            raise ValueError(
                f"Sentinel URL: entry {entry!r} names database {db} but the first entry "
                f"{'names ' + str(first[0]) if first[0] is not None else 'names none (0)'}; "
                "Celery (kombu) reads only the first entry's: put the database on the first "
                "entry (or the same on every entry)")
        if (username or password) and (username, password) != first[1:]:
            raise ValueError(
                f"Sentinel URL: entry for {parts.hostname}:{port} has other credentials than "
                "the first entry; Celery (kombu) reads only the first entry's: put them on the "
                "first entry (or the same on every entry)")
    assert first is not None
    return SentinelURL(sentinels=tuple(sentinels), db=first[0] or 0, username=first[1],
                       password=first[2])


def _master_kwargs(parsed: SentinelURL) -> dict[str, Any]:
    found: dict[str, Any] = {"db": parsed.db}
    if parsed.username is not None:
        found["username"] = parsed.username
    if parsed.password is not None:
        found["password"] = parsed.password
    return found


def connect(url: str, master_name: str = DEFAULT_MASTER_NAME, **kwargs: Any) -> redis.Redis:
    """A redis-py client for ``url``; ``kwargs`` (timeouts...) as for ``redis.Redis``.

    For a Sentinel URL the client asks the sentinels for the current master on every new
    connection, so it follows a failover; socket options apply to the sentinels too.
    """
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **kwargs)
    parsed = parse_sentinel_url(url)
    manager = redis.sentinel.Sentinel(list(parsed.sentinels), **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        master_name, redis_class=redis.Redis, **_master_kwargs(parsed))
    return client


def connect_async(url: str, master_name: str = DEFAULT_MASTER_NAME,
                  **kwargs: Any) -> aioredis.Redis:
    """The asyncio counterpart of :func:`connect`."""
    if not is_sentinel(url):
        return aioredis.Redis.from_url(url, **kwargs)
    parsed = parse_sentinel_url(url)
    manager = aiosentinel.Sentinel(list(parsed.sentinels), **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
    client: aioredis.Redis = manager.master_for(
        master_name, redis_class=aioredis.Redis, **_master_kwargs(parsed))
    return client
