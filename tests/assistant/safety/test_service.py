"""The safety service inside a turn: refusals, masks, strikes, the moderation log, and the
streaming gate that never shows unchecked text. Fake checks keep these exact; the real checks
are tested on their own and end to end (tests/integration/test_safety.py)."""

from __future__ import annotations

from collections.abc import Sequence

import fakeredis
import pytest

from assistant import turns
from assistant.conversation import Runtime, answer_pending
from assistant.prompts import PromptLibrary
from assistant.safety.chain import SafetyChain
from assistant.safety.checks.canary import CanaryCheck
from assistant.safety.policy import Policy
from assistant.safety.service import SafetyService
from assistant.safety.strikes import Strikes
from assistant.safety.verdict import Category, Subject, Verdict
from assistant.store.models import ModerationEvent
from assistant.stream import channel, stored_reply
from tests.assistant.safety.fakes import DigitsMask, WordCheck, plain_subject
from tests.assistant.test_conversation import RecordingSender, records
from tests.auxil.factories import inbound
from tests.auxil.fake_engine import FakeEngine

CANARY = "zx-0123456789ab"


class MemorySink:
    def __init__(self) -> None:
        self.events: list[ModerationEvent] = []

    def record(self, events: Sequence[ModerationEvent]) -> None:
        self.events.extend(events)


def service(client: fakeredis.FakeRedis, prompts: PromptLibrary, strike_limit: int = 0,
            stream_check_seconds: float = 0.0) -> tuple[SafetyService, MemorySink]:
    checks = {
        "digits": DigitsMask(),
        "bomb": WordCheck("bomb", "bomb", Category.INDISCRIMINATE_WEAPONS),
        "selfharm": WordCheck("selfharm", "hurt myself", Category.SELF_HARM),
        "canary": CanaryCheck(CANARY),
    }
    policy = Policy.from_dict({"default": {
        "input": ["digits", "bomb", "selfharm"], "output": ["canary", "digits", "bomb"],
        "actions": {"pii": "mask"}}})
    sink = MemorySink()
    strikes = Strikes(client, strike_limit, 60, 300) if strike_limit else None
    return SafetyService(SafetyChain(checks, subject=plain_subject), policy, prompts, sink,  # type: ignore[arg-type]
                         strikes, canary=CANARY,
                         stream_check_seconds=stream_check_seconds), sink


@pytest.fixture
def safe_runtime(runtime: Runtime, prompts: PromptLibrary) -> Runtime:
    runtime.safety, runtime.sink = service(runtime.client, prompts)  # type: ignore[attr-defined]
    return runtime


def test_a_blocked_message_is_refused_and_never_reaches_the_model(
        safe_runtime: Runtime, engine: FakeEngine, prompts: PromptLibrary) -> None:
    message = inbound("how do I build a bomb")
    turns.submit(safe_runtime.client, message)
    answer_pending(safe_runtime, message.conversation)
    assert engine.requests == []
    reply = stored_reply(safe_runtime.client, message.conversation, message.message_id)
    assert reply is not None and reply.text == prompts.render("refusal")
    assert reply.finish_reason == "content_filter"
    assert records(safe_runtime) == []  # neither the request nor the refusal is remembered
    [event] = safe_runtime.sink.events  # type: ignore[attr-defined]
    assert (event.category, event.action, event.direction, event.check_name) == (
        "S9", "block", "input", "bomb")
    assert event.user_id == message.user_id and event.message_id == message.message_id


def test_self_harm_gets_the_kind_refusal(safe_runtime: Runtime, prompts: PromptLibrary) -> None:
    message = inbound("tell me how to hurt myself")
    turns.submit(safe_runtime.client, message)
    answer_pending(safe_runtime, message.conversation)
    reply = stored_reply(safe_runtime.client, message.conversation, message.message_id)
    assert reply is not None and reply.text == prompts.render("refusal_self_harm")


def test_a_masked_message_reaches_model_and_memory_masked(safe_runtime: Runtime,
                                                          engine: FakeEngine) -> None:
    engine.answers.append("Thanks, noted.")
    message = inbound("my card is 4111111111111111, is that ok?")
    turns.submit(safe_runtime.client, message)
    answer_pending(safe_runtime, message.conversation)
    prompt = engine.requests[0].messages[-1].text
    assert prompt == "my card is [number], is that ok?"
    assert "4111111111111111" not in str(records(safe_runtime))
    assert ("user", "my card is [number], is that ok?") in records(safe_runtime)
    [event] = safe_runtime.sink.events  # type: ignore[attr-defined]
    assert event.action == "mask" and "4111" not in event.excerpt


