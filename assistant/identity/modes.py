"""Which sign-in the settings ask for, and whether this address may run without one.

Local mode (no sign-in: whoever reaches the port is "the local user") exists only on the
loopback address (docs/security.md). Binding anywhere else needs sign-in
configured (OIDC_ISSUER, or ASSISTANT_AUTH=signin for local accounts), or ASSISTANT_AUTH=none
set on purpose.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from assistant.settings import Settings

Mode = Literal["local", "signin"]
LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def sign_in_mode(settings: Settings) -> Mode:
    """"signin" when people must sign in to use the web chat and /api, else "local"."""
    if settings.auth == "none":
        return "local"
    if settings.auth == "signin" or settings.oidc_issuer:
        return "signin"
    return "local"


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_peer(peer: str) -> bool:
    """A request's peer is this computer: a loopback address, or no IP address at all (a Unix
    socket, an in-process test client); over TCP ASGI servers always report the address."""
    try:
        return ipaddress.ip_address(peer.strip().strip("[]")).is_loopback
    except ValueError:
        return True


def exposure_problem(settings: Settings) -> str | None:
    """Why the web server must not start with these settings, or None."""
    if sign_in_mode(settings) == "signin" or settings.auth == "none":
        return None
    if is_loopback(settings.host):
        return None
    return (f"ASSISTANT_HOST={settings.host} is not the loopback address and no sign-in is "
            "configured, so anyone who reaches the port would use the assistant. Set "
            "OIDC_ISSUER, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET (company sign-in), or "
            "ASSISTANT_AUTH=signin (local accounts: `assistant people invite NAME`), or "
            "ASSISTANT_AUTH=none to allow it on purpose (docs/security.md)")
