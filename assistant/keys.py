"""Every Redis key name the assistant builds, in one place, with its lifetime.

All keys start with ``assistant:``. ``docs/architecture.md`` ("Who owns which data") lists them;
keep the two in step. The rule that makes replies private (issue 15, docs/security.md): a key
that holds or carries a reply is named by the *conversation* and a *server-made* message id,
never by an id a client chose. A client's own id (the web API's ``message_id``) is only a
dedupe token inside its own conversation and user (``web_dedupe_id``).

Every Redis key, queue and task name is built here and nowhere else (a test greps for the
``assistant:`` prefix elsewhere); ``schema()`` lists them with their docstrings, and a test fails
when that list and the table in ``docs/architecture.md`` disagree.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from assistant.envelope import ConversationKey

PREFIX = "assistant"

# -- Celery: task and queue names (not Redis keys of ours, but named here too) -------------------

TURNS_QUEUE = "assistant.turns"
"""The shared queue every worker node consumes (a node also has its own, ``<node>.dq2``)."""
ANSWER_TASK = "assistant.answer_conversation"
"""The one task: answer everything pending in a conversation (``worker/tasks.py``)."""
KNOWLEDGE_QUEUE = "assistant.knowledge"
"""Knowledge-base ingestion (docs/knowledge.md): the nodes that answer turns consume it too,
and a host can be given to it alone (``assistant worker --queues assistant.knowledge``)."""
INDEX_TASK = "assistant.index_document"
"""Index (or re-index) one stored knowledge-base document (``worker/knowledge.py``)."""

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


# -- conversations: the queue side ---------------------------------------------------------

def pending(conversation: ConversationKey) -> str:
    """Messages awaiting their turn (a list of JSON ``Inbound``); the edge appends, the lock
    holder trims after storing the turn; until answered."""
    return f"{PREFIX}:pending:{conversation.redis_id}"


PENDING_PATTERN = f"{PREFIX}:pending:*"
"""Every conversation's pending list (the sweeper's SCAN)."""


def lock(conversation: ConversationKey) -> str:
    """One turn at a time per conversation: the holder's token, 15 s, renewed while held."""
    return f"{PREFIX}:lock:{conversation.redis_id}"


def nudged(conversation: ConversationKey) -> str:
    """A same-id retry re-enqueued this stranded conversation (``assistant.dispatch``); 10 s."""
    return f"{PREFIX}:nudged:{conversation.redis_id}"


SWEEPER = f"{PREFIX}:sweeper"
"""One worker node sweeps for stranded messages per period (``SET NX``, ``worker.sweeper``)."""


def cancel(conversation: ConversationKey, message_id: str) -> str:
    """Set when the last client waiting for the message went away: stop generating; 10 min.
    Scoped by conversation: a client can only give up on messages of its own."""
    return f"{PREFIX}:cancel:{conversation.redis_id}:{message_id}"


def waiting(conversation: ConversationKey, message_id: str) -> str:
    """How many HTTP clients wait for this message's reply (a same-id retry is a second);
    10 min."""
    return f"{PREFIX}:waiting:{conversation.redis_id}:{message_id}"


def trace(reply_id: str) -> str:
    """The prompt a reply came from, only with ``ASSISTANT_TRACE_PROMPTS``; 1 hour."""
    return f"{PREFIX}:trace:{reply_id}"


# -- conversations: memory ----------------------------------------------------------------

def conversation(conversation_id: str) -> str:
    """The base of a conversation's record (``assistant.memory``): ``<base>:messages`` (the full
    record), ``:summary`` (older turns folded into prose), ``:saved`` (reply ids stored, so
    saving a turn is idempotent), ``:meta``; retention (30 days), refreshed on each turn."""
    return f"{PREFIX}:conv:{conversation_id}"


CONVERSATION_PARTS = ("messages", "summary", "saved", "meta")


