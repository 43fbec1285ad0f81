"""The capability membrane (`Context`): every surface checks its capability and audits a
violation; plugin storage is isolated by plugin, scope, user and namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import write_policy
from tether import CATALOGUE, CapabilityViolationError, Context, Host, Plugin, UnknownToolError

STORAGE = ["storage.read", "storage.write"]


def _noop(*args: Any) -> None:
    return None


def probe_tool() -> str:
    return "ok"


# Each surface, the capability it needs, and how to touch it (maybe returning an awaitable).
SURFACES: list[tuple[str, str, Callable[[Context], Any]]] = [
    ("storage.get", "storage.read", lambda c: c.storage.get("k")),
    ("storage.list", "storage.read", lambda c: c.storage.list()),
    ("storage.set", "storage.write", lambda c: c.storage.set("k", 1)),
    ("storage.delete", "storage.write", lambda c: c.storage.delete("k")),
    ("storage.clear", "storage.write", lambda c: c.storage.clear()),
    ("events.on", "events.subscribe", lambda c: c.events.on("message.received", _noop)),
    ("events.emit", "events.emit", lambda c: c.events.emit("probe.something", {})),
    ("tools.register", "tools.register", lambda c: c.tools.register(probe_tool)),
    ("tools.unregister", "tools.register", lambda c: c.tools.unregister("probe_tool")),
    ("tools.execute", "tools.execute", lambda c: c.tools.execute("plugin_x_y", {})),
    (
        "hook before_model_call",
        "hooks.model",
        lambda c: c.register_hook("before_model_call", _noop),
    ),
    ("hook after_model_call", "hooks.model", lambda c: c.register_hook("after_model_call", _noop)),
    ("hook filter_tools", "hooks.model", lambda c: c.register_hook("filter_tools", _noop)),
    (
        "hook transform_system_prompt",
        "hooks.model",
        lambda c: c.register_hook("transform_system_prompt", _noop),
    ),
    ("hook before_tool_call", "hooks.tools", lambda c: c.register_hook("before_tool_call", _noop)),
    ("hook after_tool_call", "hooks.tools", lambda c: c.register_hook("after_tool_call", _noop)),
    (
        "hook transform_user_input",
        "hooks.input",
        lambda c: c.register_hook("transform_user_input", _noop),
    ),
    ("hook after_run", "hooks.run", lambda c: c.register_hook("after_run", _noop)),
    ("interceptor run.start", "hooks.run", lambda c: c.events.on("run.start", _noop)),
    ("interceptor run.end", "hooks.run", lambda c: c.events.on("run.end", _noop)),
    ("command", "commands.register", lambda c: c.register_command("probe", _noop)),
    ("system prompt", "prompts.contribute", lambda c: c.add_system_prompt("be brief")),
    ("skill", "skills.register", lambda c: c.add_skill("skills/demo")),
]


async def touch(ctx: Context, action: Callable[[Context], Any]) -> Any:
    result = action(ctx)
    if isinstance(result, Awaitable):
        result = await result
    return result


async def start_host(tmp_path: Path, *plugins: Plugin) -> Host:
    write_policy(tmp_path, "[host]\nentry_points = false\n")
    host = Host(tmp_path / "tether.toml", plugins=list(plugins))
    await host.start()
    return host


@pytest.fixture
async def bare(tmp_path: Path) -> AsyncIterator[tuple[Host, Context]]:
    """A host with one active plugin that declares (and so holds) no capability."""
    probe = Plugin(id="probe", name="Probe", capabilities=[])
    host = await start_host(tmp_path, probe)
    try:
        yield host, probe.context
    finally:
        await host.stop()


@pytest.fixture
async def full(tmp_path: Path) -> AsyncIterator[tuple[Host, Context]]:
    """A host with one plugin that holds every capability the surfaces above need."""
    caps = sorted({cap for _, cap, _ in SURFACES})
    probe = Plugin(id="probe", name="Probe", capabilities=caps)
    host = await start_host(tmp_path, probe)
    try:
        yield host, probe.context
    finally:
        await host.stop()


@pytest.mark.parametrize(("what", "capability", "action"), SURFACES, ids=[s[0] for s in SURFACES])
async def test_surface_without_capability_raises_and_audits(
    bare: tuple[Host, Context], what: str, capability: str, action: Callable[[Context], Any]
) -> None:
    host, ctx = bare
    assert not ctx.has(capability)
    with pytest.raises(CapabilityViolationError) as caught:
        await touch(ctx, action)
    exc = caught.value
    assert exc.capability == capability
    assert exc.plugin_id == "probe"
    message = str(exc)
    assert f"'{capability}'" in message
    assert "[plugins.probe] grant" in message  # says how to fix it
    (record,) = host.audit.read(plugin="probe", kind="capability_violation")
    assert record.detail["capability"] == capability
    assert capability in record.message
    # Nothing was registered on the way.
    assert host.registry.owned_by("probe") == {
        "tools": [],
        "commands": [],
        "hooks": [],
        "skills": [],
    }
    assert host.registry.prompt_sources() == []


@pytest.mark.parametrize(("what", "capability", "action"), SURFACES, ids=[s[0] for s in SURFACES])
async def test_surface_with_capability_works(
    full: tuple[Host, Context], what: str, capability: str, action: Callable[[Context], Any]
) -> None:
    host, ctx = full
    assert ctx.has(capability)
    if capability == "tools.execute":
        # An unknown tool is the only failure left: the membrane let the call through.
        with pytest.raises(UnknownToolError, match="no tool named 'plugin_x_y'"):
            await touch(ctx, action)
    else:
        await touch(ctx, action)
    assert host.audit.read(plugin="probe", kind="capability_violation") == []


def test_surfaces_cover_every_capability_the_membrane_checks() -> None:
    names = {c.name for c in CATALOGUE}
    used = {cap for _, cap, _ in SURFACES}
    assert used <= names
    assert {
        "storage.read",
        "storage.write",
        "events.subscribe",
        "events.emit",
        "tools.register",
        "tools.execute",
        "hooks.model",
        "hooks.tools",
        "hooks.input",
        "hooks.run",
        "commands.register",
        "prompts.contribute",
        "skills.register",
    } <= used


async def test_emit_outside_own_namespace_is_a_violation(full: tuple[Host, Context]) -> None:
    host, ctx = full
    with pytest.raises(CapabilityViolationError) as caught:
        ctx.events.emit("message.received", {"content": "forged"})
    assert caught.value.capability == "events.emit"
    assert "outside 'probe.*'" in str(caught.value)
    seen: list[Any] = []
    host.events.subscribe("probe.ping", "watcher", seen.append)
    assert ctx.events.emit("probe.ping", {"n": 1}) == 1
    await host.events.drain()
    assert [(e.name, e.data, e.source) for e in seen] == [("probe.ping", {"n": 1}, "probe")]


async def test_tool_using_ungranted_capability_fails_its_call_only(tmp_path: Path) -> None:
    spy = Plugin(id="spy", name="Spy", capabilities=["tools.register"])

    @spy.tool
    async def peek(ctx: Context) -> Any:
        return await ctx.storage.get("secret")

    host = await start_host(tmp_path, spy)
    try:
        result = await host.call_tool("plugin_spy_peek", {})
        assert result.is_error
        assert "storage.read" in result.content
        (record,) = host.audit.read(plugin="spy", kind="capability_violation")
        assert record.detail == {"capability": "storage.read", "action": "storage.get"}
        assert [p["state"] for p in host.plugins()] == ["active"]
    finally:
        await host.stop()


# --- storage --------------------------------------------------------------------------------


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Context, Context]]:
    """Two active plugins, both allowed to read and write their storage."""
    a = Plugin(id="alpha", name="Alpha", capabilities=STORAGE)
    b = Plugin(id="beta", name="Beta", capabilities=STORAGE)
    host = await start_host(tmp_path, a, b)
    try:
        yield a.context, b.context
    finally:
        await host.stop()


async def test_keys_are_opaque_text(pair: tuple[Context, Context]) -> None:
    alpha, beta = pair
    await beta.storage.set("secret", "beta's")
    for key in ("a/b", "../beta/secret", "..", "/", "../../etc/passwd", "ключ", "x" * 512):
        await alpha.storage.set(key, key)
        assert await alpha.storage.get(key) == key
    # No path-like key reaches another plugin's rows.
    assert await alpha.storage.get("secret") is None
    assert await alpha.storage.get("../beta/secret") == "../beta/secret"
    assert await beta.storage.get("secret") == "beta's"
    assert await beta.storage.list() == ["secret"]
    assert await alpha.storage.list("../") == ["../../etc/passwd", "../beta/secret"]


@pytest.mark.parametrize("key", ["", "nul\x00inside", "x" * 513, 42])
async def test_bad_keys_are_refused(pair: tuple[Context, Context], key: Any) -> None:
    alpha, _ = pair
    for action in (
        lambda: alpha.storage.set(key, 1),
        lambda: alpha.storage.get(key),
        lambda: alpha.storage.delete(key),
    ):
        with pytest.raises(ValueError, match="storage keys are 1-512 characters"):
            await action()
    assert await alpha.storage.list() == []


async def test_same_key_in_two_plugins_is_two_values(pair: tuple[Context, Context]) -> None:
    alpha, beta = pair
    await alpha.storage.set("shared", {"owner": "alpha"})
    assert await beta.storage.get("shared") is None
    await beta.storage.set("shared", {"owner": "beta"})
    assert await alpha.storage.get("shared") == {"owner": "alpha"}
    assert await beta.storage.get("shared") == {"owner": "beta"}
    assert await beta.storage.delete("shared") is True
    assert await alpha.storage.get("shared") == {"owner": "alpha"}
    await alpha.storage.set("other", 1)
    assert await beta.storage.clear() == 0
    assert await alpha.storage.list() == ["other", "shared"]


async def test_user_scope_needs_a_user_and_isolates_users(pair: tuple[Context, Context]) -> None:
    alpha, beta = pair
    with pytest.raises(ValueError, match="user="):
        await alpha.storage.set("pref", 1, scope="user")
    with pytest.raises(ValueError, match="user="):
        await alpha.storage.get("pref", scope="user", user="")
    with pytest.raises(ValueError, match="user="):
        await alpha.storage.get("pref", scope="user", user="a\x00b")
    with pytest.raises(ValueError, match='only to scope="user"'):
        await alpha.storage.get("pref", user="ann")
    with pytest.raises(ValueError, match="scope"):
        await alpha.storage.get("pref", scope="global")  # type: ignore[arg-type]

    await alpha.storage.set("pref", "ann's", scope="user", user="ann")
    await alpha.storage.set("pref", "bob's", scope="user", user="bob")
    await alpha.storage.set("pref", "plugin-wide")
    assert await alpha.storage.get("pref", scope="user", user="ann") == "ann's"
    assert await alpha.storage.get("pref", scope="user", user="bob") == "bob's"
    assert await alpha.storage.get("pref", scope="user", user="carol") is None
    assert await alpha.storage.get("pref") == "plugin-wide"
    assert await beta.storage.get("pref", scope="user", user="ann") is None

    assert await alpha.storage.clear(scope="user", user="ann") == 1
    assert await alpha.storage.get("pref", scope="user", user="ann") is None
    assert await alpha.storage.get("pref", scope="user", user="bob") == "bob's"
    assert await alpha.storage.list(scope="user", user="bob") == ["pref"]


async def test_namespaces_are_isolated(pair: tuple[Context, Context]) -> None:
    alpha, _ = pair
    await alpha.storage.set("k", "default ns")
    await alpha.storage.set("k", "cache ns", namespace="cache")
    assert await alpha.storage.get("k") == "default ns"
    assert await alpha.storage.get("k", namespace="cache") == "cache ns"
    assert await alpha.storage.clear(namespace="cache") == 1
    assert await alpha.storage.get("k") == "default ns"
    for bad in ("", "a/b", "../default", "x" * 65, "sp ace"):
        with pytest.raises(ValueError, match="namespace"):
            await alpha.storage.get("k", namespace=bad)


async def test_list_prefix_treats_wildcards_literally(pair: tuple[Context, Context]) -> None:
    alpha, _ = pair
    for key in ("a%b", "axb", "a_c", "abc", "A_c", "a\\d"):
        await alpha.storage.set(key, True)
    assert await alpha.storage.list("a%") == ["a%b"]
    assert await alpha.storage.list("a_") == ["a_c"]
    assert await alpha.storage.list("a\\") == ["a\\d"]
    assert await alpha.storage.list("a") == ["a%b", "a\\d", "a_c", "abc", "axb"]
    assert await alpha.storage.list("%") == []
    assert len(await alpha.storage.list()) == 6


async def test_values_round_trip_as_json(pair: tuple[Context, Context]) -> None:
    alpha, _ = pair
    value = {"n": 1, "f": 1.5, "s": "x", "l": [1, None, True], "d": {"k": "v"}}
    await alpha.storage.set("v", value)
    assert await alpha.storage.get("v") == value
    with pytest.raises(ValueError):
        await alpha.storage.set("nan", float("nan"))
    assert await alpha.storage.get("nan") is None


# --- plugin.context -------------------------------------------------------------------------


async def test_plugin_context_only_while_active(tmp_path: Path) -> None:
    p = Plugin(id="ephemeral", name="Ephemeral", capabilities=["storage.read"])
    with pytest.raises(RuntimeError, match="not active"):
        _ = p.context
    host = await start_host(tmp_path, p)
    try:
        ctx = p.context
        assert ctx.plugin_id == "ephemeral"
        assert ctx.granted == frozenset({"storage.read"})
        await host.disable("ephemeral")
        with pytest.raises(RuntimeError, match="not active"):
            _ = p.context
        assert await host.enable("ephemeral") is True
        assert p.context.plugin_id == "ephemeral"
        await host.unload("ephemeral")
        with pytest.raises(RuntimeError, match="not active"):
            _ = p.context
    finally:
        await host.stop()
    with pytest.raises(RuntimeError, match="not active"):
        _ = p.context
