"""Translation at the Telegram edge: small pure functions, no I/O.

``to_inbound`` decides whether a message concerns the bot and turns it into an ``Inbound``;
``to_html`` renders the model's Markdown as Telegram HTML that always parses; ``split_text``
cuts a reply into pieces that fit one Telegram message.
"""

from __future__ import annotations

import html
import re
import uuid
from dataclasses import dataclass
from typing import Any

from telegram import Message, MessageEntity, Update
from telegram.constants import ChatType, MessageLimit

from assistant.envelope import ConversationKey, Inbound

PLATFORM = "telegram"
MAX_MESSAGE_LENGTH = int(MessageLimit.MAX_TEXT_LENGTH)  # 4096, counted in UTF-16 code units


@dataclass(frozen=True)
class BotIdentity:
    """Who the bot is: needed to tell mentions of it and replies to it."""

    id: int
    username: str


def dedupe_id(bot: BotIdentity, update_id: int) -> str:
    """update_ids are unique per bot only (and may jump after a quiet week: dedupe expires)."""
    return f"telegram:{bot.id}:{update_id}"


def message_id_for(dedupe: str) -> str:
    """A deterministic message id, so a redelivered update maps to the same Inbound."""
    return uuid.uuid5(uuid.NAMESPACE_URL, dedupe).hex


def is_private(message: Message) -> bool:
    return message.chat.type == ChatType.PRIVATE


def conversation_key(message: Message) -> ConversationKey:
    """Private chats are keyed by chat and user; groups by chat and forum topic."""
    if is_private(message):
        user = message.from_user.id if message.from_user else message.chat.id
        return ConversationKey(platform=PLATFORM, channel=str(message.chat.id), user=str(user))
    thread = str(message.message_thread_id) if topic_thread(message) is not None else None
    return ConversationKey(platform=PLATFORM, channel=str(message.chat.id), thread=thread)


def topic_thread(message: Message) -> int | None:
    """The forum topic a message belongs to (reply threads of plain groups are not topics)."""
    if message.is_topic_message and message.message_thread_id is not None:
        return message.message_thread_id
    return None


def reply_target(message: Message) -> dict[str, Any]:
    """Where the sender posts the answer: same chat, same topic, as a reply in groups."""
    target: dict[str, Any] = {"chat_id": message.chat.id,
                              "message_thread_id": topic_thread(message),
                              "reply_to_message_id": None}
    if not is_private(message):
        target["reply_to_message_id"] = message.message_id
    return target


def mentions_bot(message: Message, bot: BotIdentity) -> bool:
    """An @username mention of the bot, or a text mention of its user, in text or caption."""
    wanted = f"@{bot.username}".lower()
    for entities in (message.parse_entities(), message.parse_caption_entities()):
        for entity, text in entities.items():
            if entity.type == MessageEntity.MENTION and text.lower() == wanted:
                return True
            if (entity.type == MessageEntity.TEXT_MENTION and entity.user is not None
                    and entity.user.id == bot.id):
                return True
    return False


def replies_to_bot(message: Message, bot: BotIdentity) -> bool:
    replied = message.reply_to_message
    if replied is None or replied.from_user is None:
        return False
    # In forums every message "replies" to the topic's creation message: not a reply to us.
    if replied.forum_topic_created is not None:
        return False
    return replied.from_user.id == bot.id


def concerns_bot(message: Message, bot: BotIdentity) -> bool:
    """Private chats: always. Groups: a mention of the bot or a reply to one of its messages."""
    if message.from_user is not None and message.from_user.is_bot:
        return False
    return is_private(message) or mentions_bot(message, bot) or replies_to_bot(message, bot)


def strip_mention(text: str, bot: BotIdentity) -> str:
    stripped = re.sub(rf"@{re.escape(bot.username)}\b", "", text, flags=re.IGNORECASE)
    stripped = re.sub(r"[ \t]{2,}", " ", stripped).strip()
    return stripped or text.strip()


def new_message(update: Update) -> Message | None:
    """The update's new message; edited messages, channel posts and the rest are ignored."""
    return update.message