def user_conversations(platform: str, workspace: str, user_id: str) -> str:
    """The conversations a user wrote in, for "forget me"; retention."""
    return f"{PREFIX}:user-conversations:{platform}:{workspace}:{user_id}"


def slack_thread(team_id: str, channel: str, thread_ts: str) -> str:
    """A Slack thread the assistant takes part in (it answers there without a mention); the
    conversation's retention."""
    return f"{PREFIX}:slack:thread:{team_id}:{channel}:{thread_ts}"


# -- worker nodes --------------------------------------------------------------------------------

WORKERS = f"{PREFIX}:workers"
"""Worker nodes by their last heartbeat (sorted set), docs/scaling.md."""


def affinity(conversation_id: str) -> str:
    """The node that answered the conversation last; 1 day."""
    return f"{PREFIX}:affinity:{conversation_id}"


def worker_alive(node: str) -> str:
    """The node's heartbeat, holding its pool size; 6 s."""
    return f"{PREFIX}:worker:{node}:alive"


def worker_busy(node: str) -> str:
    """The node's pool processes running a turn (pid → deadline on Redis' clock)."""
    return f"{PREFIX}:worker:{node}:busy"


def worker_progress(node: str) -> str:
    """pid of a pool process running a turn → Unix time of its last progress (``/readyz``,
    ``python -m worker.health``); while busy."""
    return f"{PREFIX}:worker:{node}:progress"


def worker_models(node: str) -> str:
    """Which pool processes of a node loaded which model (pid → JSON); a day after the last."""
    return f"{PREFIX}:worker-models:{node}"


ENGINE_SELFTEST = f"{PREFIX}:engine-selftest"
"""Node → its last engine self-test (JSON: ok, summary, what to do), read by ``/readyz``; 1 day."""

LIVE_STATS = f"{PREFIX}:live-stats"
"""A stream of recent turns' figures for the admin dashboard; the newest ~20,000."""

PROMPTS_VERSION = f"{PREFIX}:prompts:version"
"""Bumped when an admin publishes a persona version: processes reload their prompts."""

ARCHIVE_PURGE = f"{PREFIX}:archive:purge"
"""One process purges the SQL archive per period (``SET NX``); 1 hour."""


# -- fairness and limits (``assistant.limits``) ----------------------------------------------

def user_ref(platform: str, workspace: str, user: str) -> str:
    """How a user is named inside keys (not a key itself)."""
    return f"{platform}:{workspace}:{user}"


def user_bucket(platform: str, workspace: str, user: str) -> str:
    """A user's rate-limit token bucket; until refilled."""
    return f"{PREFIX}:rate:user:{platform}:{workspace}:{user}"


def channel_bucket(platform: str, workspace: str, channel: str) -> str:
    """A channel's rate-limit token bucket; until refilled."""
    return f"{PREFIX}:rate:channel:{platform}:{workspace}:{channel}"


def key_bucket(key_prefix: str) -> str:
    """An API key's own rate-limit bucket (named by the key's public prefix); until refilled."""
    return f"{PREFIX}:rate:key:{key_prefix}"


def quota(platform: str, workspace: str, user: str, day: datetime) -> str:
    """Tokens generated for a user on one UTC day; 2 days."""
    return f"{PREFIX}:quota:{platform}:{workspace}:{user}:{day.astimezone(UTC):%Y-%m-%d}"


def banned(platform: str, workspace: str, user: str) -> str:
    """An admin banned this user (the admin panel); until lifted."""
    return f"{PREFIX}:banned:{user_ref(platform, workspace, user)}"


BANNED_PATTERN = f"{PREFIX}:banned:*"


def user_quota(platform: str, workspace: str, user: str) -> str:
    """An admin's daily-token quota for this user, overriding the default; until lifted."""
    return f"{PREFIX}:user-quota:{user_ref(platform, workspace, user)}"


USER_QUOTA_PATTERN = f"{PREFIX}:user-quota:*"


