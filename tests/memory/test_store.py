"""The memories table on SQLite and PostgreSQL: ownership, linking, stamps, retention."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from assistant.store import Store
from assistant.store.memories import Memories, Memory
from assistant.store.models import utcnow
from assistant.store.people import People

VECTOR = b"\x00" * 16
TELEGRAM = ("telegram", "default", "42")
SLACK = ("slack", "T1", "U1")


def add(memories: Memories, owner: tuple[str, str, str], text: str, message: str = "") -> int:
    return memories.add(owner, text, VECTOR, "test-model", source_channel="c",
                        source_message=message).id


def test_add_list_update_delete_are_per_owner(store: Store) -> None:
    memories = Memories(store)
    first = add(memories, TELEGRAM, "I am vegetarian")
    add(memories, TELEGRAM, "My dog is called Rex")
    other = add(memories, SLACK, "I live in Lyon")
    assert [m.text for m in memories.list([TELEGRAM])] == ["I am vegetarian",
                                                           "My dog is called Rex"]
    # Another identity can neither change nor delete them.
    assert memories.update([SLACK], first, "hacked", VECTOR, "m") is None
    assert memories.delete([SLACK], [first]) == 0
    updated = memories.update([TELEGRAM], first, "I am vegan", VECTOR, "m")
    assert updated is not None and updated.text == "I am vegan"
    assert updated.updated_at >= updated.created_at
    assert memories.delete([TELEGRAM], [first]) == 1
    assert memories.count([TELEGRAM]) == 1 and memories.count([SLACK]) == 1
    assert memories.counts() == {"telegram": 1, "slack": 1}
    assert memories.people_count() == 2
    assert memories.forget_identity(*SLACK) == 1
    assert memories.list([SLACK]) == [] and other


def test_stamp_changes_with_every_write(store: Store) -> None:
    memories = Memories(store)
    empty = memories.stamp([TELEGRAM])
    assert empty.count == 0 and empty.newest is None
    made = add(memories, TELEGRAM, "I like tea")
    one = memories.stamp([TELEGRAM])
    assert one.count == 1 and one.newest is not None and one.newest.tzinfo is not None
    memories.update([TELEGRAM], made, "I like green tea", VECTOR, "m")
    assert memories.stamp([TELEGRAM]) != one
    memories.delete([TELEGRAM], [made])
    add(memories, TELEGRAM, "I like coffee")
    assert memories.stamp([TELEGRAM]).last_id != one.last_id


def test_a_linked_person_sees_the_memories_of_all_their_identities(store: Store) -> None:
    memories = Memories(store)
    people = People(store)
    people.invite("ada", by="admin")
    people.link("ada", "telegram", "default", "42", by="admin")
    people.link("ada", "slack", "T1", "U1", by="admin")
    add(memories, TELEGRAM, "I am vegetarian")
    web = memories.identities_of("web", "default", "ada")
    assert set(web) == {("web", "default", "ada"), TELEGRAM, SLACK}
    assert set(memories.identities_of(*TELEGRAM)) == set(web)
    assert [m.text for m in memories.list(web)] == ["I am vegetarian"]
    # Someone unlinked sees only their own.
    assert memories.identities_of("telegram", "default", "99") == [
        ("telegram", "default", "99")]


def test_find_by_message_and_channel_filter(store: Store) -> None:
    memories = Memories(store)
    memories.add(TELEGRAM, "said in private", VECTOR, "m", source_channel="42",
                 source_message="m1", private=True)
    memories.add(TELEGRAM, "said in the group", VECTOR, "m", source_channel="-100",
                 source_message="m2", private=False)
    found = memories.find_by_message([TELEGRAM], "m1")
    assert found is not None and found.text == "said in private"
    group = ("telegram", "default", "-100")
    assert [m.text for m in memories.list([TELEGRAM], channel=group)] == ["said in the group"]
    assert memories.stamp([TELEGRAM], channel=group).count == 1


def test_retention_purges_memories_not_edited_for_that_long(store: Store) -> None:
    memories = Memories(store)
    old = add(memories, TELEGRAM, "old news")
    add(memories, TELEGRAM, "fresh")
    with store.session() as session:
        session.execute(sa.update(Memory).where(Memory.id == old).values(
            updated_at=utcnow() - timedelta(days=40)))
    assert memories.purge_older_than(0) == 0  # 0: kept until deleted
    assert memories.purge_older_than(30) == 1
    assert [m.text for m in memories.list([TELEGRAM])] == ["fresh"]
