import fakeredis

from assistant.envelope import ChatMessage
from assistant.memory import RedisConversationHistory, Summary, build_window, needs_summary
from tests.auxil.factories import conversation
from tests.auxil.fake_engine import FakeEngine


def turn(n: int, words: int = 10) -> list[ChatMessage]:
    body = " ".join(["w"] * (words - 1))
    return [ChatMessage(role="user", text=f"q{n} {body}"),
            ChatMessage(role="assistant", text=f"a{n} {body}")]


def test_history_round_trip_and_retention(fake_redis: fakeredis.FakeRedis) -> None:
    history = RedisConversationHistory(fake_redis, conversation(), retention_seconds=120)
    assert not history.exists()
    history.append(turn(1))
    assert [m.text.split()[0] for m in history.records()] == ["q1", "a1"]
    assert 0 < fake_redis.ttl(history.messages_key) <= 120
    # The langchain-core view of the same record.
    assert [m.type for m in history.messages] == ["human", "ai"]
    history.clear()
    assert history.records() == [] and not history.exists()


def test_saving_a_turn_twice_stores_it_once(fake_redis: fakeredis.FakeRedis) -> None:
    history = RedisConversationHistory(fake_redis, conversation(), retention_seconds=120)
    assert history.append(turn(1), turn_id="r1") is True
    assert history.append(turn(1), turn_id="r1") is False
    assert len(history.records()) == 2


def test_conversations_do_not_share_memory(fake_redis: fakeredis.FakeRedis) -> None:
    first = RedisConversationHistory(fake_redis, conversation("a"), 60)
    second = RedisConversationHistory(fake_redis, conversation("b"), 60)
    first.append(turn(1))
    assert second.records() == []


def test_window_keeps_the_newest_turns_within_budget() -> None:
    engine = FakeEngine()
    records = [m for n in range(10) for m in turn(n)]  # 20 messages of 14 "tokens" each
    window = build_window(records, Summary(), budget_tokens=14 * 6,
                          count_tokens=engine.count_tokens)
    assert [m.text.split()[0] for m in window.messages] == ["q7", "a7", "q8", "a8", "q9", "a9"]
    assert window.left_out == 14
    assert window.messages[0].role == "user"  # never opens on a dangling assistant reply


def test_window_starts_after_the_summary() -> None:
    engine = FakeEngine()
    records = [m for n in range(4) for m in turn(n)]
    window = build_window(records, Summary("earlier talk", covers=4), budget_tokens=10_000,
                          count_tokens=engine.count_tokens)
    assert window.summary == "earlier talk"
    assert [m.text.split()[0] for m in window.messages] == ["q2", "a2", "q3", "a3"]
    assert window.left_out == 0


def test_summary_is_needed_only_past_the_high_water_mark() -> None:
    engine = FakeEngine()
    records = [m for n in range(10) for m in turn(n)]  # 280 tokens
    assert needs_summary(records, Summary(), 1000, engine.count_tokens) == 0
    fold = needs_summary(records, Summary(), 300, engine.count_tokens)
    assert fold == 10 and fold % 2 == 0  # the older half, whole pairs


def test_forget_user_deletes_their_dms_and_their_messages_in_shared_threads(
        fake_redis: fakeredis.FakeRedis) -> None:
    from assistant.envelope import ConversationKey
    from assistant.memory import forget_user

    dm = ConversationKey(platform="slack", workspace="T1", channel="D1", user="U1")
    thread = ConversationKey(platform="slack", workspace="T1", channel="C1", thread="171.1")
    other_dm = ConversationKey(platform="slack", workspace="T1", channel="D2", user="U2")
    histories = {key: RedisConversationHistory(fake_redis, key, 600)
                 for key in (dm, thread, other_dm)}
    histories[dm].append([ChatMessage(role="user", text="my secret", user_id="U1"),
                          ChatMessage(role="assistant", text="noted")])
    histories[thread].append([ChatMessage(role="user", text="U1 says hi", user_id="U1"),
                              ChatMessage(role="user", text="U2 says hi", user_id="U2"),
                              ChatMessage(role="assistant", text="hello both")])
    histories[thread].set_summary(Summary("U1 said hi", covers=0))
    histories[other_dm].append([ChatMessage(role="user", text="U2 private", user_id="U2")])

    assert forget_user(fake_redis, "slack", "T1", "U1", 600) == 2
    assert histories[dm].records() == []
    assert [m.text for m in histories[thread].records()] == ["U2 says hi", "hello both"]
    assert histories[thread].summary() == Summary()
    assert [m.text for m in histories[other_dm].records()] == ["U2 private"]
    assert forget_user(fake_redis, "slack", "T1", "U1", 600) == 0
