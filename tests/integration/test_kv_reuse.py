"""Per-conversation KV state reuse with the real model: the same replies as cold runs.

Two conversations are interleaved turn by turn through one engine with a state cache; each
turn's reply must equal the reply of a cold run (a fresh context reading the whole prompt) with
the same seed and sampling settings, and a turn must read only its new tokens. Two engines
sharing one state directory (two pool processes of a node) continue each other's conversations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.engine import GenerationRequest
from assistant.envelope import ChatMessage
from worker.control_tokens import control_token_ids
from worker.kvcache import (
    KvStateCache,
    KvStateDirectory,
    capture,
    common_prefix,
    prefix_key,
)
from worker.llama import (
    DECODE_ABORTED,
    KEEP_CHUNK,
    MIN_BATCH,
    LlamaEngine,
    _aborted_when,
    _truncate,
)

pytestmark = pytest.mark.integration

SYSTEM = ChatMessage(role="system", text="You are Assistant, a friendly helper. Today is "
                     "2026-11-29. Answer in a few sentences.")
QUESTIONS = {
    "conv-a": ["Tell me about lighthouses in Norway.", "Who kept them?", "And in winter?"],
    "conv-b": ["How do bees make honey?", "Why hexagons?", "What about bumblebees?"],
}


@pytest.fixture(scope="module")
def engines(model_path: Path) -> Iterator[tuple[LlamaEngine, LlamaEngine]]:
    warm = LlamaEngine(model_path, context_size=2048, threads=2, threads_batch=2,
                       kv_cache=KvStateCache(128 << 20))
    cold = LlamaEngine(model_path, context_size=2048, threads=2, threads_batch=2)
    yield warm, cold


def cold_reply(cold: LlamaEngine, request: GenerationRequest) -> str:
    cold.load().reset()  # nothing kept: the whole prompt is read again
    return "".join(cold.stream(request))


@pytest.mark.parametrize("temperature", [0.7, 0.0])
def test_interleaved_conversations_reuse_their_state_and_reply_as_cold_runs(
    engines: tuple[LlamaEngine, LlamaEngine], temperature: float,
) -> None:
    warm, cold = engines
    histories = {key: [SYSTEM] for key in QUESTIONS}
    previous_prompt: dict[str, list[int]] = {}
    for turn in range(3):
        for key, questions in QUESTIONS.items():
            history = histories[key]
            history.append(ChatMessage(role="user", text=questions[turn]))
            request = GenerationRequest(messages=tuple(history), max_tokens=48,
                                        temperature=temperature, seed=1000 + turn,
                                        cache_key=f"{key}-{temperature}")
            reply = "".join(warm.stream(request))
            reused, total = warm.last_prompt_tokens
            prompt = warm.prompt_tokens(request.messages)
            assert prompt is not None and total == len(prompt)
            assert reply == cold_reply(cold, request), (key, turn)
            if turn:
                # The other conversation ran in between, yet only this turn's tokens are read:
                # the previous prompt and the reply (re-read as the stored text) are reused.
                assert warm.last_source == "saved"
                assert reused > len(previous_prompt[key])
                assert total - reused < 40
            previous_prompt[key] = prompt
            history.append(ChatMessage(role="assistant", text=reply.strip()))
    warm.wait_idle()


def test_a_new_conversation_reuses_only_the_system_prompt(
    engines: tuple[LlamaEngine, LlamaEngine],
) -> None:
    warm, cold = engines
    first = GenerationRequest(messages=(SYSTEM, ChatMessage(role="user", text="Name a colour.")),
                              max_tokens=24, temperature=0.7, seed=7, cache_key="conv-c")
    "".join(warm.stream(first))
    other = GenerationRequest(
        messages=(SYSTEM, ChatMessage(role="user", text="Name a colour, please.")),
        max_tokens=24, temperature=0.7, seed=7, cache_key="conv-d")
    reply = "".join(warm.stream(other))
    reused, _ = warm.last_prompt_tokens
    first_prompt = warm.prompt_tokens(first.messages)
    other_prompt = warm.prompt_tokens(other.messages)
    assert first_prompt is not None and other_prompt is not None
    # Nothing beyond the tokens both prompts literally share, and at least the system prompt.
    assert reused <= common_prefix(first_prompt, other_prompt)
    assert reused >= len(warm._system_prefix(other.messages))
    assert reply == cold_reply(cold, other)
    warm.wait_idle()


def test_a_one_off_prompt_in_between_does_not_change_a_conversations_reply(
    engines: tuple[LlamaEngine, LlamaEngine],
) -> None:
    warm, cold = engines
    history = [SYSTEM, ChatMessage(role="user", text="Describe a quiet harbour.")]
    request = GenerationRequest(messages=tuple(history), max_tokens=32, temperature=0.7,
                                seed=11, cache_key="conv-e")
    history.append(ChatMessage(role="assistant", text="".join(warm.stream(request)).strip()))
    one_off = GenerationRequest(messages=(ChatMessage(role="user", text="Summarise: boats."),),
                                max_tokens=16, temperature=0.0, seed=0)
    "".join(warm.stream(one_off))
    history.append(ChatMessage(role="user", text="And at night?"))
    follow_up = GenerationRequest(messages=tuple(history), max_tokens=32, temperature=0.7,
                                  seed=12, cache_key="conv-e")
    assert "".join(warm.stream(follow_up)) == cold_reply(cold, follow_up)
    assert warm.last_source == "saved"
    warm.wait_idle()


def test_engines_sharing_a_state_directory_continue_each_others_conversations(
    engines: tuple[LlamaEngine, LlamaEngine], model_path: Path, tmp_path: Path,
) -> None:
    _, cold = engines
    shared = [LlamaEngine(model_path, context_size=2048, threads=2, threads_batch=2,
                          kv_cache=KvStateDirectory(tmp_path, 128 << 20)) for _ in range(2)]
    history = [SYSTEM]
    for turn, question in enumerate(QUESTIONS["conv-a"]):
        engine = shared[turn % 2]  # the other process each time
        history.append(ChatMessage(role="user", text=question))
        request = GenerationRequest(messages=tuple(history), max_tokens=48, temperature=0.7,
                                    seed=2000 + turn, cache_key="conv-shared")
        reply = "".join(engine.stream(request))
        assert reply == cold_reply(cold, request), turn
        reused, total = engine.last_prompt_tokens
        if turn:
            # Saved by the other engine (still saving when this turn started, in a worker).
            assert engine.last_source == "saved" and total - reused < 40, (reused, total)
        history.append(ChatMessage(role="assistant", text=reply.strip()))
    for engine in shared:
        engine.wait_idle()


def test_a_reply_read_in_chunks_gives_the_cells_of_one_batch(
    engines: tuple[LlamaEngine, LlamaEngine],
) -> None:
    """What lets a state save give way to a waiting request at chunk boundaries: chunks of at
    least MIN_BATCH tokens give llama.cpp's cells byte for byte as one batch does."""
    _, cold = engines
    llama = cold.load()
    tokens = llama.tokenize(b"The keepers of the lighthouses of Norway lived on rocky islands "
                            b"far out at sea, and in winter the boats could not reach them for "
                            b"weeks; they kept the lamps burning through the long nights. " * 2,
                            add_bos=False)
    head, tail = tokens[:60], tokens[60:]

    def cells(chunk: int) -> bytes:
        _truncate(llama, 0)
        llama.eval(head)
        pieces = [tail[i:i + chunk] for i in range(0, len(tail), chunk)]
        if len(pieces[-1]) < MIN_BATCH:
            pieces[-2:] = [pieces[-2] + pieces[-1]]
        for piece in pieces:
            llama.eval(piece)
        return bytes(capture(llama).data)

    one_batch = cells(len(tail))
    for chunk in (MIN_BATCH, KEEP_CHUNK):
        assert cells(chunk) == one_batch, chunk
    _truncate(llama, 0)


