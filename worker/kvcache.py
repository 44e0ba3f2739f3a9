"""Saved KV states for one ``Llama``, found by the tokens they hold (issue 19).

Only what a restore needs is kept: the sequence's KV cells (``llama_state_seq_get_data``, about
22 KiB per token for SmolLM2) and the token ids they hold. ``Llama.save_state`` would also copy
the logits of a whole batch (~100 MB for a 49k vocabulary), which a restore does not need:
llama-cpp-python re-reads at least the last prompt token before sampling anyway.

A state is keyed by a hash of its token ids (``prefix_key``), and states are only ever saved
at message boundaries (``worker/llama.py``), so a request finds the longest saved beginning of
its prompt by hashing its own prefixes at its message boundaries, longest first
(``boundary_keys``, ``find_longest``): whichever conversation, API client or process read that
beginning before. Equal tokens give equal cells, so no state ever holds anything the prompt
does not already hold. Two stores, within a byte budget; past it the states that are both old
(since last used) and large go first (``eviction_order``):

- ``KvStateDirectory`` (the workers' default, ``make_cache``): one file per state in a
  directory on tmpfs, shared by every pool process of a node (and every node of a host), so a
  state is found whichever process reads the next prompt that starts with it.
- ``KvStateCache``: in this process' RAM (tests, and the fallback when no directory is usable).

A save that a request cut short leaves a ``PendingSave`` in the store (the directory: a small
JSON file), which an idle engine of the host finishes (``LlamaEngine.finish_pending``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import mmap
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from assistant.settings import Settings

log = logging.getLogger(__name__)

SEQUENCE = 0  # llama-cpp-python runs everything in sequence 0
# What a state's bytes may be: a copy, the buffer llama.cpp wrote, or a view of a mapped file.
StateBytes = bytes | bytearray | memoryview


@dataclass(frozen=True)
class KvState:
    """The KV cells of one token sequence, as ``llama_state_seq_get_data`` wrote them."""

    tokens: tuple[int, ...]
    data: StateBytes

    @property
    def nbytes(self) -> int:
        return len(self.data) + 8 * len(self.tokens)


@dataclass(frozen=True)
class PendingSave:
    """A state a save had to leave unfinished (a request took the engine): ``tokens`` read
    after the state saved under ``base`` (a beginning of them), kept under ``key``. Any idle
    engine of the host may finish it (``LlamaEngine.finish_pending``)."""

    key: str
    base: str
    tokens: tuple[int, ...]


# Unfinished saves kept at most (the oldest go first), and for at most this long: a
# conversation's next turn comes within minutes or its save is of little use.
MAX_PENDING = 32
PENDING_SECONDS = 600.0

KEY_PREFIX = "prefix:"


def _token_bytes(tokens: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(tokens)}i", *tokens)


def prefix_key(tokens: Sequence[int]) -> str:
    """The key of the state holding exactly ``tokens``: a hash of their ids."""
    return KEY_PREFIX + hashlib.sha256(_token_bytes(tokens)).hexdigest()[:40]


def boundary_keys(tokens: Sequence[int], positions: Sequence[int]) -> list[str]:
    """``prefix_key(tokens[:p])`` for each of the ascending ``positions``, in one pass."""
    digest = hashlib.sha256()
    keys: list[str] = []
    done = 0
    for position in positions:
        digest.update(_token_bytes(tokens[done:position]))
        done = position
        keys.append(KEY_PREFIX + digest.copy().hexdigest()[:40])
    return keys


def eviction_order(entries: Sequence[tuple[float, int, Any]], now: float) -> list[Any]:
    """Which states go first: the largest (seconds since last use + 1) x bytes. Old and large
    ones first; a small state that many prompts start with (a persona) stays while it is used,
    and among states of one size this is least recently used first."""
    ranked = sorted(entries, key=lambda e: (now - e[0] + 1.0) * e[1], reverse=True)
    return [item for _, _, item in ranked]


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
    """Counters for metrics and the bench (per process, whichever store)."""

    hits: int = 0  # a saved state was restored
    misses: int = 0  # none of the prompt's beginnings was saved (past what the context held)
    tokens_reused: int = 0  # prompt tokens not read again (a restored state or the context)
    tokens_read: int = 0
    saves: int = 0
    evictions: int = 0
    too_large: int = 0
    errors: int = 0  # unreadable or unwritable state files: each was a miss or a lost save


class KvCache(Protocol):
    """What ``LlamaEngine`` needs of a state store."""

    stats: CacheStats

    @property
    def bytes_used(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: str) -> bool: ...
    def get(self, key: str) -> KvState | None: ...
    def put(self, key: str, state: KvState) -> bool: ...
    def discard(self, key: str) -> None: ...
    def mark_saving(self, key: str) -> None: ...
    def clear_saving(self, key: str) -> None: ...
    def wait_saved(self, key: str) -> None: ...
    def defer(self, job: PendingSave) -> None: ...
    def claim_pending(self) -> PendingSave | None: ...


def find_longest(cache: KvCache, keys: Sequence[str],
                 tokens: Sequence[int]) -> KvState | None:
    """The state under the first of ``keys`` (longest prefix first) that is a prefix of
    ``tokens``. States being saved under any of the keys (another process, just now) are
    waited for first: the next prompt of a conversation is often sent as its last reply ends."""
    for key in keys:
        cache.wait_saved(key)
    for key in keys:
        state = cache.get(key)
        if state is None:
            continue
        count = len(state.tokens)
        if tuple(tokens[:count]) == state.tokens:  # a hash collision is a miss, never a mix
            return state
    return None


@dataclass
class KvStateCache:
    """Saved KV states by key in this process' RAM, least recently used evicted first past
    ``budget_bytes``."""

    budget_bytes: int
    stats: CacheStats = field(default_factory=CacheStats)
    _states: OrderedDict[str, KvState] = field(default_factory=OrderedDict)
    _used: dict[str, float] = field(default_factory=dict)  # key -> last use (monotonic)
    _bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Unfinished saves by key, oldest first, with when each was deferred (monotonic).
    _pending: OrderedDict[str, tuple[float, PendingSave]] = field(default_factory=OrderedDict)

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
                self._used[key] = time.monotonic()
            return state

    def put(self, key: str, state: KvState) -> bool:
        """Keep ``state`` under ``key`` (replacing what was there); False if it cannot fit."""
        with self._lock:
            old = self._states.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
                del self._used[key]
            if state.nbytes > self.budget_bytes:
                self.stats.too_large += 1
                return False
            if self._bytes + state.nbytes > self.budget_bytes:
                now = time.monotonic()
                entries = [(self._used[k], s.nbytes, k) for k, s in self._states.items()]
                for victim in eviction_order(entries, now):
                    if self._bytes + state.nbytes <= self.budget_bytes:
                        break
                    self._bytes -= self._states.pop(victim).nbytes
                    del self._used[victim]
                    self.stats.evictions += 1
            self._states[key] = state
            self._used[key] = time.monotonic()
            self._bytes += state.nbytes
            self.stats.saves += 1
            return True

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._states.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
                del self._used[key]

    def mark_saving(self, key: str) -> None:
        """Nothing to do: this process' own engine lock already orders its save and get."""

    def clear_saving(self, key: str) -> None:
        """Nothing to do (see ``mark_saving``)."""

    def wait_saved(self, key: str) -> None:
        """Nothing to wait for (see ``mark_saving``)."""

    def defer(self, job: PendingSave) -> None:
        """Keep ``job`` for an idle engine to finish (the oldest dropped past MAX_PENDING)."""
        with self._lock:
            self._pending.pop(job.key, None)
            self._pending[job.key] = (time.monotonic(), job)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    def claim_pending(self) -> PendingSave | None:
        """Take the oldest unfinished save still worth finishing (None: none)."""
        with self._lock:
            while self._pending:
                _, (since, job) = self._pending.popitem(last=False)
                if time.monotonic() - since <= PENDING_SECONDS and job.key not in self._states:
                    return job
            return None


