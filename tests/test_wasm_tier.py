"""The WebAssembly component tier: real components built with componentize-py (cached
between runs by tests/wasm_build.py), run by wasmtime behind the capability membrane."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.contract.types import Event
from tether.runtime.host import Host
from tether.runtime.lifecycle import State
from tether.runtime.wasm_engine import load_component
from tether.runtime.wasm_ingress import MAX_COMMANDS
from tether.runtime.wasm_tier import WasmPlugin
from wasm_build import CACHE, HELLO, build_all

ARTIFACTS = CACHE / "cwasm"  # compiled artifacts the tests reuse between runs
FULL = ["tools.register", "storage.read", "storage.write", "events.emit", "http.outbound"]


@pytest.fixture(scope="module")
def components() -> dict[str, Path]:
    built = build_all()
    for path in built.values():
        load_component(path, ARTIFACTS)  # compile once per content; later runs deserialize
    return built


def write_host_dir(
    base: Path,
    wasm: Path,
    *,
    grant: list[str],
    tools: str = "",
    seed: bool = True,
    extra_policy: str = "",
) -> Path:
    """A plugin folder `hello` (the example's manifest, or `tools` instead of its tools)
    with `wasm` as its entry, a policy granting `grant`, and a seeded compile cache."""
    folder = base / "plugins" / "hello"
    folder.mkdir(parents=True)
    manifest = (HELLO / "plugin.toml").read_text()
    if tools:
        manifest = manifest.split("[[tools]]", 1)[0] + tools
    (folder / "plugin.toml").write_text(manifest)
    shutil.copyfile(wasm, folder / "hello.wasm")
    grants = ", ".join(f'"{g}"' for g in grant)
    (base / "tether.toml").write_text(
        f'[plugins.hello]\ngrant = [{grants}]\noutbound_hosts = ["api.example.com"]\n'
        + extra_policy
    )
    if seed:
        cache = base / ".tether" / "wasm-cache"
        cache.mkdir(parents=True)
        for art in ARTIFACTS.glob("*.cwasm"):
            shutil.copyfile(art, cache / art.name)
    return base / "tether.toml"


def wasm_of(host: Host) -> WasmPlugin:
    plugin = host.records["hello"].plugin
    wasm = getattr(plugin, "wasm", None)
    assert isinstance(wasm, WasmPlugin)
    return wasm


@pytest.fixture
async def hello(tmp_path: Path, components: dict[str, Path]) -> AsyncIterator[Host]:
    async with Host(write_host_dir(tmp_path, components["hello"], grant=FULL)) as host:
        assert host.records["hello"].state is State.ACTIVE, host.records["hello"].error
        yield host


LIMIT_TOOLS = """
[[tools]]
name = "ping"
[[tools]]
name = "count"
[[tools]]
name = "spin"
[[tools]]
name = "bomb"
"""


async def test_tools_come_from_the_manifest_and_input_is_validated(hello: Host) -> None:
    names = {t.name for t in hello.tools()}
    assert {"plugin_hello_greet", "plugin_hello_ping", "plugin_hello_fetch"} <= names
    greet = next(t for t in hello.tools() if t.name == "plugin_hello_greet")
    assert greet.input_schema["required"] == ["name"]
    result = await hello.call_tool("plugin_hello_greet", {"name": "Ada"})
    assert not result.is_error and result.content == "Hello, Ada!"
    bad = await hello.call_tool("plugin_hello_greet", {"name": 3})
    assert bad.is_error and "invalid arguments" in bad.content
    extra = await hello.call_tool("plugin_hello_greet", {"name": "x", "evil": 1})
    assert extra.is_error and "invalid arguments" in extra.content


async def test_storage_round_trip_through_the_membrane(hello: Host) -> None:
    stored = await hello.call_tool("plugin_hello_remember", {"key": "k", "value": {"n": [1, 2]}})
    assert not stored.is_error, stored.content
    back = await hello.call_tool("plugin_hello_recall", {"key": "k"})
    assert back.data == {"n": [1, 2]}
    ctx = hello.records["hello"].context
    assert ctx is not None and await ctx.storage.get("k") == {"n": [1, 2]}


async def test_storage_refused_without_grants(tmp_path: Path, components: dict[str, Path]) -> None:
    policy = write_host_dir(tmp_path, components["hello"], grant=["tools.register"])
    async with Host(policy) as host:
        result = await host.call_tool("plugin_hello_remember", {"key": "k", "value": 1})
        assert result.is_error and "storage.write" in result.content
        rows = host.audit.read(plugin="hello", kind="capability_violation")
        assert rows and rows[0].detail["capability"] == "storage.write"
        # the refusal was an err, not a trap: the instance lives on
        assert wasm_of(host).traps == 0
        ok = await host.call_tool("plugin_hello_greet", {"name": "B"})
        assert ok.content == "Hello, B!"


async def test_egress_refused_for_a_host_not_allowlisted(hello: Host) -> None:
    result = await hello.call_tool("plugin_hello_fetch", {"url": "https://evil.example.net/x"})
    assert result.is_error and "evil.example.net" in result.content
    assert wasm_of(hello).traps == 0


@pytest.mark.timeout(30)
async def test_infinite_loop_is_stopped_and_the_next_call_works(
    tmp_path: Path, components: dict[str, Path]
) -> None:
    limits = "[plugins.hello.limits]\ntimeout_ms = 300\n"
    policy = write_host_dir(
        tmp_path, components["limits"], grant=FULL, tools=LIMIT_TOOLS, extra_policy=limits
    )
    async with Host(policy) as host:
        assert (await host.call_tool("plugin_hello_count", {})).data == 1
        t0 = time.perf_counter()
        spun = await host.call_tool("plugin_hello_spin", {})
        took = time.perf_counter() - t0
        # the host's deadline and the component's epoch deadline are the same bound;
        # whichever reports first, the call fails on time
        assert spun.is_error and ("timed out after 0.3s" in spun.content or "CPU" in spun.content)
        assert took < 2.0
        # a fresh instance: guest memory is gone, the host and the plugin work on
        assert (await host.call_tool("plugin_hello_count", {})).data == 1
        assert (await host.call_tool("plugin_hello_ping", {})).content == "pong"
        traps = host.audit.read(plugin="hello", kind="wasm_trap")
        assert "exceeded its CPU time limit of 300 ms" in traps[0].message
        assert wasm_of(host).traps == 1


@pytest.mark.timeout(30)
async def test_memory_bomb_fails_the_call_and_the_next_call_works(
    tmp_path: Path, components: dict[str, Path]
) -> None:
    limits = "[plugins.hello.limits]\nmemory_max_pages = 1024\n"  # 64 MiB
    policy = write_host_dir(
        tmp_path, components["limits"], grant=FULL, tools=LIMIT_TOOLS, extra_policy=limits
    )
    async with Host(policy) as host:
        bomb = await host.call_tool("plugin_hello_bomb", {})
        assert bomb.is_error and "out of memory (limit 64 MiB)" in bomb.content
        assert (await host.call_tool("plugin_hello_ping", {})).content == "pong"
        assert wasm_of(host).traps == 1


@pytest.mark.timeout(40)
async def test_second_start_deserializes_from_the_cache(
    tmp_path: Path, components: dict[str, Path]
) -> None:
    policy = write_host_dir(tmp_path, components["hello"], grant=FULL, seed=False)
    t0 = time.perf_counter()
    async with Host(policy) as host:
        cold = time.perf_counter() - t0
        assert not wasm_of(host).from_cache
    cached = list((tmp_path / ".tether" / "wasm-cache").glob("*.cwasm"))
    assert len(cached) == 1 and cached[0].stat().st_size > 1_000_000
    t0 = time.perf_counter()
    async with Host(policy) as host:
        warm = time.perf_counter() - t0
        assert wasm_of(host).from_cache
        assert (await host.call_tool("plugin_hello_ping", {})).content == "pong"
    assert warm < cold / 5, (cold, warm)


async def test_ingress_envelope_and_output_commands(hello: Host) -> None:
    sent: list[str] = []
    seen: list[Event] = []

    async def reply(text: str) -> None:
        sent.append(text)

    hello.events.subscribe("hello.shouted", "test", seen.append)
    hello.events.subscribe("hello.seen", "test", seen.append)
    wasm = wasm_of(hello)
    out = await wasm.deliver(
        "chat",
        {"text": "shout"},
        source="websocket:ws://x/y",
        reply=reply,
        attempt=2,
        correlation_id="c-1",
    )
    assert out.accepted and out.refused == [] and sent == ["echo: shout"]
    await asyncio.sleep(0.05)
    by_name = {e.name: e.data for e in seen}
    assert by_name["hello.shouted"] == {"text": "shout"}
    # the envelope as the component read it
    assert by_name["hello.seen"] == {
        "ingress": "chat",
        "kind": "websocket_text",
        "source": "websocket:ws://x/y",
        "attempt": 2,
        "correlation_id": "c-1",
    }

    # no reply channel, a foreign event namespace: refused with audit, the rest still runs
    out = await wasm.deliver("chat", {"text": "sneak"}, source="queue:q")
    reasons = [why for _, why in out.refused]
    assert "takes no replies" in reasons[0] and "other.thing" in reasons[1]
    assert len(hello.audit.read(plugin="hello", kind="wasm_command_refused")) == 2

    # bounded: only MAX_COMMANDS run
    out = await wasm.deliver("chat", {"text": "flood"}, source="ws", reply=reply)
    assert len(out.executed) == MAX_COMMANDS and len(out.refused) == 100 - MAX_COMMANDS

    with pytest.raises(ValueError, match="declares no ingress 'nope'"):
        await wasm.deliver("nope", {}, source="ws")


def test_manifest_tools_need_the_wasm_tier() -> None:
    from tether.contract.errors import ManifestError
    from tether.contract.manifest import parse_manifest

    doc = b'id = "x"\nname = "X"\nversion = "1.0.0"\napi_version = "1.0"\ningress = ["a"]\n'
    with pytest.raises(ManifestError, match=r'ingress: only a wasm component.*tier = "wasm"'):
        parse_manifest(doc, "toml", "x")
