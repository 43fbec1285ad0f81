"""A real `redis-server` for tests: started on a free 127.0.0.1 port in a temporary folder,
with persistence off, and stopped afterwards.

    from redis_server import redis_url  # noqa: F401  (a module-scoped pytest fixture)

`redis_url` skips the test with "redis-server not installed" only when the binary is missing.
The benchmarks use `RedisServer` directly.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
import redis

BINARY = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """`with RedisServer(folder) as server:` runs redis-server until the block ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, attempts: int = 3) -> None:
        if BINARY is None:
            raise FileNotFoundError("redis-server not installed")
        for _ in range(attempts):  # another process may take the free port first
            self.port = _free_port()
            log = (self.folder / f"redis-{self.port}.log").open("wb")
            self.proc = subprocess.Popen(
                [BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.folder)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            log.close()
            if self._wait_ready(5.0):
                return
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.folder}")

    def _wait_ready(self, timeout: float) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the test module (tests flush what they need)."""
    if BINARY is None:
        pytest.skip("redis-server not installed")
    with (
        tempfile.TemporaryDirectory(prefix="tether-redis-") as folder,
        RedisServer(Path(folder)) as server,
    ):
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of a running redis-server, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server.url
