"""Slack's slash command for memories: /assistant memory and forget N answered at once and
privately; /assistant remember queued like a DM message, refused in a channel."""

from __future__ import annotations

import fakeredis

from assistant.envelope import ConversationKey, Inbound
from assistant.settings import Settings
from integrations.slack.app import answer_command, remember_command


class Recording:
    def __init__(self) -> None:
        self.submitted: list[Inbound] = []

    def submit(self, inbound: Inbound) -> bool:
        self.submitted.append(inbound)
        return True


def command(text: str, channel: str = "D1") -> dict[str, str]:
    return {"text": text, "team_id": "T1", "user_id": "U1", "channel_id": channel,
            "trigger_id": f"trigger-{text}"}


def test_list_and_forget_from_the_slash_command(recall_settings_sql: str) -> None:
    from assistant.recall.service import edge_memory

    settings = Settings(_env_file=None, DATABASE_URL=recall_settings_sql)  # type: ignore[call-arg]
    client = fakeredis.FakeRedis()
    assert "don't keep any memories" in answer_command(settings, client, command("memory"))
    memory = edge_memory(settings)
    assert memory is not None
    for n, fact in enumerate(("I like tea", "I live in Oslo")):
        memory.remember(Inbound(message_id=f"m{n}", dedupe_id=f"m{n}", user_id="U1", text=fact,
                                conversation=ConversationKey(platform="slack", workspace="T1",
                                                             channel="D1", user="U1")), fact)
    listed = answer_command(settings, client, command("memory", channel="C9"))
    assert "1. I like tea" in listed and "2. I live in Oslo" in listed
    assert "deleted 1" in answer_command(settings, client, command("forget 1"))
    assert "1. I live in Oslo" in answer_command(settings, client, command("memory"))
    assert "deleted 1" in answer_command(settings, client, command("forget all"))


def test_remember_is_queued_from_a_dm_only() -> None:
    submitter = Recording()
    assert "DM" in remember_command(submitter, command("remember I like tea", channel="C9"))
    assert submitter.submitted == []
    assert "confirm" in remember_command(submitter, command("remember I like tea"))
    [queued] = submitter.submitted
    assert queued.text == "/remember I like tea"
    assert queued.conversation == ConversationKey(platform="slack", workspace="T1",
                                                  channel="D1", user="U1")
    assert queued.reply_to == {"team": "T1", "channel": "D1", "thread_ts": None}
