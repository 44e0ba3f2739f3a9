"""Answer everything pending in one conversation, one turn at a time.

This is the worker's whole job as a plain function (the Celery task only calls it), so it runs
in tests against a real or fake Redis with a fake engine.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import redis

from assistant import keys, turns
from assistant.cancel import CancelCheck
from assistant.delivery import ReplyStream, Sender, claim_delivery, release_delivery
from assistant.engine import Engine, GenerationRequest
from assistant.envelope import ChatMessage, ConversationKey, Inbound, Reply, reply_id_for, utcnow
from assistant.live_prompts import persona_versions, trace_versions_key
from assistant.logs import log_context
from assistant.memory import RedisConversationHistory
from assistant.observe import TurnObserver, TurnStats, notify
from assistant.pipeline import PromptCallback, TurnConfig, run_turn, summarise_if_needed
from assistant.prompts import PromptLibrary
from assistant.stream import COALESCE_SECONDS, Publisher, stored_reply

log = logging.getLogger(__name__)

TRACE_TTL_SECONDS = 3600


@dataclass(frozen=True)
class Outcome:
    """How a call went: turns answered, or how long until another holder's lock expires."""

    turns: int = 0
    busy_for: float | None = None


@dataclass
class Runtime:
    """What answering needs; built once per worker process."""

    client: redis.Redis
    engine: Engine
    prompts: PromptLibrary
    config: TurnConfig
    retention_seconds: int
    max_deliveries: int
    senders: Mapping[str, Sender]
    trace_prompts: bool = False
    stream_interval_seconds: float = COALESCE_SECONDS
    max_input_chars: int | None = None
    observers: Sequence[TurnObserver] = ()
    safety: Any = None  # assistant.safety.service.SafetyService, or None when turned off
    # assistant.live_prompts.LivePrompts: the admins' newest prompt versions, for each turn.
    live_prompts: Any = None
    # Told per generated piece that the turn progresses (worker/watchdog.py); no I/O.
    on_progress: Callable[[], None] | None = None
    # assistant.recall.LongTermMemory: people's long-term memories, or None when turned off.
    recall: Any = None
    # assistant.knowledge.turn.KnowledgeGrounder: the documents a conversation's place may
    # use (docs/knowledge.md); None: no knowledge base.
    knowledge: Any = None


def answer_pending(runtime: Runtime, conversation: ConversationKey) -> Outcome:
    """Answer the conversation's pending messages; never two turns of it at once."""
    answered = 0
    while True:
        lock = turns.ConversationLock(runtime.client, conversation)
        if not lock.acquire():
            if answered:
                # The new holder answers whatever arrived after our last look.
                return Outcome(turns=answered)
            return Outcome(busy_for=lock.ttl_seconds())
        released = False
        try:
            batch = turns.pending(runtime.client, conversation)
            while batch:
                with log_context(message_id=",".join(i.message_id for i in batch)):
                    consumed = answer_batch(runtime, batch)
                # Trim what this turn answered and look for more in one round trip.
                batch = turns.done_with_then_pending(runtime.client, conversation, consumed)
                answered += 1
            # A message queued between our last look and the release found the lock taken
            # and backed off: look once more once the lock is free (same round trip).
            more = lock.release_then_exists(turns.pending_key(conversation))
            released = True
        finally:
            if not released:
                lock.release()
        if not more:
            return Outcome(turns=answered)


def answer_batch(runtime: Runtime, batch: list[Inbound]) -> int:
    """Answer the oldest pending messages as one turn; returns how many of them it consumed.

    The steps: ``screen`` (dead letters, too long, input safety, memory commands: each gets
    its fixed reply at once), ``replay`` (a reply a previous run stored), ``generate`` (the
    model, through ``TurnOutput``), then ``after_turn`` (observers, summary).
    """
    if runtime.live_prompts is not None:
        runtime = runtime.live_prompts.apply(runtime)
    fresh = screen(runtime, batch)
    if not fresh:
        return len(batch)
    replayed = replay(runtime, batch, fresh)
    if replayed is not None:
        return replayed
    generate(runtime, fresh)
    return len(batch)


