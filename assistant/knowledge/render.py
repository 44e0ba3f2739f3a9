"""A reply's citations as the edges show them: a "Sources" list in Markdown that each edge
converts with the rest of the reply (Slack mrkdwn, Telegram HTML); the web and ``/v1`` carry
them as data as well (``Reply.citations``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from assistant.envelope import Citation

_MARKUP = re.compile(r"[*`~<>\[\]]")


def label(citation: Citation) -> str:
    """``Title, Section (p. 3)``, without characters a chat could read as markup."""
    parts = [citation.title] + ([citation.section.split(" › ")[-1]] if citation.section else [])
    text = _MARKUP.sub("", ", ".join(p for p in parts if p))
    if citation.page:
        text += f" (p. {citation.page})"
    link = citation.source if citation.source.startswith(("https://", "http://")) else ""
    return f"[{text}]({link})" if link and " " not in link else text


def sources_markdown(citations: Sequence[Citation]) -> str:
    """The list under a reply: ``Sources:`` then ``[n] Title, Section``, one a line."""
    if not citations:
        return ""
    lines = [f"[{c.number}] {label(c)}" for c in citations]
    return "Sources:\n" + "\n".join(lines)


def with_sources(text: str, citations: Sequence[Citation]) -> str:
    """The reply's text followed by its sources (unchanged when it has none)."""
    footer = sources_markdown(citations)
    return f"{text.rstrip()}\n\n{footer}" if footer else text
