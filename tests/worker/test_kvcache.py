"""The KV state cache: a byte budget, least recently used out first, keys never mixed."""

from __future__ import annotations

from worker.kvcache import KvState, KvStateCache, common_prefix, prefix_key


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

