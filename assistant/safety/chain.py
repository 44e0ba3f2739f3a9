"""The safety chain: the policy's checks in order, masks applied as they come, the first
block ends it (checks after a block do not run)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from assistant.safety.policy import ChannelPolicy
from assistant.safety.verdict import Action, Check, Direction, Subject, Verdict

log = logging.getLogger(__name__)

SubjectFactory = Callable[[str, Direction], Subject]


def default_subject(text: str, direction: Direction) -> Subject:
    from assistant.safety.checks.normalise import make_subject

    return make_subject(text, direction)


@dataclass(frozen=True)
class Outcome:
    """What the chain decided about one text.

    ``action`` is the strictest action taken; ``text`` is the text with every mask applied
    (the original when nothing was masked); ``verdicts`` are the non-allow verdicts after the
    policy, in check order (the last one is the block, if any).
    """

    action: Action
    text: str
    verdicts: tuple[Verdict, ...] = ()
    complete: bool = True  # False: a check failed and was skipped (fail open)

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK

    @property
    def block(self) -> Verdict | None:
        return self.verdicts[-1] if self.blocked else None


class SafetyChain:
    """Runs checks by name, as a channel's policy lists them."""

    def __init__(self, checks: Mapping[str, Check],
                 subject: SubjectFactory = default_subject) -> None:
        self.checks = dict(checks)
        self.subject = subject

    def run(self, text: str, direction: Direction, policy: ChannelPolicy) -> Outcome:
        names = policy.checks(direction)
        missing = [n for n in names if n not in self.checks]
        if missing:
            raise KeyError(f"safety policy names check(s) not built: {missing}")
        subject = self.subject(text, direction)
        found: list[Verdict] = []
        strictest = Action.ALLOW
        complete = True
        for name in names:
            try:
                proposed = self.checks[name].inspect(subject)
            except Exception:
                # Checks must not raise; one that does is skipped (fail open) and logged, so a
                # broken classifier does not silence the whole assistant.
                log.exception("safety check %r failed; skipped", name)
                complete = False
                continue
            if proposed.action is Action.ALLOW:
                continue
            action = policy.action_for(proposed)
            if action is Action.ALLOW:
                continue
            verdict = replace(proposed, action=action)
            found.append(verdict)
            if action.severity > strictest.severity:
                strictest = action
            if action is Action.BLOCK:
                break
            if action is Action.MASK and verdict.masked is not None:
                subject = self.subject(verdict.masked, direction)
        return Outcome(strictest, subject.text, tuple(found), complete)
