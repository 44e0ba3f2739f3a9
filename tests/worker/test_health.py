"""``python -m worker.health``: a node that pings but has a stalled turn is unhealthy."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import redis

from tests.auxil.stack import ROOT, Stack, children
from worker import watchdog


def healthy(stack: Stack, node: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.health", node], cwd=ROOT,
                          env=stack.env, capture_output=True, text=True, timeout=60)


def test_a_node_is_healthy_until_a_turn_stalls(make_stack: Any) -> None:
    stack: Stack = make_stack()
    stack.start_worker("healthy")
    node = "healthy@test"
    # Its broadcast queue (which pings use) is consumed a moment after "ready.".
    deadline = time.monotonic() + 60
    while (check := healthy(stack, node)).returncode != 0:
        assert time.monotonic() < deadline, check.stderr
    missing = healthy(stack, "nobody@test")
    assert missing.returncode == 1 and "does not answer a ping" in missing.stderr
    client = redis.Redis.from_url(stack.redis_url)
    try:
        # A turn whose last progress was an hour ago (the watchdog reports it so).
        (pool_process,) = children(stack.workers["healthy"].pid)
        client.hset(watchdog.progress_key(node), str(pool_process), f"{time.time() - 3600:.3f}")
        stalled = healthy(stack, node)
        assert stalled.returncode == 1 and "made no progress" in stalled.stderr
    finally:
        client.close()
