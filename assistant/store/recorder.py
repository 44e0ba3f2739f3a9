"""The worker's archive writer: a ``TurnObserver`` that files each answered turn.

It runs after the reply was delivered (``assistant.conversation.answer_batch`` notifies
observers then), still inside the conversation's lock, so an admin's delete (which takes the
lock) never races a half-written turn. A failure is logged by ``notify`` and never fails the
turn. A rerun of a turn archives nothing twice and counts nothing twice.
"""

from __future__ import annotations

from collections import Counter

from assistant.observe import TurnObserver, TurnStats
from assistant.store.archive import Archive, ArchivedMessage
from assistant.store.db import Store
from assistant.store.users import Users


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


def archive_observer(store: Store) -> TurnObserver:
    """Archive each turn and add to its users' message and token counts."""
    archive = Archive(store)
    users = Users(store)

    def record(stats: TurnStats) -> None:
        if stats.conversation is None or not stats.inbounds:
            return
        if not archive.record_turn(stats.conversation, turn_messages(stats)):
            return  # archived (and counted) by an earlier run of this turn
        tokens = stats.completion_tokens if stats.generated else 0
        for user_id, count in Counter(i.user_id for i in stats.inbounds).items():
            users.seen(stats.platform, stats.workspace, user_id, messages=count,
                       tokens=tokens if user_id == stats.user_id else 0)

    return record