def queue_behind(engine: LlamaEngine, request: GenerationRequest
                 ) -> tuple[threading.Thread, list[str], list[str]]:
    """Send ``request`` from a thread while the engine is taken, and return once it waits for
    the engine: the thread, then (filled when it ends) what the save before it did
    (``last_keep``) and its reply."""
    seen: list[str] = []
    replies: list[str] = []

    def answer() -> None:
        pieces = engine.stream(request)
        head = next(pieces)
        seen.append(engine.last_keep)
        replies.append(head + "".join(pieces))

    thread = threading.Thread(target=answer)
    thread.start()
    deadline = time.monotonic() + 30
    while not engine._wanted():
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return thread, seen, replies


def test_the_next_turn_sent_as_the_reply_ends_continues_the_save_it_cut_short(
    engines: tuple[LlamaEngine, LlamaEngine],
) -> None:
    """A client that sends its next turn the moment the reply ends (an API client, a bench)
    finds the save still reading the reply: the save gives way, and what it read of the reply
    stays in the context for that turn, which reads only the rest. Its reply is a cold run's."""
    warm, cold = engines
    warm.wait_idle()
    history = [SYSTEM, ChatMessage(role="user", text="Tell me about harbours in Iceland.")]
    first = GenerationRequest(messages=tuple(history), max_tokens=48, temperature=0.7,
                              seed=41, cache_key="conv-h")
    expected = cold_reply(cold, first)  # the same seed: the reply the warm engine will give
    follow_up = GenerationRequest(
        messages=(*history, ChatMessage(role="assistant", text=expected.strip()),
                  ChatMessage(role="user", text="And the fishing boats?")),
        max_tokens=32, temperature=0.7, seed=42, cache_key="conv-h")
    first_prompt = warm.prompt_tokens(first.messages)
    assert first_prompt is not None
    llama = warm.load()
    real_eval = llama.eval
    arrived: dict[str, tuple[threading.Thread, list[str], list[str]]] = {}
    keeper_reads = {"count": 0}

    def eval_then_send_the_next_turn(tokens: list[int]) -> None:
        real_eval(tokens)
        if threading.current_thread().name != "kv-keep":
            return
        keeper_reads["count"] += 1
        if keeper_reads["count"] == 2:
            # The save has read two chunks of the reply when the next turn arrives.
            arrived["next"] = queue_behind(warm, follow_up)

    llama.eval = eval_then_send_the_next_turn  # type: ignore[method-assign]
    try:
        pieces = list(warm.stream(first))
        deadline = time.monotonic() + 60
        while "next" not in arrived:
            assert time.monotonic() < deadline, "the save never read two chunks"
            time.sleep(0.005)
        waiter, seen, follow_reply = arrived["next"]
        waiter.join(120)
    finally:
        del llama.eval
    assert "".join(pieces) == expected
    assert seen == ["handed on"]
    assert follow_reply == [cold_reply(cold, follow_up)]
    reused, total = warm.last_prompt_tokens
    # Reused from the context: the first prompt and the two chunks of the reply the save read
    # (a save that gave way to another conversation keeps only the prompt: reused < prompt).
    assert warm.last_source == "context"
    assert len(first_prompt) + 2 * KEEP_CHUNK - MIN_BATCH <= reused <= total - MIN_BATCH
    warm.wait_idle()


