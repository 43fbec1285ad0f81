"""The WebAssembly component tier: real components built with componentize-py (cached
between runs by tests/wasm_build.py), run by wasmtime behind the capability membrane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.contract.types import (
    Caller,
    Event,
    Intercept,
    NotificationRequest,
    RunEnd,
    RunEndReason,
    RunStart,
)
from tether.runtime.host import Host
from tether.runtime.lifecycle import State
from tether.runtime.wasm_engine import cache_key, load_component
from tether.runtime.wasm_ingress import MAX_COMMANDS
from tether.runtime.wasm_tier import WasmPlugin
from tether.services.clock import ManualClock
from tether.services.notify import RetryPolicy
from wasm_build import CACHE, HELLO, build_all, place

# A cold cache compiles every guest in the first test's setup (tens of seconds each).
pytestmark = pytest.mark.timeout(240)

ARTIFACTS = CACHE / "cwasm"  # compiled artifacts the tests reuse between runs
FULL = ["tools.register", "storage.read", "storage.write", "events.emit", "http.outbound"]
REACTIVE = [
    "hooks.tools",
    "hooks.input",
    "hooks.run",
    "events.subscribe",
    "scheduler.write",
    "commands.register",
]


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
    place(wasm, folder / "hello.wasm")
    grants = ", ".join(f'"{g}"' for g in grant)
    (base / "tether.toml").write_text(
        f'[plugins.hello]\ngrant = [{grants}]\noutbound_hosts = ["api.example.com"]\n'
        + extra_policy
    )
    if seed:
        seed_cache(base, wasm)
    return base / "tether.toml"


def seed_cache(base: Path, *components: Path) -> None:
    """Copy the compiled artifacts of `components` into the host's compile cache under
    `base`: only theirs, since ARTIFACTS keeps one (tens of MB) per guest version built."""
    cache = base / ".tether" / "wasm-cache"
    cache.mkdir(parents=True, exist_ok=True)
    for component in components:
        name = f"{cache_key(component.read_bytes())}.cwasm"
        place(ARTIFACTS / name, cache / name)


def wasm_of(host: Host) -> WasmPlugin:
    plugin = host.records["hello"].plugin
    wasm = getattr(plugin, "wasm", None)
    assert isinstance(wasm, WasmPlugin)
    return wasm


@pytest.fixture
async def hello(tmp_path: Path, components: dict[str, Path]) -> AsyncIterator[Host]:
    policy = write_host_dir(tmp_path, components["hello"], grant=FULL + REACTIVE)
    async with Host(policy) as host:
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
    async with Host(policy) as host:
        assert not wasm_of(host).from_cache
    cached = list((tmp_path / ".tether" / "wasm-cache").glob("*.cwasm"))
    assert len(cached) == 1 and cached[0].stat().st_size > 1_000_000
    written = cached[0].stat().st_mtime_ns
    async with Host(policy) as host:
        assert wasm_of(host).from_cache  # deserialized, not compiled (speed: bench_wasm.py)
        assert (await host.call_tool("plugin_hello_ping", {})).content == "pong"
    assert cached[0].stat().st_mtime_ns == written  # the artifact was not written again


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


# Hooks, events, jobs and user storage --------------------------------------------------

HOOKED = """
id = "hooked"
name = "Hooked"
version = "0.1.0"
api_version = "1.0"
tier = "wasm"
entry = "hooked.wasm"
capabilities = [
    "tools.register", "storage.read", "storage.write",
    "hooks.tools", "hooks.input", "hooks.run", "events.subscribe", "scheduler.write",
    "commands.register", "prompts.contribute", "notifications.register",
]
hooks = ["before_tool_call", "transform_user_input"]
subscribe = ["message.received", "run.start", "run.end"]
channels = ["loose", "reject", "echo", "broken"]
prompt = "Hooked is loaded.\\nIts second line."  # a TOML escape: two lines

[[commands]]
name = "shout"
description = "Shout the text back."
[[commands]]
name = "boom"

[[tools]]
name = "echo"
input_schema = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
[[tools]]
name = "raw"
[[tools]]
name = "user_put"
input_schema = { type = "object", properties = { user = {}, key = {}, value = {} } }
[[tools]]
name = "user_get"
input_schema = { type = "object", properties = { user = {}, key = {} } }
[[tools]]
name = "user_keys"
input_schema = { type = "object", properties = { user = {} } }
[[tools]]
name = "user_drop"
input_schema = { type = "object", properties = { user = {}, key = {} } }

