"""Continuous batching: one llama.cpp context per process serving several turns at once.

``BatchingEngine`` offers what ``worker.llama.LlamaEngine`` offers the pipeline (``stream``,
``count_tokens``, ``context_size``, ``wait_idle``), but its context has ``slots`` sequences
(llama.cpp sequence ids 0..slots-1). One scheduler thread owns the context; each ``stream``
call (one Celery thread per running turn) hands its request over and reads its pieces from its
own queue. Every step decodes:

- one ``llama_batch`` with one token for each turn that is writing its reply (logits for that
  token only), then
- for each turn still reading its prompt, up to ``chunk`` tokens of it in a ``llama_batch`` of
  its own (``_step`` says why), so a long prompt joins the running turns in pieces and does
  not stall their tokens for long;
- in a step with nothing else to do, a few tokens of a finished reply being read again to be
  saved (background work; a new turn takes that slot if none is free).

Each slot samples with its own llama.cpp sampler chain, built like llama-cpp-python's
``Llama._init_sampler`` (penalties, grammar, top-k 40, typical 1.0, top-p, min-p 0.05,
temperature, ``dist(seed)``; greedy at temperature 0), so grammars (JSON replies, tools) and
seeds are per turn. A finished or cancelled turn (the consumer closed its generator: a safety
cut, a cancel) frees its slot (``llama_memory_seq_rm``) at the next step.

With a KV state store (``worker.kvcache``), a turn's prompt starts from the longest saved
beginning restored into its slot (``llama_state_seq_set_data`` with the slot's sequence id),
and after the reply the slot re-reads the conversation's next-turn prefix and saves it (as
``LlamaEngine`` does) before the slot is freed. A state saved from one slot restores into any
other; states of ``LlamaEngine`` (one KV stream) and of engines with another number of slots
are refused by llama.cpp, so they are kept under other keys (``_key``). As in
``LlamaEngine``, a prompt's reading stops where the system prompt ends (the first time that
persona is read) and at its last message when much of it is new, and the state there is saved
before the reply goes on (``_plan_saves``): a new conversation with a known persona reads only
its own messages.

Numerics (measured with SmolLM2-135M Q4_1, 2 threads; docs/scaling.md "Continuous
batching"): a turn alone in the engine gives exactly ``LlamaEngine``'s cold reply (8 of 8,
temperature 0, 160 tokens), and a prompt read in chunks, or restored into any slot from a
state saved from another, gives the same cells as a cold read: prompt chunks are decoded apart
from the writers' tokens (``_step``), in pieces of at least MIN_BATCH tokens; a state saved
while other slots read and wrote holds the same cells, byte for byte, as one saved from a turn
run alone (tests/worker/test_batching.py). Turns writing
together are not bit-identical to a cold run: their tokens are computed in one ubatch of
several rows, with other kernels than one row alone, and greedy replies drift apart after a
while (8 together, 160 tokens: 5 of 8 identical, the others first differed after 90–130
characters). With one unified KV buffer (``unified=True``) the attention also runs over the
other sequences' (masked) cells, and more differed (7 of 8 at 80 tokens): not used. Hence
``LlamaEngine`` stays the default path.
"""

from __future__ import annotations

import codecs
import contextvars
import ctypes
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.engine import Completion, GenerationRequest, Stream
from assistant.envelope import ChatMessage
from assistant.errors import ModelError
from worker.control_tokens import ControlTokenText, control_token_ids, control_token_text
from worker.kvcache import KvCache, KvState, boundary_keys, common_prefix, find_longest, prefix_key
from worker.llama import (
    KEEP_CHUNK,
    KEEP_PROMPT_AFTER_TOKENS,
    MIN_BATCH,
    UBATCH,
    chat_formatter,
    engine_count,
    raw_tokens,
    system_blocks,
    system_prefix,
    template_tokens,
    tool_format,
)

log = logging.getLogger(__name__)

# Prompt tokens one slot reads in a step; between two chunks, every writing turn gets a token.
CHUNK = UBATCH
IDLE_POLL_SECONDS = 0.5

