"""The subprocess tier with real worker processes: same results as in-process, host
services through stubs, a channel plugins cannot corrupt, a scrubbed environment, and
hostile handlers that get a clear error within their limit while the host carries on.
Notification channels, config models and config-key validators living in a worker give
the same results and messages as in-process."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_plugin, write_policy
from tether import Host, ManualClock, Plugin
from tether.runtime import subprocess_tier
from tether.services.config_keys import ConfigKeyError
from tether.worker import protocol

pytestmark = pytest.mark.timeout(60)

ECHO = """
from typing import Literal
from pydantic import BaseModel
from tether import Plugin
plugin = Plugin()

class Point(BaseModel):
    x: int
    y: int = 0

@plugin.tool
async def echo(text: str, times: int = 1) -> str:
    '''Repeat the text.'''
    return " ".join([text] * times)

@plugin.tool
def shape(p: Point, kind: Literal["a", "b"] = "a") -> dict:
    '''A typed tool.'''
    return {"sum": p.x + p.y, "kind": kind}
"""

HOSTILE = """
import asyncio, os, sys, struct, time
from tether import Plugin
plugin = Plugin()

@plugin.tool
async def ok() -> str:
    return "fine"

@plugin.tool
async def spin() -> str:
    while True:
        pass

@plugin.tool
def nap() -> str:
    time.sleep(100)
    return "late"

@plugin.tool
async def forever() -> str:
    await asyncio.Event().wait()
    return "never"

@plugin.tool
async def bomb() -> str:
    blocks = []
    while True:
        blocks.append(bytearray(64 * 1024 * 1024))

@plugin.tool
async def die() -> str:
    os._exit(3)

@plugin.tool
async def quit_() -> str:
    raise SystemExit(2)

@plugin.tool
async def interrupt() -> str:
    raise KeyboardInterrupt

@plugin.tool
async def recurse(n: int = 0) -> int:
    def f(k):
        return f(k + 1) + 1
    return f(0)

@plugin.tool
async def weird() -> object:
    return {1, 2}

@plugin.tool
async def noisy() -> str:
    for _ in range(2000):
        print("spam " * 20)
    forged = b"\\x93\\x05\\x01\\xc3"
    sys.stdout.buffer.write(struct.pack(">I", len(forged)) + forged)
    sys.stdout.flush()
    os.write(1, struct.pack(">I", 3) + b"\\x93\\x05\\x02")
    os.write(2, b"to stderr\\n")
    return "clean"

@plugin.tool
async def env() -> dict:
    return dict(os.environ)

@plugin.tool
async def huge() -> str:
    return "x" * 20_000_000

@plugin.tool
async def forge() -> str:
    # A length prefix over the host's frame limit, written on the channel itself.
    os.write(int(sys.argv[2]), struct.pack(">I", 100_000_000))
    await asyncio.sleep(100)
    return "never"
