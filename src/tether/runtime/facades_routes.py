"""`ctx.routes`: a plugin's HTTP routers, which `tether serve` mounts under `/plugins/<id>/`
(or the plugin's policy-approved absolute prefix).

The facade only records routers; the server's dispatcher (tether.server.routes) looks them
up per request through the plugin's record, so disabling or unloading the plugin takes its
routes away at once and enabling it (which registers them again) brings them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.contract.errors import RegistrationError

if TYPE_CHECKING:
    from tether.runtime.context import Context


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One registered router; `auth` routes need the operator's bearer token."""

    router: Any
    auth: bool


class PluginRoutes:
    """Register FastAPI `APIRouter`s (capability `routes.register`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._entries: list[RouteEntry] = []
        self.version = 0
        """Bumped on every change, so the server can cache the app it builds."""

    def register(self, router: Any, *, auth: bool = False) -> None:
        """Mount `router` (a `fastapi.APIRouter`) under this plugin's prefix.

        `auth=True` routes require the operator's bearer token; public routes (the default)
        are open to anyone who can reach the server, so a webhook must verify its own secret.
        """
        self._ctx.require("routes.register", "register a router")
        from fastapi import APIRouter

        if not isinstance(router, APIRouter):
            raise RegistrationError(
                f"plugin {self._ctx.plugin_id!r}: ctx.routes.register() takes a "
                f"fastapi.APIRouter, not {type(router).__name__}"
            )
        self._entries.append(RouteEntry(router, bool(auth)))
        self.version += 1

    def clear(self) -> None:
        """Remove every router this plugin registered."""
        self._entries.clear()
        self.version += 1

    @property
    def entries(self) -> tuple[RouteEntry, ...]:
        return tuple(self._entries)

    @property
    def prefix(self) -> str:
        """Where the routers are mounted: the approved absolute prefix when the plugin has
        one and `routes.absolute` is granted, else `/plugins/<id>`."""
        res = self._ctx.resolution
        if res is not None and res.route_prefix and self._ctx.has("routes.absolute"):
            return res.route_prefix
        return f"/plugins/{self._ctx.plugin_id}"
