"""The Redis storage backend (`[host] storage_backend = "redis"`).

Layout: one Redis hash per (plugin, scope, user, namespace), with the storage key as the hash
field and the value's JSON text as the field's value, plus one usage hash per plugin:

    <prefix>:{<len>:<plugin>}:kv:<len>:<scope><len>:<user><len>:<namespace>
    <prefix>:{<len>:<plugin>}:usage            fields "keys" and "bytes"

Every component is written as its UTF-8 byte length in decimal, a colon, then its bytes (a
netstring without the trailing comma). Why that is unambiguous: reading a key left to right,
after the fixed `<prefix>:{`, the digits up to the first colon give the plugin id's length,
which says exactly where the id ends, whatever bytes (colons, braces, digits) it holds; then
comes the fixed `}:kv:` or `}:usage`, which differ at their third byte; then three more
length-prefixed components and nothing else. So the address can be read back from the key,
and two different addresses can never produce the same Redis key. Storage keys are hash
fields, compared as exact bytes, so they never take part in the key name at all.

The `{...}` around the plugin component is a Redis Cluster hash tag: all of a plugin's hashes
and its usage counter live in one slot, as the Lua scripts below (which touch a data hash and
the usage hash together) require.

Quotas are checked and applied by Lua scripts, which Redis runs atomically: no other command
runs between a script's check and its write, whichever host or thread sent it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aredis
from redis.exceptions import RedisError

from tether.contract.errors import QuotaExceededError
from tether.services.storage import (
    Keys,
    QuotaLookup,
    Scope,
    StorageUsage,
    default_quota,
    encode_value,
    utf8,
)

# KEYS: data hash, usage hash. ARGV: field, JSON text, max keys, max bytes.
_SET = """
local used_keys = tonumber(redis.call('HGET', KEYS[2], 'keys') or '0')
local used_bytes = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')
local add_keys, add_bytes
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  add_keys = 0
  add_bytes = #ARGV[2] - redis.call('HSTRLEN', KEYS[1], ARGV[1])
else
  add_keys = 1
  add_bytes = #ARGV[1] + #ARGV[2]
end
if add_keys > 0 and used_keys + add_keys > tonumber(ARGV[3]) then
  return {'storage_keys', tonumber(ARGV[3]), used_keys, used_keys + add_keys}
end
if add_bytes > 0 and used_bytes + add_bytes > tonumber(ARGV[4]) then
  return {'storage_bytes', tonumber(ARGV[4]), used_bytes, used_bytes + add_bytes}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if add_keys ~= 0 then redis.call('HINCRBY', KEYS[2], 'keys', add_keys) end
