"""One turn of a conversation: memory → prompt → generate (streamed) → save → reply.

Plain functions over an ``Engine`` and a history: no Celery, no web, no llama_cpp. The worker
calls ``run_turn`` while it holds the conversation's lock (see ``assistant.turns``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Literal

from assistant import tools
from assistant.engine import Completion, Engine, GenerationRequest
from assistant.envelope import ChatMessage, Citation, Inbound, Reply, reply_id_for
from assistant.errors import InputRejected
from assistant.memory import RedisConversationHistory, Summary, build_window, needs_summary
from assistant.prompts import PromptLibrary

if TYPE_CHECKING:
    from assistant.knowledge.prompt import Grounding

log = logging.getLogger(__name__)

# Told each piece as it is generated; returning False stops the generation (a safety cut).
TokenCallback = Callable[[int, str], bool | None]
PromptCallback = Callable[[str, GenerationRequest], None]
# Given the generated text and whether it was stopped, returns the text to deliver and store,
# and whether the safety filters changed it (``assistant.safety.service.OutputGate.finish``).
Finalizer = Callable[[str, bool], tuple[str, bool]]
# Given the turn's messages, what the knowledge base found for them, or None where no
# collection may answer (assistant/knowledge/turn.py; docs/knowledge.md).
Grounder = Callable[[Sequence[Inbound]], "Grounding | None"]

FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]
# Tokens kept free besides the reply: chat-template overhead the counter cannot see exactly.
CONTEXT_MARGIN_TOKENS = 32


@dataclass(frozen=True)
class TurnConfig:
    """The model settings a turn runs with (from ``Settings``, overridable per request)."""

    max_tokens: int = 256
    temperature: float = 0.7
    assistant_name: str = "Assistant"
    # A secret planted in the system prompt (prompts/canary.toml); a reply that carries it is
    # blocked as a system prompt leak (assistant/safety/checks/canary.py). Empty: none.
    canary: str = ""


def validate_text(text: str, max_chars: int) -> str:
    """The user's text, stripped; empty or overlong text is rejected with a clear reason."""
    stripped = text.strip()
    if not stripped:
        raise InputRejected("text is empty")
    if len(stripped) > max_chars:
        raise InputRejected(f"text is {len(stripped)} characters; the limit is {max_chars}")
    return stripped


def seed_for(reply_id: str) -> int:
    """A sampling seed derived from the reply id: a rerun after a crash samples the same text."""
    return int(hashlib.sha256(reply_id.encode()).hexdigest()[:8], 16)


