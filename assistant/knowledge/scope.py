"""Where a question was asked, as the places a collection can be attached to.

A place is a string; a collection attached to any of a conversation's places may answer it:

  slack                      every Slack workspace and channel
  slack:<team>               one workspace
  slack:<team>:<channel>     one channel (DMs are channels too: D…)
  telegram                   every Telegram chat
  telegram:<chat id>         one chat (a group, or a person's private chat)
  web                        the web chat and /api, everyone signed in
  web:<handle>               one signed-in person; web-group:<group> the people of a group
  api                        every API key, on /api and /v1
  key:<prefix>               one API key (sk-ast-…), on /api and /v1

The places come from the conversation's key and the server-made user id, never from what a
message says; a web person's groups come from the store (their sign-in keeps them fresh).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from assistant.envelope import Inbound
from assistant.errors import InputRejected
from assistant.identity.credentials import KEY_PREFIX

_PLACE = re.compile(
    r"^(slack(:[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)?)?|telegram(:-?[0-9]+)?|web|web:[^\s:]+"
    r"|web-group:[^\s]+|api|key:sk-ast-[0-9a-f]{8})$")


def validate_place(place: str) -> str:
    place = place.strip()
    if not _PLACE.match(place):
        raise InputRejected(f"{place!r} is not a place: use slack, slack:TEAM, "
                            "slack:TEAM:CHANNEL, telegram, telegram:CHAT, web, web:HANDLE, "
                            "web-group:GROUP, api or key:PREFIX (docs/knowledge.md)")
    return place


def _is_key(user: str | None) -> bool:
    return bool(user) and str(user).startswith(KEY_PREFIX)


def places_of(inbound: Inbound,
              groups_of: Callable[[str], list[str]] | None = None) -> set[str]:
    """Every place that ``inbound`` was asked at."""
    conversation = inbound.conversation
    platform = conversation.platform
    if platform == "slack":
        return {"slack", f"slack:{conversation.workspace}",
                f"slack:{conversation.workspace}:{conversation.channel}"}
    if platform == "telegram":
        return {"telegram", f"telegram:{conversation.channel}"}
    if platform in ("web", "openai"):
        # ``conversation.user`` is the caller's scope on /api (the server's: a key's prefix
        # or a person's handle); /v1 has none, its user id is the key's prefix when a key
        # called. Local mode (no sign-in, loopback only) has neither: only ``web``.
        owner = conversation.user if platform == "web" else inbound.user_id
        if _is_key(owner):
            return {"api", f"key:{owner}"}
        if platform == "openai":
            return set()
        found = {"web"}
        if conversation.user:
            found.add(f"web:{conversation.user}")
            for group in (groups_of(conversation.user) if groups_of else []):
                found.add(f"web-group:{group}")
        return found
    return set()
