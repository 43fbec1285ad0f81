"""The host: secure defaults, effective grants, load order, failures, lifecycle, pinning,
persistence, the audit trail and embedding."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import write_plugin, write_policy
from tether import Host, Plugin, State, UnknownToolError
from tether.runtime.discovery import folder_digest

NO_PACKAGES = "[host]\nentry_points = false\n"

TOOL_CODE = """
from tether import Plugin

plugin = Plugin()


@plugin.tool
def ping() -> str:
    return "pong"
"""


def marker_code(marker: Path, body: str = "") -> str:
    """Plugin code that writes `marker` when it is imported."""
    return (
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n\n"
        "from tether import Plugin\n\nplugin = Plugin()\n" + textwrap.dedent(body)
    )


def logging_code(log: Path, tag: str, body: str = "") -> str:
    """Plugin code whose lifecycle handlers append `<tag>:<event>` lines to `log`."""
    return f"""
from pathlib import Path

from tether import Plugin

plugin = Plugin()
LOG = Path({str(log)!r})


def note(what):
    with LOG.open("a") as fh:
        fh.write({tag!r} + ":" + what + "\\n")


@plugin.on_load
def loaded(ctx):
    note("load")


@plugin.on_unload
def unloaded():
    note("unload")


@plugin.on_enable
def enabled():
    note("enable")


@plugin.on_disable
def disabled():
    note("disable")


