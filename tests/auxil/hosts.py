"""A test stack spread over lab hosts (network namespaces, tests/auxil/netns.py): Redis on one
host, Celery workers on others, the web server in the root namespace. Used by the multi-host
test and by ``bench.scaling``'s hosts layouts."""

from __future__ import annotations

import sys
import time

import redis

from tests.auxil import netns
from tests.auxil.stack import Stack, redis_binary


class HostStack(Stack):
    """A ``Stack`` whose Redis and workers run on lab hosts (network namespaces)."""

    REDIS_PORT = 6379

    def start_redis(self, host: netns.Host) -> None:
        # Protected mode off: the server is reachable only inside this test's private /24.
        self.start_process("redis", host.command(
            redis_binary(), "--bind", host.address, "--port", str(self.REDIS_PORT),
            "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
            "--protected-mode", "no"))
        client = redis.Redis(host=host.address, port=self.REDIS_PORT, socket_timeout=2,
                             socket_connect_timeout=2)
        deadline = time.monotonic() + 15
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline or self.processes["redis"].poll() is not None:
                        raise RuntimeError(f"redis did not start:\n{self.log('redis')}") from None
                    time.sleep(0.1)
        finally:
            client.close()

    def start_worker_on(self, host: netns.Host, concurrency: int = 1) -> None:
        """The same worker command as ``Stack.start_worker``, run inside the host's namespace."""
        name = host.name
        command = host.command(
            sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--loglevel=INFO",
            "--pool=prefork", f"--concurrency={concurrency}", f"--hostname={name}@{host.namespace}",
            "--without-gossip", "--without-mingle")
        self.workers[name] = self._spawn(f"worker-{name}", command)
        self.wait_for_worker(name)
