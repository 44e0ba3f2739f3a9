"""Translation at the Slack edge, as pure functions: events in, mrkdwn out.

- ``to_inbound``: an Events API payload → an ``Inbound`` (or None when it is not for us).
- ``to_mrkdwn``: the model's Markdown → Slack mrkdwn, with ``&``, ``<`` and ``>`` escaped, so
  model output can never ping ``<!channel>``/``<!here>``/a user nor forge a link (the model's
  output is untrusted: OWASP LLM05).
- ``split_message``: text → pieces that each fit one Slack message.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from pydantic import ValidationError

from assistant.envelope import ConversationKey, Inbound

log = logging.getLogger(__name__)

PLATFORM = "slack"

# Slack truncates `text` at 40,000 characters and recommends staying under 4,000 per message
# (docs.slack.dev/reference/methods/chat.postMessage, "Truncating content"); mrkdwn entities
# (&amp;) count as they are sent, so we keep a margin below 4,000.
MESSAGE_LIMIT = 3800

# Message subtypes that are a person writing something new; every other subtype (edits,
# deletes, joins, bot_message, channel_topic...) never triggers a reply.
_USER_SUBTYPES = {None, "file_share", "thread_broadcast"}


# -- events → Inbound --------------------------------------------------------------------------

def is_direct_message(event: dict[str, Any]) -> bool:
    return event.get("channel_type") == "im" or str(event.get("channel", "")).startswith("D")


def is_from_a_person(event: dict[str, Any], bot_user_id: str | None = None) -> bool:
    """False for bots (ours or others), edits, deletes, joins and other non-message subtypes."""
    if event.get("bot_id") or event.get("bot_profile") or event.get("hidden"):
        return False
    if event.get("subtype") not in _USER_SUBTYPES:
        return False
    user = event.get("user")
    if not isinstance(user, str) or not user or user == bot_user_id:
        return False
    text = event.get("text")  # a field of another type is no message (it was a 500)
    return isinstance(text, str) and bool(text.strip())


def message_id_for(dedupe_id: str) -> str:
    """The Inbound's id, derived from the Slack message, so a test (or a retry) can compute it."""
    return uuid.uuid5(uuid.NAMESPACE_URL, dedupe_id).hex


def dedupe_id_for(team_id: str, channel: str, ts: str) -> str:
    """Keyed on the *message* (channel + ts), not on ``event_id``.

    A mention in a thread we are part of arrives twice, as ``app_mention`` and as ``message``,
    with different event ids; Slack's retries of either carry the same message, so deduping on
    the message answers every case once.
    """
    return f"slack:{team_id}:{channel}:{ts}"


def thread_of(event: dict[str, Any]) -> str:
    """The thread a channel message belongs to; a top-level mention starts one at its ts."""
    return str(event.get("thread_ts") or event["ts"])


def to_inbound(body: dict[str, Any], bot_user_id: str | None = None) -> Inbound | None:
    """An Inbound for a DM, an ``app_mention`` or a message in a channel thread; else None.

    Whether a thread message (no mention) is answered depends on whether the assistant is part
    of that thread, which only Redis knows: the caller checks that (``app.py``). An event whose
    ids do not fit the conversation key schema (assistant/keys.py: a 500-character thread_ts
    was a 500, which Slack retries) is not answered either, and is logged.
    """
    try:
        return _to_inbound(body, bot_user_id)
    except ValidationError as exc:
        log.warning("Slack event %s not answered: its ids do not fit a conversation key (%s)",
                    str(body.get("event_id"))[:40], str(exc).splitlines()[0][:200])
        return None


