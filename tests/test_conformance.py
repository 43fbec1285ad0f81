"""The conformance suite: one list of plugin behaviours, each run against every tier with
the same observable results.

The in-process and subprocess plugins are the same source (tests/conformance_plugin/
plugin.py, only the manifest's `tier` differs); the wasm plugin is a component built from
tests/wasm_guests/conformance.py that implements the same behaviours through the
`tether:plugin` world, its tools, hooks, subscriptions, jobs, slash command and prompt
listed in its manifest (tests/conformance_plugin/wasm.toml).

Each tier gets one host per module, holding `conf` with every grant it needs,
`conflimited` (same code) without `storage.write` and without the hook, event, command and
prompt grants, and `confchannel`, which claims a notification channel (the same component
at the wasm tier, its manifest listing the channel). A behaviour a tier cannot offer is
listed in TIER_GAPS with the reason, and in the gap table of docs/tiers.md; its test
asserts what the tier does instead.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tether import Host, ManualClock
from tether.contract.errors import ManifestError
from tether.contract.manifest import parse_manifest
from tether.contract.types import (
    Block,
    Caller,
    Event,
    Intercept,
    Message,
    RunEnd,
    RunEndReason,
    RunStart,
    ToolCall,
    ToolInfo,
    ToolResult,
    TurnResult,
)
from tether.runtime.lifecycle import State
from tether.runtime.wasm_engine import cache_key, load_component
from wasm_build import CACHE, build_all, place

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="module")]

TIERS = ["inprocess", "subprocess", "wasm"]
HERE = Path(__file__).resolve().parent
SOURCE = HERE / "conformance_plugin" / "plugin.py"
WASM_PIECES = HERE / "conformance_plugin" / "wasm.toml"
DOCS = HERE.parent / "docs" / "tiers.md"

FULL = [
    "tools.register",
    "hooks.model",
    "hooks.tools",
    "hooks.input",
    "hooks.run",
    "commands.register",
    "prompts.contribute",
    "storage.read",
    "storage.write",
    "http.outbound",
    "events.subscribe",
    "events.emit",
    "scheduler.read",
    "scheduler.write",
]
LIMITED_GRANT = ["tools.register", "storage.read"]
CONFIG = {"greeting": "Howdy", "limit": 3, "nested": {"on": True}}

# The channel of tests/conformance_plugin/channel.py, as a component's manifest lists it.
WASM_CHANNEL = 'channels = ["conformance"]\n'

TIER_GAPS: dict[tuple[str, str], str] = {
    ("wasm", "config_model"): "a component receives its config as JSON in start and "
    "validates it itself (the manifest's config_schema is checked by the host)",
}
"""(tier, behaviour) -> why the tier cannot offer it. Must match docs/tiers.md."""


def gap(tier: str, behaviour: str) -> str | None:
    return TIER_GAPS.get((tier, behaviour))


# The rig: one host per tier per module --------------------------------------------------


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Rig:
    tier: str
    host: Host
    clock: ManualClock
    url: str

    async def stored(self, key: str, *, user: str = "", plugin: str = "conf") -> Any:
        storage = self.host.services.storage
        if user:
            return await storage.aget(plugin, "user", user, "default", key)
        return await storage.aget(plugin, "plugin", "", "default", key)

    async def call(self, tool: str, args: dict[str, Any], plugin: str = "conf") -> ToolResult:
        return await self.host.call_tool(f"plugin_{plugin}_{tool}", args)


def _manifest(plugin_id: str, tier: str, caps: list[str], entry: str) -> str:
    listed = ", ".join(f'"{c}"' for c in caps)
    text = (
        f'id = "{plugin_id}"\nname = "Conformance {plugin_id}"\nversion = "1.0.0"\n'
        f'api_version = "1.0"\ntier = "{tier}"\nentry = "{entry}"\ncapabilities = [{listed}]\n'
    )
    if "http.outbound" in caps:
        text += 'outbound_hosts = ["127.0.0.1"]\n'
    return text


def _policy(url_host: str) -> str:
    full = ", ".join(f'"{c}"' for c in FULL)
    limited = ", ".join(f'"{c}"' for c in LIMITED_GRANT)
    config = "\n".join(f"{k} = {_toml(v)}" for k, v in CONFIG.items() if not isinstance(v, dict))
    nested = "\n".join(
        f"[plugins.conf.config.{k}]\n" + "\n".join(f"{kk} = {_toml(vv)}" for kk, vv in v.items())
        for k, v in CONFIG.items()
        if isinstance(v, dict)
    )
    return (
        "[host]\nteardown_timeout_ms = 5000\n"
        f"[plugins.conf]\ngrant = [{full}]\n"
        f'outbound_hosts = ["{url_host}"]\nprivate_hosts = ["{url_host}"]\n'
        f"[plugins.conf.config]\n{config}\n{nested}\n"
        f"[plugins.conflimited]\ngrant = [{limited}]\n"
        '[plugins.confchannel]\ngrant = ["notifications.register"]\n'
        '[plugins.conftyped]\ngrant = ["tools.register"]\n'
        '[plugins.conftyped.config]\ngreeting = "Hi"\n'
    )


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _write_plugins(base: Path, tier: str) -> None:
    """`conf`, `conflimited` and `confchannel` (a notification channel) at every tier; at
    the Python tiers also `conftyped` (a config model, which a component cannot declare)."""
    plugins: list[tuple[str, list[str], str]] = [
        ("conf", FULL, "plugin"),
        ("conflimited", FULL, "plugin"),
        ("confchannel", ["notifications.register"], "channel"),
    ]
    if tier != "wasm":
        plugins += [("conftyped", ["tools.register"], "typed")]
    for plugin_id, caps, source in plugins:
        folder = base / "plugins" / plugin_id
        folder.mkdir(parents=True)
        if tier == "wasm":
            manifest = _manifest(plugin_id, tier, caps, "conformance.wasm")
            pieces = WASM_CHANNEL if source == "channel" else WASM_PIECES.read_text()
            (folder / "plugin.toml").write_text(manifest + pieces)
            place(_component(), folder / "conformance.wasm")
        else:
            (folder / "plugin.toml").write_text(_manifest(plugin_id, tier, caps, "plugin.py"))
            shutil.copyfile(SOURCE.with_name(f"{source}.py"), folder / "plugin.py")
    if tier == "wasm":
        _seed_wasm_cache(base)


def _component() -> Path:
    return build_all()["conformance"]


def _seed_wasm_cache(base: Path) -> None:
    """Compile the component once per content for every run; the host then deserializes
    the artifact from its cache instead of compiling."""
    artifacts = CACHE / "cwasm"
    component = _component()
    load_component(component, artifacts)
    name = f"{cache_key(component.read_bytes())}.cwasm"
    cache = base / ".tether" / "wasm-cache"
    cache.mkdir(parents=True)
    place(artifacts / name, cache / name)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=TIERS)
async def rig(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, http_server: str
) -> AsyncIterator[Rig]:
    tier: str = request.param
    base = tmp_path_factory.mktemp(f"conformance-{tier}")
    _write_plugins(base, tier)
    (base / "tether.toml").write_text(_policy("127.0.0.1"))
    clock = ManualClock()
    async with Host(base / "tether.toml", clock=clock) as host:
        for plugin_id in ("conf", "conflimited"):
            rec = host.records[plugin_id]
            assert rec.state is State.ACTIVE, (tier, plugin_id, rec.error)
        yield Rig(tier, host, clock, http_server)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    """Wait (real time) until `check()` holds: deliveries to a worker or a component are
    asynchronous at the stricter tiers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await asyncio.sleep(0.01)