_DONE = object()  # a slot's queue: the reply ended (followed by nothing)
_WAKE = object()  # the scheduler's inbox: look at the waiting turns again


class Cancelled(Exception):
    """The engine was closed while a turn was waiting or running."""


@dataclass
class _Turn:
    """One request in a slot: what it reads, what it has written, where the pieces go."""

    request: GenerationRequest
    prompt: list[int]
    out: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    slot: int = -1
    sampler: Any = None
    read: int = 0  # prompt tokens in the slot's KV cells
    pending: int | None = None  # the sampled token not yet in the KV cells
    written: int = 0  # tokens sampled
    text_bytes: bytearray = field(default_factory=bytearray)
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    held: str = ""  # text held back: it may begin a stop string
    pieces: list[str] = field(default_factory=list)
    finish: str | None = None
    # After the reply: the tokens to re-read and save for the next turn (KV store only).
    keep_tokens: list[int] | None = None
    # Before the reply: prompt positions where the state read so far is saved (``_plan_saves``).
    saves: list[int] = field(default_factory=list)
    # Where its system prompt ends and that state's key (``_system_end``; KV store only).
    system_end: int | None = None
    system_key: str | None = None
    submitted: float = field(default_factory=time.perf_counter)
    # The caller's context (its log ids: conversation, message), for lines the scheduler
    # writes about this turn.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    first_token_at: float | None = None