def merge_consecutive(messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """Join runs of same-role messages; some chat templates insist on alternating roles."""
    merged: list[ChatMessage] = []
    for message in messages:
        if (merged and merged[-1].role == message.role and message.role != "tool"
                and not merged[-1].tool_calls and not message.tool_calls):
            last = merged[-1]
            merged[-1] = last.model_copy(update={"text": f"{last.text}\n{message.text}"})
        else:
            merged.append(message)
    return tuple(merged)


def system_message(
    prompts: PromptLibrary, config: TurnConfig, platform: str, summary: str
) -> ChatMessage:
    section = prompts.render("summary_section", summary=summary) if summary else ""
    text = prompts.render(
        "system",
        assistant_name=config.assistant_name,
        platform=platform,
        today=date.today().isoformat(),
        summary=section,
    )
    if config.canary:
        # First, so the prompt's stable prefix (reused between turns) stays as long as it can.
        text = f"{prompts.render('canary', canary=config.canary)}\n{text.strip()}"
    return ChatMessage(role="system", text=text.strip())


def tool_format_of(engine: Engine) -> str | None:
    """The engine's chat-template tool format (assistant/tools.py), None when it has none."""
    found = getattr(engine, "tool_format", None)
    return found if isinstance(found, str) else None


def prompt_size(engine: Engine, messages: Sequence[ChatMessage], raw: bool) -> int:
    """The prompt's tokens: a raw prompt's text alone where the engine can count it."""
    count_raw = getattr(engine, "count_raw_tokens", None)
    if raw and count_raw is not None:
        return int(count_raw(messages[-1].text))
    return engine.count_tokens(messages)


def context_budget(engine: Engine, system: ChatMessage, max_tokens: int) -> int:
    """Tokens left for the conversation once the system prompt and the reply are reserved."""
    return engine.context_size - max_tokens - engine.count_tokens([system]) - CONTEXT_MARGIN_TOKENS


def stateless_messages(
    inbounds: Sequence[Inbound], prompts: PromptLibrary, config: TurnConfig,
    tool_format: str | None = None,
) -> tuple[ChatMessage, ...]:
    """The prompt of a turn that brings its own history (the OpenAI API): the persona with its
    system messages added, its history, the new messages, and what its tools or JSON reply need
    (``tool_format``: the chat template's own, or None, assistant/tools.py).

    The API's edge builds the same prompt to count its tokens before queueing."""
    new = [ChatMessage(role="tool" if i.tool_name else "user", text=i.text,
                       message_id=i.message_id, tool_name=i.tool_name) for i in inbounds]
    stateless = inbounds[0].history or ()
    platform = inbounds[0].conversation.platform
    # A client's system messages add to the operator's persona, never replace it: the persona
    # (and its canary) stays first, the prompt's stable prefix (issue 15, item 2).
    system = system_message(prompts, config, platform, "")
    own_system = [m.text.strip() for m in stateless if m.role == "system" and m.text.strip()]
    if own_system:
        system = system.model_copy(update={"text": "\n\n".join([system.text, *own_system])})
    rest = [m for m in stateless if m.role != "system"]
    options = inbounds[0].options
    shown = tools.for_template([system, *rest, *new], prompts, options, tool_format)
    messages = (shown[0], *merge_consecutive(shown[1:]))
    return tools.with_instructions(messages,
                                   tools.instructions(prompts, options, tool_format))


def with_recalled(new: list[ChatMessage], recalled: Sequence[str], prompts: PromptLibrary
                  ) -> list[ChatMessage]:
    """The long-term memories recalled for this turn (``assistant.recall``: quoted lines of
    the person's own earlier words) put in front of their newest message, in their voice:
    facts they told, never a system instruction. After the conversation so far, so the
    prompt's reused prefix stays as it was (docs/memory.md); the stored turn keeps only
    the message itself."""
    if not recalled or not new:
        return new
    last = new[-1]
    text = prompts.render("recalled", facts="\n".join(recalled), message=last.text)
    return [*new[:-1], last.model_copy(update={"text": text})]


def build_messages(
    inbounds: Sequence[Inbound],
    engine: Engine,
    prompts: PromptLibrary,
    config: TurnConfig,
    history: RedisConversationHistory | None,
    recalled: Sequence[str] = (),
    reserve_tokens: int = 0,
) -> tuple[ChatMessage, ...]:
    """The whole prompt for this turn: system, the memory window, then the new messages
    (``reserve_tokens`` kept free in the window for reference material)."""
    new = [ChatMessage(role="user", text=i.text, message_id=i.message_id) for i in inbounds]
    platform = inbounds[0].conversation.platform
    if inbounds[0].options.raw:
        return tuple(ChatMessage(role="user", text=i.text, message_id=i.message_id)
                     for i in inbounds[-1:])
    if inbounds[0].history is not None:
        return stateless_messages(inbounds, prompts, config, tool_format_of(engine))

    assert history is not None, "a stateful turn needs a history"
    records = history.records()
    summary = history.summary()
    system = system_message(prompts, config, platform, summary.text)
    budget = context_budget(engine, system, config.max_tokens) - reserve_tokens
    new = with_recalled(new, recalled, prompts)
    window = build_window([*records, *new], summary, budget, engine.count_tokens)
    if window.left_out:
        # Not dropped: they stay in the record and are folded into the summary after this turn.
        log.info("conversation window left out %d message(s) awaiting summary", window.left_out)
    return (system, *merge_consecutive(window.messages))


def add_references(messages: tuple[ChatMessage, ...], grounding: Grounding,
                   engine: Engine, prompts: PromptLibrary, max_tokens: int
                   ) -> tuple[tuple[ChatMessage, ...], tuple[Citation, ...]]:
    """The knowledge base's passages into the prompt, within what the context has left."""
    from assistant.knowledge.prompt import with_references

    def count(text: str) -> int:
        return engine.count_tokens([ChatMessage(role="user", text=text)])

    room = (engine.context_size - engine.count_tokens(messages) - max_tokens
            - CONTEXT_MARGIN_TOKENS)
    return with_references(messages, grounding, prompts, count, room)


def run_turn(
    inbounds: Sequence[Inbound],
    engine: Engine,
    prompts: PromptLibrary,
    config: TurnConfig,
    history: RedisConversationHistory | None,
    on_token: TokenCallback | None = None,
    on_prompt: PromptCallback | None = None,
    finalize: Finalizer | None = None,
    recalled: Sequence[str] = (),
    ground: Grounder | None = None,
) -> Reply:
    """Answer the user's message(s) in one turn and store the turn (idempotently).

    What is stored and returned is what ``finalize`` (the output safety checks) made of the
    model's text, so a cut or masked reply is remembered as the user saw it. ``recalled``:
    the person's long-term memories for this turn (``with_recalled``).
    """
    if not inbounds:
        raise ValueError("a turn needs at least one inbound message")
    first = inbounds[0]
    reply_id = reply_id_for([i.message_id for i in inbounds])
    options = first.options
    max_tokens = options.max_tokens or config.max_tokens
    turn_config = TurnConfig(
        max_tokens=max_tokens,
        temperature=config.temperature if options.temperature is None else options.temperature,
        assistant_name=config.assistant_name,
        canary=config.canary,
    )
    grounding = ground(inbounds) if ground is not None and not options.raw else None
    messages = build_messages(inbounds, engine, prompts, turn_config, history, recalled,
                              reserve_tokens=grounding.budget_tokens if grounding else 0)
    given: tuple[Citation, ...] = ()
    if grounding is not None:
        messages, given = add_references(messages, grounding, engine, prompts, max_tokens)
    if first.history is not None:
        # The API's edge refused prompts too long for the context; one that still does not
        # leave room for the reply (an admin's longer persona) gets a shorter reply, not a
        # failure that the worker would retry.
        room = engine.context_size - prompt_size(engine, messages, options.raw) \
            - CONTEXT_MARGIN_TOKENS
        max_tokens = max(1, min(max_tokens, room))
    request = GenerationRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=turn_config.temperature,
        seed=seed_for(reply_id) if options.seed is None else options.seed,
        cache_key=None if first.history is not None else first.conversation.redis_id,
        top_p=options.top_p,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        logit_bias=options.logit_bias or None,
        stop=options.stop,
        json_schema=tools.call_schema(options, tool_format_of(engine)) or options.json_schema,
        schema_or_text=tools.uses_tools(options) and not tools.must_call(options),
        raw=options.raw,
    )
    if on_prompt is not None:
        on_prompt(reply_id, request)
    pieces: list[str] = []
    stream = engine.stream(request)
    stopped = False
    try:
        while True:
            try:
                piece = next(stream)
            except StopIteration as end:
                completion: Completion = end.value
                break
            pieces.append(piece)
            if on_token is not None and on_token(len(pieces) - 1, piece) is False:
                stopped = True
                completion = Completion("stop", len(pieces))
                break
    finally:
        # Every exit (the end, a safety cut, a cancel, a publisher that raised) closes the
        # generator now, so the engine's own ``finally`` frees its lock at once instead of
        # when the exception's traceback dies: a retried turn in this process would wait
        # on that lock forever (issue 16, root cause 1).
        stream.close()
    # A raw prompt's continuation is returned as written (" Paris." after "The capital is").
    text = "".join(pieces) if options.raw else "".join(pieces).strip()
    filtered = False
    if finalize is not None:
        text, filtered = finalize(text, stopped)
    finish_reason: FinishReason = "content_filter" if filtered else completion.finish_reason
    call = None if filtered else tools.parse_call(text, options, tools.call_id(reply_id))
    if call is not None:
        text, finish_reason = "", "tool_calls"
    reply = Reply(
        message_id=reply_id,
        conversation=first.conversation,
        in_reply_to=tuple(i.message_id for i in inbounds),
        text=text,
        reply_to=dict(first.reply_to),
        finish_reason=finish_reason,
        tool_calls=() if call is None else (call,),
        prompt_tokens=prompt_size(engine, messages, options.raw),
        completion_tokens=completion.completion_tokens,
        citations=_cited(text, given) if given and call is None else (),
    )
    if history is not None and first.history is None:
        user_messages = [
            ChatMessage(role="user", text=i.text, message_id=i.message_id, created_at=i.received_at,
                        user_id=i.user_id)
            for i in inbounds
        ]
        answer = ChatMessage(role="assistant", text=text, message_id=reply_id)
        history.append([*user_messages, answer], turn_id=reply_id)
    return reply


