"""`tether run` and `tether chat` as real subprocesses against a scripted model server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import write_plugin, write_policy
from fake_llm import FakeLLM, Reply, Status

pytestmark = pytest.mark.timeout(60)

TETHER = str(Path(sys.executable).parent / "tether")

TOOL = """
from tether import Plugin

plugin = Plugin()


@plugin.tool
async def shout(text: str) -> str:
    \"\"\"Upper-case the text.\"\"\"
    return text.upper()


@plugin.command("hello")
def hello(args: str) -> str:
    return f"hello {args}"
"""

GATE = """
from tether import Plugin, RunStartResult

plugin = Plugin()


@plugin.on("run.start")
def gate(event):
    if "forbidden" in event.prompt:
        return RunStartResult(block="that topic is blocked here")
    return None
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, FakeLLM]]:
    with FakeLLM() as llm:
        plugins = tmp_path / "plugins"
        write_plugin(plugins, "kit", TOOL, capabilities=["tools.register", "commands.register"])
        write_plugin(plugins, "gate", GATE, capabilities=["hooks.run"])
        write_policy(
            tmp_path,
            f"""
            [host]
            entry_points = false

            [agent]
            base_url = "{llm.base_url}"
            model = "scripted-model"
            retries = 0

            [plugins.kit]
            grant = ["tools.register", "commands.register"]

            [plugins.gate]
            grant = ["hooks.run"]
            """,
        )
        yield tmp_path, llm


def tether(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TETHER, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=40
    )


def test_run_streams_the_answer_shows_tools_and_exits_zero(setup: tuple[Path, FakeLLM]) -> None:
    cwd, llm = setup
    llm.add(Reply(tool_calls=[("plugin_kit_shout", '{"text": "hi"}')]), Reply("It says HI."))
    proc = tether(cwd, "run", "shout hi")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "It says HI."
    assert 'plugin_kit_shout {"text": "hi"}' in proc.stderr
    assert [m["content"] for m in llm.requests[1]["messages"] if m["role"] == "tool"] == ["HI"]


def test_run_json_and_session_resume(setup: tuple[Path, FakeLLM]) -> None:
    cwd, llm = setup
    llm.add(Reply("first"), Reply("second"))
    first = json.loads(tether(cwd, "run", "one", "--json").stdout)
    assert (first["reason"], first["reply"]) == ("complete", "first")
    proc = tether(cwd, "run", "two", "--session", first["session_id"], "--json")
    second = json.loads(proc.stdout)
    assert second["session_id"] == first["session_id"]
    assert [m["content"] for m in llm.requests[1]["messages"]] == ["one", "first", "two"]
    assert tether(cwd, "run", "x", "--session", "nope").returncode == 2


def test_run_exits_one_when_the_model_fails_or_the_run_is_blocked(
    setup: tuple[Path, FakeLLM],
) -> None:
    cwd, llm = setup
    llm.add(Status(500))
    failed = tether(cwd, "run", "hi")
    assert failed.returncode == 1
    assert "run error" in failed.stderr and "HTTP 500" in failed.stderr
    blocked = tether(cwd, "run", "something forbidden")
    assert blocked.returncode == 1
    assert "run blocked: that topic is blocked here" in blocked.stderr
    assert len(llm.requests) == 1  # the blocked run never reached the model


def test_base_url_and_model_options_win(setup: tuple[Path, FakeLLM], tmp_path: Path) -> None:
    cwd, llm = setup
    (cwd / "tether.toml").write_text(
        (cwd / "tether.toml").read_text().replace(llm.base_url, "http://127.0.0.1:9/v1")
    )
    llm.add(Reply("via option"))
    proc = tether(cwd, "run", "hi", "--base-url", llm.base_url, "--model", "other")
    assert proc.returncode == 0, proc.stderr
    assert llm.requests[0]["model"] == "other"


def test_chat_keeps_history_and_answers_slash_commands(setup: tuple[Path, FakeLLM]) -> None:
    cwd, llm = setup
    llm.add(Reply("Hi Ada."), Reply("You are Ada."))
    proc = tether(cwd, "chat", stdin="I am Ada\n/hello world\nwho am I?\n/exit\n")
    assert proc.returncode == 0, proc.stderr
    assert (
        "Hi Ada." in proc.stdout and "hello world" in proc.stdout and "You are Ada." in proc.stdout
    )
    assert [m["content"] for m in llm.requests[1]["messages"]] == [
        "I am Ada",
        "Hi Ada.",
        "who am I?",
    ]
    assert "session " in proc.stderr