def _to_inbound(body: dict[str, Any], bot_user_id: str | None) -> Inbound | None:
    event = body.get("event") or {}
    if event.get("type") not in ("message", "app_mention") or not is_from_a_person(
            event, bot_user_id):
        return None
    team_id = str(body.get("team_id") or event.get("team") or "")
    channel = str(event.get("channel") or "")
    ts = str(event.get("ts") or "")
    if not (team_id and channel and ts):
        return None
    user = str(event["user"])
    if is_direct_message(event):
        if event["type"] != "message":
            return None  # app_mention does not fire in DMs; guard anyway
        conversation = ConversationKey(platform=PLATFORM, workspace=team_id, channel=channel,
                                       user=user)
        # Reply where the user wrote: top level in the DM, or in the DM thread they used.
        reply_to = {"team": team_id, "channel": channel, "thread_ts": event.get("thread_ts")}
    else:
        if event["type"] == "message" and not event.get("thread_ts"):
            return None  # top-level channel chatter: only a mention (app_mention) is answered
        thread = thread_of(event)
        conversation = ConversationKey(platform=PLATFORM, workspace=team_id, channel=channel,
                                       thread=thread)
        reply_to = {"team": team_id, "channel": channel, "thread_ts": thread}
    dedupe_id = dedupe_id_for(team_id, channel, ts)
    return Inbound(
        message_id=message_id_for(dedupe_id),
        dedupe_id=dedupe_id,
        conversation=conversation,
        user_id=user,
        text=strip_mention(str(event.get("text", "")), bot_user_id),
        reply_to=reply_to,
    )


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """``<@UBOT> what is 2+2?`` → ``what is 2+2?`` (other mentions are kept)."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text)
    return text.strip() or "Hello!"


# -- Markdown → mrkdwn --------------------------------------------------------------------------

def escape(text: str) -> str:
    """Slack's three control characters (docs.slack.dev "Formatting text": escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_FENCE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s()]+)\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)
_HR = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,})\s*$", re.MULTILINE)


def to_mrkdwn(markdown: str) -> str:
    """Convert Markdown to Slack mrkdwn; everything that is not markup is escaped."""
    out: list[str] = []
    position = 0
    for block in _FENCE.finditer(markdown):
        out.append(_prose(markdown[position:block.start()]))
        code = block.group(1).rstrip("\n")
        out.append(f"```\n{escape(code)}\n```" if code else "")
        position = block.end()
    out.append(_prose(markdown[position:]))
    return "".join(out).strip()


def _prose(text: str) -> str:
    """Inline code is escaped verbatim; the rest gets markup conversion."""
    out: list[str] = []
    position = 0
    for code in _INLINE_CODE.finditer(text):
        out.append(_inline(text[position:code.start()]))
        out.append(f"`{escape(code.group(1))}`")
        position = code.end()
    out.append(_inline(text[position:]))
    return "".join(out)


def _inline(text: str) -> str:
    links: list[str] = []

    def keep_link(match: re.Match[str]) -> str:
        # The URL passed the http(s) pattern; escaping keeps it from closing the <…> early.
        url = escape(match.group(2)).replace("|", "%7C")
        label = escape(match.group(1)).replace("|", "¦")
        links.append(f"<{url}|{label}>")
        return f"\x00{len(links) - 1}\x00"

    text = _LINK.sub(keep_link, text)
    text = escape(text)
    text = _HR.sub("", text)
    text = _HEADING.sub(lambda m: f"\x01{m.group(1)}\x01", text)
    text = _BOLD.sub(lambda m: f"\x01{m.group(2)}\x01", text)
    text = _BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = _ITALIC.sub(lambda m: f"_{m.group(1)}_", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    text = text.replace("\x01", "*")
    return re.sub(r"\x00(\d+)\x00", lambda m: links[int(m.group(1))], text)


# -- long answers -------------------------------------------------------------------------------

def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split mrkdwn into pieces of at most ``limit`` characters.

    Cuts at a paragraph, else a line, else a space; never inside an ``&amp;`` entity. A code
    block cut in two is closed at the end of one piece and reopened in the next.
    """
    if limit < 16:
        raise ValueError("limit too small")
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        budget = limit - 4  # room to close a code block with "\n```"
        window = rest[:budget]
        cut = max(window.rfind("\n\n"), window.rfind("\n"))
        if cut < budget // 2:
            cut = window.rfind(" ")
        if cut < budget // 2:
            cut = budget
            amp = window.rfind("&", max(0, budget - 6))
            if amp != -1 and ";" not in window[amp:]:
                cut = amp
        piece, rest = rest[:cut].rstrip(), rest[cut:].strip()
        if piece.count("```") % 2:
            piece += "\n```"
            rest = "```\n" + rest
        pieces.append(piece)
    if rest:
        pieces.append(rest)
    return pieces or [""]


def preview(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """The text so far as one message: converted, and cut to fit while it streams."""
    converted = to_mrkdwn(text)
    if len(converted) <= limit:
        return converted
    return split_message(converted, limit - 2)[0] + " …"