# Tools -----------------------------------------------------------------------------------


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


# What the in-process tier derives from the signatures; the wasm manifest lists the same.
SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "echo": (
        "Repeat the text.",
        _object({"text": {"type": "string"}, "times": {"default": 1, "type": "integer"}}, "text"),
    ),
    "put": (
        "Store a value (per user when `user` is given).",
        _object(
            {
                "key": {"type": "string"},
                "value": {"type": "string"},
                "user": {"default": "", "type": "string"},
            },
            "key",
            "value",
        ),
    ),
    "get": (
        "Read a value stored by put.",
        _object({"key": {"type": "string"}, "user": {"default": "", "type": "string"}}, "key"),
    ),
    "fetch": (
        "GET a URL through the host's egress checks.",
        _object({"url": {"type": "string"}}, "url"),
    ),
    "settings": ("The plugin's config.", _object({})),
}


async def test_tool_schemas(rig: Rig) -> None:
    listed = {t.name: t for t in rig.host.tools() if t.plugin_id == "conf"}
    got = {name: (t.description, t.input_schema) for name, t in listed.items()}
    assert got == {f"plugin_conf_{n}": v for n, v in SCHEMAS.items()}


async def test_tool_results(rig: Rig) -> None:
    r = await rig.call("echo", {"text": "hi", "times": 3})
    assert (r.content, r.is_error, r.data) == ("hi hi hi", False, None)
    r = await rig.call("echo", {"text": "once"})  # the default applies
    assert (r.content, r.is_error) == ("once", False)
    r = await rig.call("settings", {})
    assert r.is_error is False and r.data == CONFIG


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"text": 3}, "text: must be string"),
        ({"times": 2}, "arguments: must contain ['text'] properties"),
        ({"text": "x", "evil": 1}, "arguments: must not contain {'evil'} properties"),
    ],
    ids=["wrong-type", "missing", "extra"],
)
async def test_invalid_input_is_refused_before_the_plugin(
    rig: Rig, args: dict[str, Any], message: str
) -> None:
    r = await rig.call("echo", args)
    assert (r.content, r.is_error) == (f"plugin_conf_echo: invalid arguments: {message}", True)


