"""Every Redis key name the assistant builds, in one place, with its lifetime.

All keys start with ``assistant:``. ``docs/architecture.md`` ("Who owns which data") lists them;
keep the two in step. The rule that makes replies private (issue 15, docs/security.md): a key
that holds or carries a reply is named by the *conversation* and a *server-made* message id,
never by an id a client chose. A client's own id (the web API's ``message_id``) is only a
dedupe token inside its own conversation and user (``web_dedupe_id``).

Not every key lives here yet: the conversation memory (``assistant.memory``), locks and pending
lists (``assistant.turns``), fairness (``assistant.limits``), safety and the admin panel's
sessions still build their own; they move here as their modules are touched.
"""

from __future__ import annotations

from assistant.envelope import ConversationKey

PREFIX = "assistant"

# Lifetimes, in seconds; each key's docstring says which applies.
REPLY_TTL_SECONDS = 86400
DEDUPE_TTL_SECONDS = 7 * 86400  # Slack retries for ~5 min; Telegram webhooks retry for hours
DELIVERED_TTL_SECONDS = 7 * 86400
DEAD_LETTER_TTL_SECONDS = 14 * 86400


def reply(conversation: ConversationKey, message_id: str) -> str:
    """The finished reply to a message (JSON ``Reply``); ``REPLY_TTL_SECONDS``.

    Written by the worker before ``done`` is published, read by late listeners and by a rerun
    of the same turn. Scoped by the conversation: the same id in another conversation (or on
    another platform) names another key.
    """
    return f"{PREFIX}:reply:{conversation.redis_id}:{message_id}"


def stream(conversation: ConversationKey, message_id: str) -> str:
    """The pub/sub channel of a message's reply: ``token`` and ``done`` events; no storage."""
    return f"{PREFIX}:stream:{conversation.redis_id}:{message_id}"


def dedupe(dedupe_id: str) -> str:
    """A platform event or client retry seen before; holds the server's message id for it.

    ``DEDUPE_TTL_SECONDS``. Dedupe ids are namespaced by their edge (``web:``, ``openai:``,
    ``telegram:``, ``slack:``), so one edge cannot name another's.
    """
    return f"{PREFIX}:dedupe:{dedupe_id}"


def web_dedupe_id(conversation_id: str, user_id: str, client_message_id: str) -> str:
    """The dedupe id of a web message: the client's id counts only within its conversation
    and user (a retry of the same request is answered once; nobody else can name it)."""
    return f"web:{conversation_id}:{user_id}:{client_message_id}"


def deliveries(conversation: ConversationKey, message_id: str) -> str:
    """How many turns started with this message (crashes included); memory retention."""
    return f"{PREFIX}:deliveries:{conversation.redis_id}:{message_id}"


DEAD_LETTER = f"{PREFIX}:deadletter"
"""Messages that failed ``ASSISTANT_MAX_DELIVERIES`` times: ids, reason and a bounded excerpt
(``assistant.turns.dead_letter``), the newest ``assistant.turns.DEAD_LETTER_MAX_ENTRIES`` of
them; the list expires ``DEAD_LETTER_TTL_SECONDS`` after its newest entry."""


def delivered(reply_id: str) -> str:
    """A reply was posted to its platform (``SET NX``: posted once); ``DELIVERED_TTL_SECONDS``.

    Named by reply id alone: a reply id is derived from server-made or platform-derived
    message ids (``assistant.envelope.reply_id_for``), which no client chooses.
    """
    return f"{PREFIX}:delivered:{reply_id}"


def platform_message(reply_id: str) -> str:
    """The platform message showing a reply (``channel:ts``); ``DELIVERED_TTL_SECONDS``."""
    return f"{PREFIX}:platform-message:{reply_id}"


def open_streams(platform: str, user_id: str) -> str:
    """A sorted set of one identity's requests waiting for a reply (member: a random token,
    score: its deadline); entries past their deadline are dropped on each look, the key itself
    expires with its last deadline (``integrations.web.deps``)."""
    return f"{PREFIX}:open-streams:{platform}:{user_id}"


def admin_login_failures_by_address(address: str) -> str:
    """Failed admin logins from one client address, in a fixed window (its TTL)."""
    return f"{PREFIX}:admin:login:fail:ip:{address}"


def admin_login_failures_by_username(username_digest: str) -> str:
    """Failed admin logins for one username (hashed), in a fixed window (its TTL)."""
    return f"{PREFIX}:admin:login:fail:user:{username_digest}"


def admin_known_address(username_digest: str, address: str) -> str:
    """An address the username logged in from successfully; 30 days, renewed on each login."""
    return f"{PREFIX}:admin:login:known:{username_digest}:{address}"


def admin_known_device(device_id: str) -> str:
    """A browser that logged in successfully (its signed cookie names this); holds the
    username's digest; 30 days, renewed on each login."""
    return f"{PREFIX}:admin:login:device:{device_id}"
