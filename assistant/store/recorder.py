"""The worker's archive writer: a ``TurnObserver`` that files each answered turn.

It runs after the reply was delivered (``assistant.conversation.answer_batch`` notifies
observers then), still inside the conversation's lock, so an admin's delete (which takes the
lock) never races a half-written turn. A failure is logged by ``notify`` and never fails the
turn. A rerun of a turn archives nothing twice and counts nothing twice.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

import redis

from assistant import keys
from assistant.envelope import utcnow
from assistant.observe import TurnObserver, TurnStats
from assistant.store.archive import Archive, ArchivedMessage
from assistant.store.db import Store
from assistant.store.users import Users

log = logging.getLogger(__name__)

PURGE_CLAIM_KEY = keys.ARCHIVE_PURGE
PURGE_EVERY_SECONDS = 3600


def turn_messages(stats: TurnStats) -> list[ArchivedMessage]:
    """The turn's user messages and its reply, as the archive keeps them."""
    messages = [ArchivedMessage(message_id=i.message_id, role="user", text=i.text,
                                user_id=i.user_id, created_at=i.received_at)
                for i in stats.inbounds]
    reply = stats.reply
    if reply is not None:
        messages.append(ArchivedMessage(
            message_id=reply.message_id, role="assistant", text=reply.text,
            created_at=reply.created_at, finish_reason=reply.finish_reason,
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens))
    return messages


def archive_observer(store: Store, client: redis.Redis | None = None,
                     retention_days: float = 0) -> TurnObserver:
    """Archive each turn and add to its users' message and token counts.

    With ``retention_days`` (and ``client``), conversations inactive that long are purged, by
    one worker of the fleet at most every ``PURGE_EVERY_SECONDS`` (a Redis claim), after a turn.
    """
    archive = Archive(store)
    users = Users(store)

    def record(stats: TurnStats) -> None:
        if retention_days > 0 and client is not None:
            purge_if_due(archive, client, retention_days)
        if stats.conversation is None or not stats.inbounds:
            return
        # One transaction: a reader never sees the turn archived but not yet counted, and a
        # worker that dies between the two writes leaves neither (the rerun does both).
        with store.session() as session:
            if not archive.record_turn(stats.conversation, turn_messages(stats), session):
                return  # archived (and counted) by an earlier run of this turn
            tokens = stats.completion_tokens if stats.generated else 0
            for user_id, count in Counter(i.user_id for i in stats.inbounds).items():
                users.seen(stats.platform, stats.workspace, user_id, messages=count,
                           tokens=tokens if user_id == stats.user_id else 0, transaction=session)

    return record


def purge_if_due(archive: Archive, client: redis.Redis, retention_days: float) -> int:
    """Purge the archive's inactive conversations if no worker did in the last period."""
    if not client.set(PURGE_CLAIM_KEY, "1", nx=True, ex=PURGE_EVERY_SECONDS):
        return 0
    purged = archive.purge(utcnow() - timedelta(days=retention_days))
    if purged:
        log.info("archive: deleted %d conversation(s) inactive for %g days", purged,
                 retention_days)
    return purged