[[jobs]]
name = "tick"
every_s = 60
[[jobs]]
name = "boom"
cron = "*/5 * * * *"
"""


def write_hooked(base: Path, wasm: Path, *, grant: list[str]) -> Path:
    """A plugin folder `hooked` running the test guest tests/wasm_guests/hooked.py."""
    folder = base / "plugins" / "hooked"
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(HOOKED)
    place(wasm, folder / "hooked.wasm")
    grants = ", ".join(f'"{g}"' for g in grant)
    (base / "tether.toml").write_text(f"[plugins.hooked]\ngrant = [{grants}]\n")
    seed_cache(base, wasm)
    return base / "tether.toml"


HOOKED_GRANT = [
    "tools.register",
    "storage.read",
    "storage.write",
    *REACTIVE,
    "prompts.contribute",
    "notifications.register",
]


@pytest.fixture
async def hooked(tmp_path: Path, components: dict[str, Path]) -> AsyncIterator[Host]:
    policy = write_hooked(tmp_path, components["hooked"], grant=HOOKED_GRANT)
    async with Host(policy, clock=ManualClock()) as host:
        rec = host.records["hooked"]
        assert rec.state is State.ACTIVE and rec.warnings == [], (rec.error, rec.warnings)
        yield host


async def test_before_tool_call_hook_blocks_and_rewrites(hooked: Host) -> None:
    blocked = await hooked.call_tool("plugin_hooked_echo", {"text": "a forbidden word"})
    assert (blocked.content, blocked.is_error) == ("blocked by the wasm guard", True)
    # value threading: the hook returned a changed ToolCall, and the tool ran with it
    shouted = await hooked.call_tool("plugin_hooked_echo", {"text": "shout:hi"})
    assert (shouted.content, shouted.is_error) == ("SHOUT:HI", False)
    plain = await hooked.call_tool("plugin_hooked_echo", {"text": "plain"})
    assert plain.content == "plain"  # null: the call goes on unchanged


async def test_a_failing_wasm_hook_is_skipped_and_reported(hooked: Host) -> None:
    # an err, or an ok that is not JSON: like a raising in-process hook, the chain skips
    # it (the call goes on) and the host's hook error sink reports it
    for text, why in (("crash", "the guard failed on purpose"), ("garbled", "not JSON")):
        result = await hooked.call_tool("plugin_hooked_echo", {"text": text})
        assert (result.content, result.is_error) == (text, False)
        newest = hooked.audit.read(plugin="hooked", kind="plugin_error")[0].message
        assert "hook before_tool_call failed" in newest and why in newest, newest
    assert wasm_of_id(hooked, "hooked").traps == 0
    assert (await hooked.call_tool("plugin_hooked_echo", {"text": "ok"})).content == "ok"


async def test_transform_user_input_intercepts_and_threads(hooked: Host) -> None:
    assert await hooked.hooks.transform_user_input("/ping") == Intercept(reply="pong from wasm")
    assert await hooked.hooks.transform_user_input("hi") == "hi (seen by wasm)"


async def test_hello_answers_slash_hello_without_the_model(hello: Host) -> None:
    answer = await hello.hooks.transform_user_input("/hello")
    assert answer == Intercept(reply="Hello from a wasm component!")
    assert await hello.hooks.transform_user_input("hi there") == "hi there"


async def test_hello_answers_its_slash_command(hello: Host) -> None:
    assert await hello.run_command("/wave Ada") == "Hello, Ada!"
    assert await hello.run_command("/wave") == "Hello, world!"
    assert hello.registry.commands["wave"].description == "Greet someone by name."


async def test_a_command_err_answers_with_the_error(hooked: Host) -> None:
    assert await hooked.run_command("/shout  hi there ") == "HI THERE"
    reply = await hooked.run_command("/boom now")
    assert reply == "/boom failed: WasmCallError: command /boom: command boom failed on purpose"
    newest = hooked.audit.read(plugin="hooked", kind="plugin_error")[0].message
    assert "command /boom failed" in newest
    assert wasm_of_id(hooked, "hooked").traps == 0
    assert await hooked.run_command("/shout again") == "AGAIN"


async def test_the_manifest_prompt_is_contributed(hooked: Host) -> None:
    assert await hooked.system_prompt("base") == "base\n\nHooked is loaded.\nIts second line."


async def test_channels_deliver_through_the_component(hooked: Host) -> None:
    hooked.notifications.retry = RetryPolicy(attempts=1)  # no back-off on the manual clock
    assert hooked.notifications.kinds() == ["broken", "echo", "loose", "reject"]
    sent = await hooked.notify("echo", "ann", "hi", {"subject": "s"})
    assert (sent.ok, sent.message) == (True, "echo")
    # the guest got the tagged request and sent it back as `data`: it arrived whole
    assert sent.data == NotificationRequest("echo", "ann", "hi", {"subject": "s"}, "host")
    rejected = await hooked.notify("reject", "bob", "hi")
    assert (rejected.ok, rejected.retryable) == (False, False)
    assert rejected.message == "no such recipient bob"
    # an err fails the attempt (retryable, as a raising in-process handler's)
    broken = await hooked.notify("broken", "ann", "hi")
    assert (broken.ok, broken.retryable) == (False, True)
    assert "channel 'broken' (plugin 'hooked') failed: WasmCallError" in broken.message
    assert "channel broken failed on purpose" in broken.message
    # a result that is not a NotificationResult is refused as at the other tiers
    loose = await hooked.notify("loose", "ann", "hi")
    assert (loose.ok, loose.retryable) == (False, False)
    assert "returned dict, not a NotificationResult" in loose.message
    assert wasm_of_id(hooked, "hooked").traps == 0


async def test_commands_prompt_and_channels_without_grants_are_skipped(
    tmp_path: Path, components: dict[str, Path]
) -> None:
    policy = write_hooked(tmp_path, components["hooked"], grant=["tools.register"])
    async with Host(policy) as host:
        rec = host.records["hooked"]
        assert rec.state is State.ACTIVE, rec.error
        for warning in (
            "command /shout skipped: commands.register is not granted",
            "system prompt skipped: prompts.contribute is not granted",
            "channel echo skipped: notifications.register is not granted",
        ):
            assert warning in rec.warnings, rec.warnings
        assert await host.run_command("/shout hi") is None
        assert await host.system_prompt("base") == "base"
        assert host.notifications.kinds() == []


async def test_a_subscription_receives_the_emitted_event(hooked: Host) -> None:
    assert hooked.events.emit("message.received", {"user": "ada", "text": "hi"}, source="x") == 1
    await hooked.events.drain(timeout=10)
    ctx = hooked.records["hooked"].context
    assert ctx is not None
    assert await ctx.storage.get("last_event") == {
        "__tether_type__": "Event",
        "name": "message.received",
        "data": {"user": "ada", "text": "hi"},
        "source": "x",
    }


async def test_hello_counts_messages_per_user(hello: Host) -> None:
    for user in ("ada", "bob", "ada"):
        hello.events.emit("message.received", {"user": user, "text": "hi"})
    await hello.events.drain(timeout=10)
    ctx = hello.records["hello"].context
    assert ctx is not None
    assert await ctx.storage.get("messages", scope="user", user="ada") == 2
    assert await ctx.storage.get("messages", scope="user", user="bob") == 1
    assert await ctx.storage.get("messages") is None  # nothing in the plugin scope


async def test_run_start_and_run_end_interceptors(hooked: Host) -> None:
    ada = Caller("ada", frozenset({"user"}))
    out = await hooked.events.run_start(RunStart("r1", None, "tell me", ada))
    assert out.blocked_by is None and out.system_prompt == ["wasm was here"]
    out = await hooked.events.run_start(RunStart("r2", "s", "blockme please", ada))
    assert (out.blocked_by, out.block_reason) == ("hooked", "wasm refuses ada")
    end = RunEnd("r1", None, "tell me", "the answer", RunEndReason.COMPLETE, ada)
    done = await hooked.events.run_end(end)
    assert (done.reply, done.suppressed) == ("the answer [complete]", False)


async def test_jobs_run_on_the_schedule(hooked: Host) -> None:
    clock = hooked.clock
    assert isinstance(clock, ManualClock)
    ctx = hooked.records["hooked"].context
    assert ctx is not None
    assert {j.name for j in hooked.scheduler.jobs("hooked")} == {"tick", "boom"}
    await clock.advance(59)
    await hooked.scheduler.idle()
    assert await ctx.storage.get("ticks") is None
    # one minute at a time: each run (in the plugin's thread) ends before the next is due
    for minute in range(1, 6):
        await clock.advance(60 if minute > 1 else 1)
        await hooked.scheduler.idle()
        assert await ctx.storage.get("ticks") == minute
    # the cron job's first tick was at minute 5
    boom = hooked.scheduler.get("hooked", "boom")
    assert boom is not None and boom.failure_count == 1
    assert boom.last_error is not None and "job boom failed on purpose" in boom.last_error


async def test_user_storage_round_trip_and_isolation(hooked: Host) -> None:
    async def call(tool: str, **args: object) -> object:
        result = await hooked.call_tool(f"plugin_hooked_{tool}", args)
        assert not result.is_error, result.content
        return result.data

    await call("user_put", user="ada", key="k", value={"n": [1, 2]})
    await call("user_put", user="bob", key="k", value=["bob's"])
    assert await call("user_get", user="ada", key="k") == {"n": [1, 2]}
    assert await call("user_get", user="bob", key="k") == ["bob's"]
    assert await call("user_get", user="cy", key="k") is None
    assert await call("user_keys", user="ada") == ["k"]
    ctx = hooked.records["hooked"].context
    assert ctx is not None
    assert await ctx.storage.get("k", scope="user", user="ada") == {"n": [1, 2]}
    assert await ctx.storage.get("k") is None  # the plugin scope is separate
    assert await call("user_drop", user="ada", key="k") is True
    assert await call("user_get", user="ada", key="k") is None
    assert await call("user_get", user="bob", key="k") == ["bob's"]
    bad = await hooked.call_tool("plugin_hooked_user_put", {"user": "", "key": "k", "value": 1})
    assert bad.is_error and "user-storage.set" in bad.content and "1-256" in bad.content
    assert wasm_of_id(hooked, "hooked").traps == 0


async def test_user_storage_needs_the_storage_grants(
    tmp_path: Path, components: dict[str, Path]
) -> None:
    policy = write_hooked(tmp_path, components["hooked"], grant=["tools.register"])
    async with Host(policy) as host:
        args = {"user": "ada", "key": "k", "value": 1}
        put = await host.call_tool("plugin_hooked_user_put", args)
        assert put.is_error and "storage.write" in put.content
        get = await host.call_tool("plugin_hooked_user_get", {"user": "ada", "key": "k"})
        assert get.is_error and "storage.read" in get.content
        rows = host.audit.read(plugin="hooked", kind="capability_violation")
        assert {r.detail["capability"] for r in rows} >= {"storage.write", "storage.read"}


async def test_a_result_that_is_not_json_is_a_clear_error(hooked: Host) -> None:
    result = await hooked.call_tool("plugin_hooked_raw", {})
    assert result.is_error
    assert "tool 'raw': the component returned a result that is not JSON" in result.content
    assert "'plain words, not JSON xxx" in result.content and "x" * 100 not in result.content


async def test_hooks_events_and_jobs_without_grants_are_skipped(
    tmp_path: Path, components: dict[str, Path]
) -> None:
    async with Host(write_host_dir(tmp_path, components["hello"], grant=FULL)) as host:
        rec = host.records["hello"]
        assert rec.state is State.ACTIVE, rec.error
        assert sorted(rec.warnings) == [
            "command /wave skipped: commands.register is not granted",
            "event message.received skipped: events.subscribe is not granted",
            "hook transform_user_input skipped: hooks.input is not granted",
            "job tick skipped: scheduler.write is not granted",
        ]
        assert await host.hooks.transform_user_input("/hello") == "/hello"
        assert host.events.subscribers("message.received") == ()
        assert host.scheduler.jobs("hello") == []
        assert (await host.call_tool("plugin_hello_ping", {})).content == "pong"


def wasm_of_id(host: Host, plugin_id: str) -> WasmPlugin:
    wasm = getattr(host.records[plugin_id].plugin, "wasm", None)
    assert isinstance(wasm, WasmPlugin)
    return wasm
