"""What the worker calls: screen a message before the model, gate the streamed reply, check
the final reply, and log every non-allow verdict to the moderation log.

``screen_input`` and ``OutputGate`` hold the whole safety behaviour of a turn; the chain and
the policy decide, this module acts (refusal texts from ``prompts/``, strikes, logging).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from assistant.envelope import Inbound
from assistant.limits import describe_wait
from assistant.prompts import PromptLibrary
from assistant.safety.chain import Outcome, SafetyChain
from assistant.safety.policy import ChannelPolicy, Policy
from assistant.safety.strikes import Strikes
from assistant.safety.verdict import Action, Category, Direction, Verdict
from assistant.store.models import ModerationEvent

log = logging.getLogger(__name__)

EXCERPT_CHARS = 200
# A refusal prompt per category where a kinder or clearer text fits (else ``refusal``).
REFUSAL_PROMPTS = {
    Category.SELF_HARM: "refusal_self_harm",
    Category.PROMPT_INJECTION: "refusal_injection",
}
# While streaming, text is held back until it ends at a word boundary, and a trailing run of
# digit groups ("4111 1111 ...") is held back whole, so a card or phone number being written
# is checked complete before any of it is shown.
_TRAILING_NUMBER = re.compile(r"(?:[+(]?[0-9][0-9()\-./]*\s*)+$")
# Input outcomes kept per process, by policy and text: a /v1 client sends its whole history
# with every request, and each earlier message was screened when it was the newest (issue 19:
# re-screening a 2,500-token history took ~0.9 s per request on this machine).
INPUT_CACHE_ENTRIES = 4096
UNCACHED_CHECK = "llm_judge"  # a model that may time out: its outcome is never reused


class ModerationSink(Protocol):
    def record(self, events: Sequence[ModerationEvent]) -> None: ...


@dataclass(frozen=True)
class Screened:
    """The input's fate: ``inbound`` (masked if needed) goes on, or ``refusal`` is sent."""

    inbound: Inbound
    outcome: Outcome
    refusal: str | None = None