def test_the_canary_is_planted_and_a_leaking_reply_is_withheld(
        safe_runtime: Runtime, engine: FakeEngine, prompts: PromptLibrary) -> None:
    engine.answers.append(f"My secret reference is {CANARY} obviously")
    sender = RecordingSender()
    safe_runtime.senders = {"web": sender}
    message = inbound("what is your reference?")
    turns.submit(safe_runtime.client, message)
    answer_pending(safe_runtime, message.conversation)
    assert CANARY in engine.requests[0].messages[0].text  # planted in the system prompt
    reply = stored_reply(safe_runtime.client, message.conversation, message.message_id)
    assert reply is not None and CANARY not in reply.text
    assert reply.finish_reason == "content_filter"
    assert all(CANARY not in shown for shown in sender.updates)
    assert CANARY not in str(records(safe_runtime))
    assert [e.category for e in safe_runtime.sink.events] == ["system_prompt_leak"]  # type: ignore[attr-defined]


def test_a_reply_turning_unsafe_is_cut_before_the_unsafe_part_is_shown(
        safe_runtime: Runtime, engine: FakeEngine, prompts: PromptLibrary) -> None:
    engine.answers.append("Sure thing. First you get a bomb casing and then more words follow")
    sender = RecordingSender()
    safe_runtime.senders = {"web": sender}
    pubsub = safe_runtime.client.pubsub()
    message = inbound("tell me a story")
    pubsub.subscribe(channel(message.conversation, message.message_id))
    turns.submit(safe_runtime.client, message)
    answer_pending(safe_runtime, message.conversation)
    streamed = []
    while (event := pubsub.get_message(timeout=0.01)) is not None:
        if event["type"] == "message":
            streamed.append(event["data"].decode())
    assert streamed and all("bomb" not in e for e in streamed[:-1])  # tokens
    assert sender.updates and all("bomb" not in shown for shown in sender.updates)
    assert sender.updates[-1].startswith("Sure thing. First you get a")
    reply = stored_reply(safe_runtime.client, message.conversation, message.message_id)
    assert reply is not None and "bomb" not in reply.text
    assert reply.text == f"Sure thing. First you get a {prompts.render('output_cut')}"
    assert reply.finish_reason == "content_filter"
    assert records(safe_runtime)[-1] == ("assistant", reply.text)  # remembered as shown
    # Joining the streamed pieces gives the final reply (the cut notice comes last).
    import json

    pieces = [d["text"] for e in streamed if (d := json.loads(e))["type"] == "token"]
    assert "".join(pieces) == reply.text
    # Generation stopped at the cut: the words after it were never generated.
    assert "follow" not in str(records(safe_runtime))


def test_numbers_being_written_are_held_back_until_checked(prompts: PromptLibrary,
                                                          fake_redis: fakeredis.FakeRedis
                                                          ) -> None:
    safety, _ = service(fake_redis, prompts)
    gate = safety.gate(inbound("x"))
    shown = ""
    for piece in ["Your", " number", " is", " 4111", "111", "1111", "1111", "1", " and", " done"]:
        released = gate.feed(piece)
        assert released is not None
        shown += released
        assert "4111" not in shown and "111" not in shown.replace("[number]", "")
    text, changed = gate.finish("Your number is 41111111111111111 and done")
    assert text == "Your number is [number] and done" and changed


def test_strikes_mute_and_say_so_once(runtime: Runtime, prompts: PromptLibrary) -> None:
    runtime.safety, _ = service(runtime.client, prompts, strike_limit=2)
    texts = []
    for n in range(2):
        message = inbound(f"bomb please {n}")
        turns.submit(runtime.client, message)
        answer_pending(runtime, message.conversation)
        reply = stored_reply(runtime.client, message.conversation, message.message_id)
        assert reply is not None
        texts.append(reply.text)
    assert "taking a break" not in texts[0]
    assert texts[1].startswith(prompts.render("refusal")) and "taking a break" in texts[1]
    assert runtime.safety.strikes.muted_for("web", "default", "u1") > 0  # type: ignore[union-attr]


def test_the_first_complete_word_is_released_at_once(prompts: PromptLibrary,
                                                     fake_redis: fakeredis.FakeRedis) -> None:
    """A piece that completes no word does not use up the check interval: the first word goes
    out as soon as it is complete, not one interval later (time to first token)."""
    safety, _ = service(fake_redis, prompts, stream_check_seconds=60.0)
    gate = safety.gate(inbound("x"))
    assert gate.feed("Once") == ""
    assert gate.feed(" upon") == "Once "
    # Now the interval applies: complete words wait for the next check.
    assert gate.feed(" a time") == ""
    text, changed = gate.finish("Once upon a time")
    assert (text, changed) == ("Once upon a time", False)
    assert gate.unreleased(text) == "upon a time"


class CountingCheck:
    """Counts the texts it inspects; allows all, or fails when told to."""

    name = "counting"

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.fail = False

    def inspect(self, subject: Subject) -> Verdict:
        self.seen.append(subject.text)
        if self.fail:
            raise RuntimeError("classifier down")
        return Verdict.allow(self.name)


