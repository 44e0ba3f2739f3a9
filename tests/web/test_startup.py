"""At start the web server puts Redis' mirror of bans and quotas back from the store."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

from assistant.limits import banned_key
from assistant.settings import Settings
from assistant.store import shared_store
from assistant.store.users import Users


@pytest.fixture(autouse=True)
def redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # worker.app reads it at import


def restore(settings: Settings, client: fakeredis.FakeRedis) -> None:
    from integrations.web.app import restore_bans_and_quotas

    restore_bans_and_quotas(settings, client)


def test_bans_come_back_after_redis_lost_them(tmp_path: Path) -> None:
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path / 'assistant.db'}")
    users = Users(shared_store(settings.sql_url))
    users.seen("web", "default", "troll", messages=1)
    users.set_banned("web", "default", "troll", banned=True, by="admin")
    client = fakeredis.FakeRedis()  # an empty Redis: as after a flush or a lost volume
    restore(settings, client)
    assert client.exists(banned_key("web", "default", "troll"))


def test_a_store_that_cannot_open_is_logged_not_fatal(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the database's folder should be")
    settings = Settings(DATABASE_URL=f"sqlite:///{blocked / 'assistant.db'}")
    restore(settings, fakeredis.FakeRedis())
    assert "could not restore bans and quotas" in caplog.text
