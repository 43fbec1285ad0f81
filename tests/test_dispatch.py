"""Tool dispatch through `Host.call_tool`: validation, threads, timeouts, crashes, result
normalisation, names, cross-plugin calls and role visibility."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tether import (
    Caller,
    CapabilityViolationError,
    Context,
    Host,
    Plugin,
    Policy,
    ToolResult,
    UnknownToolError,
)
from tether.contract.policy import HostSettings
from tether.runtime.dispatch import CANCEL_GRACE_S


def mk(pid: str, *caps: str, **fields: Any) -> Plugin:
    return Plugin(id=pid, name=pid.upper(), capabilities=["tools.register", *caps], **fields)


def host_with(tmp_path: Path, *plugins: Plugin, policy: Policy | None = None) -> Host:
    return Host(policy or Policy(), base_dir=tmp_path, plugins=list(plugins))


def info(host: Host, pid: str) -> dict[str, Any]:
    return next(p for p in host.plugins() if p["id"] == pid)


# --- validation ------------------------------------------------------------------------


async def test_invalid_arguments_are_refused_before_the_handler_runs(tmp_path: Path) -> None:
    t = mk("t")
    calls: list[tuple[int, int]] = []

    @t.tool
    def add(a: int, b: int = 1) -> int:
        calls.append((a, b))
        return a + b

    async with host_with(tmp_path, t) as host:
        wrong_type = await host.call_tool("plugin_t_add", {"a": "one"})
        missing = await host.call_tool("plugin_t_add", {"b": 2})
        not_object = await host.call_tool("plugin_t_add", [1, 2])
        ok = await host.call_tool("plugin_t_add", {"a": 2})
    assert wrong_type.is_error and "plugin_t_add" in wrong_type.content
    assert "invalid arguments" in wrong_type.content and "a: must be integer" in wrong_type.content
    assert missing.is_error and "a" in missing.content and "must contain" in missing.content
    assert not_object.is_error and "must be a JSON object" in not_object.content
    assert (ok.content, ok.is_error, ok.data) == ("3", False, 3)
    assert calls == [(2, 1)]


async def test_explicit_input_schema_is_enforced(tmp_path: Path) -> None:
    t = mk("t")
    calls: list[Any] = []
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "minLength": 2}},
        "required": ["city"],
        "additionalProperties": False,
    }

    @t.tool(input_schema=schema)
    def weather(city: str) -> str:
        calls.append(city)
        return f"sunny in {city}"

    async with host_with(tmp_path, t) as host:
        short = await host.call_tool("plugin_t_weather", {"city": "X"})
        extra = await host.call_tool("plugin_t_weather", {"city": "Oslo", "zip": 1})
        good = await host.call_tool("plugin_t_weather", {"city": "Oslo"})
        assert host.tools()[0].input_schema == schema
    assert short.is_error and "city" in short.content
    assert extra.is_error and "zip" in extra.content
    assert good.content == "sunny in Oslo"
    assert calls == ["Oslo"]


# --- where handlers run ----------------------------------------------------------------


async def test_sync_handler_runs_in_a_worker_thread(tmp_path: Path) -> None:
    t = mk("t")
    threads: list[int] = []

    @t.tool
    def where() -> str:
        threads.append(threading.get_ident())
        return "ok"

    async with host_with(tmp_path, t) as host:
        result = await host.call_tool("plugin_t_where", {})
    assert result.content == "ok"
    assert threads and threads[0] != threading.get_ident()


async def test_async_handler_runs_on_the_loop(tmp_path: Path) -> None:
    t = mk("t")
    threads: list[int] = []

    @t.tool
    async def where(n: int) -> dict[str, int]:
        await asyncio.sleep(0)
        threads.append(threading.get_ident())
        return {"n": n * 2}

    async with host_with(tmp_path, t) as host:
        result = await host.call_tool("plugin_t_where", {"n": 21})
    assert (result.content, result.data, result.is_error) == ('{"n": 42}', {"n": 42}, False)
    assert threads == [threading.get_ident()]


async def test_context_and_caller_are_injected_and_not_in_schema(tmp_path: Path) -> None:
    t = mk("t")

    @t.tool
    def whoami(greeting: str, ctx: Context, caller: Caller) -> str:
        return f"{greeting} {caller.id} from {ctx.plugin_id}"

    async with host_with(tmp_path, t) as host:
        schema = host.tools()[0].input_schema
        assert set(schema.get("properties", {})) == {"greeting"}
        result = await host.call_tool(
            "plugin_t_whoami", {"greeting": "hi"}, caller=Caller("alice", frozenset({"member"}))
        )
        smuggled = await host.call_tool("plugin_t_whoami", {"greeting": "hi", "caller": "root"})
        smuggled_ctx = await host.call_tool("plugin_t_whoami", {"greeting": "hi", "ctx": "x"})
    assert result.content == "hi alice from t"
    assert smuggled.is_error and "caller" in smuggled.content
    assert smuggled_ctx.is_error and "ctx" in smuggled_ctx.content


# --- timeouts --------------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_per_call_timeout_returns_error_promptly(tmp_path: Path) -> None:
    t = mk("t")

    @t.tool(timeout_ms=100)
    async def slow() -> str:
        await asyncio.sleep(10)
        return "too late"

    async with host_with(tmp_path, t) as host:
        started = time.monotonic()
        result = await host.call_tool("plugin_t_slow", {})
        elapsed = time.monotonic() - started
        again = await host.call_tool("plugin_t_slow", {})
    assert result.is_error and "timed out" in result.content and "plugin_t_slow" in result.content
    assert "0.1s" in result.content
    assert elapsed < 2.0
    assert again.is_error and "timed out" in again.content


@pytest.mark.timeout(15)
async def test_handler_ignoring_cancellation_cannot_hang_the_call(tmp_path: Path) -> None:
    t = mk("t")
    stop = threading.Event()
    swallowed: list[int] = []

    @t.tool(timeout_ms=100)
    async def stubborn() -> str:
        while not stop.is_set():
            try:
                await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                swallowed.append(1)  # rude: keeps going
        return "finally"

    async with host_with(tmp_path, t) as host:
        try:
            started = time.monotonic()
            result = await host.call_tool("plugin_t_stubborn", {})
            elapsed = time.monotonic() - started
            assert result.is_error and "timed out" in result.content
            assert elapsed < 0.1 + CANCEL_GRACE_S + 1.0
            assert swallowed  # it really was cancelled and ignored it
            error = info(host, "t")["error"] or ""
            assert "ignored cancellation" in error and "plugin_t_stubborn" in error
            stuck = host.audit.read(plugin="t", kind="stuck")
            assert stuck and "ignored cancellation" in stuck[0].message
            # the host still serves calls while the abandoned task lingers
            assert host.tools()[0].name == "plugin_t_stubborn"
        finally:
            stop.set()
            await asyncio.sleep(0.1)


@pytest.mark.timeout(15)
async def test_sync_handler_past_timeout_returns_error_promptly(tmp_path: Path) -> None:
    t = mk("t")
    release = threading.Event()

    @t.tool(timeout_ms=100)
    def blocking() -> str:
        release.wait(5)
        return "late"

    t.tool(name="ping")(lambda: "pong")

    async with host_with(tmp_path, t) as host:
        try:
            started = time.monotonic()
            result = await host.call_tool("plugin_t_blocking", {})
            assert time.monotonic() - started < 0.1 + CANCEL_GRACE_S + 1.0
            assert result.is_error and "timed out after 0.1s" in result.content
            assert (await host.call_tool("plugin_t_ping", {})).content == "pong"
        finally:
            release.set()


@pytest.mark.timeout(15)
async def test_sync_handler_still_running_after_timeout_is_reported(tmp_path: Path) -> None:
    t = mk("t")
    release = threading.Event()

    @t.tool(timeout_ms=100)
    def blocking() -> str:
        release.wait(5)
        return "late"

    async with host_with(tmp_path, t) as host:
        try:
            result = await host.call_tool("plugin_t_blocking", {})
            assert result.is_error and "timed out" in result.content
            error = info(host, "t")["error"] or ""
            assert "plugin_t_blocking" in error and "keeps running in its thread" in error
            assert host.audit.read(plugin="t", kind="stuck")
        finally:
            release.set()


# --- failures --------------------------------------------------------------------------


async def test_handler_raising_becomes_error_result_naming_exception(tmp_path: Path) -> None:
    t = mk("t")

    @t.tool
    def divide(a: int, b: int) -> float:
        if b == 0:
            raise ValueError("b must not be zero")
        return a / b

    async with host_with(tmp_path, t) as host:
        result = await host.call_tool("plugin_t_divide", {"a": 1, "b": 0})
        assert result.is_error
        assert "ValueError" in result.content and "b must not be zero" in result.content
        assert "plugin_t_divide" in result.content
        error = info(host, "t")["error"] or ""
        assert "plugin_t_divide" in error and "ValueError" in error
        assert host.audit.read(plugin="t", kind="plugin_error")
        ok = await host.call_tool("plugin_t_divide", {"a": 1, "b": 2})
        assert (ok.content, ok.is_error) == ("0.5", False)


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_system_exit_and_keyboard_interrupt_stay_inside_the_call(
    tmp_path: Path, exc_type: type[BaseException], sync: bool
) -> None:
    t = mk("t")

    if sync:

        @t.tool
        def quit_() -> str:
            raise exc_type("bye")

    else:

        @t.tool
        async def quit_() -> str:
            raise exc_type("bye")

    t.tool(name="ping")(lambda: "pong")

    async with host_with(tmp_path, t) as host:
        result = await host.call_tool("plugin_t_quit_", {})
        assert result.is_error
        assert exc_type.__name__ in result.content
        assert exc_type.__name__ in (info(host, "t")["error"] or "")
        assert info(host, "t")["state"] == "active"
        after = await host.call_tool("plugin_t_ping", {})
        assert (after.content, after.is_error) == ("pong", False)


class Point(BaseModel):
    x: int
    y: int


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (math.nan, "non-finite"),
        ({"v": [1.0, math.inf]}, "non-finite"),
        ({1, 2}, "set"),
        (Opaque(), "Opaque"),
        (b"bytes", "bytes"),
    ],
    ids=["nan", "nested-inf", "set", "object", "bytes"],
)
async def test_non_json_results_are_errors(tmp_path: Path, value: Any, kind: str) -> None:
    t = mk("t")
    t.tool(name="give")(lambda: value)
    async with host_with(tmp_path, t) as host:
        result = await host.call_tool("plugin_t_give", {})
    assert result.is_error
    assert "not JSON" in result.content and kind in result.content
    assert result.data is None


@pytest.mark.parametrize(
    ("value", "content", "data"),
    [
        ({"a": 1, "b": [True, None]}, '{"a": 1, "b": [true, null]}', {"a": 1, "b": [True, None]}),
        ([1, "two"], '[1, "two"]', [1, "two"]),
        ("plain text", "plain text", None),
        (None, "", None),
        (3, "3", 3),
        ({"word": "héllo"}, '{"word": "héllo"}', {"word": "héllo"}),
        (Point(x=1, y=2), '{"x": 1, "y": 2}', {"x": 1, "y": 2}),
    ],
    ids=["dict", "list", "str", "none", "int", "unicode", "pydantic"],
)
async def test_results_are_normalised(tmp_path: Path, value: Any, content: str, data: Any) -> None:
    t = mk("t")
    t.tool(name="give")(lambda: value)
    async with host_with(tmp_path, t) as host:
        result = await host.call_tool("plugin_t_give", {})
    assert (result.content, result.is_error, result.data) == (content, False, data)


async def test_tool_result_passes_through(tmp_path: Path) -> None:
    t = mk("t")
    given = ToolResult("custom failure", is_error=True, data={"code": 7})
    t.tool(name="give")(lambda: given)
    t.tool(name="bad")(lambda: ToolResult(["not", "text"]))  # type: ignore[arg-type]
    async with host_with(tmp_path, t) as host:
        result = await host.call_tool("plugin_t_give", {})
        bad = await host.call_tool("plugin_t_bad", {})
    assert result == ToolResult("custom failure", is_error=True, data={"code": 7})
    assert bad.is_error and "not text" in bad.content


async def test_oversized_result_is_refused_naming_the_limit(tmp_path: Path) -> None:
    t = mk("t")
    t.tool(name="big")(lambda n: "x" * n)
    t.tool(name="wide")(lambda: "é" * 1500)  # 1500 characters, 3000 bytes
    policy = Policy(host=HostSettings(max_result_bytes=2048))
    async with host_with(tmp_path, t, policy=policy) as host:
        big = await host.call_tool("plugin_t_big", {"n": 5000})
        fits = await host.call_tool("plugin_t_big", {"n": 2048})
        wide = await host.call_tool("plugin_t_wide", {})
    assert big.is_error and "2048-byte limit" in big.content and "5000 bytes" in big.content
    assert (fits.is_error, len(fits.content)) == (False, 2048)
    assert wide.is_error and "3000 bytes" in wide.content


# --- names -----------------------------------------------------------------------------


async def test_unknown_tool_raises_with_did_you_mean(tmp_path: Path) -> None:
    t = mk("t")

    @t.tool
    def search(q: str) -> str:
        return q

    async with host_with(tmp_path, t) as host:
        with pytest.raises(UnknownToolError) as err:
            await host.call_tool("plugin_t_serach", {"q": "x"})
        assert "'plugin_t_serach'" in str(err.value)
        assert 'did you mean "plugin_t_search"' in str(err.value)
        with pytest.raises(UnknownToolError):
            await host.call_tool("search", {"q": "x"})  # the local name is not the tool name


async def test_tools_execute_calls_another_plugins_tool(tmp_path: Path) -> None:
    provider = mk("provider")
    user = mk("user", "tools.execute")
    nocap = mk("nocap")

    @provider.tool
    def double(n: int, caller: Caller) -> dict[str, Any]:
        return {"n": n * 2, "caller": caller.id}

    @user.tool
    async def relay(n: int, ctx: Context) -> str:
        result = await ctx.tools.execute("plugin_provider_double", {"n": n})
        return f"relayed {result.content}"

    @nocap.tool
    async def sneaky(ctx: Context) -> str:
        result = await ctx.tools.execute("plugin_provider_double", {"n": 1})
        return result.content

    async with host_with(tmp_path, provider, user, nocap) as host:
        relayed = await host.call_tool("plugin_user_relay", {"n": 5})
        assert relayed.content == 'relayed {"n": 10, "caller": "plugin:user"}'
        direct = await user.context.tools.execute("plugin_provider_double", {"n": 1})
        assert direct.data == {"n": 2, "caller": "plugin:user"}

        with pytest.raises(CapabilityViolationError) as err:
            await nocap.context.tools.execute("plugin_provider_double", {"n": 1})
        assert err.value.capability == "tools.execute"
        sneaky = await host.call_tool("plugin_nocap_sneaky", {})
        assert sneaky.is_error and "CapabilityViolationError" in sneaky.content
        assert "tools.execute" in sneaky.content
        audit = host.audit.read(plugin="nocap", kind="capability_violation")
        assert len(audit) == 2 and audit[0].detail["capability"] == "tools.execute"
        with pytest.raises(UnknownToolError):
            await user.context.tools.execute("plugin_provider_triple", {"n": 1})


async def test_tool_names_are_prefixed_so_plugins_cannot_clash(tmp_path: Path) -> None:
    a, b = mk("a"), mk("b")
    a.tool(name="run")(lambda: "from a")
    b.tool(name="run")(lambda: "from b")
    async with host_with(tmp_path, a, b) as host:
        assert sorted(t.name for t in host.tools()) == ["plugin_a_run", "plugin_b_run"]
        assert (await host.call_tool("plugin_a_run", {})).content == "from a"
        assert (await host.call_tool("plugin_b_run", {})).content == "from b"


async def test_same_plugin_registering_a_tool_twice_fails_activation(tmp_path: Path) -> None:
    a, other = mk("a"), mk("other")
    a.tool(name="dup")(lambda: 1)
    a.tool(name="dup")(lambda: 2)
    other.tool(name="fine")(lambda: "ok")
    async with host_with(tmp_path, a, other) as host:
        rec = info(host, "a")
        assert (rec["state"], rec["reason"]) == ("error", "name_clash")
        assert "NameClashError" in rec["error"] and "'plugin_a_dup'" in rec["error"]
        assert "already registered by plugin 'a'" in rec["error"]
        assert [t.name for t in host.tools()] == ["plugin_other_fine"]  # nothing of a left
        assert info(host, "other")["state"] == "active"


async def test_tool_name_over_64_characters_fails_with_clear_message(tmp_path: Path) -> None:
    a = mk("a")
    long_name = "n" * 60  # plugin_a_ + 60 = 69 characters
    a.tool(name=long_name)(lambda: 1)
    async with host_with(tmp_path, a) as host:
        rec = info(host, "a")
        assert (rec["state"], rec["reason"]) == ("error", "activation_failed")
        assert "69 characters" in rec["error"] and "64" in rec["error"]
        assert "shorten" in rec["error"]
        assert host.tools() == []


async def test_invalid_local_tool_name_fails_activation(tmp_path: Path) -> None:
    a = mk("a")
    a.tool(name="has space")(lambda: 1)
    async with host_with(tmp_path, a) as host:
        rec = info(host, "a")
        assert rec["state"] == "error"
        assert "'has space'" in rec["error"] and "must start with a letter" in rec["error"]


# --- roles -----------------------------------------------------------------------------


async def test_role_restricted_tools_are_visible_only_to_those_roles(tmp_path: Path) -> None:
    adm = mk("adm", roles=["admin"])
    pub = mk("pub")
    adm.tool(name="purge")(lambda: "purged")
    pub.tool(name="hello")(lambda: "hi")
    member = Caller("u", frozenset({"member"}))
    admin = Caller("boss", frozenset({"admin", "member"}))
    async with host_with(tmp_path, adm, pub) as host:
        with pytest.raises(UnknownToolError):
            await host.call_tool("plugin_adm_purge", {}, caller=member)
        assert [t.name for t in host.tools(member)] == ["plugin_pub_hello"]
        assert (await host.call_tool("plugin_pub_hello", {}, caller=member)).content == "hi"

        assert (await host.call_tool("plugin_adm_purge", {}, caller=admin)).content == "purged"
        assert {t.name for t in host.tools(admin)} == {"plugin_adm_purge", "plugin_pub_hello"}
        assert (await host.call_tool("plugin_adm_purge", {})).content == "purged"  # operator
        assert len(host.tools()) == 2


async def test_role_checked_again_after_before_tool_call_rewrites_the_name(
    tmp_path: Path,
) -> None:
    from tether import ToolCall

    adm = mk("adm", roles=["admin"])
    pub = mk("pub", "hooks.tools")
    adm.tool(name="purge")(lambda: "purged")
    pub.tool(name="hello")(lambda: "hi")

    @pub.before_tool_call
    def redirect(call: ToolCall) -> ToolCall:
        return ToolCall("plugin_adm_purge", {}, call.id)

    async with host_with(tmp_path, adm, pub) as host:
        with pytest.raises(UnknownToolError):
            await host.call_tool("plugin_pub_hello", {}, caller=Caller("u", frozenset({"m"})))


async def test_trusted_proxy_handlers_run_inline_and_still_time_out(tmp_path: Path) -> None:
    from tether.runtime.dispatch import trust

    p = Plugin(id="proxy", name="Proxy", capabilities=["tools.register"])
    outer_tasks: list[asyncio.Task[Any] | None] = []

    async def fast(text: str) -> str:
        outer_tasks.append(asyncio.current_task())
        return text

    async def slow() -> str:
        await asyncio.sleep(10)
        return "never"

    p.tool(name="fast")(trust(fast))
    p.tool(name="slow", timeout_ms=100)(trust(slow))
    async with Host(Policy(), base_dir=tmp_path, plugins=[p], discover=False) as host:
        caller_task = asyncio.current_task()
        assert (await host.call_tool("plugin_proxy_fast", {"text": "hi"})).content == "hi"
        started = asyncio.get_running_loop().time()
        result = await host.call_tool("plugin_proxy_slow", {})
        elapsed = asyncio.get_running_loop().time() - started
    assert outer_tasks == [caller_task]  # no task of its own
    assert result.is_error and "timed out after 0.1s" in result.content
    assert elapsed < 2
