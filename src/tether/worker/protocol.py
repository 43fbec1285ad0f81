"""The subprocess tier's wire protocol: length-prefixed msgpack frames (msgspec), no pickle.

Each frame is a 4-byte big-endian length and a msgpack array whose first item names the
message. The channel is a dedicated socket (never the worker's stdout), so whatever the
plugin prints cannot be mistaken for a frame.

Host → worker: `[CALL, id, target, args]`, `[CANCEL, id]`, `[REPLY, id, ok, value]`.
Worker → host: `[HELLO, declarations]`, `[FATAL, message]`, `[RESULT, id, ok, value]`,
`[SERVICE, id, method, args, kwargs]`, `[LOG, level, message]`.
A failed result's value is `[exception type name, message]`.

A second socket carries synchronous calls (`SyncClient`): the host's config validation is
synchronous (a config-key validator runs inside `host.config_keys.set`), so it asks the
worker with a blocking `[CALL, id, target, args]` and waits for `[RESULT, id, ok, value]`,
without the event loop; a thread in the worker answers them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from tether.contract import types as ctypes

CALL, CANCEL, REPLY, HELLO, FATAL, RESULT, SERVICE, LOG = range(8)
MAX_FRAME = 64 * 1024 * 1024
"""Largest frame either side accepts; a bigger length prefix is a protocol error."""

_HEADER = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class FrameTooLargeError(ValueError):
    """A message to send is over `MAX_FRAME`; the peer would refuse it, so it is not sent."""


def encode(message: list[Any]) -> bytes:
    """One frame: the length prefix and the msgpack body; raises `FrameTooLargeError`."""
    body = _encoder.encode(message)
    if len(body) > MAX_FRAME:
        raise FrameTooLargeError(
            f"a message of {len(body)} bytes is over the limit of {MAX_FRAME} bytes "
            "between host and worker; return less"
        )
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Accumulates bytes read from the channel and yields complete messages."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[list[Any]]:
        """Add `data`; return every message now complete (possibly none)."""
        buf = self._buf
        buf += data
        out: list[list[Any]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes is over the {MAX_FRAME}-byte limit")
            if end - pos - 4 < size:
                break
            try:
                msg = _decoder.decode(memoryview(buf)[pos + 4 : pos + 4 + size])
            except msgspec.DecodeError as exc:
                raise ProtocolError(f"undecodable frame: {exc}") from None
            if not isinstance(msg, list) or not msg or not isinstance(msg[0], int):
                raise ProtocolError("a frame must be a msgpack array starting with its kind")
            out.append(msg)
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out


def recv_blocking(sock: socket.socket, reader: FrameReader) -> list[list[Any]]:
    """Block until at least one message arrives; [] when the peer closed the channel."""
    while True:
        data = sock.recv(65536)
        if not data:
            return []
        got = reader.feed(data)
        if got:
            return got


class Channel:
    """One end of the channel on an asyncio loop: a reader callback on the socket's fd (no
    transport or stream objects on the hot path) and direct, non-blocking sends."""

    def __init__(
        self,
        sock: socket.socket,
        on_message: Callable[[list[Any]], None],
        on_close: Callable[[str], None],
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._on_message = on_message
        self._on_close = on_close
        self._reader = FrameReader()
        self._out = bytearray()
        self._loop = asyncio.get_running_loop()
        self.closed = False
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(f"channel error: {exc}")
            return
        if not data:
            self.close("the peer closed the channel")
            return
        try:
            messages = self._reader.feed(data)
        except ProtocolError as exc:
            self.close(f"protocol error: {exc}")
            return
        for msg in messages:
            self._on_message(msg)

    def send(self, message: list[Any]) -> None:
        """Queue one message; written at once when the socket has room. Raises
        `FrameTooLargeError` (nothing is sent) when the message is over `MAX_FRAME`."""
        if self.closed:
            return
        data = encode(message)
        if self._out:
            self._out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.close(f"channel error: {exc}")
            return
        if sent < len(data):
            self._out += data[sent:]
            self._loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(f"channel error: {exc}")
            return
        del self._out[:sent]
        if not self._out:
            self._loop.remove_writer(self.sock.fileno())

    def close(self, why: str = "closed") -> None:
        """Stop reading and close the socket; `on_close(why)` runs once."""
        if self.closed:
            return
        self.closed = True
        fd = self.sock.fileno()
        if fd >= 0:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        self.sock.close()
        self._on_close(why)


class SyncClient:
    """The host's end of the synchronous socket: one blocking call at a time, each bounded
    by its timeout. Usable from any thread; never touches an event loop."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.closed = False
        self._reader = FrameReader()
        self._lock = threading.Lock()
        self._next = 0

    def call(self, target: str, args: Any, timeout: float) -> Any:
        """The worker's answer; raises `TimeoutError`, `ConnectionError` or `ProtocolError`,
        or `RemoteFailure` carrying the worker's `[type name, message]`."""
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            raise TimeoutError(f"another synchronous call held the worker for {timeout:g}s")
        try:
            if self.closed:
                raise ConnectionError("the worker's channel is closed")
            self._next += 1
            cid = self._next
            self.sock.settimeout(timeout)
            self.sock.sendall(encode([CALL, cid, target, args]))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer within {timeout:g}s")
                self.sock.settimeout(left)
                try:
                    messages = recv_blocking(self.sock, self._reader)
                except TimeoutError:
                    raise TimeoutError(f"no answer within {timeout:g}s") from None
                if not messages:
                    self.close()
                    raise ConnectionError("the worker closed its channel")
                for msg in messages:  # a late answer to an earlier, timed-out call is stale
                    if msg[0] == RESULT and msg[1] == cid:
                        if msg[2]:
                            return msg[3]
                        raise RemoteFailure(msg[3])
        finally:
            self._lock.release()

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class RemoteFailure(Exception):
    """A synchronous call failed in the worker; `.value` is `[type name, message]`."""

    def __init__(self, value: list[Any]) -> None:
        super().__init__(f"{value[0]}: {value[1]}")
        self.value = value