def notice_reply(inbound: Inbound, text: str,
                 finish_reason: Literal["error", "content_filter"] = "error") -> Reply:
    """A fixed reply to one message (an apology, a notice, a refusal)."""
    return Reply(message_id=reply_id_for([inbound.message_id]),
                 conversation=inbound.conversation, in_reply_to=(inbound.message_id,),
                 text=text, reply_to=dict(inbound.reply_to),
                 finish_reason=finish_reason)


def screen(runtime: Runtime, batch: list[Inbound]) -> list[Inbound]:
    """The messages the model should answer; every other one gets its fixed reply now: a
    message that failed too many deliveries (dead letter), one too long, one the input
    safety checks refused, a long-term memory command. A masked message goes on masked."""
    client = runtime.client
    fresh: list[Inbound] = []
    counts = turns.count_deliveries(client, batch[0].conversation,
                                    [i.message_id for i in batch], runtime.retention_seconds)
    for inbound, deliveries in zip(batch, counts, strict=True):
        if deliveries > runtime.max_deliveries:
            log.error("message %s failed %d times; moved to the dead-letter list",
                      inbound.message_id, deliveries - 1)
            turns.dead_letter(client, inbound, f"failed {deliveries - 1} deliveries")
            deliver(runtime, [inbound.message_id],
                    notice_reply(inbound, runtime.prompts.render("dead_letter")), inbound)
        elif runtime.max_input_chars and len(inbound.text) > runtime.max_input_chars:
            # Slack and Telegram pass platform messages on as they are (Telegram allows 4096
            # characters): one that would crowd the context out gets this notice in the chat,
            # not the model. The web API and /v1 answer such a request with an HTTP error
            # before queueing it, so there this is only the backstop.
            text = runtime.prompts.render("too_long", limit=f"{runtime.max_input_chars:,}")
            deliver(runtime, [inbound.message_id], notice_reply(inbound, text), inbound)
        elif runtime.safety is not None:
            # Input safety (docs/safety.md): a blocked message gets the refusal and never
            # reaches the model nor the memory; a masked one goes on with its PII redacted.
            screened = runtime.safety.screen_input(inbound)
            if screened.refusal is not None:
                deliver(runtime, [inbound.message_id],
                        notice_reply(inbound, screened.refusal, "content_filter"), inbound)
            else:
                fresh.append(screened.inbound)
        else:
            fresh.append(inbound)
    if runtime.recall is not None:
        fresh = answer_memory_commands(runtime, fresh)
    return fresh


def replay(runtime: Runtime, batch: list[Inbound], fresh: list[Inbound]) -> int | None:
    """Deliver the reply a previous run stored for these messages, then died before removing
    them from pending; returns how many of ``batch`` it answered (None: nothing stored).
    Messages that arrived since then wait for the next turn. The stored reply is found by
    the conversation and the message id together, never by the id alone."""
    stored = stored_reply(runtime.client, fresh[0].conversation, fresh[0].message_id)
    if stored is None:
        return None
    deliver(runtime, list(stored.in_reply_to), stored, fresh[0])
    answered_ids = set(stored.in_reply_to)
    return 1 + max(n for n, i in enumerate(batch) if i.message_id in answered_ids)


