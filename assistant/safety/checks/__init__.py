"""The safety checks, by the names a policy file lists them under.

Each factory builds one check; keyword arguments come from the policy builder (for example
the LLM judge's ``complete``). The canary (system prompt leak) is added by
``assistant.safety.build``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from assistant.safety.verdict import Check


def _normalise(**options: Any) -> Check:
    from assistant.safety.checks.normalise import Normalise

    return Normalise(**options)


def _pii(**options: Any) -> Check:
    from assistant.safety.checks.pii import Pii

    return Pii(**options)


def _toxicity(**options: Any) -> Check:
    from assistant.safety.checks.toxicity import Toxicity

    return Toxicity(**options)


def _harmful(**options: Any) -> Check:
    from assistant.safety.checks.harmful import Harmful

    return Harmful(**options)


def _injection(**options: Any) -> Check:
    from assistant.safety.checks.injection import Injection

    return Injection(**options)


def _llm_judge(**options: Any) -> Check:
    from assistant.safety.checks.judge import LlamaGuardJudge

    return LlamaGuardJudge(**options)


CHECKS: dict[str, Callable[..., Check]] = {
    "normalise": _normalise,
    "pii": _pii,
    "toxicity": _toxicity,
    "harmful": _harmful,
    "injection": _injection,
    "llm_judge": _llm_judge,
}
