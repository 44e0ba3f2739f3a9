"""The KV state stores (RAM, and a directory shared by processes): a byte budget, least
recently used out first, keys never mixed, damaged files a miss."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from assistant.settings import Settings
from worker.kvcache import (
    MAX_PENDING,
    KvState,
    KvStateCache,
    KvStateDirectory,
    PendingSave,
    common_prefix,
    fingerprint,
    make_cache,
    prefix_key,
)


def state(tokens: int, data: int) -> KvState:
    return KvState(tokens=tuple(range(tokens)), data=b"x" * data)


def test_states_are_kept_by_key_within_the_budget() -> None:
    cache = KvStateCache(budget_bytes=1000)
    assert cache.put("a", state(10, 100)) and cache.put("b", state(10, 200))
    assert cache.get("a") == state(10, 100) and cache.get("b") == state(10, 200)
    assert cache.bytes_used == 180 + 280 and len(cache) == 2
    assert cache.get("c") is None


def test_the_least_recently_used_state_is_evicted_first() -> None:
    cache = KvStateCache(budget_bytes=1000)
    for key in "abc":
        cache.put(key, state(0, 300))
    cache.get("a")  # a is now the most recently used
    cache.put("d", state(0, 300))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert cache.stats.evictions == 1 and cache.bytes_used == 900


def test_a_large_state_goes_before_a_small_one_used_a_little_earlier() -> None:
    cache = KvStateCache(budget_bytes=1000)
    cache.put("persona", state(0, 100))
    time.sleep(0.01)
    cache.put("long-chat", state(0, 600))  # (least recently used would drop the persona)
    cache.put("new-chat", state(0, 400))
    assert "long-chat" not in cache and "persona" in cache and "new-chat" in cache


@pytest.mark.parametrize("kind", ["ram", "directory"])
def test_many_states_never_exceed_the_budget(kind: str, tmp_path: Path) -> None:
    cache = KvStateCache(20_000) if kind == "ram" else KvStateDirectory(tmp_path, 20_000)
    for n in range(80):
        assert cache.put(f"s{n}", state(n % 7, 500 + 37 * n))
        assert cache.bytes_used <= 20_000
    assert cache.stats.evictions > 0


def test_replacing_a_state_frees_the_old_one() -> None:
    cache = KvStateCache(budget_bytes=1000)
    cache.put("a", state(0, 600))
    cache.put("a", state(0, 700))
    assert cache.bytes_used == 700 and len(cache) == 1 and cache.stats.evictions == 0


def test_a_state_larger_than_the_budget_is_not_kept_and_drops_the_old_one() -> None:
    cache = KvStateCache(budget_bytes=1000)
    cache.put("a", state(0, 500))
    assert not cache.put("a", state(0, 2000))
    assert "a" not in cache and cache.bytes_used == 0 and cache.stats.too_large == 1


def test_discard() -> None:
    cache = KvStateCache(budget_bytes=1000)
    cache.put("a", state(0, 500))
    cache.discard("a")
    cache.discard("missing")
    assert len(cache) == 0 and cache.bytes_used == 0


def test_prefix_keys_depend_on_every_token_and_never_look_like_a_conversation() -> None:
    assert prefix_key([1, 2, 3]) == prefix_key((1, 2, 3))
    assert prefix_key([1, 2, 3]) != prefix_key([1, 2, 4])
    assert prefix_key([12, 3]) != prefix_key([1, 23])
    assert prefix_key([1]).startswith("prefix:")


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [1]) == 0



# -- the directory store: states shared by the pool processes of a host ----------------------
def directory_state(tokens: int, data: int, fill: int = 120) -> KvState:
    return KvState(tokens=tuple(range(tokens)), data=bytes([fill]) * data)


def test_one_process_reads_what_another_wrote(tmp_path: Path) -> None:
    writer, reader = KvStateDirectory(tmp_path, 10_000), KvStateDirectory(tmp_path, 10_000)
    saved = directory_state(5, 300)
    assert writer.put("conv-a", saved)
    got = reader.get("conv-a")
    assert got is not None and got.tokens == saved.tokens and bytes(got.data) == saved.data
    assert "conv-a" in reader and "conv-b" not in reader and reader.get("conv-b") is None
    assert len(reader) == 1 and reader.bytes_used == writer.bytes_used > 300


def test_the_budget_bounds_the_whole_directory_least_recently_read_out_first(
    tmp_path: Path,
) -> None:
    first, second = KvStateDirectory(tmp_path, 1_500), KvStateDirectory(tmp_path, 1_500)
    first.put("a", directory_state(0, 600))
    time.sleep(0.01)
    second.put("b", directory_state(0, 600))
    time.sleep(0.01)
    assert first.get("a") is not None  # read: now the most recently used
    time.sleep(0.01)
    second.put("c", directory_state(0, 600))
    assert "b" not in first and "a" in first and "c" in first
    assert second.stats.evictions == 1 and first.bytes_used <= 1_500


def test_replacing_and_discarding(tmp_path: Path) -> None:
    store = KvStateDirectory(tmp_path, 2_000)
    store.put("a", directory_state(0, 500))
    store.put("a", directory_state(0, 900, fill=7))
    got = store.get("a")
    assert got is not None and bytes(got.data) == bytes([7]) * 900 and len(store) == 1
    assert not store.put("a", directory_state(0, 5_000))  # too large: the old one goes too
    assert "a" not in store and store.stats.too_large == 1
    store.put("b", directory_state(0, 10))
    store.discard("b")
    store.discard("missing")
    assert len(store) == 0 and store.bytes_used == 0


def test_a_state_read_before_its_eviction_stays_whole(tmp_path: Path) -> None:
    store = KvStateDirectory(tmp_path, 1_000)
    store.put("a", directory_state(3, 700, fill=1))
    held = store.get("a")
    store.put("b", directory_state(3, 700, fill=2))  # evicts a's file while it is mapped
    assert "a" not in store and held is not None
    assert bytes(held.data) == bytes([1]) * 700 and held.tokens == (0, 1, 2)


def test_states_of_another_model_context_or_version_are_never_found(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights")
    base = fingerprint(model, 2048)
    assert fingerprint(model, 2048) == base
    assert fingerprint(model, 4096) != base
    assert fingerprint(model, 2048, kv_type="q8_0") != base
    os.utime(model, ns=(1, 1))  # a replaced file, same name
    assert fingerprint(model, 2048) != base
    settings = Settings(ASSISTANT_KV_CACHE_DIR=str(tmp_path / "kv"), ASSISTANT_KV_CACHE_MB=1)
    small = make_cache(settings, model, 2048)
    large = make_cache(settings, model, 4096)
    assert isinstance(small, KvStateDirectory) and isinstance(large, KvStateDirectory)
    assert small.directory != large.directory and small.budget_bytes == 1 << 20
    small.put("conv", directory_state(3, 10))
    assert large.get("conv") is None
    assert make_cache(Settings(ASSISTANT_KV_CACHE_MB=0), model, 2048) is None


@pytest.mark.parametrize("damage", ["truncate", "flip-token", "garbage", "empty"])
def test_a_damaged_file_is_a_miss_and_is_removed(tmp_path: Path, damage: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = KvStateDirectory(tmp_path, 10_000)
    store.put("a", directory_state(8, 500))
    (path,) = tmp_path.glob("*.kv")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-10]
    elif damage == "flip-token":
        raw[-500 - 4] ^= 0xFF  # the last token id
    elif damage == "garbage":
        raw[:8] = b"whatever"
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    assert store.get("a") is None
    assert not path.exists() and store.stats.errors == 1
    assert "the prompt is read instead" in caplog.text


def test_a_failed_write_is_a_lost_save_not_an_error(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = KvStateDirectory(tmp_path, 10_000)

    def full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    assert not store.put("a", directory_state(3, 100))
    assert store.stats.errors == 1 and list(tmp_path.glob(".tmp-*")) == []


def test_a_reader_waits_for_another_process_saving_the_same_state(tmp_path: Path) -> None:
    saver, reader = KvStateDirectory(tmp_path, 10_000), KvStateDirectory(tmp_path, 10_000)
    saver.put("a", directory_state(2, 10, fill=1))
    saver.mark_saving("a")
    later = threading.Timer(0.3, lambda: (saver.put("a", directory_state(4, 10, fill=2)),
                                          saver.clear_saving("a")))
    later.start()
    started = time.monotonic()
    got = reader.get("a")
    later.join()
    assert got is not None and got.tokens == (0, 1, 2, 3)
    assert 0.25 < time.monotonic() - started < 2


def _put_many(directory: str, worker: int) -> None:
    store = KvStateDirectory(Path(directory), 50_000)
    for turn in range(40):
        store.put(f"conv-{worker}-{turn % 12}", directory_state(10, 4_000 + 97 * turn))


def test_processes_putting_at_once_stay_within_the_budget(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_put_many, args=(str(tmp_path), n)) for n in range(2)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
        assert process.exitcode == 0
    store = KvStateDirectory(tmp_path, 50_000)
    assert 40_000 < store.bytes_used <= 50_000
    assert list(tmp_path.glob(".tmp-*")) == []
    for path in tmp_path.glob("*.kv"):  # every file whole
        assert path.stat().st_size > 4_000
    kept = [key for key in (f"conv-{w}-{t}" for w in range(2) for t in range(12))
            if store.get(key) is not None]
    assert kept and store.stats.errors == 0


def test_a_reader_does_not_wait_for_a_saver_that_died(tmp_path: Path) -> None:
    """A pool process killed mid-save leaves its marker behind: a reader on the same host
    sees that its writer is gone and reads at once (it used to wait SAVE_WAIT_SECONDS)."""
    saver, reader = KvStateDirectory(tmp_path, 10_000), KvStateDirectory(tmp_path, 10_000)
    saver.put("a", directory_state(2, 10, fill=1))
    saver.mark_saving("a")
    marker = next(tmp_path.glob("*.saving"))
    assert marker.read_text().split() == [socket.gethostname(), str(os.getpid())]
    dead = subprocess.Popen(["true"])
    dead.wait()  # ended and reaped: its pid names no process now
    marker.write_text(f"{socket.gethostname()} {dead.pid}")
    started = time.monotonic()
    got = reader.get("a")
    assert got is not None and time.monotonic() - started < 1.0
    assert not marker.exists()


def test_a_saver_on_another_host_is_waited_for(tmp_path: Path) -> None:
    """A directory shared across containers: another host's pid says nothing here."""
    saver, reader = KvStateDirectory(tmp_path, 10_000), KvStateDirectory(tmp_path, 10_000)
    saver.put("a", directory_state(2, 10, fill=1))
    saver.mark_saving("a")
    next(tmp_path.glob("*.saving")).write_text("another-host 1")
    later = threading.Timer(0.3, lambda: saver.clear_saving("a"))
    later.start()
    started = time.monotonic()
    assert reader.get("a") is not None
    later.join()
    assert 0.25 < time.monotonic() - started < 2