@plugin.tool
def ping() -> str:
    return {tag!r}
{textwrap.dedent(body)}
"""


def read_log(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def grants(*ids: str, caps: str = '["tools.register"]') -> str:
    return "".join(f"[plugins.{pid}]\ngrant = {caps}\n" for pid in ids)


def info(host: Host, plugin_id: str) -> dict[str, Any]:
    (found,) = [p for p in host.plugins() if p["id"] == plugin_id]
    return found


def tool_names(host: Host) -> set[str]:
    return {t.name for t in host.tools()}


# --- secure default and effective grants ----------------------------------------------------


async def test_plugin_without_policy_entry_is_not_imported(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    marker = tmp_path / "imported.txt"
    make_plugin("stranger", marker_code(marker), capabilities=["tools.register", "storage.read"])
    make_plugin("friend", TOOL_CODE)
    write_policy(tmp_path, NO_PACKAGES + grants("friend"))

    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "stranger")
        assert (p["state"], p["reason"]) == ("error", "not_approved")
        assert p["granted"] == []
        assert p["denied"] == ["storage.read", "tools.register"]
        # The refusal says exactly what to add to tether.toml.
        assert "[plugins.stranger]" in p["error"]
        assert 'grant = ["tools.register", "storage.read"]' in p["error"]
        assert info(host, "friend")["state"] == "active"
        (refusal,) = host.audit.read(plugin="stranger", kind="refused")
        assert refusal.detail["reason"] == "not_approved"
        # enable() cannot get round the policy either.
        assert await host.enable("stranger") is False
        assert info(host, "stranger")["state"] == "error"
    assert not marker.exists()


async def test_effective_grant_is_declared_intersect_granted(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    code = """
    from tether import Context, Plugin

    plugin = Plugin()


    @plugin.tool
    async def save(ctx: Context, value: str) -> str:
        await ctx.storage.set("k", value)
        return "saved"


    @plugin.tool
    async def granted(ctx: Context) -> list[str]:
        return sorted(ctx.granted)
    """
    make_plugin("narrow", code, capabilities=["tools.register", "storage.read", "storage.write"])
    write_policy(
        tmp_path,
        NO_PACKAGES
        + grants("narrow", caps='["tools.register", "storage.read", "events.emit", "hooks.model"]'),
    )
    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "narrow")
        assert p["state"] == "active"
        # events.emit and hooks.model are granted but not declared: the plugin does not get them.
        assert p["granted"] == ["storage.read", "tools.register"]
        assert p["denied"] == ["storage.write"]
        result = await host.call_tool("plugin_narrow_granted", {})
        assert result.data == ["storage.read", "tools.register"]

        denied = await host.call_tool("plugin_narrow_save", {"value": "x"})
        assert denied.is_error
        assert "storage.write" in denied.content
        (violation,) = host.audit.read(plugin="narrow", kind="capability_violation")
        assert violation.detail["capability"] == "storage.write"


async def test_decorator_needing_ungranted_capability_is_skipped(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    code = """
    from tether import Plugin

    plugin = Plugin()


    @plugin.tool
    def hello() -> str:
        return "hi"


    @plugin.command("greet")
    def greet(args: str) -> str:
        return "hello " + args
    """
    make_plugin("partial", code, capabilities=["tools.register", "commands.register"])
    write_policy(tmp_path, NO_PACKAGES + grants("partial", caps='["commands.register"]'))
    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "partial")
        assert p["state"] == "active"
        assert p["reason"] is None
        assert p["tools"] == []
        assert p["commands"] == ["greet"]
        assert p["denied"] == ["tools.register"]
        assert p["warnings"] == ["tool hello skipped: tools.register is not granted"]
        assert "plugin_partial_hello" not in tool_names(host)
        (violation,) = host.audit.read(plugin="partial", kind="capability_violation")
        assert violation.detail["capability"] == "tools.register"
        assert "hello" in violation.detail["action"]


async def test_code_plugins_are_approved_by_being_passed(tmp_path: Path) -> None:
    inline = Plugin(id="inline", name="Inline", capabilities=["tools.register", "storage.read"])

    @inline.tool
    def answer() -> int:
        return 42

    write_policy(tmp_path, NO_PACKAGES)
    async with Host(tmp_path / "tether.toml", plugins=[inline]) as host:
        p = info(host, "inline")
        assert (p["state"], p["source"]) == ("active", "code")
        assert p["granted"] == ["storage.read", "tools.register"]
        assert (await host.call_tool("plugin_inline_answer", {})).content == "42"


# --- load order and dependencies ------------------------------------------------------------


async def test_dependencies_activate_first(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    log = tmp_path / "order.log"
    # "app" sorts before "base" but depends on it.
    make_plugin("app", logging_code(log, "app"), extra='dependencies = ["base"]\n')
    make_plugin("base", logging_code(log, "base"))
    make_plugin("aaa", logging_code(log, "aaa"))
    write_policy(tmp_path, NO_PACKAGES + grants("app", "base", "aaa"))
    async with Host(tmp_path / "tether.toml") as host:
        assert read_log(log) == ["aaa:load", "base:load", "app:load"]
        assert host.active_ids() == ["aaa", "base", "app"]
    # Teardown runs in reverse load order.
    assert read_log(log)[3:] == ["app:unload", "base:unload", "aaa:unload"]


async def test_missing_dependency_fails_it_and_its_dependents_only(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    marker = tmp_path / "needy-imported.txt"
    make_plugin("needy", marker_code(marker), extra='dependencies = ["ghost"]\n')
    make_plugin("child", TOOL_CODE, extra='dependencies = ["needy"]\n')
    make_plugin("grandchild", TOOL_CODE, extra='dependencies = ["child"]\n')
    make_plugin("solo", TOOL_CODE)
    write_policy(tmp_path, NO_PACKAGES + grants("needy", "child", "grandchild", "solo"))
    async with Host(tmp_path / "tether.toml") as host:
        needy = info(host, "needy")
        assert (needy["state"], needy["reason"]) == ("error", "dependency_missing")
        assert "ghost" in needy["error"]
        child = info(host, "child")
        assert (child["state"], child["reason"]) == ("error", "dependency_failed")
        assert "needy" in child["error"]
        grandchild = info(host, "grandchild")
        assert (grandchild["state"], grandchild["reason"]) == ("error", "dependency_failed")
        assert info(host, "solo")["state"] == "active"
        assert (await host.call_tool("plugin_solo_ping", {})).content == "pong"
    assert not marker.exists()


async def test_dependency_on_refused_plugin_fails(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    make_plugin("unapproved", TOOL_CODE)
    make_plugin("user", TOOL_CODE, extra='dependencies = ["unapproved"]\n')
    write_policy(tmp_path, NO_PACKAGES + grants("user"))
    async with Host(tmp_path / "tether.toml") as host:
        assert info(host, "unapproved")["reason"] == "not_approved"
        user = info(host, "user")
        assert user["state"] == "error"
        assert user["reason"] in ("dependency_missing", "dependency_failed")
        assert "unapproved" in user["error"]


async def test_dependency_whose_activation_fails_fails_its_dependents(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    log = tmp_path / "order.log"
    body = """

    @plugin.on_load
    def explode(ctx):
        raise SystemExit(3)
    """
    make_plugin("base", logging_code(log, "base", body))
    make_plugin("app", logging_code(log, "app"), extra='dependencies = ["base"]\n')
    write_policy(tmp_path, NO_PACKAGES + grants("base", "app"))
    async with Host(tmp_path / "tether.toml") as host:
        base = info(host, "base")
        assert (base["state"], base["reason"]) == ("error", "activation_failed")
        assert "SystemExit" in base["error"]
        app = info(host, "app")
        assert (app["state"], app["reason"]) == ("error", "dependency_failed")
        assert "base" in app["error"]
        assert read_log(log) == ["base:load"]  # app's code never ran
        assert tool_names(host) == set()


async def test_dependency_cycle_fails_both_members(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    make_plugin("x", TOOL_CODE, extra='dependencies = ["y"]\n')
    make_plugin("y", TOOL_CODE, extra='dependencies = ["x"]\n')
    make_plugin("z", TOOL_CODE)
    write_policy(tmp_path, NO_PACKAGES + grants("x", "y", "z"))
    async with Host(tmp_path / "tether.toml") as host:
        for pid in ("x", "y"):
            p = info(host, pid)
            assert (p["state"], p["reason"]) == ("error", "dependency_cycle")
            assert "x -> y -> x" in p["error"]
        assert host.active_ids() == ["z"]


async def test_folder_plugins_activate_before_code_plugins(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    log = tmp_path / "order.log"
    make_plugin("zfolder", logging_code(log, "zfolder"))
    first = Plugin(id="acode", name="A code", capabilities=[])

    @first.on_load
    def loaded(ctx: Any) -> None:
        with log.open("a") as fh:
            fh.write("acode:load\n")

    write_policy(tmp_path, NO_PACKAGES + grants("zfolder"))
    async with Host(tmp_path / "tether.toml", plugins=[first]) as host:
        assert read_log(log) == ["zfolder:load", "acode:load"]
        assert host.active_ids() == ["zfolder", "acode"]


# --- failures while importing and activating ------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("raise RuntimeError('broken at import')", "RuntimeError: broken at import"),
        ("raise SystemExit(3)", "SystemExit: 3"),
        ("import tether_no_such_module_xyz", "ModuleNotFoundError"),
        ("x = (", "SyntaxError"),
    ],
)
async def test_import_failure_is_that_plugins_error_only(
    tmp_path: Path, make_plugin: Callable[..., Path], body: str, expected: str
) -> None:
    make_plugin("broken", "from tether import Plugin\nplugin = Plugin()\n" + body + "\n")
    make_plugin("fine", TOOL_CODE)
    write_policy(tmp_path, NO_PACKAGES + grants("broken", "fine"))
    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "broken")
        assert (p["state"], p["reason"]) == ("error", "import_failed")
        assert expected in p["error"]
        assert info(host, "fine")["state"] == "active"
        assert (await host.call_tool("plugin_fine_ping", {})).content == "pong"
    assert not [m for m in sys.modules if m.startswith("tether_plugins.broken")]


async def test_module_without_plugin_object_is_import_failed(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    make_plugin("empty", "X = 1\n")
    make_plugin("twin", "from tether import Plugin\na = Plugin()\nb = Plugin()\n")
    write_policy(tmp_path, NO_PACKAGES + grants("empty", "twin"))
    async with Host(tmp_path / "tether.toml") as host:
        for pid, count in (("empty", 0), ("twin", 2)):
            p = info(host, pid)
            assert (p["state"], p["reason"]) == ("error", "import_failed")
            assert f"defines {count} Plugin objects" in p["error"]
            assert "plugin = Plugin()" in p["error"]


async def test_on_load_failure_leaves_nothing_registered(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    code = """
    from tether import Plugin

    plugin = Plugin()


    @plugin.tool
    def declared() -> str:
        return "declared"


    @plugin.before_tool_call
    def hook(call):
        return None


    @plugin.transform_system_prompt
    def prompt_hook(prompt):
        return prompt + " [flaky]"


    @plugin.on("message.received")
    def heard(event):
        pass


    @plugin.command("flaky")
    def cmd(args):
        return "x"


    plugin.system_prompt("from flaky")


    @plugin.on_load
    def load(ctx):
        def dynamic() -> str:
            return "dynamic"

        ctx.tools.register(dynamic)
        ctx.events.on("tool.after_execute", lambda event: None)
        raise ValueError("nope")
    """
    make_plugin(
        "flaky",
        code,
        capabilities=[
            "tools.register",
            "hooks.tools",
            "hooks.model",
            "events.subscribe",
            "commands.register",
            "prompts.contribute",
        ],
    )
    make_plugin("steady", TOOL_CODE)
    write_policy(
        tmp_path,
        NO_PACKAGES
        + grants(
            "flaky",
            caps='["tools.register", "hooks.tools", "hooks.model", "events.subscribe", '
            '"commands.register", "prompts.contribute"]',
        )
        + grants("steady"),
    )
    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "flaky")
        assert (p["state"], p["reason"]) == ("error", "activation_failed")
        assert p["error"] == "ValueError: nope"
        assert p["tools"] == [] and p["commands"] == [] and p["hooks"] == []
        assert tool_names(host) == {"plugin_steady_ping"}
        assert host.hooks.plans == {}
        assert host.registry.commands == {}
        assert host.registry.prompt_sources() == []
        assert host.events.subscribers("message.received") == ()
        assert host.events.subscribers("tool.after_execute") == ()
        assert await host.hooks.transform_system_prompt("base") == "base"
        rec = host.records["flaky"]
        assert rec.plugin is not None
        with pytest.raises(RuntimeError, match="not active"):
            _ = rec.plugin.context


async def test_on_load_timeout_is_activation_failure(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    code = """
    import asyncio

    from tether import Plugin

    plugin = Plugin()


    @plugin.tool
    def t() -> str:
        return ""


    @plugin.on_load
    async def load(ctx):
        await asyncio.sleep(100)
    """
    make_plugin("sleepy", code)
    write_policy(
        tmp_path,
        "[host]\nentry_points = false\nteardown_timeout_ms = 100\n" + grants("sleepy"),
    )
    started = time.monotonic()
    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "sleepy")
        assert (p["state"], p["reason"]) == ("error", "activation_failed")
        assert "TimeoutError" in p["error"]
        assert p["tools"] == []
    assert time.monotonic() - started < 5


# --- lifecycle ------------------------------------------------------------------------------


async def test_disable_enable_unload(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    log = tmp_path / "life.log"
    body = """

    @plugin.on("message.received")
    def heard(event):
        note("heard")
    """
    make_plugin(
        "life",
        logging_code(log, "life", body),
        capabilities=[
            "tools.register",
            "events.subscribe",
        ],
    )
    write_policy(
        tmp_path, NO_PACKAGES + grants("life", caps='["tools.register", "events.subscribe"]')
    )
    async with Host(tmp_path / "tether.toml") as host:
        assert info(host, "life")["state"] == "active"
        assert (await host.call_tool("plugin_life_ping", {})).content == "life"
        assert read_log(log) == ["life:load"]

        await host.disable("life")
        assert info(host, "life")["state"] == "disabled"
        assert "plugin_life_ping" not in tool_names(host)
        with pytest.raises(UnknownToolError, match="plugin_life_ping"):
            await host.call_tool("plugin_life_ping", {})
        assert host.events.subscribers("message.received") == ()
        assert read_log(log)[-1] == "life:disable"
        with pytest.raises(RuntimeError, match="not active"):
            _ = host.records["life"].plugin.context  # type: ignore[union-attr]

        assert await host.enable("life") is True
        assert info(host, "life")["state"] == "active"
        assert (await host.call_tool("plugin_life_ping", {})).content == "life"
        assert len(host.events.subscribers("message.received")) == 1
        assert read_log(log)[-1] == "life:enable"

        await host.unload("life")
        p = info(host, "life")
        assert p["state"] == "unloaded"
        assert p["tools"] == []
        assert "plugin_life_ping" not in tool_names(host)
        assert host.events.subscribers("message.received") == ()
        assert read_log(log)[-1] == "life:unload"
        assert not [m for m in sys.modules if m.startswith("tether_plugins.life")]

        events = [e for e in read_log(log) if e != "life:load"]
        assert events == ["life:disable", "life:enable", "life:unload"]
        states = [r.message for r in reversed(host.audit.read(plugin="life", kind="state"))]
        assert states == [
            "unloaded -> loading",
            "loading -> active",
            "active -> disabled",
            "disabled -> loading",
            "loading -> active",
            "active -> unloaded",
        ]
    # Stopping the host does not tear an unloaded plugin down a second time.
    assert read_log(log).count("life:unload") == 1


async def test_unload_removes_everything_even_when_on_unload_raises(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    code = """
    from tether import Plugin

    plugin = Plugin()


    @plugin.tool
    def t() -> str:
        return ""


    @plugin.before_tool_call
    def hook(call):
        return None


    @plugin.on_unload
    def bye():
        raise RuntimeError("cannot say goodbye")
    """
    make_plugin("rude", code, capabilities=["tools.register", "hooks.tools"])
    write_policy(tmp_path, NO_PACKAGES + grants("rude", caps='["tools.register", "hooks.tools"]'))
    async with Host(tmp_path / "tether.toml") as host:
        assert "before_tool_call" in host.hooks.plans
        await host.unload("rude")
        p = info(host, "rude")
        assert p["state"] == "unloaded"
        assert p["tools"] == [] and p["hooks"] == []
        assert host.hooks.plans == {}
        assert any("on_unload failed: RuntimeError: cannot say goodbye" in w for w in p["warnings"])
        (failed,) = host.audit.read(plugin="rude", kind="teardown_failed")
        assert failed.detail["handler"] == "unload"


HANGING_UNLOADS = {
    "sleeps": """
    @plugin.on_unload
    async def bye():
        await asyncio.sleep(100)
    """,
    "swallows-cancellation": """
    release = False


    @plugin.on_unload
    async def bye():
        while not release:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass
    """,
}


@pytest.mark.timeout(15)
@pytest.mark.parametrize("kind", sorted(HANGING_UNLOADS))
async def test_unload_is_bounded_when_on_unload_hangs(
    tmp_path: Path, make_plugin: Callable[..., Path], kind: str
) -> None:
    code = (
        "import asyncio\n\nfrom tether import Plugin\n\nplugin = Plugin()\n\n\n"
        "@plugin.tool\ndef t() -> str:\n    return ''\n\n" + textwrap.dedent(HANGING_UNLOADS[kind])
    )
    make_plugin("hang", code)
    write_policy(
        tmp_path,
        "[host]\nentry_points = false\nteardown_timeout_ms = 200\n" + grants("hang"),
    )
    async with Host(tmp_path / "tether.toml") as host:
        handler = host.records["hang"].plugin.declared.lifecycle["unload"][0]  # type: ignore[union-attr]
        started = time.monotonic()
        await host.unload("hang")
        elapsed = time.monotonic() - started
        assert elapsed < 2.0
        p = info(host, "hang")
        assert p["state"] == "unloaded"
        assert p["tools"] == []
        assert any("on_unload failed: TimeoutError" in w for w in p["warnings"])
        assert host.audit.read(plugin="hang", kind="teardown_failed")
        handler.__globals__["release"] = True  # let the stubborn handler end
    assert time.monotonic() - started < 5


async def test_illegal_transitions_raise(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    make_plugin("ok", TOOL_CODE)
    make_plugin("refused", TOOL_CODE)
    write_policy(tmp_path, NO_PACKAGES + grants("ok"))
    async with Host(tmp_path / "tether.toml") as host:
        await host.disable("ok")
        with pytest.raises(ValueError, match="'ok' is disabled, not active"):
            await host.disable("ok")
        with pytest.raises(ValueError, match="'refused' is error, not active"):
            await host.disable("refused")
        with pytest.raises(KeyError, match="nope"):
            await host.disable("nope")
        with pytest.raises(KeyError, match="nope"):
            await host.enable("nope")
        with pytest.raises(KeyError, match="nope"):
            await host.unload("nope")
        await host.unload("ok")
        with pytest.raises(ValueError, match="'ok' is unloaded, not active"):
            await host.disable("ok")
        # The state machine itself refuses a jump that skips loading.
        rec = host.records["ok"]
        with pytest.raises(RuntimeError, match="illegal transition"):
            host._set_state(rec, State.ACTIVE)
        assert rec.state is State.UNLOADED


async def test_enable_after_unload_reimports_the_code(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    folder = make_plugin("reload", TOOL_CODE)
    write_policy(tmp_path, NO_PACKAGES + grants("reload"))
    async with Host(tmp_path / "tether.toml") as host:
        await host.unload("reload")
        (folder / "plugin.py").write_text(TOOL_CODE.replace('"pong"', '"pong v2"'))
        assert await host.enable("reload") is True
        assert (await host.call_tool("plugin_reload_ping", {})).content == "pong v2"


async def test_enable_retries_a_plugin_whose_import_failed(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    folder = make_plugin("fixme", "raise ImportError('half-written')\n")
    write_policy(tmp_path, NO_PACKAGES + grants("fixme"))
    async with Host(tmp_path / "tether.toml") as host:
        assert info(host, "fixme")["reason"] == "import_failed"
        assert await host.enable("fixme") is False
        assert info(host, "fixme")["reason"] == "import_failed"
        (folder / "plugin.py").write_text(TOOL_CODE)
        assert await host.enable("fixme") is True
        p = info(host, "fixme")
        assert (p["state"], p["reason"], p["error"]) == ("active", None, None)
        assert (await host.call_tool("plugin_fixme_ping", {})).content == "pong"


async def test_disabled_in_policy_is_not_imported(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    marker = tmp_path / "imported.txt"
    make_plugin("off", marker_code(marker))
    write_policy(
        tmp_path, NO_PACKAGES + '[plugins.off]\nenabled = false\ngrant = ["tools.register"]\n'
    )
    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "off")
        assert (p["state"], p["reason"]) == ("disabled", "disabled")
        assert "enabled = false" in p["error"]
        assert host.active_ids() == []
    assert not marker.exists()


# --- pinning --------------------------------------------------------------------------------


async def test_version_pin_drift(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    marker = tmp_path / "imported.txt"
    make_plugin("pinned", marker_code(marker), version="1.1.0")
    write_policy(
        tmp_path,
        NO_PACKAGES + '[plugins.pinned]\ngrant = ["tools.register"]\nversion = "1.0.0"\n',
    )
    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "pinned")
        assert (p["state"], p["reason"]) == ("error", "version_drift")
        assert "1.1.0" in p["error"] and "1.0.0" in p["error"]
        assert "[plugins.pinned] version" in p["error"]
    assert not marker.exists()


async def test_digest_pin(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    marker = tmp_path / "imported.txt"
    folder = make_plugin("sealed", marker_code(marker, TOOL_CODE.split("plugin = Plugin()")[1]))
    digest = folder_digest(folder)
    write_policy(
        tmp_path,
        NO_PACKAGES + f'[plugins.sealed]\ngrant = ["tools.register"]\nversion = "1.0.0"\n'
        f'digest = "{digest}"\n',
    )
    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "sealed")
        assert p["state"] == "active"
        assert p["digest"] == digest
        assert (await host.call_tool("plugin_sealed_ping", {})).content == "pong"

    marker.unlink()
    with (folder / "plugin.py").open("a") as fh:
        fh.write("# an innocent-looking edit\n")
    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "sealed")
        assert (p["state"], p["reason"]) == ("error", "digest_drift")
        new = folder_digest(folder)
        assert new != digest
        assert new in p["error"] and digest in p["error"]
        assert "tether check" in p["error"]
    assert not marker.exists()


async def test_digest_pin_holds_when_an_unloaded_plugin_is_enabled_again(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    folder = make_plugin("sealed", TOOL_CODE)
    digest = folder_digest(folder)
    write_policy(
        tmp_path,
        NO_PACKAGES + f'[plugins.sealed]\ngrant = ["tools.register"]\nversion = "1.0.0"\n'
        f'digest = "{digest}"\n',
    )
    async with Host(tmp_path / "tether.toml") as host:
        assert (await host.call_tool("plugin_sealed_ping", {})).content == "pong"
        await host.unload("sealed")
        (folder / "plugin.py").write_text(TOOL_CODE.replace('"pong"', '"tampered"'))
        enabled = await host.enable("sealed")
        p = info(host, "sealed")
        # What runs must be what was approved: the edited folder is refused like at start.
        assert (enabled, p["state"], p["reason"]) == (False, "error", "digest_drift")
        assert "plugin_sealed_ping" not in tool_names(host)


async def test_pinned_plugin_declaring_more_is_capability_drift(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    make_plugin("grown", TOOL_CODE, capabilities=["tools.register", "storage.write"])
    write_policy(
        tmp_path,
        NO_PACKAGES + '[plugins.grown]\ngrant = ["tools.register"]\nversion = "1.0.0"\n',
    )
    async with Host(tmp_path / "tether.toml") as host:
        p = info(host, "grown")
        assert (p["state"], p["reason"]) == ("error", "capability_drift")
        assert "storage.write" in p["error"]


# --- persistence, audit, embedding ----------------------------------------------------------


async def test_storage_survives_a_restart(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    code = """
    from tether import Context, Plugin

    plugin = Plugin()


    @plugin.tool
    async def remember(ctx: Context, value: str) -> str:
        await ctx.storage.set("memo", {"value": value})
        return "ok"


    @plugin.tool
    async def recall(ctx: Context) -> str:
        found = await ctx.storage.get("memo")
        return "nothing" if found is None else found["value"]
    """
    make_plugin("memo", code, capabilities=["tools.register", "storage.read", "storage.write"])
    write_policy(
        tmp_path,
        NO_PACKAGES + grants("memo", caps='["tools.register", "storage.read", "storage.write"]'),
    )
    async with Host(tmp_path / "tether.toml") as host:
        assert (await host.call_tool("plugin_memo_recall", {})).content == "nothing"
        assert (await host.call_tool("plugin_memo_remember", {"value": "kept"})).content == "ok"
    assert (tmp_path / ".tether" / "tether.db").is_file()
    async with Host(tmp_path / "tether.toml") as host:
        assert (await host.call_tool("plugin_memo_recall", {})).content == "kept"


async def test_audit_log_records_state_changes_and_refusals(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    make_plugin("good", TOOL_CODE)
    make_plugin("bad", TOOL_CODE)
    write_policy(tmp_path, NO_PACKAGES + grants("good"))
    async with Host(tmp_path / "tether.toml") as host:
        await host.disable("good")
        good = [(r.kind, r.message) for r in reversed(host.audit.read(plugin="good"))]
        assert good == [
            ("state", "unloaded -> loading"),
            ("state", "loading -> active"),
            ("state", "active -> disabled"),
        ]
        (bad,) = host.audit.read(plugin="bad")
        assert bad.kind == "refused"
        assert bad.detail == {"reason": "not_approved"}
        assert "[plugins.bad]" in bad.message
    # The log is in the database: a new host reads the old records.
    async with Host(tmp_path / "tether.toml") as host:
        assert len(host.audit.read(plugin="bad", kind="refused")) == 2


EMBED = """
import asyncio
import json
import sys