# Hooks -----------------------------------------------------------------------------------


async def test_before_tool_call_blocks_and_rewrites(rig: Rig) -> None:
    r = await rig.call("echo", {"text": "forbidden"})
    assert (r.content, r.is_error) == ("blocked by conformance", True)
    r = await rig.call("echo", {"text": "rewrite", "times": 2})
    assert (r.content, r.is_error) == ("rewritten rewritten", False)
    verdict = await rig.host.hooks.before_tool_call(ToolCall("x", {"text": "forbidden"}, "c1"))
    assert verdict == Block("blocked by conformance")
    same = ToolCall("x", {"text": "fine"}, "c2")
    assert await rig.host.hooks.before_tool_call(same) == same


async def test_transform_user_input_intercepts_and_transforms(rig: Rig) -> None:
    hooks = rig.host.hooks
    assert await hooks.transform_user_input("intercept me") == Intercept(
        "intercepted by conformance"
    )
    assert await hooks.transform_user_input("my colour") == "my color"


async def test_threading_hooks_change_their_value(rig: Rig) -> None:
    hooks = rig.host.hooks
    messages = await hooks.before_model_call([Message("user", "hi")], {"model": "m"})
    assert messages == [Message("user", "hi"), Message("system", "conformance saw 1")]
    turn = await hooks.after_model_call(TurnResult("quiet", prompt_tokens=5))
    assert turn == TurnResult("QUIET")
    assert await hooks.transform_system_prompt("base") == "base | conformance"
    tools = [ToolInfo(n, "", {"type": "object"}, "x") for n in ("keep", "drop_hidden")]
    assert [t.name for t in await hooks.filter_tools(tools)] == ["keep"]
    r = await rig.call("echo", {"text": "decorate"})
    assert (r.content, r.is_error) == ("decorate (after)", False)


async def test_after_run_runs_with_the_reason(rig: Rig) -> None:
    await rig.host.hooks.after_run(RunEndReason.MAX_TURNS)
    assert await rig.stored("after_run") == "max_turns"
    await rig.host.hooks.after_run(RunEndReason.COMPLETE)
    assert await rig.stored("after_run") == "complete"


# Events ----------------------------------------------------------------------------------