"""


def _policy(tmp_path: Path, extra: str = "") -> Path:
    return write_policy(
        tmp_path,
        """
        [host]
        teardown_timeout_ms = 1000
        [plugins.subecho]
        grant = ["tools.register"]
        [plugins.inecho]
        grant = ["tools.register"]
        [plugins.inbad]
        grant = ["tools.register"]
        [plugins.bad]
        grant = ["tools.register"]
        [plugins.bad.limits]
        memory_mb = 256
        timeout_ms = 1500
        open_files = 64
        cpu_seconds = 60
        """
        + extra,
    )


SUB = 'tier = "subprocess"\n'


async def test_tools_match_inprocess(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "subecho", ECHO, extra=SUB)
    write_plugin(plugins, "inecho", ECHO)
    async with Host(_policy(tmp_path)) as host:
        tools = {t.name: t for t in host.tools()}
        for name in ("echo", "shape"):
            sub, inp = tools[f"plugin_subecho_{name}"], tools[f"plugin_inecho_{name}"]
            assert sub.input_schema == inp.input_schema
            assert sub.description == inp.description
        for name, args in (
            ("echo", {"text": "hi", "times": 3}),
            ("shape", {"p": {"x": 2, "y": 5}, "kind": "b"}),
            ("shape", {"p": {"x": "nope"}}),
        ):
            a = await host.call_tool(f"plugin_subecho_{name}", args)
            b = await host.call_tool(f"plugin_inecho_{name}", args)
            same = b.content.replace("plugin_inecho_", "plugin_subecho_")
            assert (a.content, a.is_error, a.data) == (same, b.is_error, b.data)
        assert (await host.call_tool("plugin_subecho_echo", {"text": "hi"})).content == "hi"
        info = next(p for p in host.plugins() if p["id"] == "subecho")
        assert info["state"] == "active" and info["tier"] == "subprocess"
        assert {"process-group", "scrubbed-env", "memory 512 MB"} <= set(info["confinement"])


async def test_hook_storage_and_capabilities(tmp_path: Path) -> None:
    code = """
    from tether import Plugin
    from tether.contract.types import Block
    plugin = Plugin()

    @plugin.before_tool_call
    async def guard(call):
        if call.arguments.get("text") == "forbidden":
            return Block("blocked by the subprocess guard")
        return None

    @plugin.tool
    async def keep(key: str, value: str) -> str:
        await plugin.context.storage.set(key, value)
        return await plugin.context.storage.get(key)

    @plugin.tool
    async def sneak() -> str:
        plugin.context.events.emit("guard.x", {})
        return "emitted"
    """
    caps = ["tools.register", "hooks.tools", "storage.read", "storage.write", "events.emit"]
    write_plugin(tmp_path / "plugins", "guard", code, capabilities=caps, extra=SUB)
    write_plugin(tmp_path / "plugins", "inecho", ECHO)
    extra = """
    [plugins.guard]
    grant = ["tools.register", "hooks.tools", "storage.read", "storage.write"]
    """
    async with Host(_policy(tmp_path, extra)) as host:
        r = await host.call_tool("plugin_inecho_echo", {"text": "forbidden"})
        assert (r.content, r.is_error) == ("blocked by the subprocess guard", True)
        assert (await host.call_tool("plugin_inecho_echo", {"text": "ok"})).content == "ok"
        r = await host.call_tool("plugin_guard_keep", {"key": "k", "value": "v1"})
        assert (r.content, r.is_error) == ("v1", False)
        assert await host.services.storage.aget("guard", "plugin", "", "default", "k") == "v1"
        r = await host.call_tool("plugin_guard_sneak", {})
        assert r.is_error and "CapabilityViolationError" in r.content
        assert "'events.emit'" in r.content
        # Refused in the worker, audited by the host as in-process.
        rows = host.audit.read(plugin="guard", kind="capability_violation")
        assert [(r.detail["capability"], r.detail["action"]) for r in rows] == [
            ("events.emit", "emit guard.x")
        ]


async def test_channel_env_and_hostile_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TETHER_TEST_SECRET", "hunter2")
    write_plugin(tmp_path / "plugins", "bad", HOSTILE, extra=SUB)
    write_plugin(tmp_path / "plugins", "inbad", HOSTILE)  # in-process, for `huge` only
    write_plugin(tmp_path / "plugins", "inecho", ECHO)
    caplog.set_level(logging.INFO, logger="tether")
    async with Host(_policy(tmp_path)) as host:

        async def call(tool: str) -> tuple[str, bool, float]:
            t0 = time.monotonic()
            r = await host.call_tool(f"plugin_bad_{tool}", {})
            return r.content, r.is_error, time.monotonic() - t0

        async def healthy() -> None:
            assert (await host.call_tool("plugin_inecho_echo", {"text": "x"})).content == "x"
            deadline = time.monotonic() + 10
            while (await call("ok"))[0] != "fine":  # the restarted worker answers again
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)

        content, err, _ = await call("noisy")
        assert (content, err) == ("clean", False)
        await healthy()
        env = await host.call_tool("plugin_bad_env", {})
        assert "hunter2" not in env.content and "TETHER_TEST_SECRET" not in env.data
        assert set(env.data) <= {"PATH", "LANG", "MALLOC_ARENA_MAX", "PYTHONDONTWRITEBYTECODE"}
        for tool, expect in (
            ("quit_", "SystemExit: 2"),
            ("interrupt", "KeyboardInterrupt"),
            ("recurse", "RecursionError"),
            ("weird", "not JSON"),
            ("bomb", "MemoryError"),
        ):
            content, err, took = await call(tool)
            assert err and expect in content, (tool, content)
            assert took < 5
            await healthy()
        for tool in ("spin", "nap", "forever"):
            content, err, took = await call(tool)
            assert err and "timed out after 1.5s" in content, (tool, content)
            assert took < 3
            await healthy()
        content, err, _ = await call("die")
        assert err and "exited with code 3" in content
        await healthy()
        # A huge result is refused in the worker, with the in-process message, and the
        # worker lives on: no giant frame was sent.
        sup = host.records["bad"].plugin._tether_worker  # type: ignore[union-attr]
        assert isinstance(sup, subprocess_tier.Supervisor) and sup.proc is not None
        pid = sup.proc.pid
        content, err, _ = await call("huge")
        inproc = await host.call_tool("plugin_inbad_huge", {})
        expected = "the tool's result is 20000000 bytes, over the 1048576-byte limit; return less"
        assert (content, err) == (expected, True)
        assert (inproc.content, inproc.is_error) == (expected, True)
        assert sup.proc.pid == pid and (await call("ok"))[0] == "fine"
        # A frame over the protocol's limit is a protocol error: the in-flight call fails
        # at once, naming it, and the worker is restarted.
        content, err, took = await call("forge")
        assert err and "its worker stopped (protocol error: frame of 100000000 bytes" in content
        assert f"over the {protocol.MAX_FRAME}-byte limit" in content and took < 3
        await healthy()
        assert sup.proc.pid != pid
        info = next(p for p in host.plugins() if p["id"] == "bad")
        assert info["state"] == "active"
        assert {"memory 256 MB", "open-files 64", "cpu 60 s"} <= set(info["confinement"])
    assert any("spam" in r.getMessage() and "bad" in r.getMessage() for r in caplog.records)
    messages = [r.getMessage() for r in caplog.records]
    assert any("to stderr" in m for m in messages)
    assert any("cannot be stopped: restarting the worker" in m for m in messages)  # nap
    assert any("did not stop a cancelled call: killing it" in m for m in messages)  # spin


async def test_repeated_crashes_put_the_plugin_in_error(tmp_path: Path) -> None:
    write_plugin(tmp_path / "plugins", "bad", HOSTILE, extra=SUB)
    write_plugin(tmp_path / "plugins", "inecho", ECHO)
    async with Host(_policy(tmp_path)) as host:
        deadline = time.monotonic() + 20
        while host.records["bad"].state.value == "active":
            assert time.monotonic() < deadline
            r = await host.call_tool("plugin_bad_die", {})
            assert r.is_error
            await asyncio.sleep(0.05)
        rec = host.records["bad"]
        assert rec.state.value == "error" and "crashed 5 times" in (rec.error or "")
        assert "plugin_bad_ok" not in {t.name for t in host.tools()}
        assert (await host.call_tool("plugin_inecho_echo", {"text": "y"})).content == "y"


async def test_hanging_load_and_teardown(tmp_path: Path) -> None:
    hang_load = """
    import asyncio
    from tether import Plugin
    plugin = Plugin()

    @plugin.on_load
    async def start(ctx):
        await asyncio.sleep(100)
    """
    hang_unload = """
    import time
    from tether import Plugin
    plugin = Plugin()

    @plugin.tool
    async def ok() -> str:
        return "fine"

    @plugin.on_unload
    def stop():
        time.sleep(100)
    """
    write_plugin(tmp_path / "plugins", "hangs", hang_load, extra=SUB)
    write_plugin(tmp_path / "plugins", "stuck", hang_unload, extra=SUB)
    write_plugin(tmp_path / "plugins", "inecho", ECHO)
    extra = """
    [plugins.hangs]
    grant = ["tools.register"]
    [plugins.stuck]
    grant = ["tools.register"]
    """
    async with Host(_policy(tmp_path, extra)) as host:
        hangs = host.records["hangs"]
        assert hangs.state.value == "error" and "TimeoutError" in (hangs.error or "")
        assert (await host.call_tool("plugin_stuck_ok", {})).content == "fine"
        sup = host.records["stuck"].plugin._tether_worker  # type: ignore[union-attr]
        assert isinstance(sup, subprocess_tier.Supervisor) and sup.proc is not None
        pid = sup.proc.pid
        t0 = time.monotonic()
        await host.unload("stuck")
        assert time.monotonic() - t0 < 4
        assert host.records["stuck"].state.value == "unloaded"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert (await host.call_tool("plugin_inecho_echo", {"text": "z"})).content == "z"


def test_tether_list_shows_confinement(tmp_path: Path) -> None:
    write_plugin(tmp_path / "plugins", "subecho", ECHO, extra=SUB)
    policy = _policy(tmp_path)
    tether = Path(sys.executable).parent / "tether"
    out = subprocess.run(
        [str(tether), "list", "--config", str(policy)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("subecho: confined:"))
    assert "process-group" in line and "scrubbed-env" in line and "memory 512 MB" in line


def test_a_message_over_the_frame_limit_is_not_sent() -> None:
    with pytest.raises(protocol.FrameTooLargeError, match="over the limit of 67108864 bytes"):
        protocol.encode([protocol.RESULT, 1, True, b"x" * (protocol.MAX_FRAME + 1)])
    assert len(protocol.encode([protocol.RESULT, 1, True, "fits"])) < 32


async def test_a_plugin_passed_in_code_is_refused_saying_why(tmp_path: Path) -> None:
    write_policy(tmp_path, '[plugins.incode]\ngrant = []\ntier = "subprocess"\n')
    plugin = Plugin(id="incode", name="In code")
    async with Host(tmp_path / "tether.toml", plugins=[plugin], discover=False) as host:
        rec = host.records["incode"]
        assert rec.state.value == "error" and rec.error is not None
        assert rec.reason is not None and rec.reason.value == "import_failed"
        assert "plugin 'incode' was passed to Host in code" in rec.error
        assert "a worker process cannot import" in rec.error
        assert "plugin folder" in rec.error and 'tier = "inprocess"' in rec.error


# Notification channels, config models and config keys, against the in-process tier ------

CHANNEL = """
import asyncio
from tether import Plugin
from tether.contract.types import NotificationRequest, NotificationResult
plugin = Plugin()

