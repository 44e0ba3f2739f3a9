"""The supervisor restarts what dies (with backoff), gives up on a loop, stops in order."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from assistant import supervisor
from assistant.supervisor import Component, Supervisor, describe_exit


def sleeper(name: str, log: Path, grace: float = 5.0) -> Component:
    """A child that notes its SIGTERM in ``log`` (to check the order of stopping)."""
    code = ("import signal, sys, time\n"
            f"def bye(*_):\n    open({str(log)!r}, 'a').write({name!r} + '\\n'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            "while True: time.sleep(0.1)\n")
    return Component(name, [sys.executable, "-c", code], dict(os.environ), stop_grace=grace)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "BACKOFF_START_SECONDS", 0.2)
    monkeypatch.setattr(supervisor, "POLL_SECONDS", 0.05)


def wait_for(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_dead_child_is_restarted_and_the_others_keep_running(tmp_path: Path) -> None:
    worker, web = sleeper("worker", tmp_path / "log"), sleeper("web", tmp_path / "log")
    boss = Supervisor([worker, web], stop_order=["web", "worker"])
    boss.start_all()
    try:
        assert worker.process is not None and web.process is not None
        first, web_pid = worker.process.pid, web.process.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: boss.check() and worker.process is not None
                 and worker.process.pid != first and worker.process.poll() is None)
        assert web.process.pid == web_pid and web.process.poll() is None
    finally:
        boss.stop_all()


def test_the_children_stop_in_order_valkey_last(tmp_path: Path) -> None:
    log = tmp_path / "log"
    children = [sleeper(name, log) for name in ("valkey", "worker", "web", "slack")]
    boss = Supervisor(children, stop_order=["web", "slack", "worker", "valkey"])
    boss.start_all()
    time.sleep(1.0)  # their signal handlers are in place
    boss.stop_all()
    assert log.read_text().split() == ["web", "slack", "worker", "valkey"]
    assert all(c.process is not None and c.process.poll() is not None for c in children)


def test_a_child_that_keeps_dying_stops_everything(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    crash = Component("web", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    steady = sleeper("worker", tmp_path / "log")
    boss = Supervisor([steady, crash], stop_order=["web", "worker"])
    boss.start_all()
    try:
        assert boss.run(lambda: False) == 1
        assert boss.failed == "web"
    finally:
        boss.stop_all()
    assert steady.process is not None and steady.process.poll() is not None


def test_a_child_that_ignores_sigterm_is_killed_after_its_grace(tmp_path: Path) -> None:
    stubborn = Component("worker", [sys.executable, "-c",
                                    "import signal, time\n"
                                    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                    "time.sleep(60)"], dict(os.environ), stop_grace=0.5)
    boss = Supervisor([stubborn], stop_order=["worker"])
    boss.start_all()
    time.sleep(0.5)
    started = time.monotonic()
    boss.stop_all()
    assert time.monotonic() - started < 10
    assert stubborn.process is not None and stubborn.process.returncode == -signal.SIGKILL


def test_exits_are_described() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(2) == "exited with status 2"


def test_a_child_that_refuses_to_start_is_left_down_and_the_rest_serves(tmp_path: Path
                                                                        ) -> None:
    """A worker whose engine self-test failed exits 3: restarting cannot fix the build."""
    refused = Component("worker", [sys.executable, "-c", "raise SystemExit(3)"],
                        dict(os.environ), final_statuses=frozenset({3}))
    web = sleeper("web", tmp_path / "log")
    boss = Supervisor([refused, web], stop_order=["web", "worker"])
    boss.start_all()
    try:
        assert refused.process is not None
        refused.process.wait(timeout=30)
        for _ in range(20):
            assert boss.check()
            time.sleep(0.05)
        assert refused.given_up and refused.process.returncode == 3
        assert web.process is not None and web.process.poll() is None
    finally:
        boss.stop_all()