async def test_notification_event_reaches_the_handler(rig: Rig) -> None:
    noticed: list[Event] = []
    sub = rig.host.events.subscribe("conf.noticed", "test", noticed.append)
    try:
        rig.host.events.emit("message.received", {"text": f"hi {rig.tier}"})

        async def handled() -> bool:
            return bool(noticed) and await rig.stored("last_event") is not None

        await eventually(handled, "the message.received handler")
    finally:
        rig.host.events.unsubscribe(sub)
    seen = {"name": "message.received", "data": {"text": f"hi {rig.tier}"}, "source": "host"}
    assert await rig.stored("last_event") == seen
    assert noticed == [Event("conf.noticed", {"text": f"hi {rig.tier}"}, "conf")]


START = RunStart("r1", "s1", "do the thing", Caller("ann", frozenset({"member"})))


async def test_run_start_interceptor(rig: Rig) -> None:
    out = await rig.host.events.run_start(START)
    assert (out.blocked_by, out.block_reason) == (None, None)
    assert out.system_prompt == ["conformance rules for ann"]
    blocked = RunStart("r2", None, "something forbidden", START.caller)
    out = await rig.host.events.run_start(blocked)
    assert (out.blocked_by, out.block_reason) == ("conf", "conformance blocks this run")


async def test_run_end_interceptor(rig: Rig) -> None:
    def end(reply: str) -> RunEnd:
        return RunEnd("r1", "s1", "p", reply, RunEndReason.COMPLETE, START.caller)

    out = await rig.host.events.run_end(end("hello"))
    assert (out.reply, out.suppressed) == ("hello -- conformance", False)
    out = await rig.host.events.run_end(end("secret"))
    assert out.suppressed is True


# Storage, egress, jobs, config -------------------------------------------------------------


async def test_storage_in_both_scopes(rig: Rig) -> None:
    for args in (
        {"key": "k", "value": "shared"},
        {"key": "k", "value": "for ann", "user": "ann"},
        {"key": "k", "value": "for bob", "user": "bob"},
    ):
        r = await rig.call("put", args)
        assert (r.content, r.is_error) == ("stored", False)
    for user, value in (("", "shared"), ("ann", "for ann"), ("bob", "for bob")):
        r = await rig.call("get", {"key": "k", "user": user} if user else {"key": "k"})
        assert r.data == {"value": value}
        assert await rig.stored("k", user=user) == value
    r = await rig.call("get", {"key": "k", "user": "carol"})
    assert r.data == {"value": None}


async def test_egress_goes_through_the_host_checks(rig: Rig) -> None:
    r = await rig.call("fetch", {"url": f"{rig.url}/conformance"})
    assert (r.is_error, r.data) == (False, {"status": 200, "body": "hello from /conformance"})
    r = await rig.call("fetch", {"url": "http://evil.example.net/x"})
    assert r.is_error and "EgressBlockedError" in r.content
    assert "evil.example.net" in r.content and "outbound_hosts" in r.content
    rows = rig.host.audit.read(plugin="conf")
    assert any("evil.example.net" in row.message for row in rows)


async def test_scheduled_job_runs(rig: Rig) -> None:
    jobs = [j for j in rig.host.scheduler.jobs() if j.plugin_id == "conf"]
    assert [j.name for j in jobs] == ["tick"]
    before = await rig.stored("ticks") or 0
    await rig.clock.advance(60)

    def runs() -> int:
        return next(j.run_count for j in rig.host.scheduler.jobs() if j.plugin_id == "conf")

    async def ticked() -> bool:
        # the job stores its tick before the scheduler counts the run as ended
        return bool(await rig.stored("ticks") == before + 1) and runs() >= 1

    await eventually(ticked, "the job tick")
    assert await rig.stored("ticks") == before + 1


async def test_config_reaches_the_plugin(rig: Rig) -> None:
    r = await rig.call("settings", {})
    assert r.data == {"greeting": "Howdy", "limit": 3, "nested": {"on": True}}
    r = await rig.call("settings", {}, plugin="conflimited")
    assert r.data == {}


async def test_capability_violation_is_refused(rig: Rig) -> None:
    r = await rig.call("put", {"key": "k", "value": "v"}, plugin="conflimited")
    assert r.is_error and "CapabilityViolationError" in r.content
    assert "'storage.write'" in r.content and "conflimited" in r.content
    assert await rig.stored("k", plugin="conflimited") is None
    # the refusal leaves the plugin working
    r = await rig.call("get", {"key": "k"}, plugin="conflimited")
    assert (r.is_error, r.data) == (False, {"value": None})


