"""The manifest asks for exactly what the code uses."""

from __future__ import annotations

from pathlib import Path

import yaml

import integrations.slack

MANIFEST = Path(integrations.slack.__file__).parent / "manifest.yaml"


def test_manifest_scopes_events_and_command() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "app_mentions:read", "channels:history", "groups:history", "im:history",
        "chat:write", "commands"}
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == {
        "app_mention", "message.channels", "message.groups", "message.im"}
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/assistant"]
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
