"""The llama.cpp engine: one ``Llama`` per worker process, loaded lazily on first use.

``Llama`` objects must not serve two calls at once (each holds one llama.cpp context), so
calls are serialised with a lock. The chat template comes from the GGUF's own metadata
(``tokenizer.chat_template``), which llama-cpp-python picks when no ``chat_format`` is
given: SmolLM2's ChatML and Llama 3's both.

With a KV state store (``worker.kvcache``; a worker's is shared by the pool processes of its
host), states are saved at message boundaries (where a chat-template control token starts)
under a hash of the tokens up to there: after each reply, the prompt and the reply as the next
prompt will hold them; the system prompt, the first time it is read; a prompt's own beginning
when most of it was read fresh. Before any request — a conversation's turn, an OpenAI API
request carrying its whole history, a summary — the longest saved beginning of its prompt is
restored and only the rest is read, whichever conversation, client or process saved it. What a
restore reuses is always an exact token prefix of the new prompt, so the reply is the one a
cold run would give (docs/scaling.md, "Long conversations").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.engine import Completion, GenerationRequest, Stream
from assistant.envelope import ChatMessage
from assistant.errors import ModelError
from worker.control_tokens import ControlTokenText, control_token_ids, control_token_text
from worker.kvcache import (
    KvCache,
    KvState,
    PendingSave,
    boundary_keys,
    capture,
    common_prefix,
    find_longest,
    prefix_key,
    restore,
)

log = logging.getLogger(__name__)

# Chat-template overhead for token counting: role markers and separators per message, plus
# the assistant header that opens the reply (ChatML: "<|im_start|>assistant\n").
TEMPLATE_TOKENS_PER_MESSAGE = 5
GENERATION_PROMPT_TOKENS = 4
# llama.cpp reads batches of 1–3 tokens with other kernels than larger ones, and the KV cells
# differ in the last bits (measured: logits up to 0.65 apart). State kept for reuse is therefore
# always read in batches of at least this many tokens, as a cold run reads its prompt.
MIN_BATCH = 4
UBATCH = 128
# A prompt's own beginning (up to the reply's header) is also kept when at least this many of
# its tokens are new: a retry, an API client that edits the reply it got, or another question
# after the same long document then starts from it. Fewer are read again quickly.
KEEP_PROMPT_AFTER_TOKENS = 256
# A new system prompt's state is also kept after SYSTEM_BLOCK tokens and every power of two
# times that (32, 64, 128, ...: block-wise prefix caching, as vLLM's automatic prefix caching
# does with even blocks): system prompts that share their beginning (one persona, different
# API clients' instructions after it) then read only from about where they differ. Doubling
# keeps what a long system prompt's blocks hold to about one more copy of its state (even
# blocks would hold its length / 32 copies).
SYSTEM_BLOCK = 32
# After a reply, its text is read again in chunks of this many tokens (the last one takes up
# to MIN_BATCH - 1 more); a request waiting for the engine stops the chunk being read, and the
# chunks read before it stay (a next turn sent at once continues from them). Chunks of 4, 8,
# 16, 32 tokens give the same cells, byte for byte, as one batch (measured, docs/scaling.md).
# At one thread 8 tokens take ~20 ms on a quiet host (~27 ms on a busy one, where 16 took ~50
# ms), for ~10 % more time in all than one batch.
KEEP_CHUNK = 8
# How often a worker's engine looks for saves a request cut short (kvcache.PendingSave), to
# finish them while idle: a tenth of a second is well within the gap between two turns of one
# conversation, and a look is one directory listing.
FINISH_EVERY_SECONDS = 0.1
# A save of a reply gives the engine to a waiting request at once, unless what it has left to
# read is at most this share of what that request will read: a cold read of 2,000 tokens
# (5–10 s here) then waits for the ~40 reply tokens left (47–49 ms measured) instead of leaving
# the conversation's next turn to read its reply again; a short request never waits for it.
SAVE_SHARE = 0.05
# What llama_decode returns when its abort callback stopped it (llama.h).
DECODE_ABORTED = 2


class LlamaEngine:
    """A GGUF chat model run by llama-cpp-python."""

    def __init__(
        self, model_path: Path, context_size: int, threads: int, threads_batch: int,
        on_load: Callable[[float], None] | None = None,
        kv_cache: KvCache | None = None,
        finish_every: float | None = None,
    ) -> None:
        self.model_path = model_path
        self.name = model_path.stem
        self.context_size = context_size
        self.threads = threads
        self.threads_batch = threads_batch
        self._llama: Any = None
        self._lock = threading.Lock()
        self._on_load = on_load  # told the load time in seconds (worker metrics)
        self.kv_cache = kv_cache  # worker.kvcache.make_cache; None: no state reuse
        # Seconds between looks for saves a request cut short, which this engine finishes
        # when idle (``finish_pending``); None: only when called.
        self._finish_every = finish_every
        self._formatter: Any = None  # the GGUF's chat template, to know the prompt's tokens
        self._tool_format: str | None = None  # its own tool format (assistant/tools.py)
        # The vocabulary's control tokens, kept out of message text (worker/control_tokens.py).
        self._control = ControlTokenText(())
        self._system_prefixes: dict[str, tuple[int, ...]] = {}
        self._boundary_ids: frozenset[int] = frozenset()  # the template's control tokens
        # Prompt tokens of the last generation: (reused from the context, total).
        self.last_prompt_tokens: tuple[int, int] = (0, 0)
        self.last_keep_seconds = 0.0  # how long saving the last conversation state took
        # What the last save did: "reply" (the prompt and the reply, as the next prompt holds
        # them), "prompt" (the prompt's own beginning only), "pre-empted" (a request took the
        # engine; the prompt's own beginning was kept), "handed on" (the request that took the
        # engine continues what the context holds: it was left to that request), "none".
        self.last_keep = "none"
        # Requests waiting for the engine (the state save gives way to them), by the prompt
        # tokens each will read (None: not known before it has the engine).
        self._waiting: list[_Waiting] = []
        self._waiting_lock = threading.Lock()
        # Held by the state keeper until its files are written (after it frees the engine).
        self._writing = threading.Lock()
        self.last_source = "none"  # where the reused prompt prefix came from (bench, tests)
        # How many leading context tokens were read in batches of MIN_BATCH or more.
        self._batch_read = 0

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def load(self) -> Any:
        if self._llama is None:
            if not self.model_path.is_file():
                raise ModelError(
                    f"model file {self.model_path} not found; run `assistant model pull`"
                )
            from llama_cpp import Llama  # heavy import, kept out of web processes

            started = time.perf_counter()
            try:
                self._llama = Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.context_size,
                    n_threads=self.threads,
                    n_threads_batch=self.threads_batch,
                    # The compute buffer holds a ubatch's logits (n_ubatch × 49k vocab × 4 B):
                    # 99 MB at llama's 512, 25 MB at 128, with the same prompt speed here
                    # (docs/benchmarks.md, "Long conversations").
                    n_ubatch=UBATCH,
                    use_mmap=True,  # processes on one host share the weights
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"could not load {self.model_path}: {exc}") from exc
            seconds = time.perf_counter() - started
            self._formatter = chat_formatter(self._llama)
            if self._formatter is not None:
                self._tool_format = tool_format(self._llama)
            self._control = control_token_text(self._llama)
            self._boundary_ids = frozenset(control_token_ids(self._llama))
            log.info("loaded %s in %.2f s", self.model_path.name, seconds)
            if self.kv_cache is not None and self._finish_every is not None:
                threading.Thread(target=self._finish_pending_loop, args=(self._finish_every,),
                                 name="kv-finish", daemon=True).start()
            if self._on_load is not None:
                self._on_load(seconds)
        return self._llama

    @property
    def tool_format(self) -> str | None:
        """The chat template's own tool format ("llama3.1"), or None (loads the model)."""
        self.load()
        return self._tool_format

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return engine_count(self.load(), self._formatter, self._control, messages)

    def stream(self, request: GenerationRequest) -> Stream:
        llama = self.load()
        finish_reason = "stop"
        pieces: list[str] = []
        finished = False
        prompt: list[int] | None = None
        # With a state store the prompt is tokenized before the engine is free (llama.cpp's
        # tokenizer does not touch the context): a state save under way sees what the request
        # will read, and leaves its context to a request that continues it.
        tokens = self.request_tokens(request) if self.kv_cache is not None else None
        self._acquire(tokens)
        handed_off = False
        try:
            prompt = self._prepare_context(llama, request, tokens)
            if request.raw:  # the legacy /v1/completions: the text as written, no template
                chunks = llama.create_completion(
                    prompt=tokens if tokens is not None else self.request_tokens(request),
                    max_tokens=request.max_tokens,
                    temperature=request.temperature, seed=request.seed, stream=True,
                    **_sampling(request))
            else:
                chunks = llama.create_chat_completion(
                    **template_arguments(request.messages, self._control),
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    seed=request.seed,
                    stream=True,
                    **_sampling(request),
                )
            for chunk in chunks:
                choice = chunk["choices"][0]
                text = choice["text"] if request.raw else choice["delta"].get("content")
                if text:
                    pieces.append(text)
                    yield text
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
            finished = True
        finally:
            if self.kv_cache is not None and prompt is not None:
                # The pipeline stores the reply stripped; the next prompt renders that text.
                # (A raw prompt has no next turn: nothing to keep.)
                reply = "".join(pieces).strip() if finished and not request.raw else None
                # Saving reads the reply again (~0.2–0.3 s for 56 tokens here): do it after the
                # stream has ended, holding the lock, so the reply's `done` is not delayed; a
                # request that wants the engine meanwhile takes it at the next chunk boundary.
                marker = self._prompt_key(prompt)
                keeper = threading.Thread(
                    target=self._keep_state_then_release,
                    args=(llama, request.messages, prompt, reply, marker), name="kv-keep",
                    daemon=True)
                # Another pool process may take the next turn before the save ends. That
                # turn's prompt starts with this one's beginning: the marker under its key
                # makes the other process wait for the state rather than read cold.
                if marker is not None:
                    self.kv_cache.mark_saving(marker)
                try:
                    keeper.start()
                    handed_off = True
                except RuntimeError:  # no thread to be had: skip saving, free the lock
                    if marker is not None:
                        self.kv_cache.clear_saving(marker)
                    log.warning("could not start the KV state keeper", exc_info=True)
            if not handed_off:
                self._lock.release()
        # Pieces are not tokens: llama-cpp-python joins tokens that split a UTF-8 character.
        written = "".join(pieces).encode()
        count = len(llama.tokenize(written, add_bos=False, special=False)) if written else 0
        return Completion("length" if finish_reason == "length" else "stop", count)

    # -- KV state reuse ----------------------------------------------------------------------
    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int] | None:
        """The tokens ``create_chat_completion`` will read for ``messages`` (None: unknown)."""
        llama = self.load()
        if self._formatter is None:
            return None
        return template_tokens(llama, self._formatter, self._control, messages)

    def request_tokens(self, request: GenerationRequest) -> list[int] | None:
        """The tokens the engine reads for ``request``: its chat prompt, or a raw prompt's
        text tokenized as text (BOS as the model wants it; control-token text stays text)."""
        if request.raw:
            return raw_tokens(self.load(), request.messages[-1].text)
        return self.prompt_tokens(request.messages)

    def count_raw_tokens(self, text: str) -> int:
        return len(raw_tokens(self.load(), text))

    def wait_idle(self) -> None:
        """Return once no state is being saved in the background (tests, shutdown). Unlike a
        request, waiting here does not cut the save short."""
        with self._lock:
            pass
        with self._writing:
            pass

    def _acquire(self, tokens: Sequence[int] | None = None) -> None:
        """Take the engine for a request that will read ``tokens``: a state save running in
        the background sees the request waiting and stops (``_read_unless_wanted``), unless
        what it has left is small beside what the request will read (``SAVE_SHARE``)."""
        if self._lock.acquire(blocking=False):
            return
        started = time.perf_counter()
        waiting = _Waiting(tokens, self._reads(tokens))
        with self._waiting_lock:
            self._waiting.append(waiting)
        try:
            self._lock.acquire()
        finally:
            with self._waiting_lock:
                self._waiting.remove(waiting)
        log.info("waited %.0f ms for the engine (a state save giving way or ending)",
                 (time.perf_counter() - started) * 1000)

    def _reads(self, tokens: Sequence[int] | None) -> int | None:
        """About how many tokens a request for ``tokens`` will read: all but the longest
        beginning the context holds or the store has (None: unknown). Only an estimate: the
        context may change meanwhile."""
        llama = self._llama
        if tokens is None or llama is None:
            return None
        held = common_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens)
        saved = 0
        if self.kv_cache is not None:
            positions = [p for p in self._boundaries(tokens) if p > held]
            for position, key in zip(positions[::-1], boundary_keys(tokens, positions)[::-1],
                                     strict=True):
                if key in self.kv_cache:
                    saved = position
                    break
        return len(tokens) - max(held, saved)

    def _wanted(self, left: int | None = None) -> bool:
        """Should a save with ``left`` tokens still to read give the engine to a waiting
        request? Yes when one waits (``left`` None), unless every waiting request will read
        more than ``left / SAVE_SHARE`` tokens."""
        waiting = self._waiting
        if left is None:
            return bool(waiting)
        return any(w.reads is None or left > SAVE_SHARE * w.reads for w in list(waiting))

    def _wanted_after(self, held: Sequence[int]) -> bool:
        """Does a waiting request's prompt start with the ``held`` tokens (and go on)?"""
        with self._waiting_lock:
            return any(w.tokens is not None and len(w.tokens) > len(held)
                       and common_prefix(w.tokens, held) == len(held)
                       for w in self._waiting)

    def _prepare_context(self, llama: Any, request: GenerationRequest,
                         prompt: list[int] | None = None) -> list[int] | None:
        """Put the longest known beginning of this prompt into the context, and keep the
        states new prompts will start with; returns the prompt's tokens (None when the store is
        off or the template unknown).

        Candidates: what the context holds now, and the saved states of the prompt's
        beginnings up to each of its message boundaries (``_boundaries``), found by the hash of
        their tokens. What the context holds is only reused up to where its tokens stop
        matching (llama-cpp-python's own prefix check), and a saved state only when its tokens
        are the prompt's: equal tokens at equal positions read in batches give equal KV cells.
        """
        if self.kv_cache is None:
            return self._prepare_without_store(llama, request)
        if prompt is None:
            prompt = self.request_tokens(request)
        if prompt is None:
            return None
        cache = self.kv_cache
        held = min(common_prefix(llama.input_ids[: llama.n_tokens].tolist(), prompt),
                   self._batch_read)
        system_end = self._system_boundary(request.messages, prompt)
        reused, source = self._restore_longest(llama, prompt, held, system_blocks(system_end))
        # Leave at least MIN_BATCH prompt tokens to read, or their cells would differ from a
        # cold run's; llama-cpp-python reuses what the context holds up to there.
        ready = max(min(reused, len(prompt) - MIN_BATCH), 0)
        reused = ready
        fits = len(prompt) <= self.context_size
        if fits and system_end is not None and ready < system_end <= len(prompt) - MIN_BATCH:
            # Read the system prompt alone once, and keep its state for new conversations,
            # and the states of its blocks on the way (each piece read is at least MIN_BATCH
            # tokens, as a cold run reads).
            ready = min(ready, system_end - MIN_BATCH)
            for block in system_blocks(system_end):
                if block - ready >= MIN_BATCH:
                    ready = self._read_and_keep(llama, prompt, ready, block)
            ready = self._read_and_keep(llama, prompt, ready, system_end)
        own = self._own_boundary(prompt)
        if fits and own is not None and own - ready >= KEEP_PROMPT_AFTER_TOKENS:
            # Much of the prompt is new: keep its state up to its last message now (tens of
            # ms on seconds of reading), not after the reply, where it would delay the next
            # request.
            ready = self._read_and_keep(llama, prompt, ready, own)
        if ready < llama.n_tokens:
            _truncate(llama, ready)
        self._batch_read = len(prompt)  # once generate() has read the rest in one batch
        self.last_prompt_tokens = (reused, len(prompt))
        self.last_source = source if reused else "none"
        cache.stats.tokens_reused += reused
        cache.stats.tokens_read += len(prompt) - reused
        # Which process reused what: with several pool processes sharing one store, this line
        # shows turns reusing states whichever process saved them.
        log.info("prompt of %d tokens: %d reused (%s) in process %d", len(prompt), reused,
                 self.last_source, os.getpid())
        return prompt

    def _restore_longest(self, llama: Any, prompt: list[int], held: int,
                         blocks: Sequence[int] = ()) -> tuple[int, str]:
        """Restore the longest saved beginning of ``prompt`` (at a message boundary, or at
        one of its system prompt's ``blocks``) if it is longer than the ``held`` tokens the
        context already has; returns how many prompt tokens the context now holds and where
        they came from."""
        assert self.kv_cache is not None
        cache = self.kv_cache
        positions = sorted({p for p in (*self._boundaries(prompt), *blocks)
                            if p <= len(prompt) - MIN_BATCH})
        longer = [key for p, key in zip(positions, boundary_keys(prompt, positions),
                                        strict=True) if p > held]
        saved = find_longest(cache, longer[::-1], prompt)
        if saved is None:
            if longer:
                cache.stats.misses += 1
            return held, "context"
        cache.stats.hits += 1
        started = time.perf_counter()
        try:
            restore(llama, saved)
        except RuntimeError:  # only speed is lost: read the prompt cold
            log.warning("could not restore a saved KV state; reading the prompt cold",
                        exc_info=True)
            _truncate(llama, 0)
            self._batch_read = 0
            return 0, "none"
        self._batch_read = len(saved.tokens)
        log.debug("restored %d tokens of KV state in %.1f ms", len(saved.tokens),
                  (time.perf_counter() - started) * 1000)
        return len(saved.tokens), "saved"

    def _read_and_keep(self, llama: Any, prompt: list[int], start: int, end: int) -> int:
        """Read ``prompt[start:end]`` in one batch after the context's first ``start`` tokens
        and keep the state of ``prompt[:end]``; returns ``end``."""
        assert self.kv_cache is not None
        _truncate(llama, start)
        llama.eval(list(prompt[start:end]))
        self._batch_read = end
        self.kv_cache.put(prefix_key(prompt[:end]), capture(llama))
        return end

    def _prepare_without_store(self, llama: Any, request: GenerationRequest) -> list[int] | None:
        """No state store: llama-cpp-python's own reuse of what the context holds."""
        if request.cache_key is not None:
            self._batch_read = 0  # llama-cpp-python's own reuse reads in pieces of any size
            return None
        prompt = self.request_tokens(request)
        if prompt is None:
            return None
        held = common_prefix(llama.input_ids[: llama.n_tokens].tolist(), prompt)
        # A one-off prompt (the OpenAI API) reuses what the context holds, but like a
        # conversation's turn reads at least MIN_BATCH tokens, and only from cells that
        # were batch-read: the same request at temperature 0 then gives the same text
        # whether it comes first or again (docs/openai-api.md, "Determinism").
        reuse = max(min(held, self._batch_read, len(prompt) - MIN_BATCH), 0)
        if reuse < llama.n_tokens:
            _truncate(llama, reuse)
        self._batch_read = len(prompt)
        self.last_prompt_tokens = (reuse, len(prompt))
        self.last_source = "context" if reuse else "none"
        return prompt

    def _keep_state_then_release(self, llama: Any, messages: Sequence[ChatMessage],
                                 prompt: list[int], reply: str | None,
                                 marker: str | None) -> None:
        """Read and copy the states to keep holding the engine, free it, then write them: a
        write (tens of MB to tmpfs, up to ~0.2 s on a busy host) never holds up a request.
        The marker stays until the files are there."""
        assert self.kv_cache is not None
        released = False
        with self._writing:
            try:
                started = time.perf_counter()
                writes: list[tuple[str, KvState]] = []
                unfinished: list[PendingSave] = []
                self.last_keep = self._keep_state(llama, messages, prompt, reply, writes,
                                                  unfinished)
                engine_seconds = time.perf_counter() - started
                self._lock.release()
                released = True
                for key, state in writes:
                    self.kv_cache.put(key, state)
                for job in unfinished:  # after the state it starts from is there
                    self.kv_cache.defer(job)
                self.last_keep_seconds = time.perf_counter() - started
                # One line per turn: what was kept, how long it held the engine, and in all.
                log.info("kept the state after a prompt of %d tokens: %s, engine %.0f ms, "
                         "%.0f ms in all", len(prompt), self.last_keep, engine_seconds * 1000,
                         self.last_keep_seconds * 1000)
            except Exception:  # a background thread: log, never lose the lock
                log.exception("could not keep the KV state of a prompt of %d tokens",
                              len(prompt))
            finally:
                if marker is not None:
                    self.kv_cache.clear_saving(marker)
                if not released:
                    self._lock.release()

    def _keep_state(self, llama: Any, messages: Sequence[ChatMessage], prompt: list[int],
                    reply: str | None, writes: list[tuple[str, KvState]],
                    unfinished: list[PendingSave]) -> str:
        """Save the state the next prompts will start with: the prompt followed by the reply
        (as the next prompt of the conversation holds it), or the prompt's own beginning when
        no reply came or a request took the engine first; returns which (``last_keep``). The
        states go to ``writes``, for the caller to store once the engine is free.

        Generated tokens were read one at a time, and llama.cpp computes cells of batches under
        four tokens with other kernels: kept as they are, the next turn would differ from a cold
        run. So the context is cut back to the prompt and the reply is read again in batches of
        at least MIN_BATCH tokens — as the text the next prompt will hold (the stored reply,
        re-tokenised), not the sampled tokens — up to the next message's boundary. That read
        stops as soon as a request waits for the engine (``_read_unless_wanted``). When that
        request continues what the context holds (this conversation's next turn, sent as the
        reply ended), the context is left to it: it reads only the rest of the reply and its
        new message. Otherwise the prompt's own beginning (whose cells are exact already) is
        kept instead, and the rest of the save goes to ``unfinished``: an idle engine of the
        host finishes it (``finish_pending``) before the conversation's next turn, or that turn
        reads the reply with its new message.
        """
        assert self.kv_cache is not None
        kept = "none"
        try:
            _truncate(llama, min(llama.n_tokens, len(prompt)))
            follow = self._next_turn_prefix(messages, reply) if reply is not None else None
            keep = 0
            if follow is not None:
                keep = min(common_prefix(prompt, follow), llama.n_tokens,
                           len(follow) - MIN_BATCH)
            if follow is not None and keep > 0:
                _truncate(llama, keep)
                if self._read_unless_wanted(llama, follow[keep:]):
                    writes.append((prefix_key(follow), capture(llama)))
                    kept = "reply"
                elif self._wanted_after(llama.input_ids[: llama.n_tokens].tolist()):
                    # The waiting request is this conversation's next turn (a client that
                    # answers at once): it reuses what was read of the reply so far and
                    # reads only the rest, and keeps its own states after its reply.
                    kept = "handed on"
                elif self._keep_own(llama, prompt, writes):
                    kept = "pre-empted"
                    own = self._own_boundary(prompt)
                    assert own is not None  # _keep_own found it
                    unfinished.append(PendingSave(key=prefix_key(follow),
                                                  base=prefix_key(prompt[:own]),
                                                  tokens=tuple(follow)))
            elif self._keep_own(llama, prompt, writes):
                # No reply to keep (cut, failed, or past the context): a retry or the next
                # turn starts from the prompt's own state.
                kept = "prompt"
            self._batch_read = llama.n_tokens
        except RuntimeError:
            log.warning("could not save the KV state of a prompt of %d tokens", len(prompt),
                        exc_info=True)
        return kept

    def finish_pending(self) -> bool:
        """Finish one save a request cut short (``PendingSave``, left by any process of the
        host) if this engine is idle: restore the state it starts from, read the rest as a
        save does (giving way at once to a request) and keep the result. True when one was
        finished. With several pool processes, an idle one finishes what a busy one had to
        leave; with one, it is done between turns."""
        cache = self.kv_cache
        llama = self._llama
        if cache is None or llama is None or self._wanted() or self._lock.locked():
            return False
        if not self._writing.acquire(blocking=False):
            return False
        try:
            job = cache.claim_pending()
            if job is None:
                return False
            base = cache.get(job.base)
            start = len(base.tokens) if base is not None else 0
            if base is None or job.tokens[:start] != base.tokens or \
                    len(job.tokens) - start < MIN_BATCH:
                return False  # its beginning was evicted meanwhile: nothing to finish from
            if not self._lock.acquire(blocking=False):
                cache.defer(job)  # a request came first
                return False
            try:
                started = time.perf_counter()
                try:
                    restore(llama, base)
                except RuntimeError:
                    log.warning("could not restore a saved KV state to finish a save",
                                exc_info=True)
                    _truncate(llama, 0)
                    self._batch_read = 0
                    return False
                self._batch_read = start
                if not self._read_unless_wanted(llama, job.tokens[start:]):
                    # A request came. Unless it continues what was read (the conversation's
                    # next turn, which then reads only the rest), finish it later.
                    if not self._wanted_after(llama.input_ids[: llama.n_tokens].tolist()):
                        cache.defer(job)
                        log.info("gave way while finishing the state of a prompt of %d tokens "
                                 "a request had cut short, in process %d", len(job.tokens),
                                 os.getpid())
                    return False
                state = capture(llama)
                engine_seconds = time.perf_counter() - started
            finally:
                self._lock.release()
            cache.put(job.key, state)
            log.info("finished the state of a prompt of %d tokens a request had cut short: "
                     "%d tokens read, engine %.0f ms, in process %d", len(job.tokens),
                     len(job.tokens) - start, engine_seconds * 1000, os.getpid())
            return True
        finally:
            self._writing.release()

    def _finish_pending_loop(self, every: float) -> None:
        """The kv-finish thread: every ``every`` seconds, finish what there is to finish."""
        while True:
            time.sleep(every)
            try:
                while self.finish_pending():
                    pass
            except Exception:  # a background thread: log, keep looking
                log.exception("could not finish a KV state save a request had cut short")

    def _keep_own(self, llama: Any, prompt: list[int],
                  writes: list[tuple[str, KvState]]) -> bool:
        """Keep the state of the prompt's own beginning unless it is kept already (before
        generating, when most of the prompt was new), cutting the context back to it. False
        when there is nothing to keep."""
        assert self.kv_cache is not None
        own = self._own_boundary(prompt)
        if own is None or own > llama.n_tokens:
            return False
        key = prefix_key(prompt[:own])
        if key not in self.kv_cache:  # else the context keeps what it holds (a next turn's)
            _truncate(llama, own)
            writes.append((key, capture(llama)))
        return True

    def _read_unless_wanted(self, llama: Any, tokens: Sequence[int]) -> bool:
        """Read ``tokens`` after what the context holds, in chunks of KEEP_CHUNK (none shorter
        than MIN_BATCH); False, with part of them read, when a request wants the engine.

        A request that starts waiting during a chunk stops it at once (llama.cpp's abort
        callback, checked between the graph's nodes: ~1 ms instead of up to a whole chunk,
        30–45 ms at 2,000 tokens of context here). llama.cpp drops the aborted chunk's cells
        and llama-cpp-python does not count its tokens, so the context holds the chunks read
        before it, as if the read had stopped at that chunk's start.

        A request that will read more than 1 / SAVE_SHARE times what is left does not stop it
        (``_wanted``): a long prompt read cold then starts a few per cent later, and this
        conversation's next turn does not read its reply again."""
        done = 0
        with _aborted_when(llama, lambda: self._wanted(len(tokens) - done)):
            while done < len(tokens):
                if self._wanted(len(tokens) - done):
                    return False
                end = done + KEEP_CHUNK
                if len(tokens) - end < MIN_BATCH:
                    end = len(tokens)
                try:
                    llama.eval(list(tokens[done:end]))
                except RuntimeError as exc:
                    if str(exc).endswith(f"returned {DECODE_ABORTED}"):
                        return False
                    raise
                self._batch_read = llama.n_tokens
                done = end
        return True

    def _boundaries(self, tokens: Sequence[int]) -> list[int]:
        """Where the chat template's messages begin and end: the positions of its control
        tokens (message text cannot form them, worker/control_tokens.py), past the first
        MIN_BATCH tokens."""
        marks = self._boundary_ids
        return [p for p, token in enumerate(tokens) if token in marks and p >= MIN_BATCH]

    def _last_boundary(self, tokens: Sequence[int]) -> int | None:
        """The last message boundary of ``tokens``, or None."""
        found = self._boundaries(tokens)
        return found[-1] if found else None

    def _own_boundary(self, prompt: Sequence[int]) -> int | None:
        """The prompt's last boundary that leaves MIN_BATCH tokens to read (ChatML: the end of
        its last message, before the reply's header): a retry of the same prompt, and every
        next turn after it, start with the tokens up to there."""
        found = [p for p in self._boundaries(prompt) if p <= len(prompt) - MIN_BATCH]
        return found[-1] if found else None

    def _prompt_key(self, prompt: Sequence[int]) -> str | None:
        """The key of the prompt's own beginning (``_own_boundary``), marked while saving."""
        own = self._own_boundary(prompt)
        return prefix_key(prompt[:own]) if own is not None else None

    def _next_turn_prefix(self, messages: Sequence[ChatMessage], reply: str) -> list[int] | None:
        """The tokens every next prompt of this conversation starts with (window unchanged),
        up to its last message boundary; None when that is no longer than the prompt's own
        beginning or does not fit the context."""
        answered = [*messages, ChatMessage(role="assistant", text=reply)]
        first = self.prompt_tokens([*answered, ChatMessage(role="user", text="a")]) or []
        second = self.prompt_tokens([*answered, ChatMessage(role="user", text="b")]) or []
        shared = first[: common_prefix(first, second)]
        end = self._last_boundary(shared)
        if end is None or end > self.context_size:
            return None
        return shared[:end]

    def _system_boundary(self, messages: Sequence[ChatMessage],
                         prompt: Sequence[int]) -> int | None:
        """Where the system message ends in ``prompt`` (its last boundary before the first
        message after it), or None without one."""
        system = self._system_prefix(messages)
        if len(system) < MIN_BATCH or not _starts(prompt, system):
            return None
        return self._last_boundary(system)

    def _system_prefix(self, messages: Sequence[ChatMessage]) -> tuple[int, ...]:
        """The tokens every prompt starting with this system message begins with."""
        return system_prefix(self._system_prefixes, self.prompt_tokens, messages)


