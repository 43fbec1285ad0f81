"""Hostile plugins at the wasm tier (tests/wasm_guests/hostile.py), each run beside a calm
in-process plugin and a steady wasm plugin (the `limits` guest): every misbehaviour gets a
clear error within its limit, the host survives, and the others keep answering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import write_plugin
from test_wasm_tier import seed_cache
from tether.runtime.host import Host
from tether.runtime.lifecycle import State
from tether.runtime.wasm_engine import load_component
from tether.runtime.wasm_tier import MAX_STUCK, STUCK_GRACE_S, WasmCallError, WasmPlugin
from wasm_build import CACHE, build_all, place

pytestmark = pytest.mark.timeout(90)

ARTIFACTS = CACHE / "cwasm"
TIMEOUT_MS = 300
BOUND_S = TIMEOUT_MS / 1000 + STUCK_GRACE_S
SLACK_S = 1.5  # scheduling on a loaded 2-core machine; the bounds themselves are above
HOSTILE_TOOLS = [
    "ping",
    "count",
    "spin",
    "sleep",
    "never",
    "bomb",
    "huge",
    "not_json",
    "exit",
    "sys_exit",
    "interrupt",
    "recurse",
    "deep",
    "env",
]
CALM = """
from tether import Plugin

plugin = Plugin()


@plugin.tool
async def hello() -> str:
    return "still here"
