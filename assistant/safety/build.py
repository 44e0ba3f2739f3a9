"""Assemble the safety service from settings: the policy's checks, the canary, strikes, the
moderation log. Shared by the worker and ``assistant safety eval``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from assistant import keys
from assistant.prompts import PromptLibrary
from assistant.safety.chain import SafetyChain
from assistant.safety.checks.canary import CanaryCheck, new_canary
from assistant.safety.policy import Policy
from assistant.safety.service import ModerationSink, SafetyService
from assistant.safety.strikes import Strikes
from assistant.safety.verdict import Check
from assistant.settings import Settings

log = logging.getLogger(__name__)

CANARY_KEY = keys.SAFETY_CANARY


def check_factories() -> dict[str, Callable[..., Check]]:
    from assistant.safety.checks import CHECKS

    return {**CHECKS, "canary": CanaryCheck}


def deployment_canary(client: redis.Redis) -> str:
    """One canary for the whole deployment, kept in Redis: every worker plants the same one,
    so the system prompt (and the model state cached for it) is the same everywhere."""
    client.set(CANARY_KEY, new_canary(), nx=True)
    value = client.get(CANARY_KEY)
    assert value is not None
    return value.decode() if isinstance(value, bytes) else str(value)


def persona_text(prompts: PromptLibrary) -> str:
    """The persona's fixed words (variables left empty), for the leak check to recognise."""
    return prompts.render("system", assistant_name="", platform="", today="", summary="")


def build_chain(policy: Policy, prompts: PromptLibrary, canary: str = "",
                extra: dict[str, Any] | None = None) -> SafetyChain:
    """Build every check the policy names (each once), with ``extra`` keyword arguments per
    check name (e.g. the LLM judge's ``complete``)."""
    factories = check_factories()
    checks: dict[str, Check] = {}
    for name in sorted(policy.check_names()):
        if name == "canary":
            if canary:
                checks[name] = CanaryCheck(canary, persona_text(prompts))
            else:  # no canary planted (e.g. the eval command): only the persona's words
                checks[name] = CanaryCheck(new_canary(), persona_text(prompts))
            continue
        checks[name] = factories[name](**(extra or {}).get(name, {}))
    return SafetyChain(checks)


def with_cache_dir(settings: Settings, extra: dict[str, Any] | None) -> dict[str, Any]:
    """``extra`` plus the toxicity classifier's export cache under the data dir
    (``model_cache``)."""
    merged = dict(extra or {})
    merged["toxicity"] = {"cache_dir": settings.data_dir / "safety-cache",
                          **merged.get("toxicity", {})}
    return merged


def load_policy(settings: Settings) -> Policy:
    return Policy.load(settings.safety_policy, known_checks=check_factories())


def build_service(settings: Settings, client: redis.Redis | None,
                  moderation: ModerationSink | None, prompts: PromptLibrary | None = None,
                  extra: dict[str, Any] | None = None) -> SafetyService:
    prompts = prompts or PromptLibrary.load()
    policy = load_policy(settings)
    canary = deployment_canary(client) if client is not None else ""
    strikes = None
    if client is not None and settings.strike_limit > 0:
        strikes = Strikes(client, settings.strike_limit, settings.strike_window_s,
                          settings.mute_s)
    return SafetyService(
        chain=build_chain(policy, prompts, canary, with_cache_dir(settings, extra)),
        policy=policy,
        prompts=prompts,
        moderation=moderation,
        strikes=strikes,
        canary=canary,
        stream_check_seconds=settings.stream_interval_ms / 1000,
    )