def to_inbound(update: Update, bot: BotIdentity) -> Inbound | None:
    """The update as an Inbound, or None if it is not a new text message meant for the bot."""
    message = new_message(update)
    if message is None or message.text is None or message.from_user is None:
        return None
    if not concerns_bot(message, bot):
        return None
    dedupe = dedupe_id(bot, update.update_id)
    return Inbound(
        message_id=message_id_for(dedupe),
        dedupe_id=dedupe,
        conversation=conversation_key(message),
        user_id=str(message.from_user.id),
        text=strip_mention(message.text, bot),
        received_at=message.date,
        reply_to=reply_target(message),
    )


# -- formatting --------------------------------------------------------------------------------

_FENCE = re.compile(r"```[^\n`]*\n?(.*?)```", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"
                     r"|(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")


def escape(text: str) -> str:
    """Telegram's HTML mode needs only <, > and & escaped (quotes too inside attributes)."""
    return html.escape(text, quote=False)


def _inline(text: str) -> str:
    """Render inline Markdown of a code-free span; every tag is opened and closed by one match."""
    parts: list[str] = []
    last = 0
    for match in _INLINE_CODE.finditer(text):
        parts.append(_emphasis(text[last:match.start()]))
        parts.append(f"<code>{escape(match.group(1))}</code>")
        last = match.end()
    parts.append(_emphasis(text[last:]))
    return "".join(parts)


def _emphasis(text: str) -> str:
    # Escape first: the markers (*, _, ~, [, ]) are not touched by escaping, and no tag we add
    # afterwards can be broken by the user's or model's text. Links become placeholders while
    # emphasis is rendered, so a marker inside a URL cannot split the <a> tag.
    # A link shows its real address after its label: a label must never hide where a link
    # goes (an injected "[your invoice](https://evil…)"; issue 15, docs/security.md).
    links: list[str] = []

    def keep_link(match: re.Match[str]) -> str:
        href = html.escape(html.unescape(match.group(2)), quote=True)
        links.append(f'{_styles(match.group(1))} (<a href="{href}">{href}</a>)')
        return f"\x00{len(links) - 1}\x00"

    out = _LINK.sub(keep_link, escape(text).replace("\x00", ""))
    out = _styles(out)
    return re.sub("\x00(\\d+)\x00", lambda m: links[int(m.group(1))], out)


def _styles(text: str) -> str:
    out = _BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", text)
    out = _ITALIC.sub(lambda m: f"<i>{m.group(1) or m.group(2)}</i>", out)
    return _STRIKE.sub(lambda m: f"<s>{m.group(1)}</s>", out)


_TAG = re.compile(r"<(/?)([a-z]+)[^>]*>")


def well_formed(markup: str) -> bool:
    """True if the tags we produced nest properly (overlapping Markdown markers may not)."""
    open_tags: list[str] = []
    for match in _TAG.finditer(markup):
        closing, name = match.group(1), match.group(2)
        if not closing:
            open_tags.append(name)
        elif not open_tags or open_tags.pop() != name:
            return False
    return not open_tags


def to_html(markdown: str) -> str:
    """The model's Markdown as Telegram HTML (parse_mode=HTML), everything else escaped.

    Tags may nest only in ways Telegram accepts; if Telegram still rejects the entities the
    sender falls back to the plain text.
    """
    parts: list[str] = []
    last = 0
    for match in _FENCE.finditer(markdown):
        parts.append(_inline(markdown[last:match.start()]))
        parts.append(f"<pre>{escape(match.group(1).rstrip(chr(10)))}</pre>")
        last = match.end()
    parts.append(_inline(markdown[last:]))
    rendered = "".join(parts)
    return rendered if well_formed(rendered) else escape(markdown)


# -- splitting ---------------------------------------------------------------------------------


def telegram_length(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_MESSAGE_LENGTH) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` (UTF-16 units), at a paragraph, line or
    word boundary when there is one in the second half of the piece."""
    pieces: list[str] = []
    rest = text
    while telegram_length(rest) > limit:
        cut = _fitting_prefix(rest, limit)
        window = rest[:cut]
        for separator in ("\n\n", "\n", " "):
            at = window.rfind(separator)
            if at >= cut // 2:
                cut = at + len(separator)
                break
        piece = rest[:cut].rstrip()
        pieces.append(piece if piece else rest[:cut])
        rest = rest[cut:].lstrip("\n")
    if rest.strip() or not pieces:
        pieces.append(rest)
    return pieces


def _fitting_prefix(text: str, limit: int) -> int:
    """The largest number of characters whose UTF-16 length is at most ``limit``."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)