class BatchingEngine:
    """A GGUF chat model serving up to ``slots`` turns at once with continuous batching."""

    def __init__(
        self, model_path: Path, context_size: int, threads: int, threads_batch: int,
        slots: int, on_load: Callable[[float], None] | None = None,
        kv_cache: KvCache | None = None, chunk: int = CHUNK, unified: bool = False,
    ) -> None:
        if slots < 1:
            raise ValueError("a batching engine needs at least one slot")
        self.model_path = model_path
        self.name = model_path.stem
        self.context_size = context_size  # per slot: what one turn's prompt and reply may use
        self.threads = threads
        self.threads_batch = threads_batch
        self.slots = slots
        self.unified = unified
        self.chunk = max(chunk, MIN_BATCH)
        self.kv_cache = kv_cache
        self._on_load = on_load
        self._load_lock = threading.Lock()
        self._llama: Any = None  # tokenizer, chat template, model weights
        self._ctx: Any = None  # our own context with ``slots`` sequences
        self._mem: Any = None
        self._batch: Any = None
        self._n_batch = 0
        self._formatter: Any = None
        self._tool_format: str | None = None
        self._control = ControlTokenText(())
        self._boundary_ids: frozenset[int] = frozenset()
        self._system_prefixes: dict[str, tuple[int, ...]] = {}
        # States of system prompts being read by a slot (key -> slot), then being written
        # (key -> writes queued): turns with the same system prompt wait for them (_admit).
        self._reading: dict[str, int] = {}
        self._storing: dict[str, int] = {}
        # New turns, None (closed) or _WAKE.
        self._inbox: queue.SimpleQueue[_Turn | object | None] = queue.SimpleQueue()
        self._waiting: list[_Turn] = []
        self._active: dict[int, _Turn] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self._busy = threading.Condition()
        # Saved states are written to the store by this thread, not the scheduler's: a write
        # (tens of MB) would hold up every slot's next token.
        self._writes: queue.SimpleQueue[tuple[str, KvState] | None] = queue.SimpleQueue()
        self._writes_pending = 0
        self._writer: threading.Thread | None = None
        self.steps = 0  # decode steps run (bench, tests)
        self.max_together = 0  # the most turns that shared one decode step (tests)
        # Steps where a prompt's chunk was read together with other turns' reply tokens.
        self.mixed_steps = 0
        self.gave_way = 0  # saves stopped so that a new turn could have their slot (tests)

    # -- loading -----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    def load(self) -> Any:
        with self._load_lock:
            if self._ctx is None:
                self._load()
            return self._llama

    def _load(self) -> None:
        if not self.model_path.is_file():
            raise ModelError(f"model file {self.model_path} not found; run `assistant model pull`")
        import llama_cpp

        started = time.perf_counter()
        try:
            # The Llama object gives the weights, the tokenizer and the chat template; its own
            # context is kept tiny, the turns run in ours.
            llama = llama_cpp.Llama(
                model_path=str(self.model_path), n_ctx=64, n_batch=64, n_ubatch=64,
                n_threads=self.threads, n_threads_batch=self.threads_batch,
                use_mmap=True, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"could not load {self.model_path}: {exc}") from exc
        # Llama's own context parameters (attention kernels, KV cell types, threads) as a cold
        # run of LlamaEngine has them; only the size and the sequences differ.
        params = type(llama.context_params).from_buffer_copy(llama.context_params)
        params.n_ctx = self.context_size * self.slots
        # A llama_decode holds every writer's token, or one chunk of one prompt.
        self._n_batch = max(self.chunk, self.slots, UBATCH)
        params.n_batch = self._n_batch
        params.n_ubatch = UBATCH
        params.n_seq_max = self.slots
        params.kv_unified = self.unified
        ctx = llama_cpp.llama_init_from_model(llama._model.model, params)
        if not ctx:
            raise ModelError(f"could not create a context of {self.slots} sequences "
                             f"x {self.context_size} tokens for {self.model_path}")
        self._llama = llama
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self._formatter = chat_formatter(llama)
        if self._formatter is not None:
            self._tool_format = tool_format(llama)
        self._control = control_token_text(llama)
        self._boundary_ids = frozenset(control_token_ids(llama))
        self._vocab = llama._model.vocab
        self._thread = threading.Thread(target=self._run, name="batching-engine", daemon=True)
        self._thread.start()
        if self.kv_cache is not None:
            self._writer = threading.Thread(target=self._write_states, name="kv-writer",
                                            daemon=True)
            self._writer.start()
        seconds = time.perf_counter() - started
        log.info("loaded %s with %d slots of %d tokens in %.2f s", self.model_path.name,
                 self.slots, self.context_size, seconds)
        if self._on_load is not None:
            self._on_load(seconds)

    def close(self) -> None:
        """Stop the scheduler; turns still running end with ``Cancelled``."""
        self._closed = True
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join(timeout=30)

    # -- the interface the pipeline uses -----------------------------------------------------
    @property
    def tool_format(self) -> str | None:
        """The chat template's own tool format ("llama3.1"), or None (loads the model)."""
        self.load()
        return self._tool_format

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return engine_count(self.load(), self._formatter, self._control, messages)

    def count_raw_tokens(self, text: str) -> int:
        return len(raw_tokens(self.load(), text))

    def request_tokens(self, request: GenerationRequest) -> list[int]:
        """The tokens the engine reads for ``request``: its chat prompt, or a raw prompt's
        text (the legacy /v1/completions) as ``LlamaEngine`` reads it."""
        if request.raw:
            return raw_tokens(self.load(), request.messages[-1].text)
        return self.prompt_tokens(request.messages)

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        llama = self.load()
        if self._formatter is None:
            raise ModelError("the batching engine needs the GGUF's own chat template")
        return template_tokens(llama, self._formatter, self._control, messages)

    def stream(self, request: GenerationRequest) -> Stream:
        prompt = self.request_tokens(request)
        if len(prompt) + 1 > self.context_size:
            raise ModelError(f"the prompt has {len(prompt)} tokens; a slot holds "
                             f"{self.context_size}")
        turn = _Turn(request=request, prompt=prompt)
        if self.kv_cache is not None:
            turn.system_end = self._system_end(turn)
            if turn.system_end is not None:
                turn.system_key = self._key(prefix_key(prompt[: turn.system_end]))
        if self._closed:
            raise Cancelled("the engine is closed")
        with self._busy:
            self._inbox.put(turn)
        finished = False
        try:
            while True:
                item = turn.out.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
            finished = True
        finally:
            if not finished:
                turn.cancelled.set()  # the scheduler frees the slot at its next step
        llama = self._llama
        written = "".join(turn.pieces).encode()
        count = len(llama.tokenize(written, add_bos=False, special=False)) if written else 0
        return Completion("length" if turn.finish == "length" else "stop", count)

    def wait_idle(self) -> None:
        """Return once no turn is waiting, running or being saved (tests, shutdown)."""
        with self._busy:
            while self._thread is not None and (
                    self._waiting or self._active or not self._inbox.empty()
                    or self._writes_pending):
                self._busy.wait(timeout=0.1)

    # -- the scheduler ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                # Idle (nothing running, and every waiting turn waits for a state being saved):
                # sleep until a request, or the writer, wakes the scheduler.
                idle = not self._active and all(self._parked(t) for t in self._waiting)
                if not self._take_new(block=idle):
                    break
                self._admit()
                if self._active:
                    self._step()
                with self._busy:
                    self._busy.notify_all()
        except BaseException as exc:  # the context is unusable: fail every turn, loudly
            log.exception("the batching engine stopped")
            self._fail_all(ModelError(f"the batching engine stopped: {exc}"))
        else:
            self._fail_all(Cancelled("the engine is closed"))

    def _take_new(self, block: bool) -> bool:
        """Move new requests to the waiting list; False once the engine is closed."""
        try:
            item = self._inbox.get(timeout=IDLE_POLL_SECONDS) if block else \
                self._inbox.get_nowait()
        except queue.Empty:
            return not self._closed
        while True:
            if item is None:
                return False
            if isinstance(item, _Turn):
                self._waiting.append(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _admit(self) -> None:
        """Give waiting turns the free slots, first come first served. A turn whose system
        prompt another slot is reading now, to save its state, waits for that state instead
        of reading the same tokens beside it (several new conversations with one persona
        arriving together read it once)."""
        self._waiting = [t for t in self._waiting if not self._drop_if_cancelled(t)]
        free = [s for s in range(self.slots) if s not in self._active]
        for turn in list(self._waiting):
            if self._parked(turn):
                continue
            if not free:
                # A slot still re-reading a finished reply gives way to a new turn.
                saving = [t for t in self._active.values() if t.keep_tokens is not None]
                if not saving:
                    break
                free.append(self._give_way(min(saving, key=lambda t: t.submitted)))
            self._waiting.remove(turn)
            turn.slot = free.pop(0)
            try:
                turn.sampler = self._make_sampler(turn.request)
                self._restore(turn)
            except Exception as exc:
                self._release(turn)
                turn.out.put(exc if isinstance(exc, ModelError) else
                             ModelError(f"could not start the turn: {exc}"))
                continue
            self._active[turn.slot] = turn
            if turn.system_key is not None and turn.system_end in turn.saves:
                self._reading[turn.system_key] = turn.slot

    def _give_way(self, turn: _Turn) -> int:
        """Stop re-reading ``turn``'s reply for its save; keep the state of its prompt's own
        beginning instead (whose cells are a cold run's already), as ``LlamaEngine`` does when
        a request pre-empts its save; returns the freed slot."""
        assert self.kv_cache is not None
        own = self._readable_boundaries(turn.prompt)
        read = min(turn.read, common_prefix(turn.prompt, turn.keep_tokens or []))
        if own and own[-1] <= read and \
                self._key(prefix_key(turn.prompt[: own[-1]])) not in self.kv_cache:
            self._truncate(turn.slot, own[-1])
            self._store(turn.slot, turn.prompt[: own[-1]])
        slot = turn.slot
        del self._active[slot]
        self._release(turn)
        self.gave_way += 1
        return slot

    def _parked(self, turn: _Turn) -> bool:
        """True while another slot reads or writes the state of this turn's system prompt."""
        shared = turn.system_key
        return shared is not None and (shared in self._reading or shared in self._storing)

    def _drop_if_cancelled(self, turn: _Turn) -> bool:
        if turn.cancelled.is_set():
            turn.out.put(_DONE)
            return True
        return False

    def _step(self) -> None:
        """One step: a llama_decode of every writing turn's last token, then one of each
        reading turn's next prompt chunk; sample and hand out the tokens.

        A prompt chunk is decoded alone, never beside another turn's tokens: llama.cpp splits
        a batch of several KV streams into ubatches with as many tokens of each sequence, so
        a chunk next to a writer's token, or next to a longer or shorter chunk of another
        prompt, would have some of its tokens computed in a ubatch of one to three rows, with
        other kernels than a cold run's (MIN_BATCH). Measured: a next turn's reply then
        differed from a cold run's, and so did a first reply when three prompts of 27, 28 and
        32 tokens were read in one llama_decode (the 28-token one ended in a ubatch of two).
        Reading a prompt is compute-bound here, so one decode per prompt costs little."""
        for turn in list(self._active.values()):
            if turn.cancelled.is_set():
                self._finish(turn, save=False)
        writers = [t for t in self._active.values() if t.pending is not None]
        if writers:
            for index, turn in enumerate(writers):
                assert turn.pending is not None
                self._put(index, turn.pending, turn.read, turn.slot, True)
                turn.read += 1
                turn.pending = None
            self._decode(len(writers))
            for index, turn in enumerate(writers):
                self._sample(turn, index)
        # Re-reading a finished reply to save it is background work: only in a step where no
        # turn writes or reads its prompt, one reply at a time, KEEP_CHUNK tokens (as
        # LlamaEngine's save gives way), so it never slows a reply nor a first token.
        prompts = [t for t in self._active.values() if t.keep_tokens is None
                   and t.pending is None and t.read < len(t.prompt)]
        saving = [t for t in self._active.values() if t.keep_tokens is not None
                  and t.read < len(t.keep_tokens)]
        readers = prompts or ([] if writers else saving[:1])
        for turn in readers:
            self._read_piece(turn)
        self.max_together = max(self.max_together, len(writers) + len(readers))
        if writers and readers:
            self.mixed_steps += 1

    def _read_piece(self, turn: _Turn) -> None:
        """Decode the turn's next piece of its prompt (or of the reply it re-reads to save);
        then sample its first token, save the state it reached, or save and free the slot."""
        saving = turn.keep_tokens is not None
        source = turn.keep_tokens if turn.keep_tokens is not None else turn.prompt
        # A piece ends where a state is to be saved (``_plan_saves``), else at the end.
        stop = turn.saves[0] if not saving and turn.saves else len(source)
        chunk = KEEP_CHUNK if saving else self.chunk
        # Every piece holds at least MIN_BATCH tokens (llama.cpp reads smaller batches with
        # other kernels), as a cold run reads it.
        end = min(stop, turn.read + min(chunk, self._n_batch - MIN_BATCH))
        if 0 < stop - end < MIN_BATCH:
            end = stop - MIN_BATCH if stop - turn.read >= 2 * MIN_BATCH else stop
        last = not saving and end == len(source)  # the prompt's end: sample a token
        count = end - turn.read
        for index, position in enumerate(range(turn.read, end)):
            self._put(index, source[position], position, turn.slot, last and index == count - 1)
        self._decode(count)
        turn.read = end
        if last:
            self._sample(turn, count - 1)
        elif saving and end == len(source):
            self._save(turn)
        elif not saving and end == stop:
            self._store(turn.slot, turn.prompt[: turn.saves.pop(0)])

    def _decode(self, n: int) -> None:
        import llama_cpp

        self._batch.n_tokens = n
        result = llama_cpp.llama_decode(self._ctx, self._batch)
        self.steps += 1
        if result != 0:
            raise RuntimeError(f"llama_decode returned {result}")

    def _sample(self, turn: _Turn, index: int) -> None:
        import llama_cpp

        token = int(llama_cpp.llama_sampler_sample(turn.sampler, self._ctx, index))
        self._emit(turn, token)

    def _put(self, index: int, token: int, position: int, seq: int, logits: bool) -> None:
        batch = self._batch
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq
        batch.logits[index] = logits

    def _emit(self, turn: _Turn, token: int) -> None:
        """Hand out the text of a sampled token, or end the turn."""
        import llama_cpp

        if turn.first_token_at is None:
            turn.first_token_at = time.perf_counter()
        if turn.cancelled.is_set():
            self._finish(turn, save=False)
            return
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._end(turn, "stop")
            return
        turn.written += 1
        piece = self._llama._model.detokenize([token], special=False)
        text = turn.decoder.decode(piece)
        if text:
            self._write(turn, text)
            if turn.finish is not None:
                return
        if turn.written >= turn.request.max_tokens:
            self._end(turn, "length")
        elif turn.read + 1 >= self.context_size:
            self._end(turn, "length")
        else:
            turn.pending = token

    def _write(self, turn: _Turn, text: str) -> None:
        """Give the consumer ``text``, holding back what may begin a stop string."""
        stops = turn.request.stop
        held = turn.held + text
        if stops:
            hits = [held.find(s) for s in stops if s and s in held]
            if hits:
                cut = min(hits)
                if cut:
                    self._give(turn, held[:cut])
                turn.held = ""
                self._end(turn, "stop")
                return
            keep = max((k for s in stops for k in range(1, len(s))
                        if held.endswith(s[:k])), default=0)
            ready, turn.held = held[: len(held) - keep], held[len(held) - keep:]
        else:
            ready = held
        if ready:
            self._give(turn, ready)

    def _give(self, turn: _Turn, text: str) -> None:
        turn.pieces.append(text)
        turn.out.put(text)

    def _end(self, turn: _Turn, reason: str) -> None:
        """The reply is complete: tell the consumer now; save the slot's state if kept."""
        tail = turn.decoder.decode(b"", final=True)
        if tail or turn.held:
            text, turn.held = turn.held + tail, ""
            if text:
                self._give(turn, text)
        turn.finish = reason
        turn.pending = None
        turn.out.put(_DONE)
        self._finish(turn, save=True)

    def _finish(self, turn: _Turn, save: bool) -> None:
        if turn.slot not in self._active:
            turn.out.put(_DONE)
            return
        if save and self.kv_cache is not None:
            follow = self._follow_tokens(turn)
            if follow is not None:
                # Keep the cells up to where prompt and follow agree and that were read in
                # batches; re-read the rest (the reply as the next prompt holds it).
                keep = min(common_prefix(turn.prompt, follow), len(turn.prompt),
                           len(follow) - MIN_BATCH)
                if keep > 0:
                    self._truncate(turn.slot, keep)
                    turn.keep_tokens = follow
                    turn.read = keep
                    return  # _step reads it, then _save frees the slot
        if not save:
            turn.out.put(_DONE)
        del self._active[turn.slot]
        self._release(turn)

    def _release(self, turn: _Turn) -> None:
        import llama_cpp

        for key in [k for k, slot in self._reading.items() if slot == turn.slot]:
            del self._reading[key]  # ended before its system prompt was read: others read it
        if turn.slot >= 0:
            llama_cpp.llama_memory_seq_rm(self._mem, turn.slot, -1, -1)
        if turn.sampler is not None:
            llama_cpp.llama_sampler_free(turn.sampler)
            turn.sampler = None

    def _fail_all(self, error: BaseException) -> None:
        for turn in [*self._waiting, *self._active.values()]:
            turn.out.put(error)
        self._waiting.clear()
        self._active.clear()
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Turn):
                item.out.put(error)

    # -- sampling ----------------------------------------------------------------------------
    def _make_sampler(self, request: GenerationRequest) -> Any:
        """A sampler chain like ``Llama._init_sampler`` builds for ``create_chat_completion``
        with this request's options."""
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        if request.logit_bias:
            biases = [(int(t), float(b)) for t, b in request.logit_bias.items()]
            array = (llama_cpp.llama_logit_bias * len(biases))(
                *[llama_cpp.llama_logit_bias(token, bias) for token, bias in biases])
            add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), array))
        # The call exactly as llama-cpp-python makes it (``LlamaSampler.add_penalties``).
        add(llama_cpp.llama_sampler_init_penalties(
            n_vocab, 64, 1.0, request.frequency_penalty, request.presence_penalty))
        if request.json_schema is not None:
            from worker.grammar import gbnf

            rules = gbnf(request.json_schema, request.schema_or_text)
            grammar = llama_cpp.llama_sampler_init_grammar(
                self._vocab, rules.encode(), b"root")
            if not grammar:
                llama_cpp.llama_sampler_free(chain)
                raise ModelError("the JSON schema's grammar was refused")
            add(grammar)
        if request.temperature == 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            top_p = 0.95 if request.top_p is None else request.top_p
            add(llama_cpp.llama_sampler_init_top_k(40))
            add(llama_cpp.llama_sampler_init_typical(1.0, 1))
            add(llama_cpp.llama_sampler_init_top_p(top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(0.05, 1))
            add(llama_cpp.llama_sampler_init_temp(request.temperature))
            add(llama_cpp.llama_sampler_init_dist(request.seed & 0xFFFFFFFF))
        return chain

    # -- KV state reuse ----------------------------------------------------------------------
    def _truncate(self, slot: int, keep: int) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, slot, max(keep, 0), -1)

    def _key(self, key: str) -> str:
        """A state's key in this engine's layout. llama.cpp's sequence state records how many
        KV streams the context has (one per slot here, one for ``LlamaEngine``) and refuses a
        state of another count, so states are shared only between engines of equal slots."""
        return f"{key}:slots{self.slots}"

    def _boundaries(self, tokens: Sequence[int]) -> list[int]:
        marks = self._boundary_ids
        return [p for p, token in enumerate(tokens) if token in marks and p >= MIN_BATCH]

    def _system_blocks(self, turn: _Turn) -> list[int]:
        """Positions inside the turn's system prompt where block states are kept."""
        return system_blocks(turn.system_end)

    def _readable_boundaries(self, prompt: Sequence[int]) -> list[int]:
        """The prompt's boundaries that leave at least MIN_BATCH tokens to read after them:
        where a saved state may be restored, or the prompt's own state saved."""
        return [p for p in self._boundaries(prompt) if p <= len(prompt) - MIN_BATCH]

    def _restore(self, turn: _Turn) -> None:
        """Put the longest saved beginning of the turn's prompt into its slot."""
        self._truncate(turn.slot, 0)
        turn.read = 0
        if self.kv_cache is None:
            return
        try:
            self._restore_longest(turn)
            self._plan_saves(turn)
        finally:
            turn.context.run(log.info, "prompt of %d tokens: %d reused (%s) in process %d, "
                             "slot %d", len(turn.prompt), turn.read,
                             "saved" if turn.read else "none", os.getpid(), turn.slot)

    def _restore_longest(self, turn: _Turn) -> None:
        import llama_cpp
        import numpy as np

        assert self.kv_cache is not None
        prompt = turn.prompt
        positions = sorted({*self._readable_boundaries(prompt), *self._system_blocks(turn)})
        keys = [self._key(k) for k in boundary_keys(prompt, positions)[::-1]]
        saved = find_longest(self.kv_cache, keys, prompt) if keys else None
        if saved is None:
            if keys:
                self.kv_cache.stats.misses += 1
            self.kv_cache.stats.tokens_read += len(prompt)
            return
        view = np.frombuffer(saved.data, dtype=np.uint8)
        source = view.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        if int(llama_cpp.llama_state_seq_set_data(self._ctx, source, len(view), turn.slot)) == 0:
            log.warning("could not restore a saved KV state into slot %d; reading cold",
                        turn.slot)
            self._truncate(turn.slot, 0)
            return
        self.kv_cache.stats.hits += 1
        self.kv_cache.stats.tokens_reused += len(saved.tokens)
        self.kv_cache.stats.tokens_read += len(prompt) - len(saved.tokens)
        turn.read = len(saved.tokens)

    def _follow_tokens(self, turn: _Turn) -> list[int] | None:
        """The tokens every next prompt of this conversation starts with (worker/llama.py's
        ``_next_turn_prefix``); None for one-off prompts or when it does not fit."""
        if turn.request.raw or (turn.request.cache_key is None
                                and turn.request.json_schema is not None):
            return None
        reply = "".join(turn.pieces).strip()
        answered = [*turn.request.messages, ChatMessage(role="assistant", text=reply)]
        first = self.prompt_tokens([*answered, ChatMessage(role="user", text="a")])
        second = self.prompt_tokens([*answered, ChatMessage(role="user", text="b")])
        shared = first[: common_prefix(first, second)]
        found = self._boundaries(shared)
        if not found or found[-1] > self.context_size - 1:
            return None
        return shared[: found[-1]]

    def _plan_saves(self, turn: _Turn) -> None:
        """Where the prompt's own states are saved before the reply, as ``LlamaEngine`` keeps
        them: at the end of the system prompt (every new conversation with this persona
        starts there), and at the prompt's last message when at least
        KEEP_PROMPT_AFTER_TOKENS of it are new (a retry, or an API client's next request
        after a long document). Positions already saved, or leaving fewer than MIN_BATCH
        tokens between two reads, are left out."""
        if self.kv_cache is None:
            return
        prompt = turn.prompt
        wanted = []
        if turn.system_end is not None and turn.read < turn.system_end:
            wanted.append(turn.system_end)
            wanted += [p for p in self._system_blocks(turn) if p > turn.read]
        own = self._readable_boundaries(prompt)
        if own and own[-1] - turn.read >= KEEP_PROMPT_AFTER_TOKENS:
            wanted.append(own[-1])
        for position in sorted(set(wanted)):
            if self._key(prefix_key(prompt[:position])) in self.kv_cache:
                continue
            if not turn.saves and position - turn.read < MIN_BATCH:
                # Read the last few restored tokens again: a piece holds MIN_BATCH or more.
                turn.read = position - MIN_BATCH
                self._truncate(turn.slot, turn.read)
            if position - (turn.saves[-1] if turn.saves else turn.read) >= MIN_BATCH:
                turn.saves.append(position)

    def _system_end(self, turn: _Turn) -> int | None:
        """Where the turn's system prompt ends in its prompt (its state is saved there), or
        None without one or when too little of the prompt follows it."""
        if turn.request.raw:
            return None
        system = system_prefix(self._system_prefixes, self.prompt_tokens, turn.request.messages)
        if tuple(turn.prompt[: len(system)]) != system:
            return None
        found = self._boundaries(system)
        return found[-1] if found and found[-1] <= len(turn.prompt) - MIN_BATCH else None

    def _store(self, slot: int, tokens: Sequence[int]) -> None:
        """Copy the slot's state (its cells hold ``tokens``) and hand it to the writer. Turns
        waiting for this state (a system prompt's) wait for the write; if the copy fails,
        they stop waiting and read it themselves."""
        import llama_cpp

        assert self.kv_cache is not None
        kept = tuple(tokens)
        key = self._key(prefix_key(kept))
        awaited = self._reading.get(key) == slot
        if awaited:
            del self._reading[key]
        try:
            size = int(llama_cpp.llama_state_seq_get_size(self._ctx, slot))
            buffer = bytearray(size)
            target = (ctypes.c_uint8 * size).from_buffer(buffer)
            written = int(llama_cpp.llama_state_seq_get_data(self._ctx, target, size, slot))
            del target
            if not 0 < written <= size:
                raise RuntimeError(f"llama_state_seq_get_data wrote {written} of {size} bytes")
            del buffer[written:]
            with self._busy:
                self._writes_pending += 1
                if awaited:
                    self._storing[key] = self._storing.get(key, 0) + 1
            self._writes.put((key, KvState(tokens=kept, data=buffer)))
        except Exception:
            log.warning("could not save the KV state of slot %d", slot, exc_info=True)

    def _save(self, turn: _Turn) -> None:
        """The slot holds the next turn's prefix: save it, then free the slot."""
        assert turn.keep_tokens is not None
        try:
            self._store(turn.slot, turn.keep_tokens)
        finally:
            del self._active[turn.slot]
            self._release(turn)

    def _write_states(self) -> None:
        """The writer thread: store saved states in the order they were copied out."""
        assert self.kv_cache is not None
        while (item := self._writes.get()) is not None:
            key, state = item
            try:
                self.kv_cache.put(key, state)
            except Exception:
                log.warning("could not store a KV state of %d tokens", len(state.tokens),
                            exc_info=True)
            finally:
                with self._busy:
                    self._writes_pending -= 1
                    if key in self._storing:
                        self._storing[key] -= 1
                        if not self._storing[key]:
                            del self._storing[key]
                    self._busy.notify_all()
                self._inbox.put(_WAKE)  # turns waiting for this state may start now
