import json

import fakeredis
import pytest

from assistant import turns
from assistant.conversation import Runtime, answer_pending
from assistant.envelope import Inbound, Reply
from assistant.memory import RedisConversationHistory
from assistant.stream import stored_reply
from tests.auxil.factories import conversation, inbound
from tests.auxil.fake_engine import FakeEngine


class RecordingSender:
    """A platform that records what was shown: opened streams, updates, final replies."""

    def __init__(self, fail_times: int = 0) -> None:
        self.delivered: list[Reply] = []
        self.opened: list[str] = []
        self.updates: list[str] = []
        self.closed = 0
        self.fail_times = fail_times

    def open(self, inbound: Inbound, reply_id: str) -> "RecordingSender":
        self.opened.append(reply_id)
        return self

    def update(self, text_so_far: str) -> None:
        self.updates.append(text_so_far)

    def finish(self, reply: Reply) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("platform down")
        self.delivered.append(reply)

    def close(self) -> None:
        self.closed += 1


def records(runtime: Runtime, channel: str = "c1") -> list[tuple[str, str]]:
    history = RedisConversationHistory(runtime.client, conversation(channel), 60)
    return [(m.role, m.text) for m in history.records()]


def test_submit_dedupes_on_the_platform_id(fake_redis: fakeredis.FakeRedis) -> None:
    message = inbound("hi")
    assert turns.submit(fake_redis, message) is True
    assert turns.submit(fake_redis, message) is False
    assert len(turns.pending(fake_redis, message.conversation)) == 1
    assert turns.original_message_id(fake_redis, message.dedupe_id) == message.message_id


def test_pending_messages_are_answered_and_removed(runtime: Runtime, engine: FakeEngine) -> None:
    engine.answers.append("Hello!")
    message = inbound("hi")
    turns.submit(runtime.client, message)
    outcome = answer_pending(runtime, message.conversation)
    assert outcome.turns == 1 and outcome.busy_for is None
    assert records(runtime) == [("user", "hi"), ("assistant", "Hello!")]
    assert turns.pending(runtime.client, message.conversation) == []
    reply = stored_reply(runtime.client, message.conversation, message.message_id)
    assert reply is not None and reply.text == "Hello!"


def test_messages_waiting_together_join_one_turn(runtime: Runtime, engine: FakeEngine) -> None:
    first, second = inbound("one"), inbound("two")
    turns.submit(runtime.client, first)
    turns.submit(runtime.client, second)
    assert answer_pending(runtime, first.conversation).turns == 1
    assert len(engine.requests) == 1
    assert stored_reply(runtime.client, first.conversation, first.message_id) == stored_reply(
        runtime.client, second.conversation, second.message_id)


def test_a_held_conversation_is_not_answered_twice(runtime: Runtime, engine: FakeEngine) -> None:
    message = inbound("hi")
    turns.submit(runtime.client, message)
    other = turns.ConversationLock(runtime.client, message.conversation)
    assert other.acquire()
    try:
        outcome = answer_pending(runtime, message.conversation)
    finally:
        other.release()
    assert outcome.turns == 0 and outcome.busy_for is not None and outcome.busy_for > 0
    assert engine.requests == []
    assert answer_pending(runtime, message.conversation).turns == 1


def test_a_rerun_after_a_crash_answers_once(runtime: Runtime, engine: FakeEngine) -> None:
    """A worker died after storing the turn but before removing it from pending."""
    sender = RecordingSender()
    runtime.senders = {"web": sender}
    message = inbound("hi")
    turns.submit(runtime.client, message)
    assert answer_pending(runtime, message.conversation).turns == 1
    # Simulate the crash window: the message is still pending when the task runs again.
    runtime.client.rpush(turns.pending_key(message.conversation), message.model_dump_json())
    assert answer_pending(runtime, message.conversation).turns == 1
    assert len(engine.requests) == 1  # not generated again
    assert len(sender.delivered) == 1  # not posted again
    assert len(sender.opened) == 1  # the rerun did not even open a new platform message
    assert records(runtime) == [("user", "hi"), ("assistant", "ok")]