def _cited(text: str, given: tuple[Citation, ...]) -> tuple[Citation, ...]:
    from assistant.knowledge.prompt import cited

    return cited(text, given)


def summarise_if_needed(
    engine: Engine,
    prompts: PromptLibrary,
    config: TurnConfig,
    history: RedisConversationHistory,
    platform: str,
) -> bool:
    """Fold the oldest unsummarised turns into the running summary once the window fills."""
    records = history.records()
    summary = history.summary()
    system = system_message(prompts, config, platform, summary.text)
    budget = context_budget(engine, system, config.max_tokens)
    fold = needs_summary(records, summary, budget, engine.count_tokens)
    if not fold:
        return False
    part = records[summary.covers : summary.covers + fold]
    # The instruction must fit the context too: fold fewer messages (whole pairs) if needed,
    # and as a last resort cut the transcript (~3 characters per token, on the safe side).
    while len(part) > 2 and engine.count_tokens(part) > budget:
        part = part[:-2]
    fold = len(part)
    transcript = "\n".join(f"{m.role}: {m.text}" for m in part)[: budget * 3]
    # The instructions as a system message of their own: every summary turn starts with the
    # same tokens, whose saved state the engine restores (issue 19).
    instruction = prompts.render("summarise")
    given = prompts.render(
        "summarise_input", previous_summary=summary.text or "(none)", transcript=transcript
    )
    request = GenerationRequest(
        messages=(ChatMessage(role="system", text=instruction),
                  ChatMessage(role="user", text=given)),
        max_tokens=min(160, config.max_tokens),
        temperature=0.0,
        seed=0,
    )
    text = "".join(engine.stream(request)).strip()
    history.set_summary(Summary(text=text or summary.text, covers=summary.covers + fold))
    log.info("folded %d message(s) into the conversation summary", fold)
    return True