def cut_short(engine: LlamaEngine, first: GenerationRequest, other: GenerationRequest
              ) -> tuple[str, str]:
    """Answer ``first``, with ``other`` arriving as its reply ends, so that the save of
    ``first``'s reply is cut short (``pre-empted``); returns both replies."""
    stream = engine.stream(first)
    pieces = [next(stream)]  # the engine is the first request's now
    waiter, seen, other_reply = queue_behind(engine, other)
    pieces.extend(stream)
    waiter.join(120)
    engine.wait_idle()
    assert seen == ["pre-empted"]
    return "".join(pieces), other_reply[0]


def test_a_request_waiting_for_the_engine_cuts_the_save_short_and_replies_stay_cold_runs(
    engines: tuple[LlamaEngine, LlamaEngine],
) -> None:
    """A new conversation arriving as another's reply ends takes the engine before that reply
    is read again for its state (issue 20); the first conversation's next turn then restores
    its prompt's state and reads the reply with its new message: every reply a cold run's."""
    warm, cold = engines
    warm.wait_idle()
    history = [SYSTEM, ChatMessage(role="user", text="Tell me about harbours in Norway.")]
    first = GenerationRequest(messages=tuple(history), max_tokens=48, temperature=0.7,
                              seed=31, cache_key="conv-f")
    other = GenerationRequest(messages=(SYSTEM, ChatMessage(role="user", text="Name a bird.")),
                              max_tokens=24, temperature=0.7, seed=32, cache_key="conv-g")
    reply, other_reply = cut_short(warm, first, other)  # the other request waits
    assert reply == cold_reply(cold, first)
    assert other_reply == cold_reply(cold, other)
    first_prompt = warm.prompt_tokens(first.messages)
    assert first_prompt is not None
    history += [ChatMessage(role="assistant", text=reply.strip()),
                ChatMessage(role="user", text="And in winter?")]
    follow_up = GenerationRequest(messages=tuple(history), max_tokens=32, temperature=0.7,
                                  seed=33, cache_key="conv-f")
    assert "".join(warm.stream(follow_up)) == cold_reply(cold, follow_up)
    reused, _ = warm.last_prompt_tokens
    # The first prompt's own state, kept when the save gave way: all of it but its reply header.
    assert warm.last_source == "saved"
    assert len(first_prompt) - MIN_BATCH <= reused < len(first_prompt)
    warm.wait_idle()


