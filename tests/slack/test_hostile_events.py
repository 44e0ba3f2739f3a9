"""Attack: signed Slack events with what the Events API could send, and what it should not
(fields of other types, ids too long for a conversation key, edits and other subtypes, bot
and empty senders, unknown teams, 40,000-character texts, control tokens of the chat
templates), posted to /slack/events with a valid signature, as Slack would. What must hold:
never a 5xx (Slack retries those), a 404 only for an event type the app has no listener for
(slack-bolt's answer), no traceback in the web server's or the worker's log, and a real
mention is still answered afterwards.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import httpx
import pytest

from tests.auxil.stack import Stack
from tests.security.test_hostile_openai_requests import TEXTS
from tests.slack.fake_slack import BOT_USER_ID, FakeSlack, event_body, sign
from tests.slack.test_end_to_end import (  # noqa: F401  (fixtures used by name)
    CHANNEL,
    SECRET,
    answered,
    deliver,
    fake,
    mention,
    slack_stack,
)

pytestmark = pytest.mark.integration

EVENTS = 100
SEED = 6
HANDLED = ("app_mention", "message")


def hostile_event(rng: random.Random, index: int) -> dict[str, Any]:
    ts = f"{1700000000 + index}.{rng.randint(0, 999_999):06d}"
    text = rng.choice(TEXTS)
    event: dict[str, Any] = {
        "type": rng.choice([*HANDLED, "message", "reaction_added", "member_joined_channel"]),
        "user": rng.choice(["U1", "U2", BOT_USER_ID, "", None]),
        "text": rng.choice([f"<@{BOT_USER_ID}> {text}", text, None, 5]),  # 5: was a 500
        "ts": rng.choice([ts, "", "abc", "1e999", None]),
        "channel": rng.choice([CHANNEL, "D123", "G1", "", None]), "event_ts": ts}
    choice = rng.randrange(9)
    if choice == 0:
        event["subtype"] = rng.choice(["message_changed", "message_deleted", "bot_message",
                                       "file_share", "thread_broadcast", "channel_join"])
    elif choice == 1:
        event["thread_ts"] = rng.choice([ts, "1.1", "", "x" * 500])  # 500 characters: a 500
    elif choice == 2:
        event["channel_type"] = rng.choice(["im", "mpim", "group", "channel", "weird"])
    elif choice == 3:
        event["blocks"] = [{"type": "rich_text", "elements": [{
            "type": "rich_text_section", "elements": [{"type": "text", "text": text},
                                                      {"type": "user", "user_id": BOT_USER_ID}]}]}]
    elif choice == 4:
        event["bot_id"] = "B1"
    elif choice == 5:
        event["subtype"] = "message_changed"
        event["message"] = {"text": text, "user": "U1", "ts": ts}
    elif choice == 6:
        event["text"] = "x" * 40_000
    elif choice == 7:
        event = {key: value for key, value in event.items() if rng.random() < 0.6}
    return {key: value for key, value in event.items() if value is not None}


def test_hostile_events_never_fail_and_break_nothing(slack_stack: Stack,  # noqa: F811
                                                     fake: FakeSlack) -> None:  # noqa: F811
    rng = random.Random(SEED)
    starts = {name: len(slack_stack.log(name)) for name in ("web", "worker-w1")}
    for index in range(EVENTS):
        event = hostile_event(rng, index)
        body = event_body(event, f"EvHostile{index:05d}")
        body["team_id"] = rng.choice(["T1", "T1", "", "TX"])
        raw = json.dumps(body).encode()
        response = httpx.post(f"{slack_stack.url}/slack/events", content=raw,
                              headers=sign(SECRET, raw), timeout=30)
        allowed = (200,) if event.get("type") in HANDLED else (200, 404)
        assert response.status_code in allowed, (body, response.text[:300])
    ts = "1800000000.000100"
    deliver(slack_stack, mention(ts, "Hello after all that."), "EvHostileLast")
    assert answered(slack_stack, fake, ts, ts).text
    time.sleep(1)
    for name, start in starts.items():
        log = slack_stack.log(name)[start:]
        for sign_of_failure in ("Traceback", "WorkerLostError"):
            assert sign_of_failure not in log, f"{name}: {log[log.find(sign_of_failure):][:3000]}"