def refused(dedupe_id: str) -> str:
    """A throttled message whose notice was sent: a twin event or a retry is refused
    silently; 10 min."""
    return f"{PREFIX}:refused:{dedupe_id}"


def strikes(ref: str) -> str:
    """A user's recent safety strikes (``user_ref``); the strike window."""
    return f"{PREFIX}:safety:strikes:{ref}"


def muted(ref: str) -> str:
    """A user muted after too many strikes (``user_ref``); the mute's length."""
    return f"{PREFIX}:safety:muted:{ref}"


SAFETY_CANARY = f"{PREFIX}:safety:canary"
"""The deployment's random canary planted in every system prompt; kept."""


def public_bucket(address: str) -> str:
    """A client address's bucket for the sign-in forms; until refilled."""
    return f"{PREFIX}:public:{address}"


def open_bucket(address: str) -> str:
    """A client address's bucket for health, metrics and webhooks; until refilled."""
    return f"{PREFIX}:open:{address}"


# -- sign-in -------------------------------------------------------------------------------------

def web_session(session_digest: str) -> str:
    """A signed-in person's session and CSRF token, named by the SHA-256 of the cookie's id;
    ``ASSISTANT_SESSION_HOURS``."""
    return f"{PREFIX}:web:session:{session_digest}"


def oidc_state(state_digest: str) -> str:
    """A sign-in in progress (nonce, PKCE verifier, where to go next), named by the SHA-256 of
    its ``state``; 10 min, used once."""
    return f"{PREFIX}:oidc:{state_digest}"


def admin_session(session_id: str) -> str:
    """An admin's session in the panel; 8 hours."""
    return f"{PREFIX}:admin:session:{session_id}"


# -- the schema, for docs/architecture.md --------------------------------------------------------

@dataclass(frozen=True)
class KeyDoc:
    name: str  # the builder's (or constant's) name in this module
    pattern: str  # without the ``assistant:`` prefix, placeholders in <angle brackets>
    doc: str


class _Placeholder:
    """Stands for a ``ConversationKey`` when a builder is drawn as a pattern."""

    redis_id = "<conv>"


_PLACEHOLDERS = {"conversation": _Placeholder(), "conversation_id": "<conv>",
                 "message_id": "<msg id>", "reply_id": "<reply id>", "dedupe_id": "<dedupe id>",
                 "day": None}
_NOT_KEYS = {"user_ref", "web_dedupe_id", "schema"}


def _pattern(value: str) -> str:
    return value.removeprefix(f"{PREFIX}:")


def schema() -> list[KeyDoc]:
    """Every key this module builds, as a pattern with its docstring (constants' docstrings are
    the string literal after them, which Python drops: they are described by name)."""
    module = sys.modules[__name__]
    found: list[KeyDoc] = []
    for name, value in vars(module).items():
        if name.startswith("_") or name in _NOT_KEYS:
            continue
        if inspect.isfunction(value) and value.__module__ == __name__:
            args = []
            for parameter in inspect.signature(value).parameters:
                placeholder = _PLACEHOLDERS.get(parameter, f"<{parameter.replace('_', ' ')}>")
                args.append(placeholder)
            if "day" in inspect.signature(value).parameters:
                pattern = value(*[a if a is not None else datetime(2000, 1, 1, tzinfo=UTC)
                                  for a in args]).replace("2000-01-01", "<day>")
            else:
                pattern = value(*args)
            doc = inspect.getdoc(value) or ""
            if value is conversation:  # a base: the keys are its parts
                found.extend(KeyDoc(name, f"{_pattern(pattern)}:{part}", doc)
                             for part in CONVERSATION_PARTS)
            else:
                found.append(KeyDoc(name, _pattern(pattern), doc))
        elif isinstance(value, str) and name.isupper() and value.startswith(f"{PREFIX}:") \
                and not name.endswith("_PATTERN"):
            found.append(KeyDoc(name, _pattern(value), ""))
    return found
