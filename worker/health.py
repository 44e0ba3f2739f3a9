"""``python -m worker.health [NODE]``: exit 0 when this worker node is healthy (compose).

Healthy: its Celery main process answers a ping within 5 s, and none of its pool processes
runs a turn that made no progress for ``ASSISTANT_STALL_SECONDS`` (``worker.watchdog``). A
ping alone is not enough: a pool process stuck in a turn leaves the main process answering
(issue 16). NODE defaults to Celery's own default name, ``celery@<host name>``.
"""

from __future__ import annotations

import socket
import sys

from assistant.redis_client import connect
from worker.watchdog import stalled_pids


def check(node: str) -> str | None:
    """What is wrong with ``node``, or None when it is healthy."""
    from worker.app import app, settings

    replies = app.control.ping(destination=[node], timeout=5.0) or []
    if not any(node in reply for reply in replies):
        return f"{node} does not answer a ping"
    client = connect(settings.redis_url or "", master_name=settings.redis_sentinel_master,
                     socket_timeout=5)
    try:
        stalled = stalled_pids(client, node, settings.stall_seconds)
    finally:
        client.close()
    if stalled:
        return (f"{node}: pool process(es) {stalled} made no progress for "
                f"{settings.stall_seconds} s")
    return None


def main(argv: list[str]) -> int:
    node = argv[1] if len(argv) > 1 else f"celery@{socket.gethostname()}"
    try:
        problem = check(node)
    except Exception as exc:  # noqa: BLE001 - any failure to check is unhealthy
        problem = f"could not check {node}: {exc}"
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
