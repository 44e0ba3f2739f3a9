"""Structured logs: one JSON object per line off a terminal, text on one.

Every line carries the message and conversation ids of the work it belongs to, set with
``log_context`` (contextvars, so threads and asyncio tasks each keep their own). Message text
is never put on a log line at INFO: log ids, and read the text from the store when needed.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from assistant.observe import TurnStats
from assistant.settings import Settings

LogFormat = Literal["auto", "json", "text"]

CONTEXT_FIELDS = ("message_id", "conversation")
# httpx logs every request's URL at INFO, and Telegram's URLs hold the bot token.
QUIET_LOGGERS = ("httpx", "httpcore")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"

log = logging.getLogger(__name__)

_message_id: ContextVar[str | None] = ContextVar("log_message_id", default=None)
_conversation: ContextVar[str | None] = ContextVar("log_conversation", default=None)


@contextmanager
def log_context(*, message_id: str | None = None,
                conversation: str | None = None) -> Iterator[None]:
    """Tag every log line written inside the block; ``None`` keeps the outer value."""
    tokens = []
    if message_id is not None:
        tokens.append((_message_id, _message_id.set(message_id)))
    if conversation is not None:
        tokens.append((_conversation, _conversation.set(conversation)))
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class ContextFilter(logging.Filter):
    """Puts the current ``log_context`` ids on each record (``extra=`` values win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "message_id", None) is None:
            record.message_id = _message_id.get()
        if getattr(record, "conversation", None) is None:
            record.conversation = _conversation.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, message_id, conversation[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            entry[field] = getattr(record, field, None)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii keeps each entry on one line whatever the message holds.
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines, with the ids in brackets when there are any."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{field}={value}" for field in CONTEXT_FIELDS
               if (value := getattr(record, field, None))]
        record.context = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


def wants_json(log_format: LogFormat, stream: TextIO) -> bool:
    """JSON unless asked for text, or left to "auto" on a terminal."""
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty is not None and isatty())
    return log_format == "json"


def configure_logging(settings: Settings | None = None, *, level: int | str = logging.INFO,
                      stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) in the configured format.

    Idempotent: a handler installed by an earlier call is replaced, others are left alone.
    """
    log_format: LogFormat = settings.log_format if settings is not None else "auto"
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if wants_json(log_format, stream) else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.set_name("assistant")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "assistant"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def log_turn(stats: TurnStats) -> None:
    """One INFO line per answered turn (a ``TurnObserver``): numbers and ids, never text."""
    ttft = "-" if stats.ttft_s is None else f"{stats.ttft_s:.2f} s"
    log.info("answered %d %s message(s): %s, %d tokens, first token %s, reply %.2f s, "
             "waited %.2f s", stats.messages, stats.platform,
             "generated" if stats.generated else "resent", stats.completion_tokens, ttft,
             stats.total_s, stats.queue_wait_s)