def serve_sync(sock: socket.socket, handle: Callable[[str, Any], Any]) -> None:
    """The worker's end: answer synchronous calls with `handle(target, args)` until the
    host closes the socket (run in a thread of its own)."""
    sock.setblocking(True)
    reader = FrameReader()
    while True:
        try:
            messages = recv_blocking(sock, reader)
        except (OSError, ProtocolError):
            return
        if not messages:
            return
        for msg in messages:
            if msg[0] != CALL:
                continue
            try:
                reply = [RESULT, msg[1], True, handle(str(msg[2]), msg[3])]
                frame = encode(reply)
            except BaseException as exc:  # the plugin's error is this call's answer
                frame = encode([RESULT, msg[1], False, [type(exc).__name__, str(exc)]])
            try:
                sock.sendall(frame)
            except OSError:
                return


# Values of the contract types (hook arguments and verdicts) ------------------------------

_TYPES: dict[str, type] = {
    name: t
    for name, t in vars(ctypes).items()
    if isinstance(t, type) and dataclasses.is_dataclass(t) and t.__module__ == ctypes.__name__
}
_TAG = "__tether_type__"


def to_wire(value: Any) -> Any:
    """A value with contract dataclasses turned into tagged maps, so they survive the trip."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if _TYPES.get(name) is type(value):
            fields = {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return {_TAG: name, **fields}
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_wire(v) for v in value]
    return value


def from_wire(value: Any) -> Any:
    """The inverse of `to_wire`."""
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if isinstance(tag, str) and tag in _TYPES:
            kwargs = {k: from_wire(v) for k, v in value.items() if k != _TAG}
            if tag == "Caller":
                kwargs["roles"] = frozenset(kwargs.get("roles", ()))
            return _TYPES[tag](**kwargs)
        return {k: from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    return value
