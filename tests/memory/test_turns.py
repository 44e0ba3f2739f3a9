"""The worker's side with a fake engine: commands are answered without the model, memories
enter the prompt the engine receives (never the stored conversation), and stay out of groups."""

from __future__ import annotations

import uuid

from assistant import turns
from assistant.conversation import Runtime, answer_pending
from assistant.envelope import ConversationKey, Inbound
from assistant.memory import RedisConversationHistory
from assistant.recall import LongTermMemory
from assistant.stream import stored_reply
from tests.auxil.fake_engine import FakeEngine

DM = ConversationKey(platform="telegram", channel="42", user="42")
GROUP = ConversationKey(platform="telegram", channel="-1001", thread=None)


def send(runtime: Runtime, text: str, conversation: ConversationKey = DM,
         user: str = "42", message_id: str | None = None) -> Inbound:
    message_id = message_id or uuid.uuid4().hex
    inbound = Inbound(message_id=message_id, dedupe_id=f"t:{message_id}", text=text,
                      user_id=user, conversation=conversation)
    turns.submit(runtime.client, inbound)
    answer_pending(runtime, conversation)
    return inbound


def answer(runtime: Runtime, inbound: Inbound) -> str:
    reply = stored_reply(runtime.client, inbound.conversation, inbound.message_id)
    assert reply is not None
    return reply.text


def last_user_text(engine: FakeEngine) -> str:
    return engine.requests[-1].messages[-1].text


def test_remember_then_recall_in_the_prompt(runtime: Runtime, engine: FakeEngine,
                                            recall: LongTermMemory) -> None:
    runtime.recall = recall
    saved = send(runtime, "remember that I'm vegetarian")
    assert not engine.requests  # answered without the model
    assert "I'll remember" in answer(runtime, saved) and "vegetarian" in answer(runtime, saved)
    assert [r.text for r in recall.listing(("telegram", "default", "42"))] == [
        "I'm vegetarian"]

    asked = send(runtime, "Am I vegetarian? Suggest a dinner.")
    prompt = last_user_text(engine)
    assert "\u201cI'm vegetarian\u201d" in prompt and "not instructions" in prompt
    assert prompt.endswith("Am I vegetarian? Suggest a dinner.")
    # Only the user message carries them: the system prompt (the reused prefix) is untouched.
    assert "vegetarian" not in engine.requests[-1].messages[0].text
    # The conversation keeps what the person wrote, not the recalled lines.
    history = RedisConversationHistory(runtime.client, DM, 60)
    assert [m.text for m in history.records() if m.role == "user"] == [asked.text]

    listed = send(runtime, "/memory")
    assert "1. I'm vegetarian" in answer(runtime, listed)
    send(runtime, "/forget 1")
    send(runtime, "Am I vegetarian?")
    assert "not instructions" not in last_user_text(engine)


def test_a_rerun_does_not_run_a_command_twice(runtime: Runtime, recall: LongTermMemory) -> None:
    runtime.recall = recall
    for fact in ("I like tea", "I like jazz", "I like rain"):
        send(runtime, f"remember that {fact}")
    forget = send(runtime, "/forget 1")
    # The same message delivered again (a worker died after answering, before trimming).
    runtime.client.rpush(turns.pending_key(DM), forget.model_dump_json())
    answer_pending(runtime, DM)
    assert [r.text for r in recall.listing(("telegram", "default", "42"))] == [
        "I like jazz", "I like rain"]


def test_nothing_private_reaches_a_group_reply(runtime: Runtime, engine: FakeEngine,
                                               recall: LongTermMemory) -> None:
    runtime.recall = recall
    send(runtime, "remember that my salary is 90k")
    refused = send(runtime, "remember that I like tea", conversation=GROUP)
    assert "group" in answer(runtime, refused)
    send(runtime, "what is my salary?", conversation=GROUP)
    assert "90k" not in str(engine.requests[-1].messages)
    assert [r.text for r in recall.listing(("telegram", "default", "42"))] == [
        "my salary is 90k"]
    listed = send(runtime, "/memory", conversation=GROUP)
    assert "90k" not in answer(runtime, listed)


def test_without_long_term_memory_commands_go_to_the_model(runtime: Runtime,
                                                           engine: FakeEngine) -> None:
    send(runtime, "remember that I'm vegetarian")
    assert last_user_text(engine) == "remember that I'm vegetarian"


def test_forget_me_deletes_memories_too(runtime: Runtime, recall: LongTermMemory) -> None:
    from assistant import admin_actions
    from assistant.store.audit import AuditLog

    runtime.recall = recall
    send(runtime, "remember that I'm vegetarian")
    send(runtime, "remember that I like jazz", user="7",
         conversation=ConversationKey(platform="telegram", channel="7", user="7"))
    store = recall.memories.store
    admin_actions.forget_user(store, runtime.client, "telegram", "default", "42", "user:42",
                              retention_seconds=60)
    assert recall.listing(("telegram", "default", "42")) == []
    assert [r.text for r in recall.listing(("telegram", "default", "7"))] == ["I like jazz"]
    assert AuditLog(store).recent()[0].details["memories"] == 1
