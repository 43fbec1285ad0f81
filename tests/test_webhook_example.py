"""The example webhook channel (examples/plugins/webhook) against a real HTTP server on
127.0.0.1 that records what it receives and answers from a script of status codes."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLES, write_policy
from tether import Host, ManualClock
from tether.services.notify import RetryPolicy

REPO = EXAMPLES.parent.parent


class Hook:
    """A webhook receiver: records JSON bodies, answers `script` statuses, then `default`."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.script: list[int] = []
        self.default = 200
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:
                    hook.bodies.append(body)
                    status = hook.script.pop(0) if hook.script else hook.default
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def approve(base: Path, url: str) -> None:
    write_policy(
        base,
        f"""
        [plugins.webhook]
        grant = ["notifications.register", "http.outbound"]
        outbound_hosts = ["127.0.0.1"]
        private_hosts = ["127.0.0.1"]
        config = {{ url = "{url}", timeout_seconds = 5 }}
        """,
    )


@pytest.fixture
async def host(tmp_path: Path, hook: Hook) -> AsyncIterator[Host]:
    shutil.copytree(EXAMPLES / "webhook", tmp_path / "plugins" / "webhook")
    approve(tmp_path, hook.url)
    h = Host(base_dir=tmp_path, clock=ManualClock(auto_advance=True))
    await h.start()
    h.notifications.retry = RetryPolicy(jitter=False)  # 3 attempts, 0.5 s then 1 s
    try:
        yield h
    finally:
        await h.stop()


async def test_loads_without_contacting_anything(host: Host, hook: Hook) -> None:
    info = host.plugins()[0]
    assert (info["id"], info["state"], info["warnings"]) == ("webhook", "active", [])
    assert host.notifications.kinds() == ["webhook"]
    assert hook.bodies == []


async def test_posts_the_notification_as_json(host: Host, hook: Hook) -> None:
    result = await host.notify("webhook", "ops", "disk 91% full", {"severity": "high"})
    assert (result.ok, result.attempts, result.data) == (True, 1, {"status": 200})
    assert hook.bodies == [
        {
            "kind": "webhook",
            "recipient": "ops",
            "text": "disk 91% full",
            "metadata": {"severity": "high"},
            "sender": "host",
        }
    ]


async def test_two_503s_then_success_is_retried(host: Host, hook: Hook) -> None:
    hook.script = [503, 503]
    result = await host.notify("webhook", "ops", "retry me")
    assert (result.ok, result.attempts) == (True, 3)
    assert [b["text"] for b in hook.bodies] == ["retry me"] * 3
    assert host.clock.slept == [0.5, 1.0]  # type: ignore[attr-defined]


async def test_permanent_failure_opens_the_breaker(host: Host, hook: Hook) -> None:
    hook.default = 503
    for i in range(5):
        result = await host.notify("webhook", "ops", f"try {i}")
        assert (result.ok, result.retryable, result.attempts) == (False, True, 3)
        assert result.message.endswith("answered 503")
    assert len(hook.bodies) == 15
    blocked = await host.notify("webhook", "ops", "not sent")
    assert blocked.message.startswith("circuit open") and blocked.attempts == 0
    assert len(hook.bodies) == 15  # the server saw nothing more

    hook.default = 200  # the receiver recovers; after 30 s one trial closes the circuit
    await host.clock.advance(30)  # type: ignore[attr-defined]
    assert (await host.notify("webhook", "ops", "trial")).ok
    assert host.notifications.channels()[0].state == "closed"
    assert [b["text"] for b in hook.bodies[15:]] == ["trial"]


async def test_client_errors_are_not_retried(host: Host, hook: Hook) -> None:
    hook.script = [400]
    result = await host.notify("webhook", "nobody", "bad")
    assert (result.ok, result.retryable, result.attempts) == (False, False, 1)
    assert len(hook.bodies) == 1
    hook.script = [429, 200]  # too many requests: worth retrying
    assert (await host.notify("webhook", "ops", "later")).attempts == 2


async def test_unreachable_receiver_is_retryable(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shutil.copytree(EXAMPLES / "webhook", tmp_path / "plugins" / "webhook")
    approve(tmp_path, f"http://127.0.0.1:{port}/hook")
    async with Host(base_dir=tmp_path, clock=ManualClock(auto_advance=True)) as host:
        result = await host.notify("webhook", "ops", "anyone?")
        assert (result.ok, result.retryable, result.attempts) == (False, True, 3)
        assert "ConnectError" in result.message


async def test_repo_policy_approves_the_example(tmp_path: Path) -> None:
    text = (REPO / "tether.toml").read_text()
    assert "[plugins.webhook]" in text
    text = text.replace('plugin_dirs = ["examples/plugins"]', f'plugin_dirs = ["{EXAMPLES}"]')
    text = text.replace('data_dir = ".tether"', f'data_dir = "{tmp_path / "data"}"')
    (tmp_path / "tether.toml").write_text(text)
    async with Host(tmp_path / "tether.toml") as host:
        info = next(p for p in host.plugins() if p["id"] == "webhook")
        assert (info["state"], info["warnings"]) == ("active", [])
        assert host.notifications.kinds() == ["webhook"]


async def test_egress_rules_apply(tmp_path: Path, hook: Hook) -> None:
    # Without private_hosts the operator has not opened 127.0.0.1: ctx.http refuses the
    # request before it leaves, and the refusal is permanent (no retries, nothing received).
    shutil.copytree(EXAMPLES / "webhook", tmp_path / "plugins" / "webhook")
    write_policy(
        tmp_path,
        f"""
        [plugins.webhook]
        grant = ["notifications.register", "http.outbound"]
        outbound_hosts = ["127.0.0.1"]
        config = {{ url = "{hook.url}" }}
        """,
    )
    async with Host(base_dir=tmp_path, clock=ManualClock(auto_advance=True)) as host:
        result = await host.notify("webhook", "ops", "blocked")
        assert (result.ok, result.retryable, result.attempts) == (False, False, 1)
        assert "127.0.0.1" in result.message
        assert hook.bodies == []