@plugin.channel("KIND")
async def deliver(req: NotificationRequest) -> NotificationResult:
    if req.recipient == "boom":
        raise RuntimeError("gateway gone")
    if req.recipient == "odd":
        return "sent, honestly"
    if req.recipient == "nobody":
        return NotificationResult.error("no such number")
    if req.recipient == "slow":
        await asyncio.sleep(100)
    data = {"to": req.recipient, "from": req.sender, "meta": req.metadata, "text": req.text}
    return NotificationResult.success("delivered", data=data)

@plugin.tool
async def alert(kind: str, to: str) -> dict:
    r = await plugin.context.notifications.send(kind, to, "disk full", {"via": "tool"})
    return {"ok": r.ok, "message": r.message, "attempts": r.attempts, "data": r.data}
"""

NOTIFY_CAPS = ["tools.register", "notifications.register", "notifications.send"]


def _same(text: object, sub: str, inp: str) -> object:
    """`text` with the in-process plugin's names turned into the subprocess plugin's."""
    if not isinstance(text, str):
        return text
    return text.replace(inp, sub).replace(inp.upper(), sub.upper())


async def test_notification_channels_match_inprocess(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(
        plugins, "subsms", CHANNEL.replace("KIND", "subsms"), capabilities=NOTIFY_CAPS, extra=SUB
    )
    write_plugin(plugins, "insms", CHANNEL.replace("KIND", "insms"), capabilities=NOTIFY_CAPS)
    policy = write_policy(
        tmp_path,
        """
        [plugins.subsms]
        grant = ["tools.register", "notifications.register", "notifications.send"]
        limits = { timeout_ms = 500 }
        [plugins.insms]
        grant = ["tools.register", "notifications.register", "notifications.send"]
        limits = { timeout_ms = 500 }
        """,
    )
    async with Host(policy, clock=ManualClock(auto_advance=True)) as host:
        assert host.services.notifications.kinds() == ["insms", "subsms"]
        for to in ("+1555", "nobody", "boom", "odd", "slow"):
            a = await host.notify("subsms", to, "from the host", {"k": 1})
            b = await host.notify("insms", to, "from the host", {"k": 1})
            assert (a.ok, a.message, a.retryable, a.attempts, a.data) == (
                b.ok,
                _same(b.message, "subsms", "insms"),
                b.retryable,
                b.attempts,
                b.data,
            ), to
        errors = {p["id"]: p["error"] for p in host.plugins()}  # the last failure, noted
        assert errors["subsms"] == _same(errors["insms"], "subsms", "insms")
        assert errors["subsms"] == "channel 'subsms' (plugin 'subsms') timed out after 0.5s"
        ok = await host.notify("subsms", "+1555", "hi", {"k": 1})
        assert ok.data == {"to": "+1555", "from": "host", "meta": {"k": 1}, "text": "hi"}
        slow = await host.notify("subsms", "slow", "hi")
        assert slow.message == "channel 'subsms' (plugin 'subsms') timed out after 0.5s"
        boom = await host.notify("subsms", "boom", "hi")
        assert (
            boom.message == "channel 'subsms' (plugin 'subsms') failed: RuntimeError: gateway gone"
        )
        odd = await host.notify("subsms", "odd", "hi")
        assert "returned str, not a NotificationResult" in odd.message
        # Plugins send across the boundary both ways: the worker's ctx.notifications.send
        # reaches the in-process channel, and the in-process plugin reaches the worker's.
        out = await host.call_tool("plugin_subsms_alert", {"kind": "insms", "to": "+1"})
        back = await host.call_tool("plugin_insms_alert", {"kind": "subsms", "to": "+1"})
        assert out.data["ok"] and out.data["data"]["from"] == "subsms"
        assert back.data["ok"] and back.data["data"]["from"] == "insms"
        assert out.data["data"]["meta"] == back.data["data"]["meta"] == {"via": "tool"}
        await host.disable("subsms")
        gone = await host.notify("subsms", "+1", "x")
        assert gone.message == "no notification channel of kind 'subsms'; known kinds: insms"


WEATHER = """
from typing import Literal
from pydantic import BaseModel, Field, SecretStr
from tether import Plugin
plugin = Plugin()

