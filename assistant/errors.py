"""One exception tree for the whole assistant.

    AssistantError
    ├── ConfigError            settings that cannot work (placeholder secret, bad path)
    ├── PromptError            a prompt file is invalid, or a variable is missing
    ├── ModelError             a model cannot be found, pulled or loaded
    │   └── ModelUnavailableOffline   a download needs a network this machine lacks
    ├── InputRejected          the user's message cannot be taken (empty, too long)
    │   ├── InvalidParameter   an API request parameter is invalid or not supported
    │   │   └── ContextLengthExceeded   the prompt and reply do not fit the model's context
    │   └── DocumentRejected   a knowledge-base file cannot be indexed (type, size, malformed)
    ├── ModelNotFound          an API request names a model that is not served
    ├── QueueUnavailable       Redis (the broker and store) does not answer
    │   └── Overloaded         the queue is past its hard depth (try again later)
    ├── ReplyTimeout           no reply arrived within the reply timeout
    ├── ConversationNotFound   no such conversation
    ├── ConversationBusy       the conversation is answering a message (try again after)
    └── Throttled              a fairness limit refused the message (try again later)
        ├── RateLimited        a user's or a channel's rate limit (token bucket)
        ├── QuotaExceeded      a user's daily token quota is spent
        ├── Muted              the user is muted after repeated blocked messages (strikes)
        └── Banned             an admin banned the user (assistant.admin_actions)

Third-party errors are wrapped at the boundary with ``raise ... from exc``; the edges
(web, CLI, Slack, Telegram) turn these into user text or HTTP statuses.
"""

from __future__ import annotations


class AssistantError(Exception):
    """Root of every error the assistant raises on purpose."""


class ConfigError(AssistantError):
    """The configuration cannot work."""


class PromptError(AssistantError):
    """A prompt file is invalid or a template variable is missing."""


class ModelError(AssistantError):
    """A model cannot be found, pulled or loaded."""


class ModelUnavailableOffline(ModelError):
    """A model download needs a network that this machine cannot reach."""


class InputRejected(AssistantError):
    """The user's message cannot be accepted as it is."""


class InvalidParameter(InputRejected):
    """An API request's parameter is invalid or not supported (OpenAI's 400 errors).

    ``param`` names it as OpenAI does ("messages", "n", "tools[0].function"...); ``code`` is
    OpenAI's machine-readable code when it has one.
    """

    def __init__(self, message: str, param: str | None = None,
                 code: str | None = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class ContextLengthExceeded(InvalidParameter):
    """The prompt plus the reply asked for are more tokens than the model's context."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="messages", code="context_length_exceeded")


class DocumentRejected(InputRejected):
    """A file given to the knowledge base cannot be indexed: an unknown type, too big, or
    malformed. Nothing of it is stored (assistant/knowledge/ingest.py)."""


class ModelNotFound(AssistantError):
    """The request names a model that is neither the served one nor one of its aliases."""


class QueueUnavailable(AssistantError):
    """Redis, which holds the queue and the memory, does not answer."""


class Overloaded(QueueUnavailable):
    """More turns wait than ``ASSISTANT_HARD_QUEUE_DEPTH``: nothing was queued; retry later."""

    def __init__(self, retry_after_seconds: int, message: str) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, int(retry_after_seconds))


class ReplyTimeout(AssistantError):
    """No reply arrived within the configured timeout."""


class ConversationNotFound(AssistantError):
    """There is no conversation with that id."""


class ConversationBusy(AssistantError):
    """The conversation is answering a message; the request can be made again after it."""


class Throttled(AssistantError):
    """A fairness limit refused the message; ``str(exc)`` is the text to show the user.

    The raiser passes the friendly text (``assistant.limits`` renders it from ``prompts/``).
    ``repeated`` is set when the same platform message was refused before (a Slack twin
    event, a retry), so an edge that told the user once can stay silent.
    """

    def __init__(self, retry_after_seconds: int, message: str | None = None) -> None:
        self.retry_after_seconds = max(1, int(retry_after_seconds))
        super().__init__(message or f"Too many requests: try again in "
                                    f"{self.retry_after_seconds} seconds.")
        self.repeated = False


class RateLimited(Throttled):
    """Too many messages too fast from one user (``scope="user"``) or channel (``"channel"``)."""

    def __init__(self, retry_after_seconds: int, scope: str, message: str | None = None
                 ) -> None:
        super().__init__(retry_after_seconds, message)
        self.scope = scope


class QuotaExceeded(Throttled):
    """The user's daily token quota is spent; it renews at midnight UTC."""


class Muted(Throttled):
    """The user is muted (``assistant.safety.strikes``) for ``retry_after_seconds`` more.

    They were told when the mute began (with the refusal that caused it), so a platform edge
    stays silent (``repeated`` is always true); the web API still answers 429 with the text.
    """

    def __init__(self, retry_after_seconds: int, message: str | None = None) -> None:
        super().__init__(retry_after_seconds, message)

    @property
    def repeated(self) -> bool:
        return True

    @repeated.setter
    def repeated(self, value: bool) -> None:
        pass  # the dispatcher's "told for this platform message" flag does not apply


class Banned(Throttled):
    """An admin banned the user: no model time until unbanned. ``str(exc)`` is the notice.

    Unlike ``Muted``, the user is told on every message they send (twin events and retries of
    one platform message stay quiet, as for any refusal).
    """

    # There is no "later" for a ban; a day keeps a client's automatic retries at bay.
    RETRY_AFTER_SECONDS = 86400

    def __init__(self, message: str | None = None) -> None:
        super().__init__(self.RETRY_AFTER_SECONDS, message or "You can't use this assistant.")


class SchemaUnsupported(AssistantError, ValueError):
    """The engine cannot constrain a reply to this JSON schema (``worker/grammar.py``)."""
