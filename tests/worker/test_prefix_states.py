"""Saved KV states found by their token prefix (issue 19): the keys and the lookup alone, then
with the real model — an OpenAI-style request carrying its whole history restores its earlier
beginning after another request ran, new conversations share their persona's state, a damaged
state is a miss, the budget holds — and every reply equals a cold run's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.engine import GenerationRequest
from assistant.envelope import ChatMessage
from tests.auxil.factories import persona_then_instructions
from worker.kvcache import (
    KvState,
    KvStateCache,
    KvStateDirectory,
    boundary_keys,
    common_prefix,
    eviction_order,
    find_longest,
    prefix_key,
)
from worker.llama import SYSTEM_BLOCK, LlamaEngine


def state_of(tokens: list[int], data: int = 100) -> KvState:
    return KvState(tokens=tuple(tokens), data=b"k" * data)


# -- keys and lookup, without a model --------------------------------------------------------

def test_boundary_keys_are_the_prefix_keys_of_each_beginning() -> None:
    tokens = list(range(100, 140))
    positions = [4, 9, 17, 40]
    assert boundary_keys(tokens, positions) == [prefix_key(tokens[:p]) for p in positions]
    assert boundary_keys(tokens, []) == []
    # Every token counts, and the ids are not run together.
    assert prefix_key([1, 2, 3]) != prefix_key([1, 2, 4])
    assert prefix_key([12, 3]) != prefix_key([1, 23])


@pytest.mark.parametrize("kind", ["ram", "directory"])
def test_the_longest_saved_beginning_is_found(kind: str, tmp_path: Path) -> None:
    cache = KvStateCache(10_000) if kind == "ram" else KvStateDirectory(tmp_path, 10_000)
    prompt = list(range(50))
    cache.put(prefix_key(prompt[:10]), state_of(prompt[:10]))
    cache.put(prefix_key(prompt[:30]), state_of(prompt[:30]))
    cache.put(prefix_key([7] * 40), state_of([7] * 40))  # another prompt's
    keys = list(reversed(boundary_keys(prompt, [10, 20, 30, 40])))
    found = find_longest(cache, keys, prompt)
    assert found is not None and found.tokens == tuple(prompt[:30])
    assert find_longest(cache, list(reversed(boundary_keys([9, *prompt[1:]], [10, 30]))),
                        [9, *prompt[1:]]) is None  # another beginning: nothing
    # A state stored under a key whose tokens are not the prompt's (a collision) is a miss.
    cache.put(prefix_key(prompt[:40]), state_of([1] * 40))
    found = find_longest(cache, keys, prompt)
    assert found is not None and found.tokens == tuple(prompt[:30])


def test_a_state_being_saved_by_another_process_is_waited_for(tmp_path: Path) -> None:
    saver, reader = KvStateDirectory(tmp_path, 10_000), KvStateDirectory(tmp_path, 10_000)
    prompt = list(range(60))
    saver.put(prefix_key(prompt[:10]), state_of(prompt[:10]))
    # The marker is under the key of the previous prompt's own beginning; the state that
    # appears is a longer one (the previous prompt and its reply).
    marker = prefix_key(prompt[:20])
    saver.mark_saving(marker)

    def finish() -> None:
        saver.put(prefix_key(prompt[:40]), state_of(prompt[:40]))
        saver.clear_saving(marker)

    later = threading.Timer(0.3, finish)
    later.start()
    started = time.monotonic()
    found = find_longest(reader, list(reversed(boundary_keys(prompt, [10, 20, 40]))), prompt)
    later.join()
    assert found is not None and len(found.tokens) == 40
    assert 0.25 < time.monotonic() - started < 3


def test_eviction_prefers_old_and_large_states() -> None:
    now = 1000.0
    entries = [(now - 10, 100, "old-small"), (now - 10, 5_000, "old-large"),
               (now - 1, 5_000, "new-large"), (now - 1, 100, "new-small")]
    assert eviction_order(entries, now) == ["old-large", "new-large", "old-small", "new-small"]


def test_many_states_stay_within_the_budget_and_the_used_persona_stays(tmp_path: Path) -> None:
    store = KvStateDirectory(tmp_path, 60_000)
    persona = prefix_key([1, 2, 3, 4])
    store.put(persona, state_of([1, 2, 3, 4], data=500))
    for n in range(60):
        time.sleep(0.002)
        assert store.get(persona) is not None  # every new conversation starts from it
        store.put(prefix_key([1, 2, 3, 4, n]), state_of([1, 2, 3, 4, n], data=3_000 + 50 * n))
        assert store.bytes_used <= 60_000
    assert persona in store and store.stats.evictions > 0
    assert len(store) < 30  # the old, large conversation states went


# -- with the real model -------------------------------------------------------------------

SYSTEM = ChatMessage(role="system", text="You are Assistant, a patient and friendly helper "
                     "for a small shipping company. Answer in two or three sentences.")
TOPICS = ["lighthouses on the Norwegian coast", "how bees keep their hive warm",
          "the history of the bicycle", "tides and the moon", "paper made from rice straw"]


def long_history() -> list[ChatMessage]:
    """About 600 tokens of an earlier conversation, as an OpenAI client sends it back."""
    history = [SYSTEM]
    for topic in TOPICS:
        history.append(ChatMessage(role="user", text=f"Tell me about {topic}. " * 3))
        history.append(ChatMessage(role="assistant", text=(
            f"Here is what I know about {topic}: it has a long and interesting story, "
            "told by many people in many places over the years. ") * 2))
    history.append(ChatMessage(role="user", text="Which of these would make a good story?"))
    return history


def request(messages: list[ChatMessage], cache_key: str | None = None) -> GenerationRequest:
    return GenerationRequest(messages=tuple(messages), max_tokens=20, temperature=0.0,
                             seed=3, cache_key=cache_key)


@pytest.fixture(scope="module")
def cold(model_path: Path) -> LlamaEngine:
    return LlamaEngine(model_path, context_size=2048, threads=1, threads_batch=1)


def cold_reply(cold: LlamaEngine, req: GenerationRequest) -> str:
    cold.load().reset()
    return "".join(cold.stream(req))


def engine_with(model_path: Path, store: KvStateDirectory) -> LlamaEngine:
    return LlamaEngine(model_path, context_size=2048, threads=1, threads_batch=1,
                       kv_cache=store)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KvStateDirectory]:
    yield KvStateDirectory(tmp_path / "states", 512 << 20)


def answer(engine: LlamaEngine, req: GenerationRequest) -> str:
    text = "".join(engine.stream(req))
    engine.wait_idle()
    return text


@pytest.mark.integration
def test_an_api_history_restores_its_beginning_after_another_request_ran(
    model_path: Path, store: KvStateDirectory, cold: LlamaEngine,
) -> None:
    engine = engine_with(model_path, store)
    first = long_history()
    reply = answer(engine, request(first))
    assert engine.last_prompt_tokens[0] == 0  # nothing saved yet: read cold
    assert reply == cold_reply(cold, request(first))
    # An unrelated request (another client, no system prompt) takes the context.
    answer(engine, request([ChatMessage(role="user", text="Name three rivers in Africa.")]))
    # A's next turn, full history again, as OpenAI clients send it.
    following = [*first, ChatMessage(role="assistant", text=reply.strip()),
                 ChatMessage(role="user", text="Write its first line.")]
    follow_request = request(following)
    warm = answer(engine, follow_request)
    reused, total = engine.last_prompt_tokens
    prompt = engine.prompt_tokens(following)
    assert prompt is not None and total == len(prompt)
    assert engine.last_source == "saved"
    # Only the new message and the template around it are read.
    assert total - reused < 20, (reused, total)
    assert warm == cold_reply(cold, follow_request)
    # And the same from another process sharing the directory (a pool process of the node).
    other = engine_with(model_path, KvStateDirectory(store.directory, 512 << 20))
    assert answer(other, follow_request) == warm
    assert other.last_source == "saved" and other.last_prompt_tokens[0] == reused


@pytest.mark.integration
def test_system_prompts_sharing_a_persona_read_only_where_they_differ(
    model_path: Path, store: KvStateDirectory, cold: LlamaEngine,
) -> None:
    """A new system prompt's state is also kept after SYSTEM_BLOCK, 2 x, 4 x ... tokens: an
    API client whose system prompt is the persona plus its own instructions, after another
    client's, restores the longest block they share (in another process) and replies exactly
    as a cold run."""
    first, second = (request(messages) for messages in persona_then_instructions())
    one, two = engine_with(model_path, store), engine_with(model_path, store)
    assert answer(one, first) == cold_reply(cold, first)
    shared = common_prefix(one.prompt_tokens(first.messages) or [],
                           one.prompt_tokens(second.messages) or [])
    assert shared >= 2 * SYSTEM_BLOCK  # the test's premise: a long shared beginning
    reply = answer(two, second)
    blocks = [SYSTEM_BLOCK << k for k in range(8)]
    assert two.last_source == "saved"
    assert two.last_prompt_tokens[0] == max(b for b in blocks if b <= shared)
    assert reply == cold_reply(cold, second)


@pytest.mark.integration
def test_new_conversations_share_their_persona_state(
    model_path: Path, store: KvStateDirectory, cold: LlamaEngine,
) -> None:
    first, second = engine_with(model_path, store), engine_with(model_path, store)
    one = request([SYSTEM, ChatMessage(role="user", text="Hello! Who are you?")], "conv-1")
    answer(first, one)
    assert first.last_prompt_tokens[0] == 0  # it read the persona (and saved it)
    two = request([SYSTEM, ChatMessage(role="user", text="What can you ship?")], "conv-2")
    reply = answer(second, two)  # another process: nothing in its context
    persona = second._system_boundary(two.messages, second.prompt_tokens(two.messages) or [])
    assert persona is not None and persona > 20
    assert second.last_source == "saved" and second.last_prompt_tokens[0] == persona
    assert reply == cold_reply(cold, two)


@pytest.mark.integration
def test_a_damaged_state_is_a_miss_and_the_reply_is_a_cold_runs(
    model_path: Path, store: KvStateDirectory, cold: LlamaEngine,
) -> None:
    engine = engine_with(model_path, store)
    history = long_history()
    reply = answer(engine, request(history))
    following = [*history, ChatMessage(role="assistant", text=reply.strip()),
                 ChatMessage(role="user", text="Why?")]
    files = list(store.directory.glob("*.kv"))
    assert files
    for path in files:  # every saved token id changed: the header's CRC fails
        raw = bytearray(path.read_bytes())
        raw[40] ^= 0xFF
        path.write_bytes(bytes(raw))
    other = engine_with(model_path, KvStateDirectory(store.directory, 512 << 20))
    warm = answer(other, request(following))
    assert other.last_prompt_tokens[0] == 0 and other.kv_cache is not None
    assert other.kv_cache.stats.errors >= 1
    assert warm == cold_reply(cold, request(following))


@pytest.mark.integration
def test_the_budget_holds_while_many_prompts_are_kept(model_path: Path, tmp_path: Path) -> None:
    budget = 24 << 20  # room for about three states of ~300 tokens
    store = KvStateDirectory(tmp_path / "small", budget)
    engine = engine_with(model_path, store)
    for n, topic in enumerate(TOPICS * 2):
        messages = [SYSTEM, ChatMessage(role="user", text=f"Tell me about {topic}. " * 12),
                    ChatMessage(role="assistant", text="Gladly."),
                    ChatMessage(role="user", text=f"Question {n}: what else?")]
        answer(engine, request(messages, f"conv-{n}"))
        assert store.bytes_used <= budget
    assert store.stats.evictions > 0 and store.stats.saves > len(store)


@pytest.mark.integration
def test_a_cut_reply_keeps_its_prompt_for_the_retry(
    model_path: Path, store: KvStateDirectory, cold: LlamaEngine,
) -> None:
    engine = engine_with(model_path, store)
    cut = request([SYSTEM, ChatMessage(role="user", text="Describe the harbour at dawn.")],
                  "conv-cut")
    stream = engine.stream(cut)
    next(stream)
    stream.close()  # the safety gate cut it, or the user cancelled
    engine.wait_idle()
    other = engine_with(model_path, KvStateDirectory(store.directory, 512 << 20))
    reply = answer(other, cut)  # the retry, in another process
    prompt = other.prompt_tokens(cut.messages)
    assert prompt is not None
    assert other.last_source == "saved"
    assert other.last_prompt_tokens[0] == other._own_boundary(prompt) == len(prompt) - 4
    assert reply == cold_reply(cold, cut)
