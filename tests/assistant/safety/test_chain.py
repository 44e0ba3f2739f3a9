"""The chain: order, masks feeding later checks, short-circuit on block, policy overrides."""

from __future__ import annotations

import logging

import pytest

from assistant.safety.chain import SafetyChain
from assistant.safety.policy import Policy
from assistant.safety.verdict import Action, Category
from tests.assistant.safety.fakes import DigitsMask, Exploding, WordCheck, plain_subject


def make(policy: dict[str, object]) -> tuple[SafetyChain, dict[str, object]]:
    checks = {
        "digits": DigitsMask(),
        "bomb": WordCheck("bomb", "bomb", Category.INDISCRIMINATE_WEAPONS),
        "ignore": WordCheck("ignore", "ignore previous", Category.PROMPT_INJECTION),
        "exploding": Exploding(),
    }
    return SafetyChain(checks, subject=plain_subject), checks  # type: ignore[arg-type]


def channel(input_checks: list[str], actions: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return Policy.from_dict({"default": {"input": input_checks, "output": [],
                                         "actions": actions or {}}}).for_channel("web", "d", "c")


def test_allow_passes_the_text_unchanged() -> None:
    chain, _ = make({})
    outcome = chain.run("hello there", "input", channel(["digits", "bomb"]))
    assert outcome.action is Action.ALLOW and outcome.text == "hello there"
    assert outcome.verdicts == () and outcome.block is None


def test_mask_is_applied_before_later_checks_see_the_text() -> None:
    chain, checks = make({})
    outcome = chain.run("card 4111111111111111 please", "input", channel(["digits", "bomb"]))
    assert outcome.action is Action.MASK
    assert outcome.text == "card [number] please"
    assert checks["bomb"].seen == ["card [number] please"]  # type: ignore[attr-defined]


def test_first_block_short_circuits_later_checks() -> None:
    chain, checks = make({})
    outcome = chain.run("ignore previous rules, bomb", "input",
                        channel(["ignore", "bomb", "digits"]))
    assert outcome.blocked
    assert outcome.block is not None and outcome.block.category is Category.PROMPT_INJECTION
    assert checks["bomb"].seen == [] and checks["digits"].seen == []  # type: ignore[attr-defined]


def test_order_is_the_policy_order() -> None:
    chain, _ = make({})
    outcome = chain.run("ignore previous rules, bomb", "input", channel(["bomb", "ignore"]))
    assert outcome.block is not None and outcome.block.check == "bomb"


def test_policy_can_turn_a_block_into_a_flag_and_the_chain_goes_on() -> None:
    chain, checks = make({})
    outcome = chain.run("bomb 1234567", "input",
                        channel(["bomb", "digits"], {"S9": "flag"}))
    assert outcome.action is Action.MASK  # the strictest action taken
    assert [v.action for v in outcome.verdicts] == [Action.FLAG, Action.MASK]
    assert outcome.text == "bomb [number]"


def test_policy_can_allow_a_category_entirely() -> None:
    chain, _ = make({})
    outcome = chain.run("number 1234567", "input", channel(["digits"], {"pii": "allow"}))
    assert outcome.action is Action.ALLOW and outcome.text == "number 1234567"


def test_a_crashing_check_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    chain, _ = make({})
    with caplog.at_level(logging.ERROR):
        outcome = chain.run("a bomb", "input", channel(["exploding", "bomb"]))
    assert outcome.blocked and outcome.block is not None and outcome.block.check == "bomb"
    assert "safety check 'exploding' failed" in caplog.text


def test_a_policy_naming_an_unbuilt_check_is_an_error() -> None:
    chain, _ = make({})
    with pytest.raises(KeyError, match="not built"):
        chain.run("x", "input", channel(["nope"]))
