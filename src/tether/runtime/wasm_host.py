"""The host side of the `tether:plugin` world's imports: logging, storage, user-storage,
http and events, each going through the plugin's capability membrane (its `Context`).

Component calls run in the plugin's worker thread; an import that needs the host's event
loop (storage, egress) runs its coroutine there and waits. A host function never raises
into the guest (that would poison the store): every failure becomes the import's `err`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from wasmtime.component import Linker, Variant

from tether.runtime.wasm_engine import engine

if TYPE_CHECKING:
    from tether.runtime.context import Context

WIT_PACKAGE = "tether:plugin"
WIT_VERSION = "0.1.0"
MAX_VALUE_CHARS = 1_000_000
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class HostImports:
    """What one plugin's component may ask of the host, checked by its `Context`."""

    def __init__(self, ctx: Context, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.ctx = ctx
        self.loop = loop
        self.timeout_s = timeout_s

    def _await(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout_s)

    def _guard(self, what: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """(True, value) or (False, message); never raises."""
        try:
            return True, fn()
        except BaseException as exc:
            msg = str(exc) or type(exc).__name__
            return False, f"{what}: {type(exc).__name__}: {msg}"

    # logging ---------------------------------------------------------------------------

    def log(self, _store: Any, level: str, message: str) -> None:
        self.ctx.log.log(_LEVELS.get(level, logging.ERROR), "%s", message[:10_000])

    # storage (scope "plugin"; user-storage: scope "user"; values are JSON text) --------

    def _where(self, user: str | None) -> dict[str, Any]:
        return {} if user is None else {"scope": "user", "user": user}

    def _get(self, what: str, key: str, user: str | None) -> Variant:
        st = self.ctx.storage
        ok, value = self._guard(what, lambda: self._await(st.get(key, **self._where(user))))
        if not ok:
            return Variant("err", value)
        return Variant("ok", None if value is None else json.dumps(value))

    def _set(self, what: str, key: str, value_json: str, user: str | None) -> str | None:
        def run() -> None:
            if len(value_json) > MAX_VALUE_CHARS:
                raise ValueError(f"values are at most {MAX_VALUE_CHARS} characters of JSON")
            value = json.loads(value_json)
            self._await(self.ctx.storage.set(key, value, **self._where(user)))

        ok, value = self._guard(what, run)
        return None if ok else str(value)  # result<_, string> is untagged: None or the error

    def _delete(self, what: str, key: str, user: str | None) -> bool | str:
        st = self.ctx.storage
        ok, value = self._guard(what, lambda: self._await(st.delete(key, **self._where(user))))
        return bool(value) if ok else str(value)

    def _list(self, what: str, prefix: str, user: str | None) -> list[str] | str:
        st = self.ctx.storage
        ok, value = self._guard(what, lambda: self._await(st.list(prefix, **self._where(user))))
        return list(value) if ok else str(value)

    def storage_get(self, _store: Any, key: str) -> Variant:
        return self._get("storage.get", key, None)

    def storage_set(self, _store: Any, key: str, value_json: str) -> str | None:
        return self._set("storage.set", key, value_json, None)

    def storage_delete(self, _store: Any, key: str) -> bool | str:
        return self._delete("storage.delete", key, None)

    def storage_list(self, _store: Any, prefix: str) -> list[str] | str:
        return self._list("storage.list", prefix, None)

    def user_get(self, _store: Any, user: str, key: str) -> Variant:
        return self._get("user-storage.get", key, user)

    def user_set(self, _store: Any, user: str, key: str, value_json: str) -> str | None:
        return self._set("user-storage.set", key, value_json, user)

    def user_delete(self, _store: Any, user: str, key: str) -> bool | str:
        return self._delete("user-storage.delete", key, user)

    def user_list(self, _store: Any, user: str, prefix: str) -> list[str] | str:
        return self._list("user-storage.list", prefix, user)

    # http (through the host's egress checks) ------------------------------------------

    def http_request(
        self, _store: Any, method: str, url: str, headers_json: str, body: str
    ) -> Variant:
        def run() -> str:
            headers = json.loads(headers_json or "{}")
            if not isinstance(headers, dict):
                raise ValueError("headers-json must be a JSON object")
            response = self._await(
                self.ctx.http.request(
                    method,
                    url,
                    headers={str(k): str(v) for k, v in headers.items()},
                    content=body.encode() if body else None,
                )
            )
            return json.dumps(
                {
                    "status": response.status,
                    "headers": dict(response.headers),
                    "body": response.text,
                }
            )

        ok, value = self._guard("http.request", run)
        return Variant("ok" if ok else "err", value)

    # events ---------------------------------------------------------------------------

    def emit(self, _store: Any, event: str, data_json: str) -> str | None:
        async def run() -> None:
            data = json.loads(data_json or "{}")
            if not isinstance(data, dict):
                raise ValueError("data-json must be a JSON object")
            self.ctx.events.emit(event, data)  # checks the grant and the namespace

        ok, value = self._guard("events.emit", lambda: self._await(run()))
        return None if ok else str(value)


def build_linker(imports: HostImports) -> Linker:
    """A linker with WASI (stores get an empty WasiConfig) and the `tether:plugin`
    imports bound to `imports`."""
    linker = Linker(engine())
    linker.add_wasip2()
    funcs: dict[str, dict[str, Callable[..., Any]]] = {
        "logging": {"log": imports.log},
        "storage": {
            "get": imports.storage_get,
            "set": imports.storage_set,
            "delete": imports.storage_delete,
            "list": imports.storage_list,
        },
        "user-storage": {
            "get": imports.user_get,
            "set": imports.user_set,
            "delete": imports.user_delete,
            "list": imports.user_list,
        },
        "http": {"request": imports.http_request},
        "events": {"emit": imports.emit},
    }
    with linker.root() as root:
        for iface, table in funcs.items():
            with root.add_instance(f"{WIT_PACKAGE}/{iface}@{WIT_VERSION}") as inst:
                for name, fn in table.items():
                    inst.add_func(name, fn)
    return linker