def test_a_failed_delivery_is_retried_without_generating_again(runtime: Runtime,
                                                               engine: FakeEngine) -> None:
    sender = RecordingSender(fail_times=1)
    runtime.senders = {"web": sender}
    message = inbound("hi")
    turns.submit(runtime.client, message)
    with pytest.raises(ConnectionError):
        answer_pending(runtime, message.conversation)
    assert turns.pending(runtime.client, message.conversation) != []  # nothing lost
    answer_pending(runtime, message.conversation)
    assert len(engine.requests) == 1
    assert [r.text for r in sender.delivered] == ["ok"]
    assert len(engine.requests) == 1


def test_a_message_that_keeps_failing_is_dead_lettered(runtime: Runtime) -> None:
    class Exploding(FakeEngine):
        def stream(self, request):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    runtime.engine = Exploding()
    message = inbound("poison")
    turns.submit(runtime.client, message)
    for _ in range(runtime.max_deliveries):
        with pytest.raises(RuntimeError):
            answer_pending(runtime, message.conversation)
    answer_pending(runtime, message.conversation)  # the next delivery sets it aside
    assert turns.pending(runtime.client, message.conversation) == []
    dead = [json.loads(x) for x in runtime.client.lrange(turns.DEAD_LETTER_KEY, 0, -1)]
    assert [d["message_id"] for d in dead] == [message.message_id]
    apology = stored_reply(runtime.client, message.conversation, message.message_id)
    assert apology is not None and apology.finish_reason == "error"
    assert "Sorry" in apology.text


def test_holding_waits_for_the_lock_until_its_deadline(fake_redis: fakeredis.FakeRedis) -> None:
    import time

    key = conversation()
    other = turns.ConversationLock(fake_redis, key)
    assert other.acquire()
    started = time.monotonic()
    with turns.holding(fake_redis, key, wait_until=started + 0.3) as held:
        assert held is False
    assert time.monotonic() - started >= 0.3
    other.release()
    with turns.holding(fake_redis, key, wait_until=time.monotonic() + 0.3) as held:
        assert held is True


def test_a_message_arriving_after_a_crash_gets_its_own_turn(runtime: Runtime,
                                                            engine: FakeEngine) -> None:
    """Crash after storing the reply to A; B arrives before the rerun: A once, then B."""
    sender = RecordingSender()
    runtime.senders = {"web": sender}
    first, second = inbound("A"), inbound("B")
    turns.submit(runtime.client, first)
    answer_pending(runtime, first.conversation)
    runtime.client.lpush(turns.pending_key(first.conversation), first.model_dump_json())
    turns.submit(runtime.client, second)
    engine.answers.append("reply to B")
    assert answer_pending(runtime, first.conversation).turns == 2
    assert [r.text for r in sender.delivered] == ["ok", "reply to B"]
    assert records(runtime) == [("user", "A"), ("assistant", "ok"),
                                ("user", "B"), ("assistant", "reply to B")]
    assert [(m.role, m.text) for m in engine.requests[-1].messages[1:]] == [
        ("user", "A"), ("assistant", "ok"), ("user", "B")]


def test_a_turn_stored_before_a_crash_is_sent_not_generated_again(runtime: Runtime,
                                                                 engine: FakeEngine) -> None:
    """Crash after the turn was saved to memory but before the reply was stored."""
    from assistant.envelope import reply_id_for
    from assistant.stream import reply_key

    engine.answers.append("first answer")
    message = inbound("hi")
    turns.submit(runtime.client, message)
    answer_pending(runtime, message.conversation)
    runtime.client.delete(reply_key(message.conversation, message.message_id))
    runtime.client.rpush(turns.pending_key(message.conversation), message.model_dump_json())
    answer_pending(runtime, message.conversation)
    assert len(engine.requests) == 1
    reply = stored_reply(runtime.client, message.conversation, message.message_id)
    assert reply is not None and reply.text == "first answer"
    assert reply.message_id == reply_id_for([message.message_id])
    assert records(runtime) == [("user", "hi"), ("assistant", "first answer")]


def test_the_platform_sees_the_reply_grow_then_the_final_text(runtime: Runtime,
                                                              engine: FakeEngine) -> None:
    sender = RecordingSender()
    runtime.senders = {"web": sender}
    engine.answers.append("one two three")
    message = inbound("count")
    turns.submit(runtime.client, message)
    answer_pending(runtime, message.conversation)
    assert sender.updates == ["one", "one two", "one two three"]
    assert [r.text for r in sender.delivered] == ["one two three"]
    assert sender.closed == 1