# -- saves a request cut short, left for an idle engine ----------------------------------------
def job(name: str, tokens: int = 6) -> PendingSave:
    return PendingSave(key=f"reply-{name}", base=f"prompt-{name}", tokens=tuple(range(tokens)))


@pytest.mark.parametrize("kind", ["ram", "directory"])
def test_unfinished_saves_are_taken_oldest_first_once_each(kind: str, tmp_path: Path) -> None:
    """In round robin the conversation asked again soonest is the one cut short first."""
    store = KvStateCache(10_000) if kind == "ram" else KvStateDirectory(tmp_path, 10_000)
    for name in "abc":
        store.defer(job(name))
        time.sleep(0.01)  # distinct modification times
    assert [store.claim_pending() for _ in range(4)] == [job("a"), job("b"), job("c"), None]


@pytest.mark.parametrize("kind", ["ram", "directory"])
def test_an_unfinished_save_whose_state_is_there_already_is_dropped(kind: str,
                                                                      tmp_path: Path) -> None:
    """The conversation's next turn, or another process, kept that state meanwhile."""
    store = KvStateCache(10_000) if kind == "ram" else KvStateDirectory(tmp_path, 10_000)
    store.defer(job("a"))
    store.put("reply-a", state(6, 100))
    assert store.claim_pending() is None


