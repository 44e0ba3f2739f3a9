"""`assistant up` as a supervisor: restart what dies, stop in order, give up only on a loop.

Each component (the embedded Valkey, the Celery worker, the web server, the platform adapters)
runs as a child in its own process group, so Ctrl-C reaches only the supervisor, which stops
them in order: the web server and the adapters first (no new messages), then the worker
(Celery's warm shutdown finishes the turn in progress), then Valkey last, so that everything
before it can still write. A child that dies is started again after a backoff that doubles from
``BACKOFF_START_SECONDS`` up to ``BACKOFF_MAX_SECONDS`` (reset once it has run for
``STABLE_AFTER_SECONDS``), and the reason (exit status or signal) is logged; the others keep
serving meanwhile. A child that dies ``GIVE_UP_AFTER`` times within ``GIVE_UP_WINDOW_SECONDS``
is a fault a restart does not fix: then everything stops and ``up`` exits with status 1.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BACKOFF_START_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
STABLE_AFTER_SECONDS = 60.0
GIVE_UP_AFTER = 5
GIVE_UP_WINDOW_SECONDS = 120.0
POLL_SECONDS = 0.25


@dataclass
class Component:
    """One supervised child: how to run it and how long its graceful stop may take."""

    name: str
    command: list[str]
    env: dict[str, str]
    stop_grace: float = 15.0
    cwd: Path | None = None
    log_file: Path | None = None  # its output, when not the supervisor's own
    # Run before each (re)start; e.g. ``Valkey`` waits for its port to answer after starting.
    after_start: Callable[[subprocess.Popen[bytes]], None] | None = None
    # Exit statuses that mean "do not start me again" (a worker whose engine self-test
    # failed: a restart cannot fix the build); the others keep serving and say why.
    final_statuses: frozenset[int] = frozenset()
    given_up: bool = False
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: float = BACKOFF_START_SECONDS
    deaths: deque[float] = field(default_factory=deque)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Supervisor:
    """Starts ``components`` in order; ``stop_order`` names the order to stop them in."""

    def __init__(self, components: Sequence[Component], stop_order: Sequence[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.components = list(components)
        names = {c.name for c in self.components}
        self.stop_order = [n for n in stop_order if n in names]
        self.stop_order += [c.name for c in reversed(self.components)
                            if c.name not in self.stop_order]
        self.clock = clock
        self.failed: str | None = None  # the component that kept dying

    def start(self, component: Component) -> None:
        out = open(component.log_file, "ab") if component.log_file else None  # noqa: SIM115
        try:
            # Its own session (process group): a terminal's Ctrl-C reaches only us.
            component.process = subprocess.Popen(
                component.command, env=component.env, cwd=component.cwd,
                stdout=out, stderr=subprocess.STDOUT if out else None,
                start_new_session=True)
        finally:
            if out is not None:
                out.close()
        component.started_at = self.clock()
        component.restart_at = None
        if component.after_start is not None:
            component.after_start(component.process)

    def start_all(self) -> None:
        for component in self.components:
            self.start(component)

    def check(self) -> bool:
        """One look at the children: restart those due; False once one keeps dying."""
        now = self.clock()
        for component in self.components:
            process = component.process
            if component.restart_at is not None:
                if now >= component.restart_at:
                    log.warning("restarting %s", component.name)
                    try:
                        self.start(component)
                    except Exception:  # noqa: BLE001 - e.g. Valkey's port not answering
                        log.exception("could not restart %s", component.name)
                        self._died(component, now)
                continue
            if component.given_up or process is None or process.poll() is None:
                if now - component.started_at >= STABLE_AFTER_SECONDS:
                    component.backoff = BACKOFF_START_SECONDS
                continue
            log.error("%s %s", component.name, describe_exit(process.returncode))
            if process.returncode in component.final_statuses:
                log.error("%s refused to start: not restarted; the rest keeps serving (its "
                          "log says why)", component.name)
                component.given_up = True
                continue
            # What it leaves behind (a dead Celery main process's pool) goes with it: its
            # unacknowledged turn runs again in the replacement.
            _signal_group(process, signal.SIGKILL)
            if not self._died(component, now):
                return False
        return True

    def _died(self, component: Component, now: float) -> bool:
        component.deaths.append(now)
        while component.deaths and now - component.deaths[0] > GIVE_UP_WINDOW_SECONDS:
            component.deaths.popleft()
        if len(component.deaths) >= GIVE_UP_AFTER:
            log.error("%s died %d times within %.0f s: a restart does not fix it; stopping",
                      component.name, len(component.deaths), GIVE_UP_WINDOW_SECONDS)
            self.failed = component.name
            return False
        component.restart_at = now + component.backoff
        log.warning("%s will be restarted in %.0f s", component.name, component.backoff)
        component.backoff = min(component.backoff * 2, BACKOFF_MAX_SECONDS)
        return True

    def run(self, stopping: Callable[[], bool]) -> int:
        """Supervise until asked to stop (0) or a child keeps dying (1)."""
        while not stopping():
            if not self.check():
                return 1
            time.sleep(POLL_SECONDS)
        return 0

    def stop_all(self) -> None:
        """SIGTERM each child in ``stop_order``, waiting its grace before the next; SIGKILL
        what outlives it (an unfinished turn goes back to the queue: nothing is lost)."""
        by_name = {c.name: c for c in self.components}
        for name in self.stop_order:
            component = by_name[name]
            process = component.process
            if process is None or process.poll() is not None:
                continue
            log.info("stopping %s", name)
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=component.stop_grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killed", name,
                            component.stop_grace)
                _signal_group(process, signal.SIGKILL)
                process.wait()
            # Its own children (Celery's pool) may outlive a killed parent: not its group.
            _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
