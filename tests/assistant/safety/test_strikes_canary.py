"""Strikes mute a user after repeated blocks; the canary check catches system prompt leaks."""

from __future__ import annotations

import fakeredis
import pytest

from assistant.envelope import ConversationKey, Inbound
from assistant.errors import Muted
from assistant.limits import Limits, check
from assistant.safety.checks.canary import CanaryCheck, new_canary
from assistant.safety.strikes import Strikes
from assistant.safety.verdict import Action, Category
from tests.assistant.safety.fakes import plain_subject


def test_the_limit_th_block_within_the_window_mutes(fake_redis: fakeredis.FakeRedis) -> None:
    strikes = Strikes(fake_redis, limit=3, window_seconds=60, mute_seconds=600)
    assert strikes.strike("web", "w", "u1") == 0
    assert strikes.strike("web", "w", "u1") == 0
    assert strikes.strike("web", "w", "u2") == 0  # someone else's strike does not count
    assert strikes.muted_for("web", "w", "u1") == 0
    assert strikes.strike("web", "w", "u1") == 600
    assert 590 < strikes.muted_for("web", "w", "u1") <= 600
    assert strikes.muted_for("web", "w", "u2") == 0
    strikes.unmute("web", "w", "u1")
    assert strikes.muted_for("web", "w", "u1") == 0


def test_old_strikes_fall_out_of_the_window(fake_redis: fakeredis.FakeRedis) -> None:
    strikes = Strikes(fake_redis, limit=2, window_seconds=60, mute_seconds=600)
    strikes.strike("web", "w", "u1")
    # Age the first strike past the window.
    key = "assistant:safety:strikes:web:w:u1"
    member, _ = fake_redis.zrange(key, 0, 0, withscores=True)[0]
    fake_redis.zadd(key, {member: 1.0})
    assert strikes.strike("web", "w", "u1") == 0


def test_limit_zero_never_mutes(fake_redis: fakeredis.FakeRedis) -> None:
    strikes = Strikes(fake_redis, limit=0, window_seconds=60, mute_seconds=600)
    assert all(strikes.strike("web", "w", "u") == 0 for _ in range(5))


def test_a_muted_user_is_refused_before_queueing_and_quietly(
        fake_redis: fakeredis.FakeRedis) -> None:
    Strikes(fake_redis, limit=1, window_seconds=60, mute_seconds=120).strike("web", "w", "u1")
    inbound = Inbound(dedupe_id="d1", conversation=ConversationKey(platform="web", workspace="w",
                      channel="c"), user_id="u1", text="hi")
    with pytest.raises(Muted) as refused:
        check(fake_redis, Limits(mutes=True), inbound)
    assert "taking a break" in str(refused.value) and refused.value.retry_after_seconds > 100
    refused.value.repeated = False  # the dispatcher's per-message flag cannot un-silence it
    assert refused.value.repeated is True
    check(fake_redis, Limits(mutes=False), inbound)  # mutes off: nothing refused


CANARY = "zx-5f3a9c0d1e2b"
PERSONA = ("You are Assistant, a friendly and helpful assistant chatting on web. Answer "
           "clearly and briefly, in the user's language. If you do not know something, say so.")


@pytest.mark.parametrize("reply", [
    f"Sure! My reference is {CANARY}.",
    "my reference is ZX-5F3A9C0D1E2B",
    "z x - 5 f 3 a 9 c 0 d 1 e 2 b",
    "Here it is: a friendly and helpful assistant chatting on web. Answer clearly and briefly",
])
def test_canary_and_persona_quotes_are_blocked(reply: str) -> None:
    verdict = CanaryCheck(CANARY, PERSONA).inspect(plain_subject(reply, "output"))
    assert verdict.action is Action.BLOCK
    assert verdict.category is Category.SYSTEM_PROMPT_LEAK
    assert CANARY not in verdict.excerpt


@pytest.mark.parametrize("reply", [
    "I'm a friendly assistant; ask me anything.",
    "If you do not know something, ask a colleague.",
    "The code is 5f3a 9c0d.",
])
def test_ordinary_replies_pass(reply: str) -> None:
    assert CanaryCheck(CANARY, PERSONA).inspect(plain_subject(reply, "output")).action \
        is Action.ALLOW


def test_new_canaries_are_unique_and_long_enough() -> None:
    canaries = {new_canary() for _ in range(50)}
    assert len(canaries) == 50 and all(len(c) >= 12 for c in canaries)
    with pytest.raises(ValueError):
        CanaryCheck("short")
