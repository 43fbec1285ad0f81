"""Per-user memories with FTS5 search (`memory.read`, `memory.write`) and the host's user
store (`users.read`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import write_policy
from tether import CapabilityViolationError, Event, Host, Memory, Plugin, User
from tether.services.database import Database
from tether.services.memory import MemoryStore, fts_query
from tether.services.users import UserStore

MEMORY_CAPS = ["memory.read", "memory.write", "users.read"]


@pytest.fixture
def store(tmp_path: Path) -> MemoryStore:
    return MemoryStore(Database(tmp_path / "t.db"))


def host_for(tmp_path: Path, *plugins: Plugin) -> Host:
    write_policy(tmp_path, "[host]\nentry_points = false\nplugin_dirs = []\n")
    return Host(tmp_path / "tether.toml", plugins=list(plugins))


# The store ---------------------------------------------------------------------------


def test_search_ranks_by_relevance_and_importance(store: MemoryStore) -> None:
    tea = store.create("alice", "Alice drinks green tea every morning", "semantic", 5).id
    store.create("alice", "Alice walked the dog in the park", "episodic", 9)
    urgent = store.create("alice", "Alice likes tea", "semantic", 10).id
    store.create("alice", "How to brew tea: boil water, steep three minutes", "procedural", 2)
    results = store.search("alice", "tea", limit=5)
    assert {m.id for m in results} == {tea, urgent, 4}  # the dog memory does not match
    assert results[0].id == urgent  # shortest match and highest importance
    scores = [m.score for m in results]
    assert all(s is not None and 0 < s <= 1 for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    # Stemming: "brewing" finds "brew"; a type filter narrows.
    (how,) = store.search("alice", "brewing", type="procedural")
    assert how.type == "procedural"
    assert store.search("alice", "tea", limit=1)[0].id == urgent


def test_importance_breaks_a_tie_in_relevance(store: MemoryStore) -> None:
    low = store.create("bob", "prefers window seats", "semantic", 1).id
    high = store.create("bob", "prefers aisle seats", "semantic", 10).id
    assert [m.id for m in store.search("bob", "seats")] == [high, low]


@pytest.mark.parametrize(
    "query",
    ['"unbalanced', "tea OR", "NEAR(tea", "col:tea", "*", "tea AND NOT", "'); DROP TABLE x; --"],
)
def test_query_syntax_cannot_be_injected(store: MemoryStore, query: str) -> None:
    store.create("alice", "tea and drop tables", "semantic")
    store.search("alice", query)  # never an FTS5 syntax error
    assert fts_query("  ?! ") is None
    assert store.search("alice", "?!") == []


def test_users_are_isolated(store: MemoryStore) -> None:
    mine = store.create("alice", "the vault code is 1234", "semantic", 10).id
    store.create("bob", "bob likes vaults", "semantic")
    assert [m.user for m in store.search("bob", "vault code 1234")] == ["bob"]
    assert store.get("bob", mine) is None
    with pytest.raises(KeyError, match="'bob' has no memory"):
        store.update("bob", mine, content="overwritten")
    assert not store.delete("bob", mine)
    assert store.get("alice", mine) is not None
    assert store.get("alice", mine).content == "the vault code is 1234"  # type: ignore[union-attr]
    # A user id that looks like SQL or a wildcard is just an id.
    assert store.search("%", "vault") == [] and store.search("' OR 1=1 --", "vault") == []


def test_update_reindexes_and_validates(store: MemoryStore) -> None:
    mid = store.create("alice", "likes coffee", "semantic", 3).id
    updated = store.update("alice", mid, content="likes cocoa", importance=8)
    assert (updated.content, updated.importance, updated.type) == ("likes cocoa", 8, "semantic")
    assert updated.updated_at >= updated.created_at
    assert store.search("alice", "coffee") == []
    assert [m.id for m in store.search("alice", "cocoa")] == [mid]
    assert store.delete("alice", mid) and store.search("alice", "cocoa") == []
    for bad in [
        {"type": "dream"},
        {"importance": 0},
        {"importance": 11},
        {"importance": True},
        {"content": "   "},
    ]:
        kwargs = {"content": "x", "type": "semantic", "importance": 5, **bad}
        with pytest.raises(ValueError):
            store.create("alice", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="user id"):
        store.create("", "x", "semantic")


def test_user_store(tmp_path: Path) -> None:
    users = UserStore(Database(tmp_path / "t.db"))
    assert users.get("alice") is None and users.preferences("alice") == {}
    alice = users.upsert("alice", name="Alice", roles=["admin"], preferences={"units": "metric"})
    assert alice == User("alice", "Alice", ("admin",), {"units": "metric"})
    # None keeps what is stored; given values replace.
    again = users.upsert("alice", preferences={"units": "imperial", "lang": "nb"})
    assert again.name == "Alice" and again.roles == ("admin",)
    assert users.preferences("alice") == {"lang": "nb", "units": "imperial"}
    assert users.upsert("bob").name == "bob"
    assert [u.id for u in users.list()] == ["alice", "bob"]
    # Preferences handed out are copies.
    users.preferences("alice")["units"] = "changed"
    assert users.preferences("alice")["units"] == "imperial"
    assert users.delete("bob") and users.get("bob") is None
    with pytest.raises(ValueError, match="preferences must be a dict"):
        users.upsert("alice", preferences=["x"])  # type: ignore[arg-type]


# Through the host --------------------------------------------------------------------


async def test_plugins_use_memory_and_users_and_events_fire(tmp_path: Path) -> None:
    recall = Plugin(id="recall", name="Recall", capabilities=MEMORY_CAPS)
    seen: list[Event] = []
    listener = Plugin(id="listener", name="Listener", capabilities=["events.subscribe"])

    @listener.on("memory.created")
    def created(event: Event) -> None:
        seen.append(event)

    @listener.on("memory.updated")
    def updated(event: Event) -> None:
        seen.append(event)

    async with host_for(tmp_path, recall, listener) as host:
        host.users.upsert("alice", name="Alice", preferences={"units": "imperial"})
        ctx = recall.context
        user = await ctx.users.get("alice")
        assert user is not None and user.name == "Alice"
        assert await ctx.users.preferences("alice") == {"units": "imperial"}
        assert await ctx.users.get("nobody") is None
        mid = await ctx.memory.create("alice", "Alice prefers imperial units", "semantic", 7)
        await ctx.memory.create("bob", "Bob prefers metric units", "semantic", 7)
        found = await ctx.memory.search("alice", "units")
        assert [m.id for m in found] == [mid] and isinstance(found[0], Memory)
        assert found[0].source == "recall" and found[0].score is not None
        changed = await ctx.memory.update(mid, user="alice", importance=9)
        assert changed.importance == 9
        with pytest.raises(KeyError):
            await ctx.memory.update(mid, user="bob", content="stolen")
        assert (await ctx.memory.get(mid, user="alice")) is not None
        assert (await ctx.memory.get(mid, user="bob")) is None
        await asyncio.wait_for(host.events.drain(), 5)
        assert [(e.name, e.data["user"]) for e in seen] == [
            ("memory.created", "alice"),
            ("memory.created", "bob"),
            ("memory.updated", "alice"),
        ]
        # Events carry no content: every subscriber would see every user's memories.
        assert all("content" not in e.data for e in seen)
        assert seen[0].data == {
            "id": mid,
            "user": "alice",
            "type": "semantic",
            "importance": 7,
            "plugin": "recall",
        }
        assert host.memory.count("alice") == 1
    # Memories and users are in the host's database and survive a restart.
    async with host_for(tmp_path, Plugin(id="recall", name="R", capabilities=MEMORY_CAPS)) as host:
        assert host.memory.count("alice") == 1
        assert host.users.preferences("alice") == {"units": "imperial"}


async def test_memory_and_users_need_their_capabilities(tmp_path: Path) -> None:
    reader = Plugin(id="reader", name="Reader", capabilities=["memory.read"])
    async with host_for(tmp_path, reader) as host:
        ctx = reader.context
        assert await ctx.memory.search("alice", "x") == []
        with pytest.raises(CapabilityViolationError, match=r"memory.write"):
            await ctx.memory.create("alice", "x", "semantic")
        with pytest.raises(CapabilityViolationError, match=r"memory.write"):
            await ctx.memory.update(1, user="alice", content="x")
        with pytest.raises(CapabilityViolationError, match=r"users.read"):
            await ctx.users.preferences("alice")
        records = host.audit.read(plugin="reader", kind="capability_violation")
        kinds = [r.detail["capability"] for r in records]
        assert kinds.count("memory.write") == 2 and kinds.count("users.read") == 1
