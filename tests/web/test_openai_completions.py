"""The legacy /v1/completions: requests into envelopes and raw turns (issue 21, "if cheap")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from assistant.envelope import Inbound
from assistant.errors import InvalidParameter
from assistant.pipeline import TurnConfig, run_turn
from assistant.prompts import PromptLibrary
from integrations.web.openai_schema import TextCompletionRequest, to_raw_inbound
from tests.auxil.fake_engine import FakeEngine


def request(**fields: Any) -> TextCompletionRequest:
    fields.setdefault("prompt", "The capital of France is")
    return TextCompletionRequest.model_validate({"model": "smollm2", **fields})


def test_a_prompt_becomes_a_raw_stateless_inbound() -> None:
    inbound = to_raw_inbound(request(prompt=["Once upon a time"], stop=["\n"], seed=3,
                                     temperature=0, top_p=0.5, logit_bias={"7": -100}),
                             4000, 16)
    options = inbound.options
    assert inbound.text == "Once upon a time" and inbound.history == ()
    assert options.raw and options.stop == ("\n",) and options.seed == 3
    assert options.temperature == 0 and options.top_p == 0.5 and options.logit_bias == {7: -100}
    assert options.max_tokens == 16 and not options.tools and options.json_schema is None
    assert request().max_tokens == 16  # OpenAI's default for this endpoint


@pytest.mark.parametrize(("fields", "param"), [
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": [[1, 2]]}, "prompt"),
    ({"prompt": "  "}, "prompt"),
    ({"n": 2}, "n"),
    ({"best_of": 3}, "best_of"),
    ({"logprobs": 2}, "logprobs"),
    ({"suffix": " the end"}, "suffix"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"tools": []}, "tools"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages"),
])
def test_what_is_not_supported_is_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidParameter) as refused:
        to_raw_inbound(request(**fields), 4000, 16)
    assert refused.value.param == param


def test_what_asks_for_nothing_is_accepted() -> None:
    inbound = to_raw_inbound(request(best_of=1, logprobs=None, suffix="", echo=True, n=1,
                                     user="me"), 4000, 16)
    assert inbound.user_id == "me"


def test_a_prompt_longer_than_the_input_limit_is_refused() -> None:
    with pytest.raises(InvalidParameter) as refused:
        to_raw_inbound(request(prompt="x" * 101), 100, 16)
    assert refused.value.code == "string_above_max_length"


def test_a_raw_turn_reads_the_prompt_alone_and_keeps_its_spacing(
        prompts: PromptLibrary) -> None:
    engine = FakeEngine(answers=[" Paris, of course."])
    inbound = to_raw_inbound(request(stop=[","]), 4000, 16)
    reply = run_turn([inbound], engine, prompts, TurnConfig(canary="CANARY-1"), None)
    [sent] = engine.requests
    # No persona, no canary, no template: the prompt is the text as written.
    assert sent.raw and [(m.role, m.text) for m in sent.messages] == [
        ("user", "The capital of France is")]
    assert reply.text == " Paris" and reply.finish_reason == "stop"


# -- the route: the same keys and identity as chat completions (in-process, fake Redis) -----

def test_completions_need_a_key_and_queue_as_the_key_owner(tmp_path: Path) -> None:
    import fakeredis
    from fastapi.testclient import TestClient

    from assistant.store import shared_store
    from assistant.store.keys import ApiKeys
    from tests.identity.conftest import QUEUE, build_app, identity_settings
    from tests.identity.test_web_credentials import assert_openai_401

    settings = identity_settings(tmp_path)
    server = fakeredis.FakeServer()
    redis_client = fakeredis.FakeRedis(server=server)
    body = {"model": "smollm2", "prompt": "Once upon a time", "user": "bob"}
    with TestClient(build_app(settings, server)) as http:
        for header in ({}, {"Authorization": "Bearer not-a-key"}):
            assert_openai_401(http.post("/v1/completions", json=body, headers=header))
        assert redis_client.lrange(QUEUE, 0, -1) == []
        new, row = ApiKeys(shared_store(settings.sql_url)).create("test", "alice", "test")
        headers = {"Authorization": f"Bearer {new.token}"}
        refused = http.post("/v1/completions", headers=headers,
                            json=body | {"model": "gpt-nope"})
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "model_not_found"
        bad = http.post("/v1/completions", headers=headers, json=body | {"suffix": "!"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "suffix"
        assert redis_client.lrange(QUEUE, 0, -1) == []
        response = http.post("/v1/completions", json=body, headers=headers)
        assert response.status_code == 504  # queued; nobody answers in this test
    users = {Inbound.model_validate(json.loads(raw)).user_id
             for key in redis_client.keys("assistant:pending:*")
             for raw in redis_client.lrange(key, 0, -1)}
    assert users == {row.prefix}  # the key's owner, not the body's user


def test_a_raw_reply_streams_with_its_spacing() -> None:
    import fakeredis

    from assistant.envelope import ConversationKey
    from assistant.stream import Publisher

    conversation = ConversationKey(platform="openai", channel="c1")
    kept = Publisher(fakeredis.FakeRedis(), conversation, ["m1"], strip=False)
    stripped = Publisher(fakeredis.FakeRedis(), conversation, ["m1"])
    for publisher in (kept, stripped):
        for piece in (" Paris", ".", "\n"):
            publisher.token(piece)
    assert kept.shown == " Paris.\n" and stripped.shown == "Paris."


def test_clients_without_user_are_limited_per_key_on_both_routes(tmp_path: Path) -> None:
    """Issue 21's last row: clients that send no ``user`` no longer share one identity and
    one rate limit; each key has its own, on chat and legacy completions alike."""
    import fakeredis
    from fastapi.testclient import TestClient

    from assistant.store import shared_store
    from assistant.store.keys import ApiKeys
    from tests.identity.conftest import build_app, identity_settings

    settings = identity_settings(tmp_path)
    keys = ApiKeys(shared_store(settings.sql_url))
    tokens = [keys.create("test", owner, "test", rate_limit="1/minute")[0].token
              for owner in ("alice", "bob")]
    chat = ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    text = ("/v1/completions", {"prompt": "Once upon a time"})
    with TestClient(build_app(settings, fakeredis.FakeServer())) as http:
        for route, body in (chat, text):
            statuses = []
            for token in (*tokens, tokens[0]):  # neither body names a user
                response = http.post(route, json=body,
                                     headers={"Authorization": f"Bearer {token}"})
                statuses.append(response.status_code)
                if response.status_code == 429:
                    assert int(response.headers["retry-after"]) > 0
            # Chat: queued once per key (nobody answers here: 504), alice's second is 429;
            # then the legacy route counts against the same per-key limit: 429 for both.
            assert statuses == ([504, 504, 429] if route == chat[0] else [429, 429, 429])


def test_a_streamed_completion_echoes_then_streams_then_ends() -> None:
    import asyncio
    from collections.abc import AsyncIterator
    from types import SimpleNamespace

    from assistant.envelope import ConversationKey, Reply
    from assistant.stream import StreamEvent
    from integrations.web.openai_api import text_chunks

    done = Reply(message_id="r1", conversation=ConversationKey(platform="openai", channel="c"),
                 in_reply_to=("m1",), text=" Paris.", prompt_tokens=6, completion_tokens=2)

    class Listener:
        async def events(self, timeout: float) -> AsyncIterator[StreamEvent]:
            for piece in (" Paris", "."):
                yield StreamEvent("token", text=piece)
            yield StreamEvent("done", reply=done)

    async def end_stream(listener: Any, client_gone: bool) -> None:
        assert not client_gone

    state = SimpleNamespace(settings=SimpleNamespace(reply_timeout=5), end_stream=end_stream)

    async def collect() -> list[str]:
        return [line async for line in text_chunks(state, Listener(), "m", 0,  # type: ignore[arg-type]
                                                   True, "The capital is")]

    lines = asyncio.run(collect())
    assert lines[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    texts = [c["choices"][0]["text"] for c in chunks if c["choices"]]
    assert "".join(texts) == "The capital is Paris."
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [
        None, None, None, "stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 8