def test_an_aborted_read_leaves_the_context_as_before_it(
    engines: tuple[LlamaEngine, LlamaEngine],
) -> None:
    """What lets a save give way within a chunk: a decode stopped by the abort callback fails
    with DECODE_ABORTED, its tokens are not counted and its cells are dropped, so reading goes
    on as if it had never started (the same cells as an uninterrupted read); outside
    ``_aborted_when`` nothing is aborted."""
    _, cold = engines
    llama = cold.load()
    tokens = llama.tokenize(b"The keepers of the lighthouses of Norway lived on rocky islands "
                            b"far out at sea, and in winter the boats could not reach them. " * 12,
                            add_bos=False)
    head, tail = tokens[:40], tokens[40:]
    _truncate(llama, 0)
    llama.eval(head)
    llama.eval(tail)
    uninterrupted = bytes(capture(llama).data)

    _truncate(llama, 0)
    llama.eval(head)
    stop = threading.Event()
    timer = threading.Timer(0.005, stop.set)  # the tail takes far longer than 5 ms to read
    timer.start()
    with _aborted_when(llama, stop.is_set), pytest.raises(RuntimeError) as aborted:
        llama.eval(tail)
    timer.join()
    assert str(aborted.value).endswith(f"returned {DECODE_ABORTED}")
    assert llama.n_tokens == len(head)
    llama.eval(tail)  # the callback is gone: stop is still set, and nothing is aborted
    assert bytes(capture(llama).data) == uninterrupted
    _truncate(llama, 0)


