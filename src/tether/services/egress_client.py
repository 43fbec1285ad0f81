"""The client half of egress: connections pinned to checked addresses, bounded bodies.

`PinnedTransport` is an `httpx.AsyncHTTPTransport` whose connection pool uses
`PinnedBackend`: its `connect_tcp` ignores the host name httpcore passes and connects to the
addresses `check_url` approved, while TLS still gets the real host name for SNI and
certificate verification (httpcore passes the URL's host as `server_hostname`). There is no
second lookup, so DNS rebinding cannot move a request. Transports are cached per
(plugin, origin, checked addresses, TLS identity), so keep-alive connections are only ever
reused for the same checked addresses.
"""

from __future__ import annotations

import contextlib
import json as _json
import ssl
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

__all__ = [
    "METHODS",
    "BodyTooLarge",
    "HttpResponse",
    "MtlsRef",
    "PinnedBackend",
    "PinnedTransport",
    "TransportCache",
    "build_body",
    "read_limited",
]


@dataclass(frozen=True, slots=True)
class MtlsRef:
    """An opaque reference to an operator-provisioned client certificate, by name only.

    It carries no key, certificate or path; the host loads the files named under
    `[plugins.<id>.mtls.<name>]` when a request uses it, for the calling plugin only.
    """

    name: str

    def __repr__(self) -> str:
        return f"MtlsRef({self.name!r})"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete response: `status`, `headers`, `content` (bytes), the final `url`."""

    status: int
    headers: httpx.Headers
    content: bytes
    url: str

    @property
    def ok(self) -> bool:
        """True for 2xx statuses."""
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        """The body decoded with the charset of Content-Type (UTF-8 when there is none)."""
        charset = "utf-8"
        for param in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip("\"'")
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (raises `ValueError` when it is not JSON)."""
        return _json.loads(self.content)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that only connects to `addresses`, in order, whatever host name
    it is asked for; unix sockets are refused."""

    def __init__(
        self, addresses: tuple[str, ...], inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        if not addresses:
            raise ValueError("PinnedBackend needs at least one checked address")
        self.addresses = addresses
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in self.addresses:  # every one of them was checked
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("outbound HTTP does not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose connections go only to the checked `addresses`."""

    # super().__init__ is deliberately not called; see __init__.

    def __init__(
        self,
        addresses: tuple[str, ...],
        ssl_context: ssl.SSLContext | None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        # httpx has no public way to hand its pool a network backend, so the pool is built
        # here, as httpx's __init__ would (that __init__ only builds the pool, and would
        # also build an SSL context, ~0.7 ms, even for plain http). `ssl_context` is None
        # only for http origins, which never start TLS.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=10,
            max_keepalive_connections=10,
            keepalive_expiry=30.0,
            network_backend=PinnedBackend(addresses, inner),
        )


@dataclass(slots=True)
class _Entry:
    transport: PinnedTransport
    users: int = 0


class TransportCache:
    """Transports by key, shared by concurrent requests, closed when evicted while idle."""

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    @contextlib.asynccontextmanager
    async def lease(
        self, key: Hashable, make: Callable[[], PinnedTransport]
    ) -> AsyncIterator[PinnedTransport]:
        """Use the transport for `key`, made with `make()` when there is none yet."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(make())
        self._entries.move_to_end(key)
        entry.users += 1
        try:
            yield entry.transport
        finally:
            entry.users -= 1
            await self._evict()

    async def _evict(self) -> None:
        extra = len(self._entries) - self._size
        for key in [k for k, e in self._entries.items() if e.users == 0][: max(extra, 0)]:
            await self._entries.pop(key).transport.aclose()

    async def aclose(self) -> None:
        """Close every transport (their open connections go with them)."""
        entries, self._entries = list(self._entries.values()), OrderedDict()
        for entry in entries:
            with contextlib.suppress(Exception):
                await entry.transport.aclose()

    def __len__(self) -> int:
        return len(self._entries)


class BodyTooLarge(Exception):
    """The body went past the limit; the response was closed, so was its connection."""

    def __init__(self, limit: int, seen: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit
        self.seen = seen


class _Inflater:
    """Bounded gzip/deflate decoding: never produces more than the room left, so a
    compression bomb is cut at the limit instead of filling memory."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding == "gzip"
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)
        self._started = False

    def feed(self, data: bytes, room: int) -> bytes:
        if not self._gzip and not self._started:
            self._started = True
            try:  # "deflate" is zlib-wrapped by the spec, raw in some servers
                return self._obj.decompress(data, room + 1)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._obj.decompress(data, room + 1)


async def read_limited(response: httpx.Response, limit: int, *, head: bool = False) -> bytes:
    """Read the body (decoding gzip/deflate) up to `limit` bytes; past it, close the
    response and raise `BodyTooLarge`. A Content-Length over the limit fails at once
    (except for a HEAD request, whose Content-Length describes a body never sent)."""
    declared = response.headers.get("content-length", "")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    plain = encoding in ("", "identity")
    if not head and plain and declared.isdigit() and int(declared) > limit:
        await response.aclose()
        raise BodyTooLarge(limit, int(declared))
    inflater = _Inflater(encoding) if encoding in ("gzip", "deflate") else None
    parts: list[bytes] = []
    size = raw = 0
    try:
        async for chunk in response.stream:  # type: ignore[union-attr]
            raw += len(chunk)
            data = inflater.feed(chunk, limit - size) if inflater else chunk
            size += len(data)
            if size > limit or raw > limit:
                raise BodyTooLarge(limit, max(size, raw))
            parts.append(data)
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode {encoding} body: {exc}") from None
    finally:
        await response.aclose()
    return b"".join(parts)


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def build_body(
    plugin_id: str,
    method: str,
    headers: Mapping[str, str] | None,
    content: bytes | str | None,
    json: Any,
) -> tuple[httpx.Headers, bytes]:
    """The request headers (with the plugin's User-Agent) and body; `ValueError` for
    arguments that make no request."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not allowed: use one of {sorted(METHODS)}")
    if content is not None and json is not None:
        raise ValueError("pass content= or json=, not both")
    hdrs = httpx.Headers(headers or {})
    if "host" in hdrs:
        raise ValueError("the Host header comes from the URL; remove it from headers=")
    hdrs["User-Agent"] = f"Tether-Plugin/{plugin_id}"  # always: the audit trail on the far side
    hdrs.setdefault("Accept-Encoding", "gzip, deflate")
    if content is None and json is None:
        return hdrs, b""
    encoded = httpx.Request("POST", "http://body.invalid/", content=content, json=json)
    for key in ("Content-Type", "Content-Length"):
        if key in encoded.headers and key not in hdrs:
            hdrs[key] = encoded.headers[key]
    return hdrs, encoded.content