# -- states shared by processes: one file each ----------------------------------------------
# A file: header, key (UTF-8), token ids (int32 little-endian), KV bytes. The header's CRC
# covers the lengths, the key and the tokens; the KV bytes are checked by length only (a CRC
# of 40 MB costs 17 ms, more than the restore) and by llama.cpp, which refuses cells that do
# not fit its context. Files are only ever replaced whole (temp file + rename), never rewritten.
# 02: states keyed by their tokens (issue 19); 01 directories held states by conversation.
MAGIC = b"ASKVST02"
HEADER = struct.Struct("<8sIIQI")  # magic, key bytes, token count, KV bytes, CRC32
SUFFIX = ".kv"
SAVING_SUFFIX = ".saving"
PENDING_SUFFIX = ".pending"
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
# Another process saving a state (a reply just went out): wait this long at
# most for it, rather than read the prompt cold. A marker older than this is a dead saver's.
SAVE_WAIT_SECONDS = 5.0
STALE_DIRECTORY_SECONDS = 24 * 3600  # a sibling directory (older model...) unused this long
FINGERPRINT_LENGTH = 16


class CorruptState(ValueError):
    """A state file that is not what ``KvStateDirectory.put`` wrote."""


def fingerprint(model_path: Path, context_size: int, kv_type: str = "f16") -> str:
    """What a state can only be restored into: this model file, context size, KV cell type
    and llama-cpp-python (its llama.cpp) version."""
    import llama_cpp

    try:
        stat = model_path.stat()
        identity = [str(model_path.resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
    except OSError:  # the engine reports the missing model; its states are never reused
        identity = [str(model_path), "missing", str(time.time_ns())]
    parts = [*identity, str(context_size), kv_type, llama_cpp.__version__, MAGIC.decode()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:FINGERPRINT_LENGTH]


def default_root(data_dir: Path) -> Path:
    """tmpfs when the host has one (states are RAM-speed and vanish on reboot), else disk."""
    shm = Path("/dev/shm")
    return shm / "assistant-kv" if shm.is_dir() else data_dir / "kv-cache"


def make_cache(settings: Settings, model_path: Path | None = None,
               context_size: int | None = None) -> KvCache | None:
    """The state store of a worker process: the host's shared directory (None: reuse is off).

    The model and context size default to the settings' (``ASSISTANT_MODEL``...).
    """
    budget = settings.kv_cache_mb << 20
    if budget <= 0:
        return None
    if model_path is None:
        from assistant.models import resolve_model_path

        model_path = resolve_model_path(settings.model, settings.models_dir)
    root = settings.kv_cache_dir or default_root(settings.data_dir)
    directory = root / fingerprint(model_path, context_size or settings.context_size)
    try:
        return KvStateDirectory(directory, budget)
    except OSError:
        log.warning("cannot keep KV states in %s; keeping them in this process' RAM",
                    directory, exc_info=True)
        return KvStateCache(budget)


def refuse_foreign_directory(path: Path) -> None:
    """Raise ``PermissionError`` unless ``path`` is a real directory of ours that nobody else
    may write: /dev/shm is writable by every user, and a state file planted there would be
    read into the model as a conversation's context (issue 15, docs/security.md)."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory (a symlink?)")
    if info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user (uid {info.st_uid})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{path} is writable by other users "
                              f"(mode {stat.S_IMODE(info.st_mode):o})")


def saver_is_gone(marker: Path) -> bool:
    """Whether the process named in a "being saved" marker has ended. Only a saver on this
    host (same host name: a directory shared across containers names another pid space) is
    checked; an unreadable or foreign marker is waited for, up to ``SAVE_WAIT_SECONDS``."""
    try:
        host, pid = marker.read_text().split()
        if host != socket.gethostname():
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):  # gone meanwhile, empty, not ours to signal
        return False
    return False


class KvStateDirectory:
    """Saved KV states as files in ``directory``, shared by every process that opens it.

    ``budget_bytes`` bounds the whole directory, whoever wrote it: a put evicts files by
    ``eviction_order`` (last use is the mtime; a get touches it) under an ``fcntl`` lock. A
    reader never sees part of a state: files appear whole by rename, and a file evicted after
    it was opened stays readable until closed. A state read is a read-only map of its file,
    not a copy. Failures (disk full, a damaged file) are a miss or a lost save and a log line,
    never an error.
    """

    def __init__(self, directory: Path, budget_bytes: int) -> None:
        self.directory = directory
        self.stats = CacheStats()
        directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        refuse_foreign_directory(directory.parent)  # before we put anything in it
        directory.mkdir(exist_ok=True, mode=0o700)
        refuse_foreign_directory(directory)
        self._lock_path = directory / LOCK_NAME
        self._lock_path.touch(exist_ok=True)
        self.budget_bytes = self._fit_budget(budget_bytes)
        _remove_stale_siblings(directory)

    # -- the store ---------------------------------------------------------------------------
    @property
    def bytes_used(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def __len__(self) -> int:
        return sum(1 for _ in self._entries())

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()

    def get(self, key: str) -> KvState | None:
        path = self._path(key)
        self._wait_for_saver(path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError:
            self._failed(f"could not open {path}")
            return None
        try:
            info = os.fstat(fd)
            inode = info.st_ino
            if info.st_size < HEADER.size:
                raise CorruptState(f"{info.st_size} bytes, shorter than a header")
            mapped = mmap.mmap(fd, info.st_size, access=mmap.ACCESS_READ)
        except (OSError, CorruptState) as exc:
            self._drop_if_same(path, fd)
            self._failed(f"could not read {path}: {exc}")
            return None
        finally:
            os.close(fd)
        try:
            state = _parse(mapped, key)
        except CorruptState as exc:
            mapped.close()
            self._drop_inode(path, inode)
            self._failed(f"damaged KV state file {path}: {exc}")
            return None
        with contextlib.suppress(OSError):  # evicted meanwhile: still ours to read
            os.utime(path)
        return state

    def put(self, key: str, state: KvState) -> bool:
        """Keep ``state`` under ``key`` (replacing what was there); False if it was not kept."""
        path = self._path(key)
        encoded_key = key.encode()
        tokens = struct.pack(f"<{len(state.tokens)}i", *state.tokens)
        size = HEADER.size + len(encoded_key) + len(tokens) + len(state.data)
        if size > self.budget_bytes:
            self.stats.too_large += 1
            self.discard(key)
            return False
        lengths = struct.pack("<IIQ", len(encoded_key), len(state.tokens), len(state.data))
        checksum = zlib.crc32(tokens, zlib.crc32(encoded_key, zlib.crc32(lengths)))
        header = HEADER.pack(MAGIC, len(encoded_key), len(state.tokens), len(state.data),
                             checksum)
        try:
            with self._locked():
                self.stats.evictions += self._make_room(size, replacing=path)
                fd, temp = tempfile.mkstemp(dir=self.directory, prefix=TEMP_PREFIX)
                try:
                    with os.fdopen(fd, "wb") as file:
                        for part in (header, encoded_key, tokens, state.data):
                            file.write(part)
                    os.replace(temp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temp)
                    raise
        except OSError as exc:
            self._failed(f"could not save the KV state of {key} in {self.directory}: {exc}")
            return False
        self.stats.saves += 1
        return True

    def discard(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self._path(key).unlink(missing_ok=True)

    def mark_saving(self, key: str) -> None:
        """This process is about to save ``key``'s state: others' ``get`` wait for it. The
        marker names its writer (host and pid), so a reader on the same host does not wait
        for a saver that died (a pool process killed mid-save)."""
        try:
            self._saving_path(key).write_text(f"{socket.gethostname()} {os.getpid()}")
        except OSError:
            log.warning("could not mark the KV state of %s as being saved", key, exc_info=True)

    def clear_saving(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self._saving_path(key).unlink(missing_ok=True)

    def wait_saved(self, key: str) -> None:
        """Return once no process is saving ``key`` (at most ``SAVE_WAIT_SECONDS``)."""
        self._wait_for_saver(self._path(key))

    def defer(self, job: PendingSave) -> None:
        """Leave ``job`` in the directory for an idle engine of any process to finish: a
        small JSON file (the keys and the token ids), written whole by rename. Past
        MAX_PENDING the oldest are dropped."""
        record = json.dumps({"key": job.key, "base": job.base, "tokens": list(job.tokens)})
        path = self._path(job.key).with_suffix(PENDING_SUFFIX)
        try:
            with self._locked():  # a put's clean-up removes temp files outside the lock
                fd, temp = tempfile.mkstemp(dir=self.directory, prefix=TEMP_PREFIX)
                with os.fdopen(fd, "w") as file:
                    file.write(record)
                os.replace(temp, path)
                for _, old in self._pending_files()[:-MAX_PENDING]:
                    old.unlink(missing_ok=True)
        except OSError:
            log.warning("could not leave an unfinished KV state save in %s", self.directory,
                        exc_info=True)

    def claim_pending(self) -> PendingSave | None:
        """Take the oldest unfinished save still worth finishing (None: none). Taking is a
        rename to a name of this process, so two processes never take the same one."""
        now = time.time()
        for modified, path in self._pending_files():
            claimed = path.with_name(f"{path.name}.{os.getpid()}")
            try:
                os.rename(path, claimed)
            except OSError:  # another process took it first
                continue
            try:
                record = json.loads(claimed.read_text())
                job = PendingSave(key=str(record["key"]), base=str(record["base"]),
                                  tokens=tuple(int(t) for t in record["tokens"]))
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("dropped a damaged unfinished KV state save %s", path)
                continue
            finally:
                claimed.unlink(missing_ok=True)
            if now - modified <= PENDING_SECONDS and job.key not in self:
                return job
        return None

    def _pending_files(self) -> list[tuple[float, Path]]:
        """(mtime, path) of the unfinished saves, oldest first (none when the directory
        cannot be read: the engine's kv-finish thread looks ten times a second)."""
        found = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith(PENDING_SUFFIX):
                        with contextlib.suppress(FileNotFoundError):
                            found.append((entry.stat().st_mtime, Path(entry.path)))
        except OSError:
            return []
        return sorted(found)

    # -- files ---------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:40] + SUFFIX)

    def _saving_path(self, key: str) -> Path:
        return self._path(key).with_suffix(SAVING_SUFFIX)

    def _entries(self) -> Iterator[tuple[int, int, Path]]:
        """(mtime ns, size, path) of each state file."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX):
                    try:
                        stat = entry.stat()
                    except FileNotFoundError:  # evicted by another process just now
                        continue
                    yield stat.st_mtime_ns, stat.st_size, Path(entry.path)

    def _make_room(self, size: int, replacing: Path) -> int:
        """Evict until ``size`` more bytes fit (the lock is held); returns how many went."""
        for temp in self.directory.glob(TEMP_PREFIX + "*"):  # a writer died holding the lock
            temp.unlink(missing_ok=True)
        entries = [e for e in self._entries() if e[2] != replacing]
        total = sum(entry_size for _, entry_size, _ in entries)
        if total + size <= self.budget_bytes:
            return 0
        sizes = {path: entry_size for _, entry_size, path in entries}
        ranked = eviction_order([(mtime / 1e9, entry_size, path)
                                 for mtime, entry_size, path in entries], time.time())
        evicted = 0
        for path in ranked:
            if total + size <= self.budget_bytes:
                break
            path.unlink(missing_ok=True)
            total -= sizes[path]
            evicted += 1
        return evicted

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _wait_for_saver(self, path: Path) -> None:
        marker = path.with_suffix(SAVING_SUFFIX)
        while True:
            try:
                age = time.time() - marker.stat().st_mtime
            except OSError:
                return
            if age > SAVE_WAIT_SECONDS or saver_is_gone(marker):
                marker.unlink(missing_ok=True)
                return
            time.sleep(0.01)

    def _fit_budget(self, budget_bytes: int) -> int:
        """The budget, cut to what the file system can hold (Docker's /dev/shm is 64 MB)."""
        usage = shutil.disk_usage(self.directory)
        room = self.bytes_used + usage.free * 9 // 10
        if room < budget_bytes:
            log.warning("%s has room for %d MB of KV states, not the %d MB of "
                        "ASSISTANT_KV_CACHE_MB: using %d MB", self.directory, room >> 20,
                        budget_bytes >> 20, room >> 20)
            return room
        return budget_bytes

    def _failed(self, message: str) -> None:
        self.stats.errors += 1
        log.warning("%s; the prompt is read instead", message)

    def _drop_if_same(self, path: Path, fd: int) -> None:
        with contextlib.suppress(OSError):
            self._drop_inode(path, os.fstat(fd).st_ino)

    @staticmethod
    def _drop_inode(path: Path, inode: int) -> None:
        """Remove a damaged file unless a writer has replaced it since it was opened."""
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:
                path.unlink()


def _parse(mapped: mmap.mmap, key: str) -> KvState:
    """The state in a mapped file: its tokens copied, its KV bytes a view of the map."""
    magic, key_length, count, data_length, checksum = HEADER.unpack_from(mapped, 0)
    if magic != MAGIC:
        raise CorruptState("not a KV state file")
    start = HEADER.size + key_length + 4 * count
    if start + data_length != len(mapped):
        raise CorruptState(f"{len(mapped)} bytes, expected {start + data_length}")
    encoded_key = mapped[HEADER.size:HEADER.size + key_length]
    tokens = mapped[HEADER.size + key_length:start]
    lengths = struct.pack("<IIQ", key_length, count, data_length)
    if zlib.crc32(tokens, zlib.crc32(encoded_key, zlib.crc32(lengths))) != checksum:
        raise CorruptState("checksum mismatch")
    if encoded_key != key.encode():
        raise CorruptState("another key's state (hash collision)")
    return KvState(tokens=struct.unpack(f"<{count}i", tokens), data=memoryview(mapped)[start:])


def _remove_stale_siblings(directory: Path) -> None:
    """Drop other fingerprints' directories unused for a day (a replaced model, an upgraded
    llama-cpp-python): on tmpfs they would hold RAM until the next reboot."""
    now = time.time()
    try:
        siblings = [p for p in directory.parent.iterdir()
                    if p != directory and p.is_dir() and len(p.name) == FINGERPRINT_LENGTH]
    except OSError:
        return
    for sibling in siblings:
        try:
            newest = max([sibling.stat().st_mtime]
                         + [entry.stat().st_mtime for entry in sibling.iterdir()])
        except OSError:
            continue
        if now - newest > STALE_DIRECTORY_SECONDS:
            log.info("removing unused KV states of another model or version: %s", sibling)
            shutil.rmtree(sibling, ignore_errors=True)


# -- llama.cpp ------------------------------------------------------------------------------
def capture(llama: Any) -> KvState:
    """Copy the KV cells and token ids that ``llama``'s context holds now."""
    import llama_cpp

    ctx = llama._ctx.ctx
    size = int(llama_cpp.llama_state_seq_get_size(ctx, SEQUENCE))
    # A bytearray's large allocation is zeroed lazily by the kernel (a ctypes array is memset:
    # 25 ms for 40 MB), and the state keeps it as it is, without a copy to bytes.
    buffer = bytearray(size)
    target = (ctypes.c_uint8 * size).from_buffer(buffer)
    written = int(llama_cpp.llama_state_seq_get_data(ctx, target, size, SEQUENCE))
    del target  # release the export, so the bytearray may be resized
    if written == 0 or written > size:
        raise RuntimeError(f"could not copy the KV state ({written} of {size} bytes)")
    del buffer[written:]
    tokens = tuple(int(t) for t in llama.input_ids[: llama.n_tokens])
    return KvState(tokens=tokens, data=buffer)


def restore(llama: Any, state: KvState) -> None:
    """Put ``state`` back into ``llama``'s context and its token bookkeeping.

    The context is cleared first, so nothing of the previous prompt survives. Afterwards
    ``llama.generate`` sees ``state.tokens`` as already read and only reads what follows them.
    """
    import llama_cpp
    import numpy as np

    ctx = llama._ctx.ctx
    llama._ctx.kv_cache_seq_rm(-1, 0, -1)
    llama.n_tokens = 0
    # A pointer into the state's own buffer (bytes, or a read-only map of its file): no copy
    # of tens of MB before llama.cpp's own.
    view = np.frombuffer(state.data, dtype=np.uint8)
    source = view.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
    read = int(llama_cpp.llama_state_seq_set_data(ctx, source, len(view), SEQUENCE))
    if read == 0:
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        raise RuntimeError("llama.cpp refused the saved KV state")
    count = len(state.tokens)
    llama.input_ids[:count] = state.tokens
    llama.n_tokens = count
    # No logits belong to the restored position: make generate() re-read a token first.
    llama._requires_eval = True
