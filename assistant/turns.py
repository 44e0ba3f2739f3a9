"""Ordering and dedupe per conversation, in Redis.

Adapters ``submit`` an ``Inbound``: it is deduped on its platform-unique id (``SET NX`` with a
TTL) and appended to its conversation's pending list; then a task is enqueued for the
conversation. A worker holds the conversation's lock while it answers, reads *all* pending
messages (those that arrived meanwhile join the next turn) and removes them only after the turn
is stored, so a killed worker loses nothing: its task is delivered again and finds them still
pending. Two workers never answer interleaved turns of one conversation.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from assistant import keys
from assistant.envelope import ConversationKey, Inbound

log = logging.getLogger(__name__)

DEDUPE_TTL_SECONDS = keys.DEDUPE_TTL_SECONDS
LOCK_TTL_MS = 15_000  # renewed every third of this while a turn runs; a dead holder frees it
MAX_TURN_BATCH = 20

# Release only if we still own the lock (classic compare-and-delete).
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
    "return 0"
)
# Replace a dead holder's token with ours, only if it still holds the lock.
_TAKE_OVER = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) end return false"
)
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


dedupe_key = keys.dedupe


pending_key = keys.pending
PENDING_PATTERN = keys.PENDING_PATTERN
lock_key = keys.lock


deliveries_key = keys.deliveries
DEAD_LETTER_KEY = keys.DEAD_LETTER
# The dead-letter list is for operators to find what failed, not a copy of what users sent:
# each entry keeps ids and a short excerpt (a 5 MB message once made a 5 MB entry, kept
# forever: issue 15), the list keeps the newest entries and expires when nothing new fails.
DEAD_LETTER_MAX_ENTRIES = 1000
DEAD_LETTER_EXCERPT_CHARS = 200


def submit(client: redis.Redis, inbound: Inbound) -> bool:
    """Queue a message for its conversation; False when this dedupe id was seen before."""
    if not client.set(dedupe_key(inbound.dedupe_id), inbound.message_id, nx=True,
                      ex=DEDUPE_TTL_SECONDS):
        return False
    client.rpush(pending_key(inbound.conversation), inbound.model_dump_json())
    return True


def original_message_id(client: redis.Redis, dedupe_id: str) -> str | None:
    """The message id a dedupe id was first accepted under (to answer a retried request)."""
    value = client.get(dedupe_key(dedupe_id))
    return value.decode() if isinstance(value, bytes) else value


class _Renewer:
    """One background thread per process that renews every conversation lock it holds.

    A thread per turn cost ~0.3 ms to start and join (bench/load.py); one shared thread renews
    each held lock every third of its TTL instead. Started lazily, and again in a forked child
    (Celery's prefork pool), where the parent's thread does not exist.
    """

    def __init__(self) -> None:
        self._held: dict[int, ConversationLock] = {}
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._pid = 0

    def add(self, lock: ConversationLock) -> None:
        with self._guard:
            self._held[id(lock)] = lock
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="lock-renew", daemon=True).start()

    def remove(self, lock: ConversationLock) -> None:
        with self._guard:
            self._held.pop(id(lock), None)

    def _run(self) -> None:
        while True:
            self._wake.wait(LOCK_TTL_MS / 3000)
            with self._guard:
                held = list(self._held.values())
            for lock in held:
                lock.renew()

    def after_fork(self) -> None:
        """In a forked child: no thread yet, no locks held, and a guard nobody holds."""
        self._held = {}
        self._guard = threading.Lock()
        self._pid = 0


_RENEWER = _Renewer()
os.register_at_fork(after_in_child=_RENEWER.after_fork)


def _process_namespace() -> str:
    """This kernel boot and pid namespace: where a pid names one process (else "")."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}.{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _holder_is_dead(token: str) -> bool:
    """Whether a lock token names a process of our own pid namespace that no longer runs
    (a pool process killed mid-turn): then nobody renews the lock and it can be taken now
    instead of after its TTL. Any doubt (another host, a pid reused) says no."""
    parts = token.split(":")
    if len(parts) != 3 or not parts[0] or parts[0] != _process_namespace():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        return False
    return False


class ConversationLock:
    """A Redis lock on one conversation, renewed in the background while held.

    Its token names the holder (``<boot id>.<pid namespace>:<pid>:<random>``), so a process of
    the same host whose predecessor died mid-turn takes the lock over at once (issue 16: the
    rerun waited out the dead process' lock, ~14 s).
    """

    def __init__(self, client: redis.Redis, conversation: ConversationKey) -> None:
        self.client = client
        self.key = lock_key(conversation)
        self.token = f"{_process_namespace()}:{os.getpid()}:{uuid.uuid4().hex}"

    def acquire(self) -> bool:
        if not self.client.set(self.key, self.token, nx=True, px=LOCK_TTL_MS):
            holder = self.client.get(self.key)
            if holder is None:
                return False  # just released: the caller looks again
            holder_token = holder.decode() if isinstance(holder, bytes) else str(holder)
            if not _holder_is_dead(holder_token):
                return False
            if not self.client.eval(_TAKE_OVER, 1, self.key, holder_token, self.token,
                                    LOCK_TTL_MS):
                return False
            log.warning("took over conversation lock %s from a dead process", self.key)
        _RENEWER.add(self)
        return True

    def renew(self) -> None:
        try:
            self.client.eval(_RENEW, 1, self.key, self.token, LOCK_TTL_MS)
        except redis.RedisError:
            log.warning("could not renew conversation lock %s", self.key, exc_info=True)

    def release(self) -> None:
        _RENEWER.remove(self)
        self.client.eval(_RELEASE, 1, self.key, self.token)

    def release_then_exists(self, key: str) -> bool:
        """Release, then tell whether ``key`` exists: one round trip, in that order."""
        _RENEWER.remove(self)
        pipe = self.client.pipeline(transaction=False)
        pipe.eval(_RELEASE, 1, self.key, self.token)
        pipe.exists(key)
        _, exists = pipe.execute()
        return bool(exists)

    def ttl_seconds(self) -> float:
        remaining = self.client.pttl(self.key)
        return max(int(remaining), 0) / 1000


def pending(client: redis.Redis, conversation: ConversationKey) -> list[Inbound]:
    raw = client.lrange(pending_key(conversation), 0, MAX_TURN_BATCH - 1)
    return [Inbound.model_validate_json(item) for item in raw]


def done_with_then_pending(client: redis.Redis, conversation: ConversationKey,
                           count: int) -> list[Inbound]:
    """Remove the first ``count`` pending messages (their turn is stored), then read the next
    batch: in that order, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.ltrim(pending_key(conversation), count, -1)
    pipe.lrange(pending_key(conversation), 0, MAX_TURN_BATCH - 1)
    _, raw = pipe.execute()
    return [Inbound.model_validate_json(item) for item in raw]


def count_deliveries(client: redis.Redis, conversation: ConversationKey,
                     message_ids: list[str], ttl_seconds: int) -> list[int]:
    """How many times a turn has started with each message (crashes included): one trip."""
    pipe = client.pipeline(transaction=True)
    for message_id in message_ids:
        pipe.incr(deliveries_key(conversation, message_id))
        pipe.expire(deliveries_key(conversation, message_id), ttl_seconds)
    replies = pipe.execute()
    return [int(count) for count in replies[::2]]


def dead_letter_entry(inbound: Inbound, reason: str) -> dict[str, object]:
    """What the dead-letter list keeps of a message: ids, sizes and a bounded excerpt."""
    return {
        "reason": reason[:DEAD_LETTER_EXCERPT_CHARS],
        "message_id": inbound.message_id,
        "dedupe_id": inbound.dedupe_id[:DEAD_LETTER_EXCERPT_CHARS],
        "conversation": inbound.conversation.redis_id,
        "platform": inbound.conversation.platform,
        "user_id": inbound.user_id,
        "received_at": inbound.received_at.isoformat(),
        "excerpt": inbound.text[:DEAD_LETTER_EXCERPT_CHARS],
        "text_chars": len(inbound.text),
        "history_messages": None if inbound.history is None else len(inbound.history),
    }


def dead_letter(client: redis.Redis, inbound: Inbound, reason: str) -> None:
    """Keep a bounded record of a message that failed too often (docs/operations.md)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.rpush(DEAD_LETTER_KEY, json.dumps(dead_letter_entry(inbound, reason)))
        pipe.ltrim(DEAD_LETTER_KEY, -DEAD_LETTER_MAX_ENTRIES, -1)
        pipe.expire(DEAD_LETTER_KEY, keys.DEAD_LETTER_TTL_SECONDS)
        pipe.execute()


@contextmanager
def holding(client: redis.Redis, conversation: ConversationKey,
            wait_until: float | None = None) -> Iterator[bool]:
    """Hold the conversation's lock for the block; yields False if someone else holds it.

    With ``wait_until`` (a ``time.monotonic()`` deadline), keep trying until then.
    """
    lock = ConversationLock(client, conversation)
    acquired = lock.acquire()
    while not acquired and wait_until is not None and time.monotonic() < wait_until:
        time.sleep(0.05)
        acquired = lock.acquire()
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()
