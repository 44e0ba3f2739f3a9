"""The webhook route in-process: secret check, and 503 (Telegram retries) when Redis is down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from assistant.settings import Settings
from tests.auxil.stack import free_port
from tests.telegram import fake_telegram as tg
from tests.telegram.fake_telegram import TOKEN, FakeTelegram

SECRET = "in-process_secret"


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
def client(fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    redis_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    # worker.app builds its Celery app from the environment when first imported.
    monkeypatch.setenv("REDIS_URL", redis_url)
    from integrations.web.app import create_app

    settings = Settings(REDIS_URL=redis_url,
                        TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_URL=fake.base_url,
                        TELEGRAM_WEBHOOK_URL="https://bot.example.com/telegram/webhook",
                        TELEGRAM_WEBHOOK_SECRET=SECRET)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_startup_registers_the_webhook_and_commands(client: TestClient,
                                                    fake: FakeTelegram) -> None:
    registered = fake.calls_of("setWebhook")[0].params
    assert registered["url"] == "https://bot.example.com/telegram/webhook"
    assert registered["secret_token"] == SECRET
    assert fake.calls_of("setMyCommands")


def test_a_wrong_secret_is_403_before_anything_else(client: TestClient) -> None:
    update = tg.update(1, tg.message("hi", tg.private_chat()))
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET + "x"}
    assert client.post("/telegram/webhook", json=update, headers=headers).status_code == 403
    assert client.post("/telegram/webhook", json=update).status_code == 403


def test_redis_down_answers_503_so_telegram_retries(client: TestClient) -> None:
    update = tg.update(2, tg.message("hi", tg.private_chat()))
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    assert client.post("/telegram/webhook", json=update, headers=headers).status_code == 503
    ignored = tg.update(3, tg.message("hello all", tg.group_chat()))
    assert client.post("/telegram/webhook", json=ignored, headers=headers).status_code == 200
    assert client.post("/telegram/webhook", content=b"nope", headers=headers).status_code == 400