async def test_capability_violation_is_audited(rig: Rig) -> None:
    r = await rig.call("put", {"key": "audited", "value": "v"}, plugin="conflimited")
    assert r.is_error
    rows = rig.host.audit.read(plugin="conflimited", kind="capability_violation")
    assert any(
        row.detail.get("capability") == "storage.write" and "storage.set" in row.detail["action"]
        for row in rows
    ), [row.detail for row in rows]


# Behaviours some tiers cannot offer: each asserts what such a tier does instead ------------


def _wasm_manifest_refuses(key_line: str, key: str) -> None:
    """A component cannot declare this: its manifest has no such key."""
    text = _manifest("conf", "wasm", FULL, "conformance.wasm") + key_line + "\n"
    with pytest.raises(ManifestError) as exc:
        parse_manifest(text.encode(), "toml", "conf")
    assert key in str(exc.value)


def _refused_at_load(rig: Rig, plugin_id: str, *words: str) -> None:
    rec = rig.host.records[plugin_id]
    assert rec.state is State.ERROR
    for word in words:
        assert word in (rec.error or ""), rec.error


# Commands, prompts and channels ------------------------------------------------------------


async def test_slash_command(rig: Rig) -> None:
    assert await rig.host.run_command("/confping x") == "pong x"
    assert await rig.host.run_command("/confping   spaced out ") == "pong spaced out"
    command = rig.host.registry.commands["confping"]
    assert (command.plugin_id, command.description) == ("conf", "Answer without the model.")
    assert await rig.host.run_command("/confnope") is None


async def test_system_prompt_contribution(rig: Rig) -> None:
    # conf's text, then the transform hook; conflimited's text is skipped (no grant)
    prompt = await rig.host.system_prompt("base")
    assert prompt == "base\n\nThe conformance plugin is loaded. | conformance"


async def test_commands_and_prompts_without_grants_are_skipped(rig: Rig) -> None:
    rec = rig.host.records["conflimited"]
    assert rec.state is State.ACTIVE
    for warning in (
        "command /confping skipped: commands.register is not granted",
        "system prompt skipped: prompts.contribute is not granted",
    ):
        assert warning in rec.warnings, rec.warnings


async def test_notification_channel(rig: Rig) -> None:
    assert rig.host.records["confchannel"].state is State.ACTIVE
    result = await rig.host.notify("conformance", "ann", "hello", {"subject": "hi"})
    assert (result.ok, result.message, result.attempts) == (True, "delivered to ann: hello", 1)
    [channel] = [c for c in rig.host.notifications.channels() if c.kind == "conformance"]
    assert (channel.plugin_id, channel.state) == ("confchannel", "closed")


async def test_typed_config(rig: Rig, record_property: Callable[[str, object], None]) -> None:
    if reason := gap(rig.tier, "config_model"):
        record_property("gap", reason)
        if rig.tier == "wasm":  # the component gets the JSON config as the operator wrote it
            r = await rig.call("settings", {})
            assert r.data == CONFIG
            _wasm_manifest_refuses('config_model = "Settings"', "config_model")
        else:
            _refused_at_load(rig, "conftyped", "config", rig.tier)
        return
    r = await rig.call("typed_settings", {}, plugin="conftyped")
    assert r.data == {"type": "Settings", "greeting": "Hi", "limit": 10}


# The docs list exactly the suite's gaps ------------------------------------------------------


def _documented_gaps() -> dict[tuple[str, str], str]:
    text = DOCS.read_text()
    section = text.split("\n## Conformance\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[tuple[str, str], str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or set(cells[0]) <= {"-"}:
            continue
        tier, behaviour, reason = (re.sub(r"`", "", c) for c in cells[:3])
        if tier != "tier":
            rows[(tier, behaviour)] = reason
    return rows


async def test_docs_list_exactly_the_suites_gaps() -> None:
    documented = _documented_gaps()
    assert set(documented) == set(TIER_GAPS)
    for key, reason in TIER_GAPS.items():
        assert documented[key] == reason, key
