"""Fairness: rate parsing, the token-bucket script, the daily quota and its midnight retry."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import fakeredis
import pytest

from assistant import limits
from assistant.envelope import ConversationKey, Inbound
from assistant.errors import ConfigError, QuotaExceeded, RateLimited, Throttled
from assistant.limits import Limits, Rate, parse_rate
from assistant.observe import TurnStats
from assistant.prompts import PromptLibrary
from assistant.settings import Settings

NOON = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()


def message(user: str = "u1", channel: str = "c1", platform: str = "web") -> Inbound:
    return Inbound(dedupe_id=f"test:{time.monotonic_ns()}", user_id=user, text="hi",
                   conversation=ConversationKey(platform=platform, channel=channel))


def stats(user: str = "u1", completion: int = 30, prompt: int = 500,
          generated: bool = True) -> TurnStats:
    return TurnStats(platform="web", workspace="default", channel="c1", user_id=user,
                     messages=1, generated=generated, queue_wait_s=0.0, ttft_s=0.1, total_s=1.0,
                     prompt_tokens=prompt, completion_tokens=completion, finish_reason="stop")


# -- parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("20/minute", Rate(20, 60)),
    ("3/second", Rate(3, 1)),
    (" 100 / Hour ", Rate(100, 3600)),
    ("1000/day", Rate(1000, 86400)),
    ("5/minutes", Rate(5, 60)),
    ("", None),
    ("  ", None),
])
def test_rates_parse(text: str, expected: Rate | None) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["20", "0/minute", "-1/minute", "20/fortnight", "x/minute",
                                  "20 per minute", "1.5/second"])
def test_a_bad_rate_is_a_clear_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="ASSISTANT_USER_RATE_LIMIT.*N/minute"):
        parse_rate(text, "ASSISTANT_USER_RATE_LIMIT")


def test_limits_from_settings(prompts: PromptLibrary) -> None:
    built = Limits.from_settings(Settings(ASSISTANT_CHANNEL_RATE_LIMIT=""), prompts)
    assert built.user_rate == Rate(20, 60) and built.channel_rate is None
    assert built.daily_tokens == 100_000 and built.max_queue_depth == 50 and built.refuses
    assert not Limits().refuses and Limits().max_queue_depth is None
    with pytest.raises(ConfigError, match="ASSISTANT_CHANNEL_RATE_LIMIT"):
        Limits.from_settings(Settings(ASSISTANT_CHANNEL_RATE_LIMIT="lots"), prompts)


# -- the token bucket ----------------------------------------------------------------------------

def test_the_bucket_empties_then_refills_over_time(fake_redis: fakeredis.FakeRedis) -> None:
    bucket = [("bucket", Rate(3, 60))]  # one token every 20 s
    assert [limits.take_tokens(fake_redis, bucket, NOON)[0] for _ in range(3)] == [0, 0, 0]
    refused, wait = limits.take_tokens(fake_redis, bucket, NOON)
    assert refused == 1 and wait == pytest.approx(20.0)
    assert limits.take_tokens(fake_redis, bucket, NOON + 5)[1] == pytest.approx(15.0)
    assert limits.take_tokens(fake_redis, bucket, NOON + 20)[0] == 0  # one token back
    assert limits.take_tokens(fake_redis, bucket, NOON + 20)[0] == 1
    # Refills stop at the capacity, however long it was idle.
    assert [limits.take_tokens(fake_redis, bucket, NOON + 3600)[0] for _ in range(4)] == [
        0, 0, 0, 1]


def test_the_bucket_expires_once_it_would_be_full(fake_redis: fakeredis.FakeRedis) -> None:
    limits.take_tokens(fake_redis, [("bucket", Rate(3, 60))], NOON)
    assert 60_000 < fake_redis.pttl("bucket") <= 61_000
    assert set(fake_redis.hgetall("bucket")) == {b"tokens", b"ts"}


def test_the_bucket_on_the_redis_clock_refills_in_real_time(
        fake_redis: fakeredis.FakeRedis) -> None:
    bucket = [("bucket", Rate(3, 1))]
    assert [limits.take_tokens(fake_redis, bucket)[0] for _ in range(4)] == [0, 0, 0, 1]
    time.sleep(0.4)  # 3 tokens a second: one is back after 1/3 s
    assert limits.take_tokens(fake_redis, bucket)[0] == 0


def test_all_buckets_or_none(fake_redis: fakeredis.FakeRedis) -> None:
    """A refusal by one bucket takes nothing from the others."""
    user, channel = ("user", Rate(5, 60)), ("channel", Rate(1, 60))
    assert limits.take_tokens(fake_redis, [user, channel], NOON) == (0, 0.0)
    refused, wait = limits.take_tokens(fake_redis, [user, channel], NOON)
    assert refused == 2 and wait == pytest.approx(60.0)
    assert float(fake_redis.hget("user", "tokens") or 0) == pytest.approx(4.0)


# -- check ---------------------------------------------------------------------------------------

def test_check_refuses_a_user_past_the_rate_with_the_wait(fake_redis: fakeredis.FakeRedis,
                                                         prompts: PromptLibrary) -> None:
    rules = Limits(user_rate=Rate(2, 60), prompts=prompts)
    limits.check(fake_redis, rules, message(), NOON)
    limits.check(fake_redis, rules, message(channel="c2"), NOON)
    with pytest.raises(RateLimited) as refused:
        limits.check(fake_redis, rules, message(channel="c3"), NOON)
    assert refused.value.scope == "user" and refused.value.retry_after_seconds == 30
    assert str(refused.value) == ("You're sending messages faster than I can answer — "
                                  "try again in 30 seconds.")
    limits.check(fake_redis, rules, message(user="u2"), NOON)  # another user is served
    assert fake_redis.exists("assistant:rate:user:web:default:u1")


def test_check_refuses_a_busy_channel(fake_redis: fakeredis.FakeRedis,
                                      prompts: PromptLibrary) -> None:
    rules = Limits(user_rate=Rate(10, 60), channel_rate=Rate(1, 3600), prompts=prompts)
    limits.check(fake_redis, rules, message(user="u1"), NOON)
    with pytest.raises(RateLimited) as refused:
        limits.check(fake_redis, rules, message(user="u2"), NOON)
    assert refused.value.scope == "channel" and refused.value.retry_after_seconds == 3600
    assert "try again in 60 minutes" in str(refused.value)


def test_the_openai_api_is_limited_per_user_only(fake_redis: fakeredis.FakeRedis,
                                                 prompts: PromptLibrary) -> None:
    rules = Limits(user_rate=Rate(2, 60), channel_rate=Rate(1, 60), prompts=prompts)
    limits.check(fake_redis, rules, message(platform="openai", channel="r1"), NOON)
    limits.check(fake_redis, rules, message(platform="openai", channel="r1"), NOON)
    with pytest.raises(RateLimited, match="try again") as refused:
        limits.check(fake_redis, rules, message(platform="openai", channel="r1"), NOON)
    assert refused.value.scope == "user"


# -- the daily quota -----------------------------------------------------------------------------

def test_the_quota_counts_generated_tokens_per_utc_day(fake_redis: fakeredis.FakeRedis,
                                                       prompts: PromptLibrary) -> None:
    rules = Limits(daily_tokens=100, prompts=prompts)
    observe = limits.quota_observer(fake_redis, Settings(ASSISTANT_USER_DAILY_TOKENS="100"))
    assert limits.remaining_tokens(fake_redis, rules, "web", "default", "u1") == 100
    observe(stats(completion=60, prompt=900))  # the prompt is not counted
    observe(stats(completion=60, generated=False))  # a stored reply sent again: not counted
    assert limits.remaining_tokens(fake_redis, rules, "web", "default", "u1") == 40
    observe(stats(completion=60))
    assert limits.remaining_tokens(fake_redis, rules, "web", "default", "u1") == 0
    assert limits.remaining_tokens(fake_redis, rules, "web", "default", "u2") == 100
    [key] = fake_redis.keys("assistant:quota:*")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert key.decode() == f"assistant:quota:web:default:u1:{today}"
    assert 2 * 86400 - 5 < fake_redis.ttl(key) <= 2 * 86400
    assert limits.remaining_tokens(fake_redis, Limits(prompts=prompts), "web", "default",
                                   "u1") is None


def test_a_spent_quota_is_refused_until_midnight_utc(fake_redis: fakeredis.FakeRedis,
                                                     prompts: PromptLibrary) -> None:
    rules = Limits(user_rate=Rate(1, 60), daily_tokens=50, prompts=prompts)
    noon = datetime.fromtimestamp(NOON, UTC)
    limits.record_tokens(fake_redis, "web", "default", "u1", 50, noon)
    with pytest.raises(QuotaExceeded) as refused:
        limits.check(fake_redis, rules, message(), NOON)
    assert refused.value.retry_after_seconds == 12 * 3600
    assert str(refused.value) == ("You've reached today's limit for answers — it renews at "
                                  "midnight UTC, in 12 hours.")
    assert isinstance(refused.value, Throttled)
    assert not fake_redis.exists("assistant:rate:user:web:default:u1")  # no token was taken
    limits.check(fake_redis, rules, message(), NOON + 12 * 3600)  # a new day


def test_the_quota_observer_is_off_without_a_quota(fake_redis: fakeredis.FakeRedis) -> None:
    limits.quota_observer(fake_redis, Settings(ASSISTANT_USER_DAILY_TOKENS="0"))(stats())
    assert fake_redis.keys("assistant:quota:*") == []


@pytest.mark.parametrize(("now", "seconds"), [
    (datetime(2024, 5, 1, 12, 0, tzinfo=UTC), 12 * 3600),
    (datetime(2024, 5, 1, 23, 59, 59, 500_000, tzinfo=UTC), 1),
    (datetime(2024, 5, 1, 0, 0, tzinfo=UTC), 86400),
    (datetime(2024, 12, 31, 23, 0, tzinfo=UTC), 3600),
])
def test_seconds_until_utc_midnight(now: datetime, seconds: int) -> None:
    assert limits.seconds_until_utc_midnight(now) == seconds


@pytest.mark.parametrize(("seconds", "text"), [
    (1, "1 second"), (12, "12 seconds"), (60, "1 minute"), (61, "2 minutes"),
    (3600, "60 minutes"), (7200, "2 hours"), (43200, "12 hours"),
])
def test_waits_read_naturally(seconds: int, text: str) -> None:
    assert limits.describe_wait(seconds) == text


def test_the_busy_notice(prompts: PromptLibrary) -> None:
    assert Limits(prompts=prompts).busy_notice(7) == (
        "I'm busy right now — you're number 7 in line. I'll answer as soon as I can.")