class TurnOutput:
    """Where the engine's pieces go during a turn: the cancel check, the output safety gate,
    the token stream for waiting clients (``Publisher``) and the platform message that
    shows the reply as it grows; ``on_token`` is what the engine feeds, ``finalize`` what
    checks the end of the reply."""

    def __init__(self, runtime: Runtime, fresh: list[Inbound],
                 shown: ReplyStream | None) -> None:
        self.runtime = runtime
        self.shown = shown
        # A raw completion (the legacy /v1/completions) keeps its spacing as written.
        self.publisher = Publisher(runtime.client, fresh[0].conversation,
                                   [i.message_id for i in fresh],
                                   runtime.stream_interval_seconds,
                                   strip=not fresh[0].options.raw)
        self.gate = runtime.safety.gate(fresh[0]) if runtime.safety is not None else None
        # No platform delivers it: the reply is only for waiting clients, and once they have
        # all gone, generating it is wasted work (assistant/cancel.py).
        self.cancelled = CancelCheck(runtime.client, fresh) if shown is None else None
        self.pieces: list[str] = []
        self.first_token_at: float | None = None

    @property
    def finalize(self) -> Callable[[str, bool], tuple[str, bool]] | None:
        return self.gate.finish if self.gate is not None else None

    def on_token(self, index: int, piece: str) -> bool:
        """Show ``piece`` once the output checks passed it; False stops the generation."""
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        if self.runtime.on_progress is not None:
            self.runtime.on_progress()
        if self.cancelled is not None and self.cancelled():
            return False
        if self.gate is not None:
            # Only text the output checks passed is shown; None: the reply is cut.
            released = self.gate.feed(piece)
            if released is None:
                return False
            if not released:
                return True
            piece = released
        self.publisher.token(piece)
        self.pieces.append(piece)
        if self.shown is not None:
            self.shown.update("".join(self.pieces))
        return True


def generate(runtime: Runtime, fresh: list[Inbound]) -> None:
    """Answer ``fresh`` with the model (or send the reply a previous run kept in the memory),
    deliver it, then ``after_turn``."""
    client = runtime.client
    ids = [i.message_id for i in fresh]
    stateless = fresh[0].history is not None
    history = None if stateless else RedisConversationHistory(
        client, fresh[0].conversation, runtime.retention_seconds
    )
    sender = runtime.senders.get(fresh[0].conversation.platform)
    reply_id = reply_id_for(ids)
    shown: ReplyStream | None = None
    output: TurnOutput | None = None
    started = time.monotonic()
    try:
        shown = sender.open(fresh[0], reply_id) if sender is not None else None
        saved = history.saved_reply(reply_id) if history is not None else None
        if saved is not None:
            # A previous run stored the turn, then died before storing the reply: send that.
            reply = Reply(message_id=saved.message_id, conversation=fresh[0].conversation,
                          in_reply_to=tuple(ids), text=saved.text,
                          reply_to=dict(fresh[0].reply_to))
        else:
            output = TurnOutput(runtime, fresh, shown)
            config = runtime.config
            if runtime.safety is not None and runtime.safety.canary:
                config = replace(config, canary=runtime.safety.canary)
            reply = run_turn(fresh, runtime.engine, runtime.prompts, config, history,
                             on_token=output.on_token,
                             on_prompt=trace_prompt(client, runtime.prompts)
                             if runtime.trace_prompts else None,
                             finalize=output.finalize,
                             recalled=recalled_for(runtime, fresh),
                             ground=runtime.knowledge)
        # The rest of the reply (held back by the gate, or the cut notice), the stored reply
        # and ``done`` go out in one round trip.
        deliver(runtime, ids, reply, fresh[0], shown,
                output.publisher if output is not None else None)
    finally:
        if shown is not None:
            shown.close()
    after_turn(runtime, fresh, reply, history, started, output)


def after_turn(runtime: Runtime, fresh: list[Inbound], reply: Reply,
               history: RedisConversationHistory | None, started: float,
               output: TurnOutput | None) -> None:
    """Once the reply is delivered: tell the observers (archive, stats, metrics), keep the
    automatic long-term memories (when on), then update the conversation's running summary
    (a failure is tried again after the next turn).
    ``output`` is None when no model ran (the reply a previous run kept was sent)."""
    first = fresh[0]
    first_token_at = output.first_token_at if output is not None else None
    notify(runtime.observers, TurnStats(
        platform=first.conversation.platform, workspace=first.conversation.workspace,
        channel=first.conversation.channel, user_id=first.user_id, messages=len(fresh),
        generated=output is not None,  # else the reply a previous run kept was sent
        queue_wait_s=max(0.0, (utcnow() - first.received_at).total_seconds()
                         - (time.monotonic() - started)),
        ttft_s=None if first_token_at is None else first_token_at - started,
        total_s=time.monotonic() - started, prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens, finish_reason=reply.finish_reason,
        conversation=first.conversation, inbounds=tuple(fresh), reply=reply,
        persona_version=persona_versions(runtime.prompts).get("system")))
    if runtime.recall is not None:  # after delivery; never raises (docs/memory.md)
        from assistant.recall.service import notice_after_turn

        notice_after_turn(runtime.recall, runtime.engine, runtime.prompts, runtime.safety, fresh)
    if history is not None:
        try:
            summarise_if_needed(runtime.engine, runtime.prompts, runtime.config, history,
                                first.conversation.platform)
        except Exception:
            # The reply is delivered; a failed summary is tried again after the next turn.
            log.exception("could not update the conversation summary")