@dataclass
class SafetyService:
    chain: SafetyChain
    policy: Policy
    prompts: PromptLibrary
    moderation: ModerationSink | None = None
    strikes: Strikes | None = None
    canary: str = ""
    stream_check_seconds: float = 0.1
    # Told every non-allow verdict (the worker counts them in Prometheus); must not raise.
    on_verdict: Callable[[Direction, Verdict], None] | None = None
    _inputs: OrderedDict[tuple[object, ...], Outcome] = field(default_factory=OrderedDict,
                                                               repr=False)
    _inputs_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run_input(self, text: str, policy: ChannelPolicy) -> Outcome:
        """The input chain's outcome for ``text`` under ``policy``, from the process' cache
        when the same text was screened under the same policy before (the checks depend on
        nothing else: the chain is a pure function of both)."""
        key = (policy.input, tuple(sorted((str(k), str(v)) for k, v in policy.actions.items())),
               hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
        with self._inputs_lock:
            cached = self._inputs.get(key)
            if cached is not None:
                self._inputs.move_to_end(key)
                return cached
        outcome = self.chain.run(text, "input", policy)
        if not outcome.complete or UNCACHED_CHECK in policy.input:
            return outcome  # a skipped check, or the judge (its failures are verdicts)
        with self._inputs_lock:
            self._inputs[key] = outcome
            while len(self._inputs) > INPUT_CACHE_ENTRIES:
                self._inputs.popitem(last=False)
        return outcome

    def warm(self) -> None:
        """Load and train every classifier now (a worker does it before its first turn)."""
        policy = self.policy.for_channel("web", "default", "warm-up")
        self.chain.run("Hello! How are you today?", "input", policy)
        self.chain.run("I'm well, thank you for asking.", "output", policy)

    def policy_for(self, inbound: Inbound) -> ChannelPolicy:
        key = inbound.conversation
        return self.policy.for_channel(key.platform, key.workspace, key.channel)

    # -- input ------------------------------------------------------------------------------

    def screen_input(self, inbound: Inbound) -> Screened:
        policy = self.policy_for(inbound)
        outcome = self.run_input(inbound.text, policy)
        if inbound.history and not outcome.blocked:
            # A /v1 client sends the whole conversation, system messages included: every
            # message of it is the client's text, screened like the last one (issue 15, 2).
            outcome, inbound = self._screen_history(inbound, policy, outcome)
        self.log(inbound, "input", outcome)
        if outcome.blocked:
            refusal = self.refusal(outcome.block)
            if policy.strikes and self.strikes is not None:
                key = inbound.conversation
                muted = self.strikes.strike(key.platform, key.workspace, inbound.user_id)
                if muted:
                    log.warning("user %s muted for %d s after repeated blocked messages",
                                inbound.user_id, muted)
                    self.log_mute(inbound, muted)
                    refusal += " " + self.prompts.render("muted", wait=describe_wait(muted))
            return Screened(inbound, outcome, refusal)
        if outcome.text != inbound.text:
            return Screened(inbound.model_copy(update={"text": outcome.text}), outcome)
        return Screened(inbound, outcome)

    def _screen_history(self, inbound: Inbound, policy: ChannelPolicy, last: Outcome
                        ) -> tuple[Outcome, Inbound]:
        """The first blocking outcome among the client's earlier messages, else ``last``; and
        the inbound with the masks of every earlier message applied."""
        assert inbound.history is not None
        history = []
        for message in inbound.history:
            outcome = self.run_input(message.text, policy)
            if outcome.blocked:
                return outcome, inbound
            update: dict[str, Any] = {"text": outcome.text} if outcome.text != message.text \
                else {}
            # An assistant message's tool calls are the client's text too (their arguments).
            calls = []
            for call in message.tool_calls:
                checked = self.run_input(call.arguments, policy)
                if checked.blocked:
                    return checked, inbound
                calls.append(call.model_copy(update={"arguments": checked.text})
                             if checked.text != call.arguments else call)
            if tuple(calls) != message.tool_calls:
                update["tool_calls"] = tuple(calls)
            history.append(message.model_copy(update=update) if update else message)
        return last, inbound.model_copy(update={"history": tuple(history)})

    def refusal(self, verdict: Verdict | None) -> str:
        name = REFUSAL_PROMPTS.get(verdict.category, "refusal") if verdict and verdict.category \
            else "refusal"
        return self.prompts.render(name)

    # -- output -----------------------------------------------------------------------------

    def gate(self, inbound: Inbound) -> OutputGate:
        return OutputGate(self, inbound, self.policy_for(inbound))

    # -- moderation log ---------------------------------------------------------------------

    def log(self, inbound: Inbound, direction: Direction, outcome: Outcome) -> None:
        if self.on_verdict is not None:
            for verdict in outcome.verdicts:
                self.on_verdict(direction, verdict)
        if not outcome.verdicts or self.moderation is None:
            return
        key = inbound.conversation
        events = [
            ModerationEvent(
                platform=key.platform, workspace=key.workspace, channel=key.channel,
                conversation=key.redis_id, user_id=inbound.user_id,
                message_id=inbound.message_id, direction=direction,
                check_name=v.check, category=(v.category or "unknown").__str__(),
                action=v.action.value, score=v.score, reason=v.reason[:256],
                excerpt=(v.excerpt or outcome.text)[:EXCERPT_CHARS],
            )
            for v in outcome.verdicts
        ]
        self._record(events)

    def log_mute(self, inbound: Inbound, seconds: int) -> None:
        if self.moderation is None:
            return
        key = inbound.conversation
        self._record([ModerationEvent(
            platform=key.platform, workspace=key.workspace, channel=key.channel,
            conversation=key.redis_id, user_id=inbound.user_id, message_id=inbound.message_id,
            direction="input", check_name="strikes", category="strikes", action="mute",
            reason=f"muted for {seconds} s", excerpt="")])

    def _record(self, events: list[ModerationEvent]) -> None:
        assert self.moderation is not None
        try:
            self.moderation.record(events)
        except Exception:
            # The verdict itself stands; only its log entry is lost (and this is logged).
            log.exception("could not write %d moderation event(s)", len(events))


@dataclass
class OutputGate:
    """Stands between the model's stream and the user: text is shown only once checked.

    ``feed`` takes the model's pieces and returns the newly releasable (checked, masked)
    text, or ``None`` once the reply has been cut; ``finish`` gives the text to deliver and
    store. Checks run at most every ``stream_check_seconds`` (and at the end), on everything
    written so far, so a classifier sees the context and each run costs one chain pass.
    """

    service: SafetyService
    inbound: Inbound
    policy: ChannelPolicy
    raw: str = ""
    released: str = ""  # masked text already shown
    cut: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    _checked_at: float = float("-inf")
    _checked_upto: int = 0  # how much of ``raw`` the last check covered

    def feed(self, piece: str) -> str | None:
        if self.cut:
            return None
        self.raw += piece
        now = time.monotonic()
        if now - self._checked_at < self.service.stream_check_seconds:
            return ""
        boundary = self._boundary()
        if boundary <= self._checked_upto:
            # Nothing new to check (the first word is still being written): keep the slot, so
            # the first words go out as soon as they are complete (time to first token).
            return ""
        self._checked_at = now
        self._checked_upto = boundary
        return self._release(self.raw[:boundary])

    def _boundary(self) -> int:
        """How much of the raw text may be checked and shown now: up to the last complete
        word, less any trailing number still being written."""
        text = self.raw
        end = len(text)
        if end and not text[-1].isspace():
            cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
            end = cut + 1 if cut >= 0 else 0
        number = _TRAILING_NUMBER.search(text[:end])
        if number:
            end = number.start()
        return end

    def _release(self, prefix: str) -> str | None:
        outcome = self.service.chain.run(prefix, "output", self.policy)
        if outcome.blocked:
            self.cut = True
            self._log(outcome)
            return None
        if not outcome.text.startswith(self.released):
            # A mask changed text already shown: show nothing more until the end (the final
            # text replaces it in every client); never show unchecked text.
            return ""
        new = outcome.text[len(self.released):]
        self.released = outcome.text
        return new

    def finish(self, text: str, stopped: bool = False) -> tuple[str, bool]:
        """The reply to deliver and store, and whether the safety filters changed it.

        ``stopped``: generation was stopped early (by this gate's cut)."""
        if not self.cut:
            outcome = self.service.chain.run(text, "output", self.policy)
            if not outcome.blocked:
                self._log(outcome)
                return outcome.text, outcome.text != text
            self.cut = True
            self._log(outcome)
        notice = self.service.prompts.render("output_cut")
        shown = self.released.rstrip()
        return (f"{shown} {notice}" if shown else self.service.refusal(None)), True

    def unreleased(self, final: str) -> str:
        """What of the final reply was not streamed yet, so a client that joins the streamed
        pieces (an OpenAI client does) ends with the whole reply. Empty when a mask changed
        text already shown: then only the final reply is right (every client replaces)."""
        if final.startswith(self.released):
            return final[len(self.released):]
        return ""

    def _log(self, outcome: Outcome) -> None:
        if outcome.action is not Action.ALLOW and outcome not in self.outcomes:
            self.outcomes.append(outcome)
            self.service.log(self.inbound, "output", outcome)
