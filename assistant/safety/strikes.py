"""Strikes: a user whose messages are blocked ``limit`` times within ``window`` seconds is
muted for ``mute`` seconds. Counted in Redis (hot, short-lived state; docs/architecture.md)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis

from assistant import keys

# KEYS: strikes zset, mute key. ARGV: now (s), window (s), limit, mute (s), member.
# Returns the mute seconds when this strike muted the user, else 0. Atomic, so two workers
# striking the same user at once cannot both miss the limit.
_STRIKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[4])
  redis.call('DEL', KEYS[1])
  return tonumber(ARGV[4])
end
return 0
"""


user_ref = keys.user_ref
strikes_key = keys.strikes
mute_key = keys.muted


@dataclass
class Strikes:
    client: redis.Redis
    limit: int  # 0 = never mute
    window_seconds: int
    mute_seconds: int

    def strike(self, platform: str, workspace: str, user: str) -> int:
        """Count one block against the user; the mute length if this one muted them, else 0."""
        if self.limit <= 0:
            return 0
        ref = user_ref(platform, workspace, user)
        muted = self.client.eval(
            _STRIKE, 2, strikes_key(ref), mute_key(ref), f"{time.time():.6f}",
            self.window_seconds, self.limit, self.mute_seconds, uuid.uuid4().hex,
        )
        return int(muted)

    def muted_for(self, platform: str, workspace: str, user: str) -> int:
        """Seconds the user stays muted (0 when not muted)."""
        return max(0, int(self.client.ttl(mute_key(user_ref(platform, workspace, user)))))

    def unmute(self, platform: str, workspace: str, user: str) -> None:
        ref = user_ref(platform, workspace, user)
        self.client.delete(mute_key(ref), strikes_key(ref))
