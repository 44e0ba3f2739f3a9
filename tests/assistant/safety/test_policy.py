"""The safety policy: defaults, per-platform and per-channel overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.errors import ConfigError
from assistant.safety.policy import DEFAULT_POLICY, Policy
from assistant.safety.verdict import Action, Category, Verdict

LAYERED = {
    "default": {"input": ["a", "b"], "output": ["c"], "actions": {"S8": "block", "pii": "mask"}},
    "platforms": {"slack": {"actions": {"S8": "flag"}}},
    "channels": {
        "slack:C9": {"input": ["a"], "actions": {"pii": "allow"}},
        "slack:T1:C7": {"actions": {"S8": "allow"}, "strikes": False},
    },
}


def test_default_policy_file_loads_and_blocks_every_hazard_category() -> None:
    policy = Policy.load(DEFAULT_POLICY)
    web = policy.for_channel("web", "default", "x")
    assert web.input[0] == "normalise", "normalisation must run before every other check"
    assert "canary" in web.output
    for category in Category:
        if category is Category.PII:
            assert web.actions[category] is Action.MASK
        else:
            assert web.actions[category] is Action.BLOCK, category


def test_layers_merge_narrowest_wins() -> None:
    policy = Policy.from_dict(LAYERED)
    web = policy.for_channel("web", "default", "C9")
    assert web.input == ("a", "b") and web.actions[Category.INTELLECTUAL_PROPERTY] is Action.BLOCK
    slack = policy.for_channel("slack", "T1", "C1")
    assert slack.actions[Category.INTELLECTUAL_PROPERTY] is Action.FLAG
    assert slack.actions[Category.PII] is Action.MASK
    channel = policy.for_channel("slack", "T1", "C9")
    assert channel.input == ("a",) and channel.output == ("c",)
    assert channel.actions[Category.PII] is Action.ALLOW
    assert channel.actions[Category.INTELLECTUAL_PROPERTY] is Action.FLAG  # from the platform
    workspace_channel = policy.for_channel("slack", "T1", "C7")
    assert workspace_channel.actions[Category.INTELLECTUAL_PROPERTY] is Action.ALLOW
    assert workspace_channel.strikes is False and slack.strikes is True


def test_action_for_applies_the_category_and_fails_closed_on_impossible_masks() -> None:
    channel = Policy.from_dict(
        {"default": {"input": [], "output": [], "actions": {"S1": "mask", "S8": "flag"}}}
    ).for_channel("web", "default", "c")
    harmful = Verdict(Action.BLOCK, "harmful", Category.VIOLENT_CRIMES)
    assert channel.action_for(harmful) is Action.BLOCK  # cannot mask without redacted text
    ip = Verdict(Action.BLOCK, "harmful", Category.INTELLECTUAL_PROPERTY)
    assert channel.action_for(ip) is Action.FLAG
    other = Verdict(Action.BLOCK, "harmful", Category.HATE)
    assert channel.action_for(other) is Action.BLOCK  # not configured: the check's proposal
    unsure = Verdict(Action.FLAG, "toxicity", Category.VIOLENT_CRIMES)
    assert channel.action_for(unsure) is Action.FLAG  # a flag is never escalated to a block
    off = Policy.from_dict({"default": {"input": [], "output": [], "actions": {"S1": "allow"}}}
                           ).for_channel("web", "default", "c")
    assert off.action_for(unsure) is Action.ALLOW


def test_a_policy_can_escalate_masked_pii_to_a_block() -> None:
    channel = Policy.from_dict({"default": {"input": [], "output": [],
                                            "actions": {"pii": "block"}}}
                               ).for_channel("web", "default", "c")
    pii = Verdict(Action.MASK, "pii", Category.PII, masked="my card [card]")
    assert channel.action_for(pii) is Action.BLOCK


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"default": {"input": ["a"]}}, "must list input and output"),
        ({"default": {"input": ["nope"], "output": []}}, "unknown check(s) ['nope']"),
        ({"default": {"input": [], "output": [], "actions": {"S99": "block"}}},
         "unknown category 'S99'"),
        ({"default": {"input": [], "output": [], "actions": {"S1": "shout"}}},
         "the action must be one of"),
        ({"default": {"input": [], "output": [], "colour": 1}}, "unknown key(s) ['colour']"),
        ({"default": {"input": [], "output": []}, "groups": {}}, "unknown section(s)"),
        ({"default": {"input": "a", "output": []}}, "must be a list of check names"),
    ],
)
def test_bad_policies_are_refused_with_a_clear_reason(data: dict[str, object],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        Policy.from_dict(data, known_checks={"a", "b", "c"})


def test_unreadable_policy_file(tmp_path: Path) -> None:
    broken = tmp_path / "policy.toml"
    broken.write_text("[default\n")
    with pytest.raises(ConfigError, match="safety policy"):
        Policy.load(broken)
    with pytest.raises(ConfigError, match="safety policy"):
        Policy.load(tmp_path / "missing.toml")