def test_throttled_editor_shows_only_the_latest_text_at_its_pace() -> None:
    import time

    from assistant.delivery import ThrottledEditor

    shown: list[tuple[float, str]] = []
    editor = ThrottledEditor(lambda text: shown.append((time.monotonic(), text)), interval=0.2)
    for n in range(1, 31):
        editor.update("x" * n)
        time.sleep(0.02)  # 30 updates over ~0.6 s
    time.sleep(0.3)
    editor.close()
    assert shown[-1][1] == "x" * 30
    assert 2 <= len(shown) <= 5
    gaps = [b[0] - a[0] for a, b in zip(shown, shown[1:], strict=False)]
    assert all(gap >= 0.19 for gap in gaps)


def test_an_overlong_platform_message_gets_a_notice_not_the_model(runtime: Runtime,
                                                                  engine: FakeEngine) -> None:
    sender = RecordingSender()
    runtime.senders = {"web": sender}
    runtime.max_input_chars = 50
    long_message, short_message = inbound("x" * 51), inbound("hello")
    turns.submit(runtime.client, long_message)
    turns.submit(runtime.client, short_message)
    answer_pending(runtime, long_message.conversation)
    notice = stored_reply(runtime.client, long_message.conversation,
                          long_message.message_id)
    assert notice is not None and "under 50 characters" in notice.text
    assert len(engine.requests) == 1  # only the short message reached the model
    assert [(m.role, m.text) for m in engine.requests[0].messages[1:]] == [("user", "hello")]
    assert records(runtime) == [("user", "hello"), ("assistant", "ok")]
    assert [r.text for r in sender.delivered] == [notice.text, "ok"]


def test_observers_hear_about_each_turn_and_cannot_break_it(runtime: Runtime,
                                                            engine: FakeEngine) -> None:
    from assistant.observe import TurnStats

    seen: list[TurnStats] = []

    def broken(stats: TurnStats) -> None:
        raise RuntimeError("metrics backend down")

    runtime.observers = [broken, seen.append]
    engine.answers.append("one two three")
    message = inbound("count")
    turns.submit(runtime.client, message)
    assert answer_pending(runtime, message.conversation).turns == 1
    assert len(seen) == 1
    stats = seen[0]
    assert (stats.platform, stats.user_id, stats.messages) == ("web", "u1", 1)
    assert stats.generated is True and stats.completion_tokens == 3
    assert stats.ttft_s is not None and 0 <= stats.ttft_s <= stats.total_s
    assert stats.finish_reason == "stop" and stats.queue_wait_s >= 0


def test_a_failing_summary_does_not_fail_a_delivered_turn(runtime: Runtime,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    import assistant.conversation as conversation_module

    def broken(*args: object) -> bool:
        raise RuntimeError("context overflow")

    monkeypatch.setattr(conversation_module, "summarise_if_needed", broken)
    message = inbound("hi")
    turns.submit(runtime.client, message)
    assert answer_pending(runtime, message.conversation).turns == 1
    assert turns.pending(runtime.client, message.conversation) == []
    assert stored_reply(runtime.client, message.conversation, message.message_id) is not None


def test_a_lock_whose_holder_died_on_this_host_is_taken_over_at_once(
        fake_redis: fakeredis.FakeRedis) -> None:
    """Issue 16: the rerun of a killed pool process' turn waited out its lock (~14 s)."""
    import os
    import subprocess
    import sys

    key = conversation("dead-holder")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid of this namespace that no longer runs
    dead = turns.ConversationLock(fake_redis, key)
    dead.token = dead.token.replace(f":{os.getpid()}:", f":{child.pid}:")
    assert dead.acquire()
    turns._RENEWER.remove(dead)
    alive = turns.ConversationLock(fake_redis, key)
    assert alive.acquire()
    successor = turns.ConversationLock(fake_redis, key)
    assert not successor.acquire()  # a live holder (this process) keeps it
    alive.release()


def test_a_lock_held_elsewhere_is_never_taken_over(fake_redis: fakeredis.FakeRedis) -> None:
    key = conversation("remote-holder")
    fake_redis.set(turns.lock_key(key), "other-boot.4026531836:1:abc", px=15_000)
    assert not turns.ConversationLock(fake_redis, key).acquire()
    fake_redis.set(turns.lock_key(key), "an-old-style-token", px=15_000)
    assert not turns.ConversationLock(fake_redis, key).acquire()