def system_blocks(system_end: int | None) -> list[int]:
    """Positions inside a system prompt ending at ``system_end`` where block states are kept
    (SYSTEM_BLOCK x 1, 2, 4, ..., at least MIN_BATCH before its end)."""
    blocks: list[int] = []
    while system_end is not None and SYSTEM_BLOCK << len(blocks) <= system_end - MIN_BATCH:
        blocks.append(SYSTEM_BLOCK << len(blocks))
    return blocks


def system_prefix(cache: dict[str, tuple[int, ...]],
                  prompt_tokens: Callable[[Sequence[ChatMessage]], list[int] | None],
                  messages: Sequence[ChatMessage]) -> tuple[int, ...]:
    """The tokens every prompt starting with ``messages``' system message begins with (none
    without one), through the engine's ``prompt_tokens``; ``cache`` keeps them by the
    system message's text."""
    if not messages or messages[0].role != "system":
        return ()
    system = messages[0]
    cached = cache.get(system.text)
    if cached is not None:
        return cached
    # Two prompts that differ only after the system message share exactly its prefix.
    first = prompt_tokens([system, ChatMessage(role="user", text="a")]) or []
    second = prompt_tokens([system, ChatMessage(role="user", text="b")]) or []
    prefix = tuple(first[: common_prefix(first, second)])
    if len(cache) > 64:
        cache.clear()
    cache[system.text] = prefix
    return prefix


