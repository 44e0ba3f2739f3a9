"""Web → Redis → Celery worker → SmolLM2 → web, all real processes.

SmolLM2-135M is too small to recall facts reliably, so these tests assert on what the engine
received (the prompt trace), what was stored and what was delivered, never on its wording.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
import redis
from openai import OpenAI

from assistant.envelope import ChatMessage
from assistant.pipeline import merge_consecutive
from tests.auxil.stack import Stack
from tests.integration.sse import events

pytestmark = pytest.mark.integration


def chat(url: str, text: str, conversation_id: str | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"text": text, **extra}
    if conversation_id:
        body["conversation_id"] = conversation_id
    return httpx.post(f"{url}/api/chat", json=body, timeout=120)


def test_a_message_is_answered_and_stored(traced: Stack) -> None:
    response = chat(traced.url, "Hello! Who are you?")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"conversation_id", "message_id", "reply", "citations"}
    assert body["reply"].strip() and body["citations"] == []  # no knowledge base here
    stored = httpx.get(f"{traced.url}/api/conversations/{body['conversation_id']}").json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][0]["text"] == "Hello! Who are you?"
    assert stored["messages"][1] | {"created_at": None} == {
        "role": "assistant", "text": body["reply"], "message_id": body["message_id"],
        "created_at": None}


def test_the_second_message_is_answered_with_the_first_turn_in_the_prompt(traced: Stack
                                                                          ) -> None:
    conversation_id = uuid.uuid4().hex
    first = chat(traced.url, "My name is Zebulon and I like kites.", conversation_id).json()
    second = chat(traced.url, "What is my name?", conversation_id).json()
    prompt = traced.traced_prompt(second["message_id"])
    assert prompt[0]["role"] == "system"
    assert [(m["role"], m["text"]) for m in prompt[1:]] == [
        ("user", "My name is Zebulon and I like kites."),
        ("assistant", first["reply"]),
        ("user", "What is my name?"),
    ]
    # Another conversation does not see it.
    other = chat(traced.url, "What is my name?").json()
    assert "Zebulon" not in json.dumps(traced.traced_prompt(other["message_id"]))


def test_streamed_tokens_arrive_in_order_then_done(stack: Stack) -> None:
    with httpx.stream("POST", f"{stack.url}/api/chat", timeout=120,
                      json={"text": "Tell me a short story.", "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(events(response))
    kinds = [kind for kind, _ in received]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert set(kinds[:-1]) == {"token"} and len(kinds) > 2
    streamed = "".join(data["text"] for kind, data in received if kind == "token")
    done = received[-1][1]
    assert streamed.strip() == done["reply"]
    stored = httpx.get(f"{stack.url}/api/conversations/{done['conversation_id']}").json()
    assert stored["messages"][-1]["text"] == done["reply"]


def test_a_retried_request_is_answered_once(stack: Stack) -> None:
    conversation_id, message_id = uuid.uuid4().hex, uuid.uuid4().hex
    first = chat(stack.url, "hi there", conversation_id, message_id=message_id).json()
    again = chat(stack.url, "hi there", conversation_id, message_id=message_id).json()
    assert again == first
    stored = httpx.get(f"{stack.url}/api/conversations/{conversation_id}").json()
    assert len(stored["messages"]) == 2


def test_openai_client_non_streaming_and_streaming(stack: Stack) -> None:
    client = OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    try:
        models = client.models.list()
        assert [m.id for m in models.data] and models.data[0].id.endswith(".gguf")
        completion = client.chat.completions.create(
            model=models.data[0].id, max_tokens=12,
            messages=[{"role": "system", "content": "You are terse."},
                      {"role": "user", "content": "Say hello."}])
        assert completion.choices[0].message.role == "assistant"
        assert completion.choices[0].message.content
        assert 0 < completion.usage.completion_tokens <= 12
        assert completion.choices[0].finish_reason in {"stop", "length"}
        chunks = list(client.chat.completions.create(
            model=models.data[0].id, stream=True, max_tokens=12,
            messages=[{"role": "user", "content": "Count to three."}],
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert chunks[-2].choices[0].finish_reason in {"stop", "length"}
        assert chunks[-1].choices == [] and 0 < chunks[-1].usage.completion_tokens <= 12
    finally:
        client.close()


def test_health_readiness_and_schema(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["redis"] == "ok" and ready.json()["workers"] == ["w1@test"]
    paths = httpx.get(f"{stack.url}/openapi.json").json()["paths"]
    assert {"/api/chat", "/api/conversations/{conversation_id}", "/v1/chat/completions",
            "/v1/models", "/healthz", "/readyz"} <= set(paths)


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        (b"{not json", 422, "JSON"),
        (b'{"conversation_id": "x"}', 422, "text"),
        (b'{"text": ""}', 422, "text"),
        (json.dumps({"text": "x" * 4001}).encode(), 413, "limit is 4000"),
        (b'{"text": "hi", "conversation_id": "../../etc"}', 422, "conversation_id"),
    ],
)
def test_bad_input_gets_a_clear_error(stack: Stack, payload: bytes, status: int,
                                      fragment: str) -> None:
    response = httpx.post(f"{stack.url}/api/chat", content=payload,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


def test_unknown_conversation_is_404_and_delete_starts_over(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/api/conversations/{uuid.uuid4().hex}").status_code == 404
    assert httpx.delete(f"{stack.url}/api/conversations/{uuid.uuid4().hex}").status_code == 404
    # (Not "remember …": that is a long-term memory command, answered without the model.)
    body = chat(stack.url, "Hello, please answer me").json()
    url = f"{stack.url}/api/conversations/{body['conversation_id']}"
    from assistant.envelope import ConversationKey
    from assistant.store import connect_store
    from assistant.store.archive import Archive

    archived = ConversationKey(platform="web", channel=body["conversation_id"]).redis_id
    store = connect_store(stack.env["DATABASE_URL"], upgrade=False)
    try:
        # The worker archives the turn just after delivering it.
        deadline = time.monotonic() + 30
        while Archive(store).get(archived) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert Archive(store).get(archived) is not None
        assert httpx.delete(url).status_code == 204
        assert httpx.get(url).status_code == 404
        assert Archive(store).get(archived) is None  # deleted for the admins too
    finally:
        store.engine.dispose()


def test_a_message_queued_without_workers_is_answered_once_one_starts(make_stack: Any) -> None:
    stack: Stack = make_stack()
    stack.start_web()
    result: dict[str, httpx.Response] = {}
    sender = threading.Thread(target=lambda: result.update(r=chat(stack.url, "anyone there?")))
    sender.start()
    time.sleep(2)
    assert sender.is_alive(), "no worker runs, so no reply can have come"
    assert httpx.get(f"{stack.url}/readyz").status_code == 503
    stack.start_worker("late")
    sender.join(timeout=120)
    assert result["r"].status_code == 200 and result["r"].json()["reply"]


def test_a_worker_killed_mid_reply_is_replaced_and_the_reply_posted_once(make_stack: Any
                                                                         ) -> None:
    # A short visibility timeout so the killed worker's task comes back within the test.
    stack: Stack = make_stack(ASSISTANT_VISIBILITY_TIMEOUT="10", ASSISTANT_MAX_TOKENS="300")
    stack.start_web()
    stack.start_worker("doomed")
    conversation_id = uuid.uuid4().hex
    received: list[tuple[str, Any]] = []
    with httpx.stream("POST", f"{stack.url}/api/chat", timeout=180,
                      json={"text": "Write a long story about a dragon and a knight.",
                            "conversation_id": conversation_id, "stream": True}) as response:
        assert response.status_code == 200
        for kind, data in events(response):
            received.append((kind, data))
            if kind == "token" and "doomed" in stack.workers:
                stack.kill_worker("doomed")  # SIGKILL while it is generating
                stack.start_worker("rescuer")
    kinds = [kind for kind, _ in received]
    assert kinds.count("done") == 1 and kinds[-1] == "done", received[-1]
    done = received[-1][1]
    assert done["reply"]
    # The rescuer's rerun resumed the stream where the killed run left it (issue 16).
    assert "".join(data["text"] for kind, data in received if kind == "token") == done["reply"]
    stored = httpx.get(f"{stack.url}/api/conversations/{conversation_id}").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]  # answered once
    assert stored[1]["text"] == done["reply"]
    assert "Task assistant.answer_conversation" in stack.log("worker-rescuer")


def test_redis_down_is_503_and_not_ready(make_stack: Any) -> None:
    from tests.auxil.stack import free_port

    stack: Stack = make_stack()
    stack.env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    stack.start_web()
    response = chat(stack.url, "hello?")
    assert response.status_code == 503
    assert "unavailable" in response.json()["error"]["message"].lower()
    ready = httpx.get(f"{stack.url}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["redis"].startswith("unavailable")


def test_no_reply_within_the_timeout_is_504(make_stack: Any) -> None:
    stack: Stack = make_stack(ASSISTANT_REPLY_TIMEOUT="1.5")
    stack.start_web()  # no worker: the reply cannot come
    response = chat(stack.url, "hello?")
    assert response.status_code == 504
    assert "no reply within" in response.json()["error"]["message"]


def test_turns_of_one_conversation_never_interleave_across_workers(make_stack: Any) -> None:
    stack: Stack = make_stack(ASSISTANT_TRACE_PROMPTS="true", ASSISTANT_MAX_TOKENS="24")
    stack.start_web()
    stack.start_worker("a")
    stack.start_worker("b")
    conversation_id = uuid.uuid4().hex
    texts = [f"message number {n}" for n in range(5)]
    results: dict[str, dict[str, Any]] = {}

    def send(text: str) -> None:
        response = chat(stack.url, text, conversation_id)
        assert response.status_code == 200, response.text
        results[text] = response.json()

    senders = [threading.Thread(target=send, args=(text,)) for text in texts]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(timeout=180)
    assert set(results) == set(texts)

    stored = httpx.get(f"{stack.url}/api/conversations/{conversation_id}").json()["messages"]
    assert sorted(m["text"] for m in stored if m["role"] == "user") == sorted(texts)
    # Every reply was generated from exactly the record stored before it: no turn ran
    # while another turn of this conversation was being generated.
    for position, message in enumerate(stored):
        if message["role"] != "assistant":
            continue
        prompt = stack.traced_prompt(message["message_id"])
        # The prompt joins every run of user messages (each batched turn), not only the last.
        record = merge_consecutive([ChatMessage(role=m["role"], text=m["text"])
                                    for m in stored[:position]])
        expected = [(m.role, m.text) for m in record]
        assert [(m["role"], m["text"]) for m in prompt[1:]] == expected
    # The replies each request got are the ones stored for it.
    replies = {m["message_id"]: m["text"] for m in stored if m["role"] == "assistant"}
    for body in results.values():
        assert replies[body["message_id"]] == body["reply"]


def test_deleting_a_conversation_mid_reply_leaves_nothing_behind(make_stack: Any) -> None:
    stack: Stack = make_stack(ASSISTANT_MAX_TOKENS="200")
    stack.start_web()
    stack.start_worker("w")
    conversation_id = uuid.uuid4().hex
    url = f"{stack.url}/api/conversations/{conversation_id}"
    with httpx.stream("POST", f"{stack.url}/api/chat", timeout=120,
                      json={"text": "Write a long poem about the sea.", "stream": True,
                            "conversation_id": conversation_id}) as response:
        kinds = []
        for kind, _ in events(response):
            kinds.append(kind)
            if kinds == ["token"]:
                # The turn is being generated: DELETE waits for it, then clears everything.
                assert httpx.delete(url, timeout=120).status_code == 204
    assert kinds[-1] == "done"
    assert httpx.get(url).status_code == 404


def test_a_long_conversation_is_summarised_by_the_real_model(make_stack: Any) -> None:
    """With a small context, older turns are folded into a summary the model writes."""
    stack: Stack = make_stack(ASSISTANT_CONTEXT_SIZE="512", ASSISTANT_MAX_TOKENS="48",
                              ASSISTANT_TRACE_PROMPTS="true")
    stack.start_web()
    stack.start_worker("w")
    conversation_id = uuid.uuid4().hex
    filler = "I keep bees in my garden and I sell the honey at the market on Saturdays. " * 3
    replies = [chat(stack.url, f"Turn {n}. {filler}", conversation_id).json()
               for n in range(6)]
    client = redis.Redis.from_url(stack.redis_url)
    try:
        from assistant.memory import RedisConversationHistory
        from tests.auxil.factories import conversation as key_for

        history = RedisConversationHistory(client, key_for(conversation_id), 600)
        # The summary is written after each reply is delivered: wait for it.
        deadline = time.monotonic() + 60
        while history.summary().covers < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        summary = history.summary()
        assert summary.covers >= 2 and summary.text.strip()
        assert len(history.records()) == 12  # nothing dropped from the record
    finally:
        client.close()
    last = chat(stack.url, "What do I sell?", conversation_id).json()
    system = stack.traced_prompt(last["message_id"])[0]["text"]
    marker = "Earlier in this conversation (summarised):"
    assert marker in system and system.split(marker, 1)[1].strip()  # the summary is in it
    assert all(r["reply"] for r in replies)
