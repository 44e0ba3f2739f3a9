"""Per-conversation KV state for one ``Llama``: saved after a turn, restored before the next.

Only what a restore needs is kept: the sequence's KV cells (``llama_state_seq_get_data``, about
22 KiB per token for SmolLM2) and the token ids they hold. ``Llama.save_state`` would also copy
the logits of a whole batch (~100 MB for a 49k vocabulary), which a restore does not need:
llama-cpp-python re-reads at least the last prompt token before sampling anyway.

States live in RAM under a byte budget, least recently used first out. Each is keyed by the
conversation (``GenerationRequest.cache_key``) or, for the shared system-prompt prefix, by a
hash of its tokens, so no conversation's state is ever restored into another conversation.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SEQUENCE = 0  # llama-cpp-python runs everything in sequence 0


@dataclass(frozen=True)
class KvState:
    """The KV cells of one token sequence, as ``llama_state_seq_get_data`` wrote them."""

    tokens: tuple[int, ...]
    data: bytes

    @property
    def nbytes(self) -> int:
        return len(self.data) + 8 * len(self.tokens)


def prefix_key(tokens: Sequence[int]) -> str:
    """The cache key of a shared prompt prefix: a hash of its token ids."""
    digest = hashlib.sha256(",".join(map(str, tokens)).encode()).hexdigest()[:32]
    return f"prefix:{digest}"


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


@dataclass
class CacheStats:
    """Counters for metrics and the bench."""

    hits: int = 0
    misses: int = 0
    prefix_hits: int = 0
    saves: int = 0
    evictions: int = 0
    too_large: int = 0


@dataclass
class KvStateCache:
    """Saved KV states by key, least recently used evicted first past ``budget_bytes``."""

    budget_bytes: int
    stats: CacheStats = field(default_factory=CacheStats)
    _states: OrderedDict[str, KvState] = field(default_factory=OrderedDict)
    _bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: str) -> bool:
        return key in self._states

    def get(self, key: str) -> KvState | None:
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
            return state

    def put(self, key: str, state: KvState) -> bool:
        """Keep ``state`` under ``key`` (replacing what was there); False if it cannot fit."""
        with self._lock:
            old = self._states.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if state.nbytes > self.budget_bytes:
                self.stats.too_large += 1
                return False
            while self._states and self._bytes + state.nbytes > self.budget_bytes:
                _, evicted = self._states.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.stats.evictions += 1
            self._states[key] = state
            self._bytes += state.nbytes
            self.stats.saves += 1
            return True

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._states.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes


def capture(llama: Any) -> KvState:
    """Copy the KV cells and token ids that ``llama``'s context holds now."""
    import llama_cpp

    ctx = llama._ctx.ctx
    size = int(llama_cpp.llama_state_seq_get_size(ctx, SEQUENCE))
    buffer = (ctypes.c_uint8 * size)()
    written = int(llama_cpp.llama_state_seq_get_data(ctx, buffer, size, SEQUENCE))
    if written == 0 or written > size:
        raise RuntimeError(f"could not copy the KV state ({written} of {size} bytes)")
    tokens = tuple(int(t) for t in llama.input_ids[: llama.n_tokens])
    return KvState(tokens=tokens, data=bytes(memoryview(buffer)[:written]))


def restore(llama: Any, state: KvState) -> None:
    """Put ``state`` back into ``llama``'s context and its token bookkeeping.

    The context is cleared first, so nothing of the previous prompt survives. Afterwards
    ``llama.generate`` sees ``state.tokens`` as already read and only reads what follows them.
    """
    import llama_cpp

    ctx = llama._ctx.ctx
    llama._ctx.kv_cache_seq_rm(-1, 0, -1)
    llama.n_tokens = 0
    # A pointer into the bytes object itself: no copy of tens of MB before llama.cpp's own.
    source = ctypes.cast(ctypes.c_char_p(state.data), ctypes.POINTER(ctypes.c_uint8))
    read = int(llama_cpp.llama_state_seq_set_data(ctx, source, len(state.data), SEQUENCE))
    if read == 0:
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        raise RuntimeError("llama.cpp refused the saved KV state")
    count = len(state.tokens)
    llama.input_ids[:count] = state.tokens
    llama.n_tokens = count
    # No logits belong to the restored position: make generate() re-read a token first.
    llama._requires_eval = True
