"""People, API keys and linked identities in the SQL store (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from assistant.envelope import utcnow
from assistant.identity.credentials import key_prefix
from assistant.store import connect_store
from assistant.store.identity_models import ApiKey
from assistant.store.keys import ApiKeys
from assistant.store.people import IdentityError, People


def test_a_key_is_kept_as_a_hash_and_works_until_revoked(sql_url: str) -> None:
    store = connect_store(sql_url)
    keys = ApiKeys(store)
    new, row = keys.create("ci", "alice", "admin", rate_limit="10/minute", daily_tokens=500)
    assert key_prefix(new.token) == row.prefix and new.token.startswith(row.prefix + "-")
    stored = keys.get(row.prefix)
    assert stored is not None and new.token not in (stored.secret_hash, stored.prefix)
    info = keys.authenticate(new.token)
    assert info is not None and (info.owner, info.daily_tokens) == ("alice", 500)
    assert keys.get(row.prefix).last_used_at is not None  # type: ignore[union-attr]
    assert keys.authenticate(new.token[:-2] + "xx") is None
    keys.revoke(row.prefix, "admin")
    assert keys.authenticate(new.token) is None
    store.engine.dispose()


def test_last_used_is_written_at_most_once_a_minute(sql_url: str) -> None:
    store = connect_store(sql_url)
    keys = ApiKeys(store)
    new, row = keys.create("ci", "alice", "admin")
    first = utcnow()
    keys.authenticate(new.token, now=first)
    keys.authenticate(new.token, now=first + timedelta(seconds=30))
    assert keys.get(row.prefix).last_used_at == first  # type: ignore[union-attr]
    keys.authenticate(new.token, now=first + timedelta(minutes=2))
    assert keys.get(row.prefix).last_used_at == first + timedelta(minutes=2)  # type: ignore[union-attr]
    store.engine.dispose()


@pytest.mark.parametrize("bad", [{"owner_kind": "robot"}, {"rate_limit": "lots"},
                                 {"daily_tokens": -1}])
def test_bad_key_options_are_refused(sql_url: str, bad: dict[str, object]) -> None:
    store = connect_store(sql_url)
    with store.session() as session:
        before = session.query(ApiKey).count()  # the PostgreSQL database is the session's
    with pytest.raises(Exception, match="."):
        ApiKeys(store).create("x", "alice", "admin", **bad)  # type: ignore[arg-type]
    with store.session() as session:
        assert session.query(ApiKey).count() == before
    store.engine.dispose()


def test_an_invitation_works_once_and_sets_an_argon2_password(sql_url: str) -> None:
    store = connect_store(sql_url)
    people = People(store)
    invite = people.invite("bob", "admin", "Bob", admin=True)
    with pytest.raises(IdentityError, match="taken"):
        people.invite("bob", "admin")
    with pytest.raises(IdentityError, match="characters"):
        people.accept_invite(invite, "short")
    person = people.accept_invite(invite, "a-long-password")
    assert person.admin and person.handle == "bob"
    with pytest.raises(IdentityError, match="unknown, used or expired"):
        people.accept_invite(invite, "another-long-password")
    assert people.get("bob").password_hash.startswith("$argon2id$")  # type: ignore[union-attr]
    assert people.check_password("bob", "a-long-password") is not None
    assert people.check_password("bob", "a-wrong-password") is None
    people.set_disabled("bob", True)
    assert people.check_password("bob", "a-long-password") is None
    store.engine.dispose()


def test_an_oidc_person_is_found_by_issuer_and_subject(sql_url: str) -> None:
    store = connect_store(sql_url)
    people = People(store)
    claims = {"preferred_username": "alice", "name": "Alice", "email": "a@example.com"}
    first = people.sign_in_oidc("https://idp", "sub-1", claims, ["staff"], "admins")
    assert (first.handle, first.admin) == ("alice", False)
    again = people.sign_in_oidc("https://idp", "sub-1", claims | {"name": "Alice B"},
                                ["staff", "admins"], "admins")
    assert again.person_id == first.person_id and again.admin  # admin by group claim
    # Another subject claiming the same username gets a handle of its own.
    other = people.sign_in_oidc("https://idp", "sub-2", claims, [], "admins")
    assert other.handle not in ("alice",) and other.person_id != first.person_id
    store.engine.dispose()


def test_platform_identities_link_to_one_person(sql_url: str) -> None:
    store = connect_store(sql_url)
    people = People(store)
    people.invite("carol", "admin")
    people.invite("dan", "admin")
    people.link("carol", "slack", "T1", "U1", "admin")
    people.link("carol", "slack", "T1", "U1", "admin")  # twice: still one link
    assert [link.user_id for link in people.links("carol")] == ["U1"]
    with pytest.raises(IdentityError, match="someone else"):
        people.link("dan", "slack", "T1", "U1", "admin")
    with pytest.raises(IdentityError, match="Slack and Telegram"):
        people.link("dan", "web", "", "x", "admin")
    assert people.person_for("slack", "T1", "U1").handle == "carol"  # type: ignore[union-attr]
    store.engine.dispose()