def answer_memory_commands(runtime: Runtime, fresh: list[Inbound]) -> list[Inbound]:
    """Carry out the long-term memory commands among the (screened, masked) messages and
    answer each at once (docs/memory.md); returns the messages left for the model. A rerun
    delivers the stored answer again instead of running a command twice."""
    from assistant.recall.commands import parse

    rest: list[Inbound] = []
    for inbound in fresh:
        # A raw prompt (the legacy /v1/completions) is text to continue, never a command.
        command = None if inbound.options.raw else parse(inbound.text)
        if command is None:
            rest.append(inbound)
            continue
        stored = stored_reply(runtime.client, inbound.conversation, inbound.message_id)
        if stored is None:
            name, variables = runtime.recall.run(command, inbound)
            stored = Reply(message_id=reply_id_for([inbound.message_id]),
                           conversation=inbound.conversation, in_reply_to=(inbound.message_id,),
                           text=runtime.prompts.render(name, **variables),
                           reply_to=dict(inbound.reply_to))
        deliver(runtime, [inbound.message_id], stored, inbound)
    return rest


def recalled_for(runtime: Runtime, fresh: list[Inbound]) -> list[str]:
    """The person's long-term memories for this turn's prompt; none if the store fails (the
    turn goes on without them)."""
    if runtime.recall is None:
        return []
    engine = runtime.engine
    overhead = engine.count_tokens([ChatMessage(role="user", text="")])
    try:
        return runtime.recall.recall(  # type: ignore[no-any-return]
            fresh, lambda line: engine.count_tokens([ChatMessage(role="user", text=line)])
            - overhead + 1)
    except Exception:
        log.exception("could not recall long-term memories; answering without them")
        return []


trace_key = keys.trace


def trace_prompt(client: redis.Redis, prompts: PromptLibrary | None = None) -> PromptCallback:
    """Keep the prompt a reply was generated from (ASSISTANT_TRACE_PROMPTS; for debugging),
    and beside it the persona versions it used (``assistant.live_prompts.traced_versions``)."""
    versions = json.dumps(persona_versions(prompts) if prompts is not None else {})

    def record(reply_id: str, request: GenerationRequest) -> None:
        messages = [m.model_dump(mode="json") for m in request.messages]
        with client.pipeline(transaction=False) as pipe:
            pipe.set(trace_key(reply_id), json.dumps(messages), ex=TRACE_TTL_SECONDS)
            pipe.set(trace_versions_key(trace_key(reply_id)), versions, ex=TRACE_TTL_SECONDS)
            pipe.execute()

    return record


def deliver(runtime: Runtime, message_ids: list[str], reply: Reply, inbound: Inbound,
            shown: ReplyStream | None = None, publisher: Publisher | None = None) -> None:
    """Store and announce the reply, then post its final form on the platform, once.

    ``shown`` is the stream that showed the reply while it was generated; without one (a
    rerun, an apology) a stream is opened only if the reply was not posted yet.
    ``publisher`` is the one that streamed the reply's tokens (its last batch goes out first).
    """
    (publisher or Publisher(runtime.client, inbound.conversation, message_ids)).done(reply)
    sender = runtime.senders.get(inbound.conversation.platform)
    if sender is None or not claim_delivery(runtime.client, reply.message_id):
        return
    stream = shown if shown is not None else sender.open(inbound, reply.message_id)
    try:
        stream.finish(reply)
    except Exception:
        release_delivery(runtime.client, reply.message_id)
        raise
    finally:
        if stream is not shown:
            stream.close()
