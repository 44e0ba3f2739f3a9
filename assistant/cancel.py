"""Cancel a generation whose waiting client has gone (issue 15: unbounded consumption).

The web edge marks each message whose HTTP client disconnected before ``done``; the worker
checks the marks while it streams and stops generating once *every* message of the turn is
marked. Only turns that no platform sender delivers are checked: a Slack or Telegram reply has
no waiting client (its edge acknowledged the platform at once), so nothing ever cancels it.
A cancelled turn ends like a short reply: what was generated is stored and remembered, so a
same-id retry gets it at once.

Keys (prefix ``assistant:``): ``cancel:<conv>:<message id>``, set by the edge when the last
client waiting for the message (``waiting:<conv>:<message id>``, a count) has gone; 10 minutes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis

from assistant import keys
from assistant.envelope import Inbound

log = logging.getLogger(__name__)

CANCEL_TTL_SECONDS = 600
CHECK_EVERY_SECONDS = 0.5  # one EXISTS per half second of streaming


cancel_key = keys.cancel
waiting_key = keys.waiting


class CancelCheck:
    """Asked once per generated piece; looks in Redis at most every ``interval`` seconds."""

    def __init__(self, client: redis.Redis, inbounds: Sequence[Inbound],
                 interval: float | None = None) -> None:
        self.client = client
        self.keys = [cancel_key(i.conversation, i.message_id) for i in inbounds]
        self.interval = CHECK_EVERY_SECONDS if interval is None else interval
        self._checked_at = time.monotonic()  # the client just sent it: not gone yet
        self.cancelled = False

    def __call__(self) -> bool:
        """True once every message's client has gone (then generation should stop)."""
        now = time.monotonic()
        if self.cancelled or now - self._checked_at < self.interval:
            return self.cancelled
        self._checked_at = now
        try:
            gone = int(self.client.exists(*self.keys))
        except redis.RedisError:
            # Not knowing is no reason to stop: the reply is finished and stored.
            log.warning("could not check for cancelled messages", exc_info=True)
            return False
        if gone == len(self.keys):
            log.info("every client of this turn has gone: generation stopped")
            self.cancelled = True
        return self.cancelled