if add_bytes ~= 0 then redis.call('HINCRBY', KEYS[2], 'bytes', add_bytes) end
return false
"""

# KEYS: data hash, usage hash. ARGV: field.
_DELETE = """
local size = redis.call('HSTRLEN', KEYS[1], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'keys', -1)
redis.call('HINCRBY', KEYS[2], 'bytes', -(#ARGV[1] + size))
return 1
"""

# KEYS: data hash, usage hash.
_CLEAR = """
local all = redis.call('HGETALL', KEYS[1])
local n, b = 0, 0
for i = 1, #all, 2 do
  n = n + 1
  b = b + #all[i] + #all[i + 1]
end
if n > 0 then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'keys', -n)
  redis.call('HINCRBY', KEYS[2], 'bytes', -b)
end
return n
"""


def _part(text: str, what: str) -> bytes:
    raw = utf8(text, what)
    return b"%d:%s" % (len(raw), raw)


def data_key(prefix: bytes, plugin: str, scope: str, user: str, ns: str) -> bytes:
    """The Redis key of the hash holding one (plugin, scope, user, namespace)."""
    return b"%s:{%s}:kv:%s%s%s" % (
        prefix,
        _part(plugin, "plugin id"),
        _part(scope, "scope"),
        _part(user, "user id"),
        _part(ns, "namespace"),
    )


def usage_key(prefix: bytes, plugin: str) -> bytes:
    """The Redis key of a plugin's usage counters."""
    return b"%s:{%s}:usage" % (prefix, _part(plugin, "plugin id"))


def redact(url: str) -> str:
    """`url` without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _refusal(plugin: str, refused: list[Any] | None) -> None:
    """Raise the QuotaExceededError the set script reported, if any."""
    if refused:
        name, limit, usage, needed = refused
        raise QuotaExceededError(plugin, name.decode(), int(limit), int(usage), int(needed))


def _sorted_keys(fields: list[Any], prefix: str) -> Keys:
    # Fields are filtered here, not with HSCAN MATCH, whose glob syntax would need escaping;
    # a plugin's field count is bounded by its key quota.
    keys = (f.decode("utf-8") if isinstance(f, bytes) else f for f in fields)
    return sorted(k for k in keys if k.startswith(prefix))


class RedisStorage:
    """Plugin storage in Redis, through redis-py.

    The coroutine face (what plugins use, via the facade) runs on the asyncio client: a call
    awaits the network without holding the event loop and without a worker-thread hop,
    which on a busy host costs more than the round trip itself and would queue behind sync
    tools. The asyncio client belongs to the event loop it is first used on. The synchronous
    face (host-side callers, any thread) has its own client; both send the same scripts.
    """

    def __init__(
        self, url: str, quotas: QuotaLookup = default_quota, prefix: str = "tether"
    ) -> None:
        self.url = url
        self._quotas = quotas
        self._prefix = utf8(prefix, "key prefix")
        options: dict[str, Any] = {"socket_timeout": 10, "socket_connect_timeout": 5}
        self._r = redis.Redis.from_url(url, **options)
        self._ar = aredis.Redis.from_url(url, **options)
        self._set, self._aset = self._r.register_script(_SET), self._ar.register_script(_SET)
        self._del, self._adel = self._r.register_script(_DELETE), self._ar.register_script(_DELETE)
        self._clr, self._aclr = self._r.register_script(_CLEAR), self._ar.register_script(_CLEAR)

    @classmethod
    async def connect(
        cls, url: str, quotas: QuotaLookup = default_quota, prefix: str = "tether"
    ) -> RedisStorage:
        """A backend on `url` (redis://host:port/db), once Redis has answered a PING."""
        store = cls(url, quotas, prefix)
        try:
            await store._ar.ping()
        except RedisError as exc:
            await store.aclose()
            raise ConnectionError(
                f"storage backend: cannot reach Redis at {redact(url)}: {exc}; start Redis or "
                "fix [host] redis_url in tether.toml"
            ) from None
        return store

    def _hash(self, plugin: str, scope: Scope, user: str, ns: str) -> bytes:
        return data_key(self._prefix, plugin, scope, user, ns)

    def _keys(self, plugin: str, scope: Scope, user: str, ns: str) -> list[bytes]:
        return [self._hash(plugin, scope, user, ns), usage_key(self._prefix, plugin)]

    def _set_args(self, plugin: str, key: str, value: Any) -> list[Any]:
        quota = self._quotas(plugin)
        return [utf8(key, "key"), encode_value(value)[1], quota.max_keys, quota.max_bytes]

    def _usage(self, plugin: str, counts: list[Any]) -> StorageUsage:
        quota = self._quotas(plugin)
        keys, used = counts
        return StorageUsage(int(keys or 0), int(used or 0), quota.max_keys, quota.max_bytes)

    # Synchronous face ------------------------------------------------------------------

    def get(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> Any | None:
        raw = self._r.hget(self._hash(plugin, scope, user, ns), utf8(key, "key"))
        return None if raw is None else json.loads(raw)

    def set(self, plugin: str, scope: Scope, user: str, ns: str, key: str, value: Any) -> None:
        args = self._set_args(plugin, key, value)
        _refusal(plugin, self._set(keys=self._keys(plugin, scope, user, ns), args=args))

    def delete(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> bool:
        keys = self._keys(plugin, scope, user, ns)
        return bool(self._del(keys=keys, args=[utf8(key, "key")]))

    def list(self, plugin: str, scope: Scope, user: str, ns: str, prefix: str) -> Keys:
        utf8(prefix, "prefix")
        return _sorted_keys(self._r.hkeys(self._hash(plugin, scope, user, ns)), prefix)

    def clear(self, plugin: str, scope: Scope, user: str, ns: str) -> int:
        return int(self._clr(keys=self._keys(plugin, scope, user, ns)))

    def usage(self, plugin: str) -> StorageUsage:
        counts = self._r.hmget(usage_key(self._prefix, plugin), ["keys", "bytes"])
        return self._usage(plugin, counts)

    def close(self) -> None:
        """Close the synchronous client's connections."""
        self._r.close()

    # Coroutine face --------------------------------------------------------------------

    async def aget(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> Any | None:
        raw = await self._ar.hget(self._hash(plugin, scope, user, ns), utf8(key, "key"))
        return None if raw is None else json.loads(raw)

    async def aset(
        self, plugin: str, scope: Scope, user: str, ns: str, key: str, value: Any
    ) -> None:
        args = self._set_args(plugin, key, value)
        _refusal(plugin, await self._aset(keys=self._keys(plugin, scope, user, ns), args=args))

    async def adelete(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> bool:
        keys = self._keys(plugin, scope, user, ns)
        return bool(await self._adel(keys=keys, args=[utf8(key, "key")]))

    async def alist(self, plugin: str, scope: Scope, user: str, ns: str, prefix: str) -> Keys:
        utf8(prefix, "prefix")
        return _sorted_keys(await self._ar.hkeys(self._hash(plugin, scope, user, ns)), prefix)

    async def aclear(self, plugin: str, scope: Scope, user: str, ns: str) -> int:
        return int(await self._aclr(keys=self._keys(plugin, scope, user, ns)))

    async def ausage(self, plugin: str) -> StorageUsage:
        counts = await self._ar.hmget(usage_key(self._prefix, plugin), ["keys", "bytes"])
        return self._usage(plugin, counts)

    async def aclose(self) -> None:
        """Close both clients' connections."""
        await self._ar.aclose()
        self._r.close()
