"""Fairness: rate limits (token buckets) and daily token quotas, in Redis.

Checked by ``assistant.dispatch.Dispatcher`` before a message is queued (``check``), and counted
by the worker after each turn (``quota_observer``). Keys (prefix ``assistant:``):

- ``rate:user:<platform>:<workspace>:<user>`` and ``rate:channel:<platform>:<workspace>:<channel>``:
  a hash ``{tokens, ts}``, expiring once a bucket would be full again (a missing key is full).
- ``quota:<platform>:<workspace>:<user>:<YYYY-MM-DD>``: tokens generated that UTC day, 2 days.
- ``banned:<platform>:<workspace>:<user>`` and ``user-quota:<platform>:<workspace>:<user>``: an
  admin's ban and per-user daily quota, mirrored from the SQL store (``assistant.admin_actions``)
  so the hot path reads Redis only; no expiry.

The quota counts what the model *generated* (completion tokens), not the prompt: the prompt
holds the persona and the conversation's memory window, so it grows with the conversation and
with our own prompt design rather than with what the user asked for, and on a CPU the decode
(one token at a time) is what occupies a worker, while the prompt is evaluated in batches.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis

from assistant import keys
from assistant.envelope import Inbound
from assistant.errors import Banned, ConfigError, Muted, QuotaExceeded, RateLimited
from assistant.observe import TurnObserver, TurnStats
from assistant.prompts import PromptLibrary
from assistant.settings import Settings

QUOTA_TTL_SECONDS = 2 * 86400
# Throttled messages whose notice was sent: a twin event or a retry is refused silently.
REFUSED_TTL_SECONDS = 600
# Stateless requests (each its own "channel"): only the per-user limit applies.
STATELESS_PLATFORMS = {"openai"}

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)

# Every bucket refills continuously at capacity/period tokens per second. A message takes one
# token from each bucket, only if every bucket has one: all-or-nothing, in one script, so
# concurrent adapters never overdraw and a refusal by one bucket costs nothing in the others.
# ARGV[1] is the time in seconds ('' = the Redis server's clock), then capacity and rate per key.
# Returns {index of the refusing bucket or 0, seconds until it has a token}.
_TAKE = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local levels, stamps = {}, {}
local refused, wait = 0, 0
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1]) or capacity
  local ts = tonumber(state[2]) or now
  if now > ts then
    tokens = math.min(capacity, tokens + (now - ts) * rate)
    ts = now
  end
  levels[i], stamps[i] = tokens, ts
  if tokens < 1 and (1 - tokens) / rate > wait then
    refused, wait = i, (1 - tokens) / rate
  end
end
if refused == 0 then
  for i, key in ipairs(KEYS) do
    local capacity = tonumber(ARGV[2 * i])
    local rate = tonumber(ARGV[2 * i + 1])
    redis.call('HSET', key, 'tokens', tostring(levels[i] - 1), 'ts', tostring(stamps[i]))
    redis.call('PEXPIRE', key, math.ceil(capacity / rate * 1000) + 1000)
  end
end
return {refused, tostring(wait)}
"""


@dataclass(frozen=True)
class Rate:
    """``capacity`` messages per ``period_seconds``, refilled continuously."""

    capacity: int
    period_seconds: int

    @property
    def per_second(self) -> float:
        return self.capacity / self.period_seconds


def parse_rate(text: str, name: str = "rate limit") -> Rate | None:
    """``"20/minute"`` → Rate(20, 60); ``""`` → None (off); anything else → ConfigError."""
    if not text.strip():
        return None
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(
            f"{name} {text!r} is not a rate: write N/second, N/minute, N/hour or N/day "
            f"with N ≥ 1 (e.g. 20/minute), or leave it empty to turn it off")
    return Rate(int(match.group(1)), PERIODS[match.group(2).lower()])