"""


@pytest.fixture(scope="module")
def components() -> dict[str, Path]:
    built = build_all()
    for path in built.values():
        load_component(path, ARTIFACTS)  # compile once per content; later runs deserialize
    return built


def _wasm_manifest(plugin_id: str, entry: str, tools: list[str]) -> str:
    head = (
        f'id = "{plugin_id}"\nname = "{plugin_id}"\nversion = "1.0.0"\napi_version = "1.0"\n'
        f'tier = "wasm"\nentry = "{entry}"\ncapabilities = ["tools.register"]\n'
    )
    schema = '{ type = "object", properties = { seconds = { type = "number" } } }'
    return head + "".join(f'\n[[tools]]\nname = "{t}"\ninput_schema = {schema}\n' for t in tools)


def write_host(
    base: Path, components: dict[str, Path], *, config: str = "", host: str = ""
) -> Path:
    """Plugins `hostile` (timeout_ms 300, `config` as its config table), `steady` (the
    limits guest) and `calm` (in-process), with a seeded compile cache."""
    plugins = base / "plugins"
    for plugin_id, guest, tools in [
        ("hostile", "hostile", HOSTILE_TOOLS),
        ("steady", "limits", ["ping", "count"]),
    ]:
        folder = plugins / plugin_id
        folder.mkdir(parents=True)
        (folder / "plugin.toml").write_text(_wasm_manifest(plugin_id, f"{guest}.wasm", tools))
        place(components[guest], folder / f"{guest}.wasm")
    write_plugin(plugins, "calm", CALM)
    seed_cache(base, components["hostile"], components["limits"])
    policy = base / "tether.toml"
    policy.write_text(
        f"[host]\n{host}\n"
        '[plugins.calm]\ngrant = ["tools.register"]\n'
        '[plugins.steady]\ngrant = ["tools.register"]\n'
        '[plugins.hostile]\ngrant = ["tools.register"]\n'
        f"[plugins.hostile.limits]\ntimeout_ms = {TIMEOUT_MS}\n"
        f"[plugins.hostile.config]\n{config}\n"
    )
    return policy


def wasm_of(host: Host, plugin_id: str = "hostile") -> WasmPlugin:
    wasm = getattr(host.records[plugin_id].plugin, "wasm", None)
    assert isinstance(wasm, WasmPlugin)
    return wasm


async def others_answer(host: Host) -> None:
    """The calm and steady plugins answer, and the host still runs."""
    calm = await host.call_tool("plugin_calm_hello", {})
    assert calm.content == "still here", calm.content
    steady = await host.call_tool("plugin_steady_ping", {})
    assert steady.content == "pong", steady.content
    assert host.records["calm"].state is State.ACTIVE
    assert host.records["steady"].state is State.ACTIVE


@pytest.fixture
async def host(tmp_path: Path, components: dict[str, Path]) -> AsyncIterator[Host]:
    async with Host(write_host(tmp_path, components)) as h:
        assert h.records["hostile"].state is State.ACTIVE, h.records["hostile"].error
        await others_answer(h)
        yield h


# tool, what the error says (any of), and how the store ends: "trap", "stuck" or "none"
CASES = [
    ("spin", ["CPU time limit of 300 ms", "timed out after 0.3s"], "trap"),
    ("never", ["CPU time limit of 300 ms", "timed out after 0.3s"], "trap"),
    ("bomb", ["ran out of memory (limit 64 MiB)"], "trap"),
    ("huge", ["over the 1048576-byte limit"], "none"),
    ("not_json", ["not JSON"], "none"),
    ("exit", ["the component exited (status 1"], "trap"),
    ("sys_exit", ["the component exited (status 1"], "trap"),
    ("interrupt", ["the component crashed: KeyboardInterrupt"], "trap"),
    ("recurse", ["RecursionError: maximum recursion depth exceeded"], "trap"),
    ("deep", ["exhausted its call stack"], "trap"),
]


@pytest.mark.parametrize(("tool", "says", "ends"), CASES, ids=[c[0] for c in CASES])
async def test_each_hostile_tool_fails_clearly_and_on_time(
    host: Host, tool: str, says: list[str], ends: str
) -> None:
    wasm = wasm_of(host)
    assert (await host.call_tool("plugin_hostile_count", {})).data == 1
    t0 = time.perf_counter()
    result = await host.call_tool(f"plugin_hostile_{tool}", {})
    took = time.perf_counter() - t0
    assert result.is_error, result.content
    assert any(s in result.content for s in says), result.content
    assert took < BOUND_S + SLACK_S, took
    # the plugin answers again: a fresh instance after a trap, the same one otherwise
    assert (await host.call_tool("plugin_hostile_ping", {})).content == "pong"
    count = (await host.call_tool("plugin_hostile_count", {})).data
    if ends == "trap":
        assert wasm.traps == 1 and count == 1
        trap = host.audit.read(plugin="hostile", kind="wasm_trap")[0]
        assert trap.detail["export"] == "handle-tool"
    else:
        assert wasm.traps == 0 and count == 2
    assert wasm.stuck == 0
    await others_answer(host)


async def test_blocking_sleep_is_abandoned_and_the_next_call_works(host: Host) -> None:
    """`time.sleep` blocks in WASI's clock poll, where the epoch deadline cannot reach: the
    host's timeout answers, the thread and its store are left to the sleep, and the next
    call runs on a fresh thread and instance. The left thread closes its store and ends
    when the sleep returns."""
    wasm = wasm_of(host)
    assert (await host.call_tool("plugin_hostile_count", {})).data == 1
    t0 = time.perf_counter()
    slept = await host.call_tool("plugin_hostile_sleep", {"seconds": 5})
    assert slept.is_error and "timed out after 0.3s" in slept.content
    assert time.perf_counter() - t0 < TIMEOUT_MS / 1000 + SLACK_S
    # queued behind the sleeping call until it is declared stuck, then run afresh
    assert (await host.call_tool("plugin_hostile_count", {})).data == 1
    assert time.perf_counter() - t0 < BOUND_S + SLACK_S
    assert wasm.stuck == 1 and wasm.traps == 0
    stuck = host.audit.read(plugin="hostile", kind="wasm_stuck")
    assert len(stuck) == 1 and "blocked in a host call" in stuck[0].message
    await others_answer(host)
    left = wasm._stuck_threads[0]
    assert left.alive()
    assert await asyncio.to_thread(left.join, 10.0)  # the sleep returned; thread cleaned up
    assert (await host.call_tool("plugin_hostile_count", {})).data == 2


async def test_a_call_queued_behind_a_stuck_one_moves_to_the_fresh_instance(host: Host) -> None:
    wasm = wasm_of(host)
    sleep = asyncio.ensure_future(wasm.call_tool("sleep", {"seconds": 2}))
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    pong = await wasm.call_tool("ping", {})  # no host timeout here: the tier's own bound
    assert pong == "pong"
    assert time.perf_counter() - t0 < BOUND_S + SLACK_S
    with pytest.raises(WasmCallError, match="did not return within its time limit of 300 ms"):
        await sleep
    assert wasm.stuck == 1


async def test_too_many_stuck_calls_are_refused_until_they_return(host: Host) -> None:
    wasm = wasm_of(host)
    for _ in range(MAX_STUCK):
        slept = await host.call_tool("plugin_hostile_sleep", {"seconds": 6})
        assert slept.is_error
        # let it be declared stuck (a call still queued when its caller gives up never runs)
        await asyncio.sleep(BOUND_S)
    assert wasm.stuck == MAX_STUCK
    refused = await host.call_tool("plugin_hostile_ping", {})
    assert refused.is_error and f"has {MAX_STUCK} calls still blocked" in refused.content
    await others_answer(host)
    for thread in list(wasm._stuck_threads):
        assert await asyncio.to_thread(thread.join, 10.0)
    assert (await host.call_tool("plugin_hostile_ping", {})).content == "pong"


@pytest.mark.parametrize("how", ["spin", "sleep"])
async def test_a_hanging_start_leaves_the_plugin_in_error_within_its_bound(
    tmp_path: Path, components: dict[str, Path], how: str
) -> None:
    policy = write_host(
        tmp_path,
        components,
        config=f'hang_start = "{how}"\nsleep_s = 2\n',
        host="teardown_timeout_ms = 5000",
    )
    t0 = time.perf_counter()
    async with Host(policy) as host:
        took = time.perf_counter() - t0
        rec = host.records["hostile"]
        assert rec.state is State.ERROR
        assert rec.error is not None and "start: " in rec.error
        if how == "spin":
            assert "CPU time limit of 300 ms" in rec.error
        else:
            assert "did not return within its time limit of 300 ms" in rec.error
        assert took < BOUND_S + 2 * SLACK_S, took  # well inside teardown_timeout_ms
        await others_answer(host)


@pytest.mark.parametrize("how", ["spin", "sleep"])
async def test_a_hanging_stop_does_not_block_unload(
    tmp_path: Path, components: dict[str, Path], how: str
) -> None:
    policy = write_host(tmp_path, components, config=f'hang_stop = "{how}"\nsleep_s = 2\n')
    async with Host(policy) as host:
        assert (await host.call_tool("plugin_hostile_ping", {})).content == "pong"
        t0 = time.perf_counter()
        await host.unload("hostile")
        assert time.perf_counter() - t0 < 2 * BOUND_S + SLACK_S
        assert host.records["hostile"].state is State.UNLOADED
        failed = host.audit.read(plugin="hostile", kind="teardown_failed")
        assert failed and "stop: " in failed[0].message
        await others_answer(host)


@pytest.mark.parametrize("granted", [True, False])
async def test_the_guest_sees_only_granted_environment_variables(
    tmp_path: Path,
    components: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    granted: bool,
) -> None:
    monkeypatch.setenv("TETHER_TEST_SECRET", "hunter2")
    monkeypatch.setenv("TETHER_WASM_VISIBLE", "shown")
    folder = tmp_path / "plugins" / "snoop"
    folder.mkdir(parents=True)
    manifest = _wasm_manifest("snoop", "hostile.wasm", ["env"]).replace(
        'capabilities = ["tools.register"]',
        'capabilities = ["tools.register", "env.inject"]\n'
        'env = [{ from = "TETHER_WASM_VISIBLE", as = "VISIBLE" }]',
    )
    (folder / "plugin.toml").write_text(manifest)
    place(components["hostile"], folder / "hostile.wasm")
    grant = '["tools.register", "env.inject"]' if granted else '["tools.register"]'
    policy = tmp_path / "tether.toml"
    policy.write_text(f"[plugins.snoop]\ngrant = {grant}\n")
    async with Host(policy) as host:
        result = await host.call_tool("plugin_snoop_env", {})
    assert not result.is_error, result.content
    assert result.data == ({"VISIBLE": "shown"} if granted else {})


async def test_a_stopped_plugin_is_not_brought_back_by_a_late_call(host: Host) -> None:
    steady = wasm_of(host, "steady")
    made = steady.instances
    await host.disable("steady")
    with pytest.raises(WasmCallError, match="is stopped; enable it"):
        await steady.call_tool("ping", {})  # e.g. an ingress delivery racing the disable
    assert steady.instances == made  # no instance was made for it
    await host.enable("steady")
    assert (await host.call_tool("plugin_steady_ping", {})).content == "pong"