@plugin.config_model
class WeatherConfig(BaseModel):
    units: Literal["metric", "imperial"] = "metric"
    max_days: int = Field(default=3, le=10)
    api_key: SecretStr = Field(default=SecretStr("k" * 20), min_length=20)

seen = []

@plugin.on_load
def load(ctx) -> None:
    seen.append(ctx.config.max_days)

@plugin.tool
def show() -> dict:
    c = plugin.context.config
    return {"type": type(c).__name__, "units": c.units, "days": c.max_days, "loads": seen}
"""


async def test_config_model_matches_inprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "subweather", WEATHER, extra=SUB)
    write_plugin(plugins, "inweather", WEATHER)
    policy = write_policy(
        tmp_path,
        """
        [plugins.subweather]
        grant = ["tools.register"]
        config = { units = "imperial" }
        [plugins.inweather]
        grant = ["tools.register"]
        config = { units = "imperial" }
        """,
    )
    for pid in ("SUBWEATHER", "INWEATHER"):
        monkeypatch.setenv(f"TETHER_{pid}_MAX_DAYS", "11")
        monkeypatch.setenv(f"TETHER_{pid}_API_KEY", "hunter2")
    async with Host(policy) as host:
        sub, inp = host.records["subweather"], host.records["inweather"]
        for rec in (sub, inp):
            assert rec.state.value == "error"
            assert rec.reason is not None and rec.reason.value == "invalid_config"
        assert sub.error == _same(inp.error, "subweather", "inweather")
        assert sub.error is not None and "hunter2" not in sub.error
        assert "max_days: environment variable TETHER_SUBWEATHER_MAX_DAYS" in sub.error
        assert "less than or equal to 10 (got '11')" in sub.error
        # Fixing the environment and enabling again works, as in-process.
        for pid in ("SUBWEATHER", "INWEATHER"):
            monkeypatch.setenv(f"TETHER_{pid}_MAX_DAYS", "4")
            monkeypatch.delenv(f"TETHER_{pid}_API_KEY")
        assert await host.enable("subweather") and await host.enable("inweather")
        a = await host.call_tool("plugin_subweather_show", {})
        b = await host.call_tool("plugin_inweather_show", {})
        assert (
            a.data
            == b.data
            == {"type": "WeatherConfig", "units": "imperial", "days": 4, "loads": [4]}
        )
        # The host's copy of the values, under the model's name (secrets masked).
        host_copy = sub.context.config  # type: ignore[union-attr]
        assert (type(host_copy).__name__, host_copy.units, host_copy.max_days) == (
            "WeatherConfig",
            "imperial",
            4,
        )
        assert "k" * 20 not in repr(host_copy)
        # A restarted worker gets the validated config back before on_load runs again.
        sup = sub.plugin._tether_worker  # type: ignore[union-attr]
        sup.kill()
        deadline = time.monotonic() + 10
        while (r := await host.call_tool("plugin_subweather_show", {})).is_error:
            assert time.monotonic() < deadline, r.content
            await asyncio.sleep(0.05)
        assert r.data == {"type": "WeatherConfig", "units": "imperial", "days": 4, "loads": [4]}


KEYS = """
import time
from tether import Plugin
plugin = Plugin()
plugin.config_key("enabled", default="true", description="Answer weather questions.")

