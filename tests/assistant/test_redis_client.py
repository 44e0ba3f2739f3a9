"""REDIS_URL parsing for our Redis clients and Celery's transport options (no network)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from celery import Celery
from kombu import Connection

from assistant.errors import ConfigError
from assistant.redis_client import (
    SentinelURL,
    connect,
    connect_async,
    is_sentinel,
    parse_sentinel_url,
)
from assistant.settings import Settings


def test_one_sentinel_with_database() -> None:
    assert parse_sentinel_url("sentinel://127.0.0.1:26380/3") == SentinelURL(
        sentinels=(("127.0.0.1", 26380),), db=3)


def test_several_sentinels_default_port_and_database() -> None:
    parsed = parse_sentinel_url("sentinel://s1;sentinel://s2:26380;sentinel://s3:26381")
    assert parsed.sentinels == (("s1", 26379), ("s2", 26380), ("s3", 26381))
    assert parsed.db == 0
    assert parsed.username is None and parsed.password is None


def test_credentials_and_database_come_from_the_first_entry_like_kombu() -> None:
    url = "sentinel://:p%40ss@s1:26379/2;sentinel://s2:26379;sentinel://:p%40ss@s3:26379/2"
    parsed = parse_sentinel_url(url)
    assert parsed == SentinelURL(sentinels=(("s1", 26379), ("s2", 26379), ("s3", 26379)),
                                 db=2, password="p@ss")
    conn = Connection(url, transport_options={"master_name": "mymaster"})
    assert conn.transport_cls == "sentinel"
    assert (conn.virtual_host, conn.password) == ("2", "p@ss")  # kombu: the first entry's


def test_user_and_password() -> None:
    parsed = parse_sentinel_url("sentinel://alice:secret@s1:26379/1")
    assert (parsed.username, parsed.password, parsed.db) == ("alice", "secret", 1)


def test_trailing_database_equal_to_the_first_entrys_is_accepted() -> None:
    # The brief's form: the first entry names no database (0), the last one /0.
    assert parse_sentinel_url("sentinel://s1:26379;sentinel://s2:26379/0").db == 0


@pytest.mark.parametrize("url, message", [
    ("sentinel://s1:26379;sentinel://s2:26379/3", "database 3"),
    ("sentinel://s1:26379/1;sentinel://s2:26379/2", "database 2"),
    ("sentinel://s1:26379;sentinel://:pw@s2:26379", "credentials"),
    ("sentinel://s1:26379;redis://s2:6379", "must start with sentinel://"),
    ("sentinel://s1:26379/x", "must be a number"),
    ("sentinel://s1:port", "Port could not be cast"),
    ("sentinel://:26379", "has no host"),
    ("sentinel://s1:26379/0?ssl_cert_reqs=required", "query options"),
    (";", "empty"),
])
def test_bad_sentinel_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


def test_is_sentinel() -> None:
    assert is_sentinel("sentinel://s1:26379")
    assert is_sentinel("SENTINEL://s1:26379")
    assert not is_sentinel("redis://s1:6379/0")
    assert not is_sentinel("unix:///run/redis.sock")


@pytest.mark.parametrize("url, kwargs", [
    ("redis://:pw@db:6380/4", {"host": "db", "port": 6380, "db": 4, "password": "pw"}),
    ("rediss://db:6380/0", {"host": "db", "port": 6380, "db": 0}),
    ("unix:///run/redis/redis.sock?db=2", {"path": "/run/redis/redis.sock", "db": 2}),
])
def test_plain_urls_are_redis_from_url(url: str, kwargs: dict[str, object]) -> None:
    client = connect(url, socket_timeout=5.0)
    aclient = connect_async(url, socket_timeout=5.0)
    try:
        for made in (client, aclient):
            params = made.connection_pool.connection_kwargs
            assert {k: params.get(k) for k in kwargs} == kwargs
            assert params["socket_timeout"] == 5.0
    finally:
        client.close()


def test_sentinel_url_builds_a_master_client() -> None:
    client = connect("sentinel://:pw@s1:26379/3;sentinel://s2:26380", master_name="cache",
                     socket_connect_timeout=2.0)
    pool = client.connection_pool
    assert isinstance(client, redis.Redis)
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "cache" and pool.is_master
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["socket_connect_timeout"] == 2.0
    sentinels = pool.sentinel_manager.sentinels
    addresses = [(s.connection_pool.connection_kwargs["host"],
                  s.connection_pool.connection_kwargs["port"]) for s in sentinels]
    assert addresses == [("s1", 26379), ("s2", 26380)]
    # The master's password is not sent to the sentinels (as in kombu); timeouts are.
    assert sentinels[0].connection_pool.connection_kwargs.get("password") is None
    assert sentinels[0].connection_pool.connection_kwargs["socket_connect_timeout"] == 2.0


def test_sentinel_url_builds_an_asyncio_master_client() -> None:
    aclient = connect_async("sentinel://s1:26379/1", master_name="mymaster")
    assert isinstance(aclient, aioredis.Redis)
    pool = aclient.connection_pool
    assert isinstance(pool, aiosentinel.SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 1


def _settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


@pytest.fixture
def make_app(monkeypatch: pytest.MonkeyPatch) -> Callable[[Settings], Celery]:
    # worker.app builds its module-level app from the environment when first imported.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    from worker.app import make_app as make

    return make


def test_celery_gets_the_master_name_for_a_sentinel_url(
        make_app: Callable[[Settings], Celery]) -> None:
    app = make_app(_settings(REDIS_URL="sentinel://s1:26379;sentinel://s2:26379/0",
                             REDIS_SENTINEL_MASTER="prod"))
    assert app.conf.broker_url == "sentinel://s1:26379;sentinel://s2:26379/0"
    assert app.conf.broker_transport_options["master_name"] == "prod"
    assert app.conf.result_backend_transport_options["master_name"] == "prod"
    assert app.conf.broker_transport_options["visibility_timeout"] == 300


def test_celery_has_no_master_name_for_a_plain_url(make_app: Callable[[Settings], Celery]) -> None:
    app = make_app(_settings(REDIS_URL="redis://db:6379/0"))
    assert "master_name" not in app.conf.broker_transport_options


def test_master_name_defaults_to_mymaster() -> None:
    assert _settings().redis_sentinel_master == "mymaster"


def test_a_bad_sentinel_url_is_a_config_error(make_app: Callable[[Settings], Celery]) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL: .*database 3"):
        make_app(_settings(REDIS_URL="sentinel://s1:26379;sentinel://s2:26379/3"))


def test_public_dict_masks_every_sentinel_password() -> None:
    shown = _settings(REDIS_URL="sentinel://:pw@s1:26379;sentinel://:pw@s2:26379/0")
    assert "pw" not in shown.public_dict()["REDIS_URL"]