from tether import Host, Plugin

inline = Plugin(id="inline", name="Inline", capabilities=["tools.register"])


@inline.tool
async def double(n: int) -> int:
    return n * 2


async def main() -> None:
    async with Host(sys.argv[1], plugins=[inline]) as host:
        out = {
            "states": {p["id"]: p["state"] for p in host.plugins()},
            "ping": (await host.call_tool("plugin_folder_ping", {})).content,
            "double": (await host.call_tool("plugin_inline_double", {"n": 21})).data,
        }
    print(json.dumps(out))


asyncio.run(main())
"""


@pytest.mark.timeout(20)
def test_embedding_with_async_with_from_asyncio_run(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    make_plugin("folder", TOOL_CODE)
    config = write_policy(tmp_path, NO_PACKAGES + grants("folder"))
    script = tmp_path / "app.py"
    script.write_text(EMBED)
    done = subprocess.run(
        [sys.executable, str(script), str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "states": {"folder": "active", "inline": "active"},
        "ping": "pong",
        "double": 42,
    }


def test_embedding_in_process_start_stop(tmp_path: Path) -> None:
    write_plugin(tmp_path / "plugins", "folder", TOOL_CODE)
    write_policy(tmp_path, NO_PACKAGES + grants("folder"))

    async def main() -> tuple[str, bool]:
        host = Host(tmp_path / "tether.toml")
        await host.start()
        await host.start()  # idempotent
        try:
            return (await host.call_tool("plugin_folder_ping", {})).content, True
        finally:
            await host.stop()
            await host.stop()  # idempotent

    assert asyncio.run(main()) == ("pong", True)
