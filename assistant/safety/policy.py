"""Which checks run and what each category does, per platform and per channel.

The policy is a TOML file (``assistant/safety/policy.toml`` is the default; see its comments).
Layers merge from the widest to the narrowest: default, then platform, then channel.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.errors import ConfigError
from assistant.safety.verdict import Action, Category, Direction, Verdict

DEFAULT_POLICY = Path(__file__).resolve().parent / "policy.toml"


@dataclass(frozen=True)
class ChannelPolicy:
    """The policy in force for one channel, every layer merged."""

    input: tuple[str, ...]
    output: tuple[str, ...]
    actions: Mapping[Category, Action] = field(default_factory=dict)
    strikes: bool = True

    def checks(self, direction: Direction) -> tuple[str, ...]:
        return self.input if direction == "input" else self.output

    def action_for(self, verdict: Verdict) -> Action:
        """What the proposed verdict becomes: the category's configured action, if any.

        A check that only proposes ``flag`` (not sure enough to act: casual swearing, a low
        score) is never escalated by the policy; it can only be turned off (``allow``).
        ``mask`` needs redacted text: a check that cannot redact is blocked instead (fail
        closed rather than let through what the policy wanted hidden).
        """
        if verdict.category is None:
            return verdict.action
        action = self.actions.get(verdict.category, verdict.action)
        if verdict.action is Action.FLAG:
            return Action.ALLOW if action is Action.ALLOW else Action.FLAG
        if action is Action.MASK and verdict.masked is None:
            return Action.BLOCK
        return action


@dataclass(frozen=True)
class Policy:
    layers: Mapping[str, Mapping[str, Any]]  # "default", "platform:<p>", "channel:<key>"

    @classmethod
    def load(cls, path: Path | None = None, known_checks: Iterable[str] | None = None) -> Policy:
        path = path or DEFAULT_POLICY
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"safety policy {path}: {exc}") from exc
        return cls.from_dict(data, known_checks, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], known_checks: Iterable[str] | None = None,
                  source: str = "policy") -> Policy:
        unknown = set(data) - {"default", "platforms", "channels"}
        if unknown:
            raise ConfigError(f"safety {source}: unknown section(s) {sorted(unknown)}")
        layers: dict[str, Mapping[str, Any]] = {"default": data.get("default", {})}
        for name, layer in data.get("platforms", {}).items():
            layers[f"platform:{name}"] = layer
        for key, layer in data.get("channels", {}).items():
            layers[f"channel:{key}"] = layer
        known = set(known_checks) if known_checks is not None else None
        for name, layer in layers.items():
            _validate(layer, known, f"safety {source} [{name}]")
        if "input" not in layers["default"] or "output" not in layers["default"]:
            raise ConfigError(f"safety {source}: [default] must list input and output checks")
        return cls(layers)

    def for_channel(self, platform: str, workspace: str, channel: str) -> ChannelPolicy:
        order = [
            "default",
            f"platform:{platform}",
            f"channel:{platform}:{channel}",
            f"channel:{platform}:{workspace}:{channel}",
        ]
        merged: dict[str, Any] = {}
        actions: dict[Category, Action] = {}
        for name in order:
            layer = self.layers.get(name)
            if layer is None:
                continue
            for key, value in layer.items():
                if key == "actions":
                    actions.update({Category(c): Action(a) for c, a in value.items()})
                else:
                    merged[key] = value
        return ChannelPolicy(
            input=tuple(merged["input"]),
            output=tuple(merged["output"]),
            actions=actions,
            strikes=bool(merged.get("strikes", True)),
        )

    def check_names(self) -> set[str]:
        names: set[str] = set()
        for layer in self.layers.values():
            names.update(layer.get("input", ()))
            names.update(layer.get("output", ()))
        return names


def _validate(layer: Mapping[str, Any], known: set[str] | None, where: str) -> None:
    unknown = set(layer) - {"input", "output", "actions", "strikes"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    for key in ("input", "output"):
        if key not in layer:
            continue
        names = layer[key]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}: {key} must be a list of check names")
        if known is not None and set(names) - known:
            raise ConfigError(f"{where}: unknown check(s) {sorted(set(names) - known)}; "
                              f"known: {sorted(known)}")
    for category, action in layer.get("actions", {}).items():
        try:
            Category(category)
        except ValueError:
            raise ConfigError(f"{where}: unknown category {category!r}; "
                              f"known: {[c.value for c in Category]}") from None
        try:
            Action(action)
        except ValueError:
            raise ConfigError(f"{where}: {category} = {action!r}: the action must be one of "
                              f"{[a.value for a in Action]}") from None
    if "strikes" in layer and not isinstance(layer["strikes"], bool):
        raise ConfigError(f"{where}: strikes must be true or false")