@dataclass(frozen=True)
class Limits:
    """What the dispatcher enforces; ``Limits()`` enforces nothing."""

    user_rate: Rate | None = None
    channel_rate: Rate | None = None
    daily_tokens: int = 0  # 0 = no quota
    max_queue_depth: int | None = None  # None = never tell users they wait in line
    hard_queue_depth: int = 0  # refuse new messages at this queue depth (0 = never)
    mutes: bool = False  # refuse muted users (assistant.safety.strikes)
    # Honour the admin panel: refuse banned users, and muted ones even with strikes off;
    # per-user daily token quotas replace ``daily_tokens``.
    admin_controls: bool = False
    prompts: PromptLibrary = field(default_factory=PromptLibrary.load, compare=False,
                                   repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, prompts: PromptLibrary | None = None) -> Limits:
        return cls(
            user_rate=parse_rate(settings.user_rate_limit, "ASSISTANT_USER_RATE_LIMIT"),
            channel_rate=parse_rate(settings.channel_rate_limit, "ASSISTANT_CHANNEL_RATE_LIMIT"),
            daily_tokens=settings.user_daily_tokens,
            max_queue_depth=settings.max_queue_depth,
            hard_queue_depth=settings.hard_queue_depth,
            mutes=settings.safety_enabled and settings.strike_limit > 0,
            admin_controls=True,
            prompts=prompts or PromptLibrary.load(),
        )

    @property
    def refuses(self) -> bool:
        """True when some limit can refuse a message (else ``check`` has nothing to do)."""
        return bool(self.user_rate or self.channel_rate or self.daily_tokens or self.mutes
                    or self.admin_controls)

    def busy_notice(self, position: int) -> str:
        return self.prompts.render("queue_busy", position=position)


# -- keys ----------------------------------------------------------------------------------------

user_ref = keys.user_ref
mute_key = keys.muted
user_bucket_key = keys.user_bucket
channel_bucket_key = keys.channel_bucket
quota_key = keys.quota
banned_key = keys.banned
user_quota_key = keys.user_quota
refused_key = keys.refused


# -- time ----------------------------------------------------------------------------------------