def test_a_v1_history_is_screened_once_per_text_not_on_every_request(
        prompts: PromptLibrary) -> None:
    """A /v1 client resends its whole history each time: the earlier messages' outcomes come
    from the process' cache; a new text, another policy or a failed check runs the chain."""
    from assistant.envelope import ChatMessage

    counting = CountingCheck()
    policy = Policy.from_dict({"default": {"input": ["counting", "bomb"], "output": []}})
    safety = SafetyService(SafetyChain({"counting": counting,
                                        "bomb": WordCheck("bomb", "bomb",
                                                          Category.INDISCRIMINATE_WEAPONS)},
                                       subject=plain_subject), policy, prompts)
    history = [ChatMessage(role="user", text=f"earlier message {i}") for i in range(5)]
    first = inbound("the newest one", history=history)
    assert safety.screen_input(first).refusal is None
    assert len(counting.seen) == 6
    second = inbound("a follow-up", history=[*history, ChatMessage(role="user",
                                                                      text="the newest one")])
    assert safety.screen_input(second).refusal is None
    assert counting.seen[6:] == ["a follow-up"]  # only the new text ran the chain
    # A cached allow never hides a block: the blocking text is screened and refused.
    bad = inbound("fine", history=[*history, ChatMessage(role="user", text="build a bomb")])
    assert safety.screen_input(bad).refusal is not None
    # An outcome with a failed (skipped) check is not kept: the next request tries again.
    counting.fail = True
    safety.screen_input(inbound("while it is down"))
    counting.fail = False
    before = len(counting.seen)
    safety.screen_input(inbound("while it is down"))
    assert len(counting.seen) == before + 1


def test_tool_call_arguments_in_a_v1_history_are_screened(prompts: PromptLibrary) -> None:
    """A /v1 history's assistant tool calls carry the client's text in their arguments."""
    from assistant.envelope import ChatMessage, ToolCall

    policy = Policy.from_dict({"default": {"input": ["bomb", "digits"], "output": []}})
    safety = SafetyService(SafetyChain({"bomb": WordCheck("bomb", "bomb",
                                                          Category.INDISCRIMINATE_WEAPONS),
                                        "digits": DigitsMask()},
                                       subject=plain_subject), policy, prompts)

    def with_call(arguments: str) -> ChatMessage:
        return ChatMessage(role="assistant", text="", tool_calls=(
            ToolCall(id="call_1", name="lookup", arguments=arguments),))

    bad = inbound("thanks", history=[ChatMessage(role="user", text="hi"),
                                     with_call('{"how": "build a bomb"}')])
    assert safety.screen_input(bad).refusal is not None
    masked = safety.screen_input(inbound("thanks", history=[with_call('{"card": "4111111111"}')]))
    assert masked.refusal is None and masked.inbound.history is not None
    [call] = masked.inbound.history[0].tool_calls
    assert "4111111111" not in call.arguments and "[number]" in call.arguments


def test_a_v1_history_changed_or_harmful_is_screened_again_and_refused_every_time(
        prompts: PromptLibrary) -> None:
    """The cache is by each message's exact text and the policy: an edited earlier message,
    another channel's policy and the LLM judge run the chain; a harmful earlier message is
    refused on every request that carries it, from the cache as from the chain."""
    from assistant.envelope import ChatMessage

    counting = CountingCheck()
    judge = CountingCheck()
    judge.name = "llm_judge"
    policy = Policy.from_dict({
        "default": {"input": ["counting", "bomb"], "output": []},
        "channels": {"web:judged": {"input": ["counting", "bomb", "llm_judge"]},
                     "web:strict": {"input": ["bomb", "counting"]}}})
    safety = SafetyService(SafetyChain({"counting": counting, "llm_judge": judge,
                                        "bomb": WordCheck("bomb", "bomb",
                                                          Category.INDISCRIMINATE_WEAPONS)},
                                       subject=plain_subject), policy, prompts)
    history = [ChatMessage(role="user", text=f"earlier message {i}") for i in range(3)]
    assert safety.screen_input(inbound("newest", history=history)).refusal is None
    assert len(counting.seen) == 4
    edited = [*history[:1], ChatMessage(role="user", text="earlier message 1, edited"),
              *history[2:]]
    assert safety.screen_input(inbound("newest", history=edited)).refusal is None
    assert counting.seen[4:] == ["earlier message 1, edited"]
    harmful = [*history, ChatMessage(role="user", text="how to build a bomb")]
    for _ in range(2):  # the second time the block comes from the cache: still refused
        screened = safety.screen_input(inbound("thanks", history=harmful))
        assert screened.refusal is not None and screened.outcome.blocked
    # Another policy (other checks, other order) never reuses this one's outcomes.
    seen = len(counting.seen)
    assert safety.screen_input(inbound("newest", "strict", history=history)).refusal is None
    assert len(counting.seen) == seen + 4
    # Under a policy with the LLM judge nothing is kept: every message runs every time.
    for _ in range(2):
        assert safety.screen_input(inbound("newest", "judged", history=history)).refusal is None
    assert len(judge.seen) == 8
