"""The example plugins in examples/plugins, loaded with the repository's own tether.toml."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import EXAMPLES
from tether import Host

REPO = EXAMPLES.parent.parent


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    """The repository's tether.toml with plugin_dirs made absolute and data_dir in tmp_path."""
    text = (REPO / "tether.toml").read_text()
    dirs_line = 'plugin_dirs = ["examples/plugins"]'
    data_line = 'data_dir = ".tether"'
    assert dirs_line in text and data_line in text, "the repo's tether.toml changed shape"
    text = text.replace(dirs_line, f"plugin_dirs = [{str(EXAMPLES)!r}]".replace("'", '"'))
    text = text.replace(data_line, f'data_dir = "{tmp_path / "data"}"')
    (tmp_path / "tether.toml").write_text(text)
    h = Host(tmp_path / "tether.toml")
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


def stored(host: Host, plugin: str, key: str) -> object:
    return host.services.storage.get(plugin, "plugin", "", "default", key)


async def test_all_examples_load(host: Host, tmp_path: Path) -> None:
    states = {p["id"]: (p["state"], p["reason"], p["warnings"]) for p in host.plugins()}
    examples = ("echo", "guard", "prompt", "weather", "webhook")
    assert states == {pid: ("active", None, []) for pid in examples}
    assert sorted(t.name for t in host.tools()) == [
        "plugin_echo_echo",
        "plugin_weather_current",
        "plugin_weather_forecast",
    ]
    assert (tmp_path / "data" / "tether.db").is_file()
    assert host.db is not None and host.db.path == tmp_path / "data" / "tether.db"


async def test_echo(host: Host) -> None:
    result = await host.call_tool("plugin_echo_echo", {"text": "hi", "times": 3})
    assert (result.content, result.is_error) == ("hi hi hi", False)
    bad = await host.call_tool("plugin_echo_echo", {"times": 2})
    assert bad.is_error and "text" in bad.content


async def test_weather_current_is_cached_in_storage(host: Host) -> None:
    first = await host.call_tool("plugin_weather_current", {"city": "Lisbon"})
    assert not first.is_error, first.content
    assert first.data["city"] == "Lisbon"
    assert set(first.data) == {"city", "celsius", "conditions"}
    cached = stored(host, "weather", "current:lisbon")
    assert isinstance(cached, dict)
    assert cached["reading"] == first.data

    # Change the cached reading behind the plugin's back: the next call must serve it.
    cached["reading"] = {"city": "Lisbon", "celsius": 99, "conditions": "from the cache"}
    host.services.storage.set("weather", "plugin", "", "default", "current:lisbon", cached)
    second = await host.call_tool("plugin_weather_current", {"city": "LISBON"})
    assert second.data["conditions"] == "from the cache"

    fahrenheit = await host.call_tool(
        "plugin_weather_current", {"city": "Lisbon", "units": "fahrenheit"}
    )
    assert fahrenheit.data["fahrenheit"] == 210.2 and "celsius" not in fahrenheit.data
    wrong = await host.call_tool("plugin_weather_current", {"city": "Lisbon", "units": "kelvin"})
    assert wrong.is_error and "units" in wrong.content


async def test_weather_forecast_is_sync_and_checks_days(host: Host) -> None:
    tool = host.registry.tools["plugin_weather_forecast"]
    assert tool.is_async is False
    ok = await host.call_tool("plugin_weather_forecast", {"city": "Oslo", "days": 2})
    assert not ok.is_error
    assert [d["day"] for d in ok.data] == [1, 2]
    assert (await host.call_tool("plugin_weather_forecast", {"city": "Oslo"})).data[-1]["day"] == 3
    bad = await host.call_tool("plugin_weather_forecast", {"city": "Oslo", "days": 9})
    assert bad.is_error
    assert "days must be between 1 and 7" in bad.content


async def test_weather_notices_weather_talk(host: Host) -> None:
    assert host.events.emit("message.received", {"content": "what's the weather"}) == 1
    await host.events.drain()
    assert stored(host, "weather", "last_weather_message") == "what's the weather"
    host.events.emit("message.received", {"content": "and how are you?"})
    await host.events.drain()
    assert stored(host, "weather", "last_weather_message") == "what's the weather"


async def test_guard_blocks_configured_words(host: Host) -> None:
    blocked = await host.call_tool("plugin_echo_echo", {"text": "please rm -rf /"})
    assert blocked.is_error
    assert "policy" in blocked.content and "rm -rf" in blocked.content
    allowed = await host.call_tool("plugin_echo_echo", {"text": "ls -la"})
    assert (allowed.content, allowed.is_error) == ("ls -la", False)


async def test_prompt_plugin_styles_the_system_prompt(host: Host) -> None:
    prompt = await host.hooks.transform_system_prompt("You are helpful.  ")
    assert prompt == ("You are helpful.\n\nHouse style: cite the tool you used for every fact.")
    assert host.registry.prompt_sources() == [
        ("prompt", "Answer in plain English; prefer short sentences.")
    ]
    command = host.registry.commands["style"]
    assert command.plugin_id == "prompt"
    assert command.description == "Show the house style rules."
    assert command.handler("") == "Plain English, short sentences, cite tools."
    prompt_info = next(p for p in host.plugins() if p["id"] == "prompt")
    assert prompt_info["commands"] == ["style"]
    assert prompt_info["hooks"] == ["transform_system_prompt"]