def seconds_until_utc_midnight(now: datetime) -> int:
    """Whole seconds (at least 1) until the next UTC day starts, when quotas renew."""
    now = now.astimezone(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return max(1, math.ceil((midnight - now).total_seconds()))


def describe_wait(seconds: int) -> str:
    """A friendly duration: "12 seconds", "2 minutes" (rounded up), "5 hours" (from 2 hours)."""
    if seconds >= 7200:
        count, unit = round(seconds / 3600), "hour"
    elif seconds >= 60:
        count, unit = math.ceil(seconds / 60), "minute"
    else:
        count, unit = seconds, "second"
    return f"{count} {unit}{'s' if count != 1 else ''}"


# -- the checks ----------------------------------------------------------------------------------

def take_tokens(client: redis.Redis, buckets: list[tuple[str, Rate]],
                now: float | None = None) -> tuple[int, float]:
    """Take one token from every bucket, or none: (0, 0.0) if taken, else (the 1-based index
    of the bucket that refused, seconds until it has a token). ``now`` defaults to Redis' clock.
    """
    if not buckets:
        return 0, 0.0
    script = client.register_script(_TAKE)  # EVALSHA, loading the script on NOSCRIPT
    args: list[str | float | int] = ["" if now is None else repr(now)]
    for _, rate in buckets:
        args += [rate.capacity, repr(rate.per_second)]
    refused, wait = script(keys=[key for key, _ in buckets], args=args)
    return int(refused), float(wait)


def used_tokens(client: redis.Redis, platform: str, workspace: str, user: str,
                now: datetime) -> int:
    value = client.get(quota_key(platform, workspace, user, now))
    return int(value) if value else 0


def daily_quota(client: redis.Redis, limits: Limits, platform: str, workspace: str,
                user: str) -> int:
    """The user's daily token quota: an admin's per-user one if set, else the global; 0 = none."""
    if limits.admin_controls:
        own = client.get(user_quota_key(platform, workspace, user))
        if own is not None:
            return int(own)
    return limits.daily_tokens


def remaining_tokens(client: redis.Redis, limits: Limits, platform: str, workspace: str,
                     user: str, now: datetime | None = None, quota: int | None = None
                     ) -> int | None:
    """Tokens the user may still have generated today (UTC); None when there is no quota.

    ``quota`` is the user's daily quota when the caller read it already (``daily_quota``).
    """
    if quota is None:
        quota = daily_quota(client, limits, platform, workspace, user)
    if not quota:
        return None
    now = now or datetime.now(UTC)
    return max(0, quota - used_tokens(client, platform, workspace, user, now))


def record_tokens(client: redis.Redis, platform: str, workspace: str, user: str, tokens: int,
                  now: datetime | None = None) -> int:
    """Add a turn's tokens to the user's count for today (UTC); returns the new total."""
    key = quota_key(platform, workspace, user, now or datetime.now(UTC))
    with client.pipeline() as pipe:
        pipe.incrby(key, tokens)
        pipe.expire(key, QUOTA_TTL_SECONDS)
        total, _ = pipe.execute()
    return int(total)


def check(client: redis.Redis, limits: Limits, inbound: Inbound, now: float | None = None
          ) -> None:
    """Raise ``Banned``, ``Muted``, ``QuotaExceeded`` or ``RateLimited`` if ``inbound`` may not
    be queued now.

    A ban is checked first (a banned user is told so on every message), then a mute; the ban,
    the mute and the user's own quota are read in one round trip. The quota comes next, so a
    user out of quota spends no rate-limit tokens. Allowed messages take one token from the
    user's and the channel's bucket. ``now`` (Unix seconds) is for tests; by default the
    buckets use Redis' clock and the quota the local UTC date.
    """
    conversation = inbound.conversation
    platform, workspace = conversation.platform, conversation.workspace
    when = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    quota = limits.daily_tokens
    if limits.mutes or limits.admin_controls:
        user = inbound.user_id
        with client.pipeline(transaction=False) as pipe:
            pipe.ttl(mute_key(user_ref(platform, workspace, user)))
            pipe.exists(banned_key(platform, workspace, user))
            pipe.get(user_quota_key(platform, workspace, user))
            muted_for, banned, own_quota = pipe.execute()
        if limits.admin_controls and banned:
            raise Banned(limits.prompts.render("banned"))
        if int(muted_for) > 0:
            raise Muted(int(muted_for), limits.prompts.render(
                "muted", wait=describe_wait(int(muted_for))))
        if limits.admin_controls and own_quota is not None:
            quota = int(own_quota)
    left = remaining_tokens(client, limits, platform, workspace, inbound.user_id, when, quota)
    if left is not None and left <= 0:
        wait = seconds_until_utc_midnight(when)
        raise QuotaExceeded(wait, limits.prompts.render("quota_exceeded",
                                                        wait=describe_wait(wait)))
    buckets: list[tuple[str, Rate]] = []
    scopes: list[str] = []
    if limits.user_rate:
        buckets.append((user_bucket_key(platform, workspace, inbound.user_id), limits.user_rate))
        scopes.append("user")
    if limits.channel_rate and platform not in STATELESS_PLATFORMS:
        buckets.append((channel_bucket_key(platform, workspace, conversation.channel),
                        limits.channel_rate))
        scopes.append("channel")
    refused, wait_seconds = take_tokens(client, buckets, now)
    if refused:
        wait = max(1, math.ceil(wait_seconds))
        raise RateLimited(wait, scopes[refused - 1],
                          limits.prompts.render("rate_limited", wait=describe_wait(wait)))


def quota_observer(client: redis.Redis, settings: Settings) -> TurnObserver:
    """Counts each user's generated tokens per UTC day, after every turn (when quotas are on)."""

    def record(stats: TurnStats) -> None:
        # A stored reply sent again after a crash generated nothing: it was counted already.
        if not stats.generated or stats.completion_tokens <= 0:
            return
        if not settings.user_daily_tokens and not client.exists(
                user_quota_key(stats.platform, stats.workspace, stats.user_id)):
            return  # no global quota, and no quota of the user's own
        record_tokens(client, stats.platform, stats.workspace, stats.user_id,
                      stats.completion_tokens)

    return record
