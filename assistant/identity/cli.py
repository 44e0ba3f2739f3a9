"""``assistant keys`` and ``assistant people``: API keys and accounts from the command line.

Each change is written to the audit log as ``cli:<login name>``, as the panel writes its own.
"""

from __future__ import annotations

import getpass
from typing import Any

import click

from assistant.errors import ConfigError
from assistant.settings import Settings
from assistant.store import Store, shared_store
from assistant.store.audit import AuditLog
from assistant.store.keys import ApiKeys
from assistant.store.people import IdentityError, People


def _store() -> Store:
    try:
        return shared_store(Settings().sql_url)
    except Exception as exc:
        raise click.ClickException(f"cannot open the store: {exc}") from exc


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _audit(store: Store, action: str, target: str, details: dict[str, Any]) -> None:
    AuditLog(store).record(_actor(), action, target, details)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


@click.group("keys")
def keys_group() -> None:
    """API keys for /v1 and /api (Authorization: Bearer KEY)."""


@keys_group.command("create")
@click.option("--owner", required=True, help="The person's handle, or the service's name.")
@click.option("--service", is_flag=True, help="The owner is a service, not a person.")
@click.option("--name", default="", help="A label: what the key is for.")
@click.option("--rate", default="", help="Its own rate limit, e.g. 60/minute (default: the "
              "global ASSISTANT_USER_RATE_LIMIT).")
@click.option("--daily-tokens", type=click.IntRange(min=0), default=None,
              help="Its own daily token quota (0: none; default: the global one).")
def keys_create(owner: str, service: bool, name: str, rate: str,
                daily_tokens: int | None) -> None:
    """Make a key; it is printed once and cannot be shown again."""
    store = _store()
    try:
        new, row = ApiKeys(store).create(name, owner, _actor(),
                                         "service" if service else "person", rate,
                                         daily_tokens)
    except (ValueError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    _audit(store, "key_created", row.prefix, {"owner": row.owner, "name": row.name})
    click.echo(new.token)
    click.echo(f"Key {row.prefix} for {row.owner}: copy it now, it is not shown again.",
               err=True)


@keys_group.command("list")
def keys_list() -> None:
    """Every key, newest first (prefixes only: secrets are not kept)."""
    for key in ApiKeys(_store()).list():
        state = f"revoked {_when(key.revoked_at)}" if key.revoked_at else "active"
        click.echo(f"{key.prefix}  {key.owner_kind}:{key.owner}  {key.name or '-'}  "
                   f"created {_when(key.created_at)}  last used {_when(key.last_used_at)}  "
                   f"{state}")


@keys_group.command("revoke")
@click.argument("prefix")
def keys_revoke(prefix: str) -> None:
    """Revoke a key by its prefix (sk-ast-…); it is refused from the next request on."""
    store = _store()
    row = ApiKeys(store).revoke(prefix, _actor())
    if row is None:
        raise click.ClickException(f"no key {prefix!r} (see `assistant keys list`)")
    _audit(store, "key_revoked", row.prefix, {"owner": row.owner})
    click.echo(f"revoked {row.prefix}")


@click.group("people")
def people_group() -> None:
    """People who sign in to the web chat (local accounts; OIDC people appear on sign-in)."""


@people_group.command("invite")
@click.argument("handle")
@click.option("--name", "display_name", default=None, help="The name shown to them.")
@click.option("--admin", is_flag=True, help="They may open the admin panel.")
def people_invite(handle: str, display_name: str | None, admin: bool) -> None:
    """Make a local account; prints the one-time link where they choose a password."""
    store = _store()
    try:
        token = People(store).invite(handle, _actor(), display_name, admin)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from exc
    _audit(store, "person_invited", handle, {"admin": admin})
    click.echo(f"/auth/invite/{token}")
    click.echo(f"Send {handle} this path on your server's address; it works once, for 7 days.",
               err=True)


@people_group.command("list")
def people_list() -> None:
    for person in People(_store()).list():
        kind = "oidc" if person.oidc_subject else "local"
        flags = [flag for flag, on in (("admin", person.is_admin), ("disabled", person.disabled),
                                       ("invited", person.invite_hash is not None)) if on]
        click.echo(f"{person.handle}  {kind}  {person.display_name or '-'}  "
                   f"last sign-in {_when(person.last_login_at)}  {' '.join(flags)}")


@people_group.command("admin")
@click.argument("handle")
@click.option("--off", is_flag=True, help="Take the admin role away.")
def people_admin(handle: str, off: bool) -> None:
    """Make a person an admin of the panel (or stop it with --off)."""
    store = _store()
    try:
        People(store).set_admin(handle, not off)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from exc
    _audit(store, "person_admin", handle, {"admin": not off})


@people_group.command("link")
@click.argument("handle")
@click.argument("platform", type=click.Choice(["slack", "telegram"]))
@click.argument("workspace")
@click.argument("user_id")
def people_link(handle: str, platform: str, workspace: str, user_id: str) -> None:
    """Record that a Slack or Telegram user (workspace/team id, user id) is this person."""
    store = _store()
    try:
        People(store).link(handle, platform, workspace, user_id, _actor())
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from exc
    _audit(store, "identity_linked", handle, {"platform": platform, "workspace": workspace,
                                              "user_id": user_id})