def test_a_request_arriving_during_a_chunk_stops_it_and_replies_stay_cold_runs(
    engines: tuple[LlamaEngine, LlamaEngine], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request that starts waiting while the save reads a chunk of the reply does not wait
    for that chunk to end (~30–45 ms at 2,000 tokens here): the chunk is aborted, the save
    keeps the prompt's own state, and both replies are cold runs'. Chunks are made longer
    than the reply so the request can only arrive inside one."""
    import worker.llama as engine_module

    monkeypatch.setattr(engine_module, "KEEP_CHUNK", 4096)
    warm, cold = engines
    warm.wait_idle()
    first = GenerationRequest(
        messages=(SYSTEM, ChatMessage(role="user", text="Tell me about harbours in Chile.")),
        max_tokens=64, temperature=0.7, seed=51, cache_key="conv-i")
    other = GenerationRequest(messages=(SYSTEM, ChatMessage(role="user", text="Name a fish.")),
                              max_tokens=16, temperature=0.7, seed=52, cache_key="conv-j")
    llama = warm.load()
    real_eval = llama.eval
    outcome: dict[str, object] = {}

    def eval_with_a_request_arriving(tokens: list[int]) -> None:
        if threading.current_thread().name != "kv-keep" or "sent" in outcome:
            real_eval(tokens)
            return
        outcome["sent"] = True

        def send_soon() -> None:
            time.sleep(0.005)  # inside the chunk: it reads ~60 tokens, tens of ms
            outcome["queued"] = queue_behind(warm, other)

        sender = threading.Thread(target=send_soon)
        sender.start()
        started = time.perf_counter()
        try:
            real_eval(tokens)
        except RuntimeError as exc:
            outcome["aborted"] = str(exc)
            raise
        finally:
            outcome["chunk_ms"] = (time.perf_counter() - started) * 1000
            sender.join()

    llama.eval = eval_with_a_request_arriving  # type: ignore[method-assign]
    try:
        reply = "".join(warm.stream(first))
        deadline = time.monotonic() + 60
        while "queued" not in outcome:
            assert time.monotonic() < deadline, "the save never read the reply"
            time.sleep(0.005)
        waiter, seen, other_reply = outcome["queued"]  # type: ignore[misc]
        waiter.join(120)
    finally:
        del llama.eval
    assert outcome.get("aborted", "").endswith(f"returned {DECODE_ABORTED}"), outcome
    assert seen == ["pre-empted"]
    assert reply == cold_reply(cold, first)
    assert other_reply == [cold_reply(cold, other)]
    warm.wait_idle()


def test_a_request_with_much_more_to_read_lets_the_save_end_first(
    engines: tuple[LlamaEngine, LlamaEngine], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A save gives way only when what it has left is more than SAVE_SHARE of what the
    waiting request will read: a long prompt read cold waits for the rest of the save (a few
    per cent of its own time) and the first conversation keeps its reply's state. (SAVE_SHARE
    is raised here so that a prompt of a few hundred tokens is long enough.)"""
    import worker.llama as engine_module

    monkeypatch.setattr(engine_module, "SAVE_SHARE", 1.0)
    warm, cold = engines
    warm.wait_idle()
    first = GenerationRequest(
        messages=(SYSTEM, ChatMessage(role="user", text="Tell me about harbours in Spain.")),
        max_tokens=32, temperature=0.7, seed=81, cache_key="conv-p")
    long_text = " ".join(f"Harbour {n} has {n + 3} boats and a red lighthouse." for n in range(30))
    other = GenerationRequest(messages=(SYSTEM, ChatMessage(role="user", text=long_text)),
                              max_tokens=8, temperature=0.7, seed=82, cache_key="conv-q")
    stream = warm.stream(first)
    pieces = [next(stream)]
    waiter, seen, other_reply = queue_behind(warm, other)
    reads = warm._waiting[0].reads
    assert reads is not None and reads > 250, reads  # the long message, read cold
    pieces.extend(stream)
    waiter.join(120)
    warm.wait_idle()
    assert seen == ["reply"]  # the save ran to its end
    assert "".join(pieces) == cold_reply(cold, first)
    assert other_reply == [cold_reply(cold, other)]


def test_a_save_cut_short_is_finished_when_the_engine_is_idle(
    engines: tuple[LlamaEngine, LlamaEngine],
) -> None:
    """The save another conversation's request cut short is left as unfinished; the idle
    engine finishes it, so that conversation's next turn restores its prompt and reply and
    reads only its new message (it used to read the reply again). Its reply is a cold run's."""
    warm, cold = engines
    warm.wait_idle()
    history = [SYSTEM, ChatMessage(role="user", text="Tell me about harbours in Denmark.")]
    first = GenerationRequest(messages=tuple(history), max_tokens=48, temperature=0.7,
                              seed=61, cache_key="conv-k")
    other = GenerationRequest(messages=(SYSTEM, ChatMessage(role="user", text="Name a tree.")),
                              max_tokens=16, temperature=0.7, seed=62, cache_key="conv-l")
    reply, _ = cut_short(warm, first, other)
    first_prompt = warm.prompt_tokens(first.messages)
    assert first_prompt is not None
    follow = warm._next_turn_prefix(first.messages, reply.strip())
    assert follow is not None and prefix_key(follow) not in warm.kv_cache  # type: ignore[operator]
    assert warm.finish_pending()
    while warm.finish_pending():  # earlier tests' saves cut short, if any
        pass
    assert prefix_key(follow) in warm.kv_cache  # type: ignore[operator]
    # A one-off request in between: the state must come from the store, not the context.
    one_off = GenerationRequest(messages=(ChatMessage(role="user", text="Say hello."),),
                                max_tokens=8, temperature=0.0, seed=63, cache_key="conv-m")
    "".join(warm.stream(one_off))
    warm.wait_idle()
    history += [ChatMessage(role="assistant", text=reply.strip()),
                ChatMessage(role="user", text="And in summer?")]
    follow_up = GenerationRequest(messages=tuple(history), max_tokens=32, temperature=0.7,
                                  seed=64, cache_key="conv-k")
    assert "".join(warm.stream(follow_up)) == cold_reply(cold, follow_up)
    reused, total = warm.last_prompt_tokens
    assert warm.last_source == "saved"
    assert reused > len(first_prompt) and total - reused < 20, (reused, total)
    warm.wait_idle()


def test_an_idle_engine_sharing_the_directory_finishes_what_another_left(
    engines: tuple[LlamaEngine, LlamaEngine], model_path: Path, tmp_path: Path,
) -> None:
    """Two pool processes of a node: while one answers, the other (idle, its kv-finish thread
    looking every 20 ms) finishes the save the first had to cut short."""
    _, cold = engines
    busy = LlamaEngine(model_path, context_size=2048, threads=2, threads_batch=2,
                       kv_cache=KvStateDirectory(tmp_path, 128 << 20))
    idle = LlamaEngine(model_path, context_size=2048, threads=2, threads_batch=2,
                       kv_cache=KvStateDirectory(tmp_path, 128 << 20), finish_every=0.02)
    idle.load()
    history = [SYSTEM, ChatMessage(role="user", text="Tell me about harbours in Wales.")]
    first = GenerationRequest(messages=tuple(history), max_tokens=48, temperature=0.7,
                              seed=71, cache_key="conv-n")
    other = GenerationRequest(messages=(SYSTEM, ChatMessage(role="user", text="Name a hill.")),
                              max_tokens=16, temperature=0.7, seed=72, cache_key="conv-o")
    reply, _ = cut_short(busy, first, other)
    follow = busy._next_turn_prefix(first.messages, reply.strip())
    assert follow is not None
    deadline = time.monotonic() + 60
    while prefix_key(follow) not in busy.kv_cache:  # type: ignore[operator]
        assert time.monotonic() < deadline, "the idle engine never finished the save"
        time.sleep(0.02)
    assert list(tmp_path.glob("*.pending*")) == []
    history += [ChatMessage(role="assistant", text=reply.strip()),
                ChatMessage(role="user", text="And the castles?")]
    follow_up = GenerationRequest(messages=tuple(history), max_tokens=32, temperature=0.7,
                                  seed=73, cache_key="conv-n")
    assert "".join(busy.stream(follow_up)) == cold_reply(cold, follow_up)
    assert busy.last_source == "saved" and busy.last_prompt_tokens[0] == len(follow)
    busy.wait_idle()
    idle.wait_idle()


def test_a_raw_prompt_is_read_as_text_and_continued_as_a_cold_run_would(
    engines: tuple[LlamaEngine, LlamaEngine],
) -> None:
    """The legacy /v1/completions path on the real model: the prompt is read as text (no
    chat template, control-token text stays text), the continuation equals a cold run's with
    the same seed, and the same prompt again (its tokens held in the context) equals it too."""
    warm, cold = engines
    warm.wait_idle()
    text = "Once upon a time, in a harbour town by the sea, <|im_start|> there lived"
    request = GenerationRequest(messages=(ChatMessage(role="user", text=text),),
                                max_tokens=24, temperature=0.7, seed=51, raw=True)
    tokens = warm.request_tokens(request)
    assert tokens is not None
    assert not set(tokens) & set(control_token_ids(warm.load()))  # text stays text
    first = "".join(warm.stream(request))
    assert first and first == cold_reply(cold, request)
    assert warm.last_prompt_tokens[1] == len(tokens)
    again = "".join(warm.stream(request))
    assert again == first
    warm.wait_idle()
