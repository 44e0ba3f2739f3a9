"""People who sign in: local accounts (invited by an admin), OIDC identities, admins, and the
Slack/Telegram identities an admin linked to them."""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from assistant.envelope import utcnow
from assistant.identity.credentials import (
    hash_password,
    new_token,
    password_matches,
    sha256_hex,
)
from assistant.store.db import Store
from assistant.store.identity_models import LinkedIdentity, Person

HANDLE = re.compile(r"^[A-Za-z0-9_.@+-]{1,128}$")
INVITE_LIFETIME = timedelta(days=7)


class IdentityError(ValueError):
    """A request about people that cannot be done (taken handle, bad invitation...)."""


@dataclass(frozen=True)
class SignedIn:
    """A person as a session keeps them."""

    person_id: int
    handle: str
    display_name: str
    admin: bool


def signed_in(person: Person, admin_group: str = "") -> SignedIn:
    in_group = bool(admin_group) and admin_group in (person.groups or [])
    return SignedIn(person.id, person.handle, person.display_name or person.handle,
                    person.is_admin or in_group)


def clean_handle(text: str) -> str:
    """A handle made from an OIDC claim (email, preferred_username): only the safe characters."""
    return re.sub(r"[^A-Za-z0-9_.@+-]", "-", text.strip())[:128].strip("-")


class People:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- local accounts ---------------------------------------------------------------------

    def invite(self, handle: str, by: str, display_name: str | None = None,
               admin: bool = False) -> str:
        """A local account waiting for its password; returns the one-time invitation token."""
        if not HANDLE.match(handle):
            raise IdentityError("a name is 1-128 letters, digits or _.@+-")
        token = new_token()
        person = Person(handle=handle, display_name=display_name, created_by=by,
                        invite_hash=sha256_hex(token),
                        invite_expires_at=utcnow() + INVITE_LIFETIME, is_admin=admin,
                        groups=[], created_at=utcnow())
        try:
            with self.store.session() as session:
                session.add(person)
        except IntegrityError as exc:
            raise IdentityError(f"the name {handle!r} is taken") from exc
        return token

    def accept_invite(self, token: str, password: str) -> SignedIn:
        """Set the invited person's password; the invitation works once."""
        with self.store.session() as session:
            person = session.scalar(select(Person).where(Person.invite_hash == sha256_hex(token)))
            if person is None or person.invite_expires_at is None or \
                    person.invite_expires_at < utcnow():
                raise IdentityError("this invitation is unknown, used or expired: ask an "
                                    "admin for a new one")
            try:
                person.password_hash = hash_password(password)
            except ValueError as exc:
                raise IdentityError(str(exc)) from exc
            person.invite_hash = None
            person.invite_expires_at = None
            person.last_login_at = utcnow()
            return signed_in(person)

    def check_password(self, handle: str, password: str) -> SignedIn | None:
        with self.store.session() as session:
            person = session.scalar(select(Person).where(Person.handle == handle))
            ok = password_matches(person.password_hash if person else None, password)
            if person is None or not ok or person.disabled:
                return None
            person.last_login_at = utcnow()
            return signed_in(person)

    # -- OIDC -------------------------------------------------------------------------------

    def sign_in_oidc(self, issuer: str, subject: str, claims: dict[str, Any],
                     groups: list[str], admin_group: str) -> SignedIn:
        """The person with this (issuer, subject), created on first sign-in; name, email and
        groups refreshed from the token each time. None of the request body is trusted."""
        with self.store.session() as session:
            person = session.scalar(select(Person).where(Person.oidc_issuer == issuer,
                                                         Person.oidc_subject == subject))
            if person is None:
                person = Person(handle=self._free_handle(session, claims, subject),
                                oidc_issuer=issuer, oidc_subject=subject, created_by="oidc",
                                created_at=utcnow(), groups=[])
                session.add(person)
            if person.disabled:
                raise IdentityError("this account is disabled: ask an admin")
            person.display_name = str(claims.get("name") or person.display_name or "")[:256] \
                or None
            person.email = str(claims.get("email") or "")[:320] or person.email
            person.groups = [str(group)[:128] for group in groups][:100]
            person.last_login_at = utcnow()
            session.flush()
            return signed_in(person, admin_group)

    @staticmethod
    def _free_handle(session: Any, claims: dict[str, Any], subject: str) -> str:
        for claim in ("preferred_username", "email"):
            candidate = clean_handle(str(claims.get(claim) or ""))
            if candidate and session.scalar(select(Person.id).where(
                    Person.handle == candidate)) is None:
                return candidate
        return f"oidc-{sha256_hex(subject)[:16]}"

    # -- admins' view -----------------------------------------------------------------------

    def get(self, handle: str) -> Person | None:
        with self.store.session() as session:
            return session.scalar(select(Person).where(Person.handle == handle))

    def is_active(self, person_id: int) -> bool:
        """Still there and not disabled (checked on each request of a session)."""
        with self.store.session() as session:
            disabled = session.scalar(select(Person.disabled).where(Person.id == person_id))
            return disabled is False

    def get_by_id(self, person_id: int) -> Person | None:
        with self.store.session() as session:
            return session.get(Person, person_id)

    def list(self, limit: int = 200) -> list[Person]:
        with self.store.session() as session:
            return list(session.scalars(select(Person).order_by(Person.handle).limit(limit)))

    def set_admin(self, handle: str, admin: bool) -> Person:
        with self.store.session() as session:
            person = session.scalar(select(Person).where(Person.handle == handle))
            if person is None:
                raise IdentityError(f"no person {handle!r}")
            person.is_admin = admin
            return person

    def set_disabled(self, handle: str, disabled: bool) -> Person:
        with self.store.session() as session:
            person = session.scalar(select(Person).where(Person.handle == handle))
            if person is None:
                raise IdentityError(f"no person {handle!r}")
            person.disabled = disabled
            return person

    def link(self, handle: str, platform: str, workspace: str, user_id: str, by: str
             ) -> LinkedIdentity:
        """Record that a Slack or Telegram user is this person."""
        if platform not in ("slack", "telegram"):
            raise IdentityError("only Slack and Telegram identities are linked")
        with self.store.session() as session:
            person = session.scalar(select(Person).where(Person.handle == handle))
            if person is None:
                raise IdentityError(f"no person {handle!r}")
            existing = session.scalar(select(LinkedIdentity).where(
                LinkedIdentity.platform == platform, LinkedIdentity.workspace == workspace,
                LinkedIdentity.user_id == user_id))
            if existing is not None:
                if existing.person_id != person.id:
                    raise IdentityError("that identity is linked to someone else already")
                return existing
            link = LinkedIdentity(person_id=person.id, platform=platform, workspace=workspace,
                                  user_id=user_id, created_by=by, created_at=utcnow())
            session.add(link)
            return link

    def links(self, handle: str) -> builtins.list[LinkedIdentity]:
        with self.store.session() as session:
            return builtins.list(session.scalars(select(LinkedIdentity).join(
                Person, Person.id == LinkedIdentity.person_id).where(Person.handle == handle)))

    def person_for(self, platform: str, workspace: str, user_id: str) -> Person | None:
        """The person a platform identity was linked to (for features that follow a person)."""
        with self.store.session() as session:
            return session.scalar(select(Person).join(
                LinkedIdentity, LinkedIdentity.person_id == Person.id).where(
                LinkedIdentity.platform == platform, LinkedIdentity.workspace == workspace,
                LinkedIdentity.user_id == user_id))