def count_message_tokens(llama: Any, messages: Sequence[ChatMessage],
                         control: ControlTokenText | None = None) -> int:
    """Prompt tokens of ``messages`` by ``llama``'s tokenizer, chat template included. Also
    what the web process counts with the vocabulary alone (worker/prompt_size.py).
    With ``control``, text as the prompt holds it: control-token text broken up costs a few
    tokens more (worker/control_tokens.py)."""
    total = GENERATION_PROMPT_TOKENS
    for message in messages:
        text = control.neutralise(message.text) if control is not None else message.text
        total += len(llama.tokenize(text.encode(), add_bos=False, special=False))
        total += TEMPLATE_TOKENS_PER_MESSAGE
    return total


def engine_count(llama: Any, formatter: Any, control: ControlTokenText,
                 messages: Sequence[ChatMessage]) -> int:
    """An engine's ``count_tokens``: the per-message count, or, with tools the template
    renders, the tokens as rendered (not approximated)."""
    if messages and messages[0].tools and formatter is not None:
        return len(template_tokens(llama, formatter, control, messages))
    return count_message_tokens(llama, messages, control)


def template_tokens(llama: Any, formatter: Any, control: ControlTokenText,
                    messages: Sequence[ChatMessage]) -> list[int]:
    """The tokens ``create_chat_completion`` reads for ``messages`` with the GGUF's chat
    template (``formatter``, from ``chat_formatter``): what the engine reads, and what the web
    edge counts exactly with the vocabulary alone (worker/prompt_size.py)."""
    result = formatter(**template_arguments(messages, control))
    tokens: list[int] = llama.tokenize(
        result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
    return tokens


def raw_tokens(llama: Any, text: str) -> list[int]:
    """A raw prompt's tokens (the legacy /v1/completions): its text as text, after BOS."""
    tokens: list[int] = llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    return tokens


@contextlib.contextmanager
def _aborted_when(llama: Any, wanted: Callable[[], bool]) -> Iterator[None]:
    """While inside, llama.cpp stops a decode as soon as ``wanted()`` is true (the decode
    returns DECODE_ABORTED); the callback is removed on the way out, so replies are never
    cut by it. It runs on llama.cpp's compute thread, once per graph node (~600 a decode
    here, no measurable cost), and only reads a list."""
    import llama_cpp

    def stop(_data: Any) -> bool:
        return wanted()

    check = llama_cpp.ggml_abort_callback(stop)  # referenced until the callback is removed
    context = llama._ctx.ctx
    llama_cpp.llama_set_abort_callback(context, check, None)
    try:
        yield
    finally:
        llama_cpp.llama_set_abort_callback(context, llama_cpp.ggml_abort_callback(), None)


@dataclass(frozen=True, eq=False)
class _Waiting:
    """A request waiting for the engine: the tokens it will read (None: not known before it
    has the engine) and about how many of them are new (``LlamaEngine._reads``)."""

    tokens: Sequence[int] | None
    reads: int | None


def _truncate(llama: Any, keep: int) -> None:
    """Drop everything after the first ``keep`` tokens from ``llama``'s context."""
    keep = max(keep, 0)
    llama._ctx.kv_cache_seq_rm(-1, keep, -1)
    llama.n_tokens = keep
    llama._requires_eval = True


def _starts(tokens: Sequence[int], prefix: Sequence[int]) -> bool:
    return len(tokens) >= len(prefix) and list(tokens[: len(prefix)]) == list(prefix)


def _sampling(request: GenerationRequest) -> dict[str, Any]:
    """``create_chat_completion``'s arguments for OpenAI's sampling options (set ones only)."""
    extra: dict[str, Any] = {}
    if request.top_p is not None:
        extra["top_p"] = request.top_p
    if request.presence_penalty:
        extra["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty:
        extra["frequency_penalty"] = request.frequency_penalty
    if request.logit_bias:
        extra["logit_bias"] = dict(request.logit_bias)
    if request.stop:
        # llama-cpp-python holds back streamed text that may begin a stop string, and ends
        # before it: the stop never reaches the stream.
        extra["stop"] = list(request.stop)
    if request.json_schema is not None:
        from worker.grammar import grammar

        extra["grammar"] = grammar(request.json_schema, request.schema_or_text)
    return extra


def template_arguments(messages: Sequence[ChatMessage], control: ControlTokenText
                       ) -> dict[str, Any]:
    """The chat template's arguments for ``messages``: the messages, and the tools offered
    on the leading one (assistant/tools.py, ``for_template``) for a template that renders
    them. Every string a client wrote (text, tool schemas, call arguments) is unable to form
    control tokens (worker/control_tokens.py)."""
    arguments: dict[str, Any] = {"messages": [_as_dict(m, control) for m in messages]}
    if messages and messages[0].tools:
        arguments["tools"] = [_neutral({"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}},
            control) for t in messages[0].tools]
    return arguments


def _as_dict(message: ChatMessage, control: ControlTokenText) -> dict[str, Any]:
    """A message as the chat template takes it (OpenAI's shape, as Hugging Face templates
    expect: a call's arguments as an object)."""
    shown: dict[str, Any] = {"role": message.role, "content": control.neutralise(message.text)}
    if message.role == "tool":
        # A JSON result as JSON: Llama 3.1's template writes a string result as a JSON string
        # (its "is iterable" test holds for strings), an object as the object.
        result = _arguments(message.text)
        if isinstance(result, dict | list):
            shown["content"] = _neutral(result, control)
    if message.tool_calls:
        shown["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": _neutral(_arguments(c.arguments),
                                                                control)}}
            for c in message.tool_calls]
    return shown


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return text


def _neutral(value: Any, control: ControlTokenText) -> Any:
    """``value`` (JSON) with every string, keys included, unable to form control tokens."""
    if isinstance(value, str):
        return control.neutralise(value)
    if isinstance(value, dict):
        return {control.neutralise(str(k)): _neutral(v, control) for k, v in value.items()}
    if isinstance(value, list):
        return [_neutral(v, control) for v in value]
    return value


def tool_format(llama: Any) -> str | None:
    """The tool format of the GGUF's own chat template when it renders tools (for a model
    whose ``chat_formatter`` is that template)."""
    from assistant.tools import template_tool_format

    return template_tool_format(str(llama.metadata.get("tokenizer.chat_template", "")))


def chat_formatter(llama: Any) -> Any:
    """The formatter ``create_chat_completion`` uses, when it is the GGUF's own template."""
    if llama.chat_handler is not None or llama.chat_format != "chat_template.default":
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos_id = llama.token_eos()
    bos_id = llama.token_bos()
    model = llama._model
    return Jinja2ChatFormatter(
        template=llama.metadata["tokenizer.chat_template"],
        eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
        stop_token_ids=[eos_id],
    )
