"""Test hosts on this machine: Linux network namespaces joined by veth pairs to one bridge.

``Lab`` builds a private /24 (``10.231.<n>.0/24``) that exists only on the bridge it creates and
in the namespaces it adds, so whatever runs "on another host" talks to the others over a real
network stack and a real link that a test can cut. Everything it creates carries a prefix with
the test process' id (``asst-<pid>-…``); ``close`` removes it all, and a new ``Lab`` first
removes what a crashed run (whose process is gone) left behind.

Needs root and the ``ip`` binary (Debian's iproute2); ``unavailable()`` says why it cannot run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass

PREFIX = "asst-"
_LINK_PREFIX = "as"  # link names have at most 15 characters: as<pid>[bhr]<n>


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if shutil.which("ip") is None:
        return "the `ip` binary (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}{os.getpid()}-probe"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"`ip netns add` is not permitted here: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(namespace: str) -> None:
    """SIGKILL whatever still runs in one of our namespaces (``ip netns del`` alone would leave
    those processes running in a namespace without a name)."""
    for pid in _ip("netns", "pids", namespace, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def remove_stale() -> None:
    """Delete namespaces and links left by earlier runs whose test process is gone."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        found = re.fullmatch(rf"{PREFIX}(\d+)-\w+", name)
        if found and not _alive(int(found.group(1))):
            _kill_inside(name)
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        found = re.match(rf"\d+: ({_LINK_PREFIX}(\d+)[bh]\d*)[@:]", line)
        if found and not _alive(int(found.group(2))):
            _ip("link", "del", found.group(1), check=False)


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str
    link: str  # the veth end in the root namespace, on the bridge: down = host unreachable

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class Lab:
    """A bridge in the root namespace (gateway ``.1``) and hosts ``.2``, ``.3``… behind it."""

    def __init__(self) -> None:
        remove_stale()
        self.pid = os.getpid()
        self.subnet = self._free_subnet()
        self.bridge = f"{_LINK_PREFIX}{self.pid}b"
        self.gateway = f"10.231.{self.subnet}.1"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._links: list[str] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def _free_subnet(self) -> int:
        used = set(re.findall(r"10\.231\.(\d+)\.", _ip("-o", "addr", "show").stdout))
        used |= set(re.findall(r"10\.231\.(\d+)\.", _ip("route", "show").stdout))
        for offset in range(250):
            candidate = (self.pid + offset) % 250 + 1
            if str(candidate) not in used:
                return candidate
        raise RuntimeError("no free 10.231.<n>.0/24 on this machine")

    def add_host(self, name: str) -> Host:
        number = len(self.hosts) + 2
        namespace = f"{PREFIX}{self.pid}-{name}"
        link = f"{_LINK_PREFIX}{self.pid}h{number}"
        address = f"10.231.{self.subnet}.{number}"
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        self._links.append(link)
        _ip("link", "set", link, "master", self.bridge)
        _ip("link", "set", link, "up")
        inside = ["netns", "exec", namespace, "ip"]
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "route", "add", "default", "via", self.gateway)
        host = Host(name, namespace, address, link)
        self.hosts[name] = host
        return host

    def unplug(self, name: str) -> None:
        """Take a host off the network, as if its machine died: its link goes down."""
        _ip("link", "set", self.hosts[name].link, "down")

    def close(self) -> None:
        """Delete every namespace and link this lab made (idempotent; never raises)."""
        for namespace in reversed(self._namespaces):
            _kill_inside(namespace)
            _ip("netns", "del", namespace, check=False)
        for link in reversed(self._links):
            if _ip("link", "show", link, check=False).returncode == 0:
                _ip("link", "del", link, check=False)
        self._namespaces.clear()
        self._links.clear()