@pytest.mark.parametrize("kind", ["ram", "directory"])
def test_unfinished_saves_are_bounded_and_expire(kind: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.kvcache as kvcache

    store = KvStateCache(10_000) if kind == "ram" else KvStateDirectory(tmp_path, 10_000)
    start = time.time() - 100
    for index in range(MAX_PENDING + 3):
        store.defer(job(str(index)))
        if kind == "directory":  # distinct modification times, in order
            os.utime(store._path(f"reply-{index}").with_suffix(".pending"),
                     (start + index, start + index))
    first = store.claim_pending()
    assert first is not None and first.key == "reply-3"  # the three oldest were dropped
    monkeypatch.setattr(kvcache, "PENDING_SECONDS", -1.0)  # everything left is too old
    assert store.claim_pending() is None


def test_another_process_takes_an_unfinished_save_and_no_two_take_the_same(
        tmp_path: Path) -> None:
    """Pool processes share the directory: whichever is idle takes a save another left."""
    KvStateDirectory(tmp_path, 10_000).defer(job("a", tokens=3000))
    first, second = KvStateDirectory(tmp_path, 10_000), KvStateDirectory(tmp_path, 10_000)
    assert first.claim_pending() == job("a", tokens=3000)
    assert second.claim_pending() is None
    assert list(tmp_path.glob("*.pending*")) == []


def test_a_damaged_unfinished_save_is_dropped(tmp_path: Path) -> None:
    store = KvStateDirectory(tmp_path, 10_000)
    store.defer(job("a"))
    path = next(tmp_path.glob("*.pending"))
    path.write_text('{"key": "reply-a", "tokens": [1, 2')
    assert store.claim_pending() is None
    assert list(tmp_path.glob("*.pending*")) == []


def test_no_unfinished_saves_when_the_directory_is_gone(tmp_path: Path) -> None:
    """A tmpfs cleaned under a running worker: its kv-finish thread finds nothing, quietly."""
    store = KvStateDirectory(tmp_path / "states", 10_000)
    store.defer(job("a"))
    for path in (tmp_path / "states").iterdir():
        path.unlink()
    (tmp_path / "states").rmdir()
    assert store.claim_pending() is None
