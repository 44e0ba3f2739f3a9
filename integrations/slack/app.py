"""The bolt App, shared by the HTTP Events API (``http.py``) and Socket Mode (``__main__.py``).

bolt verifies signatures, answers ``url_verification`` and ``ssl_check``, and drops our own
events (its ``ignoring_self_events`` middleware). The listeners here only decide "is this for
us?" and enqueue: they never wait for the model.

``process_before_response=True``: the listener (dedupe + RPUSH + send_task, a few ms) runs
before the ack, so when Redis is down the answer is an error status and Slack delivers the
event again (HTTP: a 500; Socket Mode: no ack), instead of a 200 for a message we dropped.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import redis
from slack_bolt import Ack, App
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from assistant import keys
from assistant.conversations import RESET_WAIT_SECONDS, Conversations
from assistant.dispatch import Submitted
from assistant.envelope import ConversationKey, Inbound
from assistant.errors import Throttled
from assistant.prompts import PromptLibrary
from assistant.recall.commands import parse as parse_memory_command
from assistant.recall.service import answer_at_edge
from assistant.settings import Settings
from assistant.store import shared_store
from integrations.slack import convert
from integrations.slack.sender import api_base_url

log = logging.getLogger(__name__)




class Submitter(Protocol):
    """What the listeners enqueue with: ``assistant.dispatch.Dispatcher``.

    ``submit`` is truthy when the message was queued now; it may raise ``Throttled``.
    """

    def submit(self, inbound: Inbound) -> Submitted | bool: ...


thread_key = keys.slack_thread


def join_thread(client: redis.Redis, inbound: Inbound, ttl_seconds: int) -> None:
    """Remember that the assistant is part of this thread, so it answers without a mention."""
    reply_to = inbound.reply_to
    client.set(thread_key(reply_to["team"], reply_to["channel"], reply_to["thread_ts"]), "1",
               ex=ttl_seconds)


def in_thread(client: redis.Redis, inbound: Inbound) -> bool:
    reply_to = inbound.reply_to
    return bool(client.exists(
        thread_key(reply_to["team"], reply_to["channel"], reply_to["thread_ts"])))


def build_app(settings: Settings, submitter: Submitter, client: redis.Redis,
              web: WebClient | None = None) -> App:
    """The bolt App; ``web`` defaults to a WebClient on ``SLACK_API_URL`` with the bot token."""
    assert settings.slack_bot_token is not None
    if web is None:
        web = WebClient(token=settings.slack_bot_token.get_secret_value(),
                        base_url=api_base_url(settings.slack_api_url), timeout=10)
    secret = settings.slack_signing_secret
    app = App(
        client=web,
        signing_secret=secret.get_secret_value() if secret else None,
        # Socket Mode needs no signing secret: the WebSocket is authenticated by the app token.
        request_verification_enabled=secret is not None,
        # auth.test runs on the first event instead of at import (no network at start-up).
        token_verification_enabled=False,
        process_before_response=True,
        logger=logging.getLogger("integrations.slack.bolt"),
    )
    retention = settings.retention_seconds
    slack = web

    def accept(body: dict[str, Any], context: Any, mention: bool) -> None:
        inbound = convert.to_inbound(body, context.bot_user_id)
        if inbound is None:
            return
        channel_thread = inbound.conversation.thread is not None
        if channel_thread and mention:
            join_thread(client, inbound, retention)
        elif channel_thread and not in_thread(client, inbound):
            return  # a thread the assistant is not part of
        try:
            submitted = submitter.submit(inbound)
        except Throttled as exc:
            # Acked all the same (a 200), so Slack does not deliver the refused event again.
            if not exc.repeated:
                tell_user(slack, inbound, str(exc))
            return
        if not submitted:
            log.info("Slack message %s was queued already (retry or twin event)",
                     inbound.dedupe_id)
            return
        log.info("queued Slack message %s", inbound.message_id)
        if isinstance(submitted, Submitted) and submitted.notice:
            tell_user(slack, inbound, submitted.notice)

    @app.event("app_mention")
    def on_mention(body: dict[str, Any], context: Any) -> None:
        accept(body, context, mention=True)

    @app.event("message")
    def on_message(body: dict[str, Any], context: Any) -> None:
        # A mention also arrives as app_mention; both build the same dedupe id, so whichever
        # comes second is dropped by the dispatcher.
        accept(body, context, mention=False)

    @app.command("/assistant")
    def on_command(ack: Ack, command: dict[str, Any]) -> None:
        if str(command.get("text", "")).strip().lower().startswith("remember"):
            ack(text=remember_command(submitter, command), response_type="ephemeral")
            return
        ack(text=answer_command(settings, client, command), response_type="ephemeral")

    return app


def tell_user(web: WebClient, inbound: Inbound, text: str) -> None:
    """A notice only the author sees (chat.postEphemeral, in the thread when there is one).

    Ephemeral keeps the thread for the conversation itself and needs only ``chat:write``; a
    failure is logged, never raised: the event is acked either way.
    """
    reply_to = inbound.reply_to
    try:
        web.chat_postEphemeral(channel=reply_to["channel"], user=inbound.user_id, text=text,
                               thread_ts=reply_to.get("thread_ts"))
    except Exception:
        log.warning("could not send a notice to %s", inbound.user_id, exc_info=True)


def remember_command(submitter: Submitter, command: dict[str, Any]) -> str:
    """``/assistant remember …`` in a DM: queued like a message, so a worker screens and
    saves it (docs/memory.md) and answers in the DM."""
    channel = str(command.get("channel_id", ""))
    if not channel.startswith("D"):
        return "Tell me what to remember in our DM: your memories are private."
    team_id = str(command.get("team_id", ""))
    user_id = str(command.get("user_id", ""))
    dedupe_id = f"slack-command:{team_id}:{command.get('trigger_id', '')}"
    inbound = Inbound(
        message_id=convert.message_id_for(dedupe_id), dedupe_id=dedupe_id,
        conversation=ConversationKey(platform=convert.PLATFORM, workspace=team_id,
                                     channel=channel, user=user_id),
        user_id=user_id, text="/" + str(command.get("text", "")).strip(),
        reply_to={"team": team_id, "channel": channel, "thread_ts": None})
    try:
        submitter.submit(inbound)
    except Throttled as exc:
        return str(exc)
    except redis.RedisError:
        log.exception("could not queue /assistant remember")
        return "Sorry, I can't reach my memory right now. Please try again in a minute."
    return "Noted; I'll confirm in our DM."


def answer_command(settings: Settings, client: redis.Redis, command: dict[str, Any]) -> str:
    """The ephemeral answer to ``/assistant help|reset|forget|memory|forget N``."""
    word = str(command.get("text", "")).strip().lower()
    team_id = str(command.get("team_id", ""))
    user_id = str(command.get("user_id", ""))
    channel = str(command.get("channel_id", ""))
    memory_command = parse_memory_command("/" + word)
    try:
        if memory_command is not None:
            # Ephemeral: only the person sees the answer, wherever they asked.
            return answer_at_edge(settings, PromptLibrary.load(), memory_command,
                                  ConversationKey(platform=convert.PLATFORM, workspace=team_id,
                                                  channel=channel or "slash", user=user_id),
                                  user_id)
        if word == "reset":
            if not channel.startswith("D"):
                return ("In a channel, each thread is its own conversation: mention me in a new "
                        "message to start fresh. `/assistant reset` resets our DM.")
            return reset_dm(settings, client, ConversationKey(
                platform=convert.PLATFORM, workspace=team_id, channel=channel, user=user_id))
        if word == "forget":
            forgotten = conversations(settings, client).forget_person(
                convert.PLATFORM, team_id, user_id, actor=f"user:{user_id}")
            return ("Done: I deleted what I kept about you "
                    f"({forgotten.conversations} conversation(s)).")
    except (redis.RedisError, SQLAlchemyError):
        log.exception("slash command %r failed", word)
        return "Sorry, I can't reach my memory right now. Please try again in a minute."
    return PromptLibrary.load().render("slack_help")


def conversations(settings: Settings, client: redis.Redis) -> Conversations:
    return Conversations(client, lambda: shared_store(settings.sql_url),
                         settings.retention_seconds)


def reset_dm(settings: Settings, client: redis.Redis, conversation: ConversationKey) -> str:
    """Start the DM over (``assistant.conversations``), if no turn runs in it by then."""
    if conversations(settings, client).reset(conversation, RESET_WAIT_SECONDS) is None:
        return "I'm still answering in this conversation; try `/assistant reset` again soon."
    return "Done: our conversation starts over."