@plugin.config_key("units", default="metric", description="Temperature units.")
def units_ok(value: str) -> bool:
    return value in ("metric", "imperial")

@plugin.config_key("days", default="3")
def days_ok(value: str) -> bool:
    if value == "sleep":
        time.sleep(100)
    if int(value) > 10:
        raise ValueError("at most 10 days")
    return True

@plugin.tool
async def put(key: str, value: str, scope: str = "global") -> str:
    await plugin.context.config_keys.set(key, value, scope=scope)
    return await plugin.context.config_keys.get(key, scope=scope)

@plugin.tool
async def listed(scope: str) -> list:
    entries = await plugin.context.config_keys.list(scope=scope)
    return [[e.name.split(".", 1)[1], e.value, e.is_default] for e in entries]
"""

BAD_DEFAULT = """
from tether import Plugin
plugin = Plugin()
plugin.config_key("units", default="kelvin", validate=lambda v: v in ("metric", "imperial"))
"""


async def test_config_key_validators_match_inprocess(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    caps = ["tools.register", "config.register"]
    write_plugin(plugins, "subkeys", KEYS, capabilities=caps, extra=SUB)
    write_plugin(plugins, "inkeys", KEYS, capabilities=caps)
    write_plugin(plugins, "subdefault", BAD_DEFAULT, capabilities=["config.register"], extra=SUB)
    write_plugin(plugins, "indefault", BAD_DEFAULT, capabilities=["config.register"])
    policy = write_policy(
        tmp_path,
        """
        [plugins.subkeys]
        grant = ["tools.register", "config.register"]
        limits = { timeout_ms = 1000 }
        [plugins.inkeys]
        grant = ["tools.register", "config.register"]
        [plugins.subdefault]
        grant = ["config.register"]
        [plugins.indefault]
        grant = ["config.register"]
        """,
    )

    def host_set(name: str, value: str, scope: str) -> str | None:
        try:
            host.config_keys.set(name, value, scope)
        except ConfigKeyError as exc:
            return str(exc)
        return None

    async with Host(policy) as host:
        bad_sub, bad_in = host.records["subdefault"], host.records["indefault"]
        assert bad_sub.state.value == bad_in.state.value == "error"
        assert bad_sub.error == _same(bad_in.error, "subdefault", "indefault")
        assert "subdefault.units: value 'kelvin' rejected by the plugin's validator" in (
            bad_sub.error or ""
        )
        cases = [
            ("units", "imperial", "space:main"),
            ("units", "kelvin", "global"),
            ("days", "12", "space:main"),
            ("days", "many", "global"),
            ("days", "4", "global"),
        ]
        for key, value, scope in cases:
            a = host_set(f"subkeys.{key}", value, scope)
            b = host_set(f"inkeys.{key}", value, scope)
            assert a == _same(b, "subkeys", "inkeys"), (key, value)
            args = {"key": key, "value": value, "scope": scope}
            ta = await host.call_tool("plugin_subkeys_put", args)
            tb = await host.call_tool("plugin_inkeys_put", args)
            assert (ta.content, ta.is_error) == (
                _same(tb.content, "subkeys", "inkeys"),
                tb.is_error,
            )
        assert host_set("subkeys.units", "kelvin", "global") == (
            "subkeys.units: value 'kelvin' rejected by the plugin's validator"
        )
        days = await host.call_tool("plugin_subkeys_put", {"key": "days", "value": "12"})
        assert days.content == (
            "plugin_subkeys_put failed: ConfigKeyError: subkeys.days: value '12' rejected by "
            "the plugin's validator: ValueError: at most 10 days"
        )
        assert host.config_keys.get("subkeys.units", "space:main") == "imperial"
        la = await host.call_tool("plugin_subkeys_listed", {"scope": "space:main"})
        lb = await host.call_tool("plugin_inkeys_listed", {"scope": "space:main"})
        assert (
            la.data
            == lb.data
            == [
                ["days", "4", False],
                ["enabled", "true", True],
                ["units", "imperial", False],
            ]
        )
        assert host.config_keys.get("subkeys.days") == "4"
        # A validator that hangs is bounded by the plugin's timeout; its worker restarts.
        t0 = time.monotonic()
        hung = host_set("subkeys.days", "sleep", "global")
        assert time.monotonic() - t0 < 3
        assert hung is not None and "did not answer within 1s" in hung
        deadline = time.monotonic() + 10
        while (
            r := await host.call_tool("plugin_subkeys_put", {"key": "days", "value": "5"})
        ).is_error:
            assert time.monotonic() < deadline, r.content
            await asyncio.sleep(0.05)
        assert r.content == "5" and host.config_keys.get("subkeys.days") == "5"
