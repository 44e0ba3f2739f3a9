"""Socket Mode against a local fake: apps.connections.open on the fake Web API hands out a
ws:// URL served by ``FakeSocketMode``, which says hello, sends one ``events_api`` envelope
and records the ack.

What this covers: bolt's builtin SocketModeClient connecting through ``SLACK_API_URL``, our
listeners running for a Socket Mode event, the ack carrying the envelope id, and the message
being queued (in-process, with the dispatcher replaced); and, as an integration test, the real
runner process (``python -m integrations.slack``) answering through a real worker. What it does
not cover: Slack's real TLS endpoint, reconnects and ``disconnect`` envelopes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
from slack_bolt.adapter.socket_mode import SocketModeHandler

from assistant.settings import Settings
from integrations.slack.app import build_app
from integrations.slack.convert import dedupe_id_for, message_id_for
from tests.auxil.stack import ROOT, Stack
from tests.slack.fake_slack import BOT_USER_ID, FakeSlack, FakeSocketMode, event_body
from tests.slack.test_events import Submitter


@pytest.fixture
def socket_server(fake_slack: FakeSlack) -> Iterator[FakeSocketMode]:
    server = FakeSocketMode()
    fake_slack.socket_url = server.url
    yield server
    server.close()


def envelope(ts: str, event_id: str) -> dict[str, object]:
    event = {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER_ID}> hi", "ts": ts,
             "channel": "C1", "event_ts": ts}
    return {"envelope_id": f"env-{event_id}", "type": "events_api",
            "payload": event_body(event, event_id), "accepts_response_payload": False,
            "retry_attempt": 0, "retry_reason": ""}


def test_socket_mode_connects_acks_and_queues(fake_slack: FakeSlack,
                                              socket_server: FakeSocketMode,
                                              fake_redis: fakeredis.FakeRedis) -> None:
    settings = Settings(SLACK_BOT_TOKEN="xoxb-test", SLACK_APP_TOKEN="xapp-test",
                        SLACK_API_URL=fake_slack.api_url)
    submitter = Submitter(fake_redis)
    handler = SocketModeHandler(build_app(settings, submitter, fake_redis), "xapp-test")
    try:
        handler.connect()  # type: ignore[no-untyped-call]
        assert socket_server.connected.wait(10)
        socket_server.send(envelope("7.000001", "EvS1"))
        assert socket_server.acked.wait(10)
    finally:
        handler.close()  # type: ignore[no-untyped-call]
    assert [a["envelope_id"] for a in socket_server.acks] == ["env-EvS1"]
    [inbound] = submitter.accepted
    assert inbound.reply_to == {"team": "T1", "channel": "C1", "thread_ts": "7.000001"}
    assert [c.method for c in fake_slack.calls][:1] == ["apps.connections.open"]


@pytest.mark.integration
def test_the_socket_mode_runner_answers_through_a_worker(
        redis_server: str, model_path: Path, fake_slack: FakeSlack,
        socket_server: FakeSocketMode) -> None:
    from tests.conftest import _new_stack

    stack: Stack = _new_stack(redis_server, model_path, "slack-socket",
                              SLACK_BOT_TOKEN="xoxb-test", SLACK_APP_TOKEN="xapp-test",
                              SLACK_API_URL=fake_slack.api_url)
    log = open(stack.log_dir / "socket-mode.log", "ab")  # noqa: SIM115 - closed below
    runner = subprocess.Popen([sys.executable, "-m", "integrations.slack"], cwd=ROOT,
                              env=stack.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        stack.start_worker("w1")
        assert socket_server.connected.wait(30), stack.log("socket-mode")
        socket_server.send(envelope("8.000001", "EvS2"))
        assert socket_server.acked.wait(10), stack.log("socket-mode")
        fake_slack.wait_for(lambda: any(
            c.args.get("thread_ts") == "8.000001" for c in fake_slack.calls_of(
                "chat.postMessage")), timeout=60)
        client = redis.Redis.from_url(stack.redis_url)
        try:
            message_id = message_id_for(dedupe_id_for("T1", "C1", "8.000001"))
            # The stored reply, under its conversation (assistant/keys.py: reply).
            fake_slack.wait_for(
                lambda: bool(client.keys(f"assistant:reply:*:{message_id}")), timeout=60)
        finally:
            client.close()
    finally:
        runner.terminate()
        runner.wait(timeout=15)
        log.close()
        stack.close()
    assert socket_server.acks[0]["envelope_id"] == "env-EvS2"
