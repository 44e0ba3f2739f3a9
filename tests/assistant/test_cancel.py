"""A generation whose waiting clients have all gone stops; platform replies never do."""

from __future__ import annotations

import fakeredis
import pytest

from assistant import cancel, turns
from assistant.conversation import Runtime, answer_pending
from assistant.envelope import Inbound
from assistant.stream import stored_reply
from tests.assistant.test_conversation import RecordingSender
from tests.auxil.factories import inbound
from tests.auxil.fake_engine import FakeEngine

LONG_ANSWER = " ".join(f"word{n}" for n in range(60))


def give_up(client: fakeredis.FakeRedis, message: Inbound) -> None:
    client.set(cancel.cancel_key(message.conversation, message.message_id), "1")


@pytest.fixture(autouse=True)
def check_every_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cancel, "CHECK_EVERY_SECONDS", 0.0)


def test_a_web_reply_whose_client_has_gone_stops_generating(runtime: Runtime,
                                                            engine: FakeEngine) -> None:
    engine.answers.append(LONG_ANSWER)
    message = inbound("tell me everything")
    turns.submit(runtime.client, message)
    give_up(runtime.client, message)
    assert answer_pending(runtime, message.conversation).turns == 1
    reply = stored_reply(runtime.client, message.conversation, message.message_id)
    assert reply is not None
    assert len(reply.text.split()) < 5  # stopped within the first pieces, not all 60 words
    assert turns.pending(runtime.client, message.conversation) == []


def test_a_turn_goes_on_while_one_of_its_clients_still_waits(runtime: Runtime,
                                                             engine: FakeEngine) -> None:
    engine.answers.append(LONG_ANSWER)
    first, second = inbound("one"), inbound("two")
    turns.submit(runtime.client, first)
    turns.submit(runtime.client, second)
    give_up(runtime.client, first)
    answer_pending(runtime, first.conversation)
    reply = stored_reply(runtime.client, second.conversation, second.message_id)
    assert reply is not None and reply.text == LONG_ANSWER


def test_a_platform_reply_is_never_cancelled(runtime: Runtime, engine: FakeEngine) -> None:
    """Slack and Telegram have no waiting client: even a cancel mark on the message (which no
    edge sets for them) does not stop it."""
    sender = RecordingSender()
    runtime.senders = {"slack": sender}
    engine.answers.append(LONG_ANSWER)
    message = inbound("tell me everything").model_copy(update={"conversation": inbound(
        "x").conversation.model_copy(update={"platform": "slack"})})
    turns.submit(runtime.client, message)
    give_up(runtime.client, message)
    answer_pending(runtime, message.conversation)
    assert [r.text for r in sender.delivered] == [LONG_ANSWER]
