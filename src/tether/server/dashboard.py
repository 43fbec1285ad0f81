"""The operator dashboard: one page at `/`, its static files under `/static/`, and two
read-only endpoints it needs beyond the REST API: `/api/dashboard/widgets` (plugins' widgets,
rendered and sanitised) and `/api/dashboard/events` (recent notification events).

The page and its files are public; everything it shows comes from `/api/...` with the
operator's bearer token, which the page asks for once (or takes from `#token=...`) and keeps
in sessionStorage. The page is served under a strict Content-Security-Policy: no inline
script or style anywhere, so a widget cannot run script even if sanitising missed something.
"""

from __future__ import annotations

import itertools
import json
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from tether.contract.events import NOTIFICATION_EVENTS
from tether.contract.types import Event
from tether.runtime.host import Host
from tether.server.auth import check_bearer
from tether.services.events import EventBus, Subscription

STATIC_DIR = Path(__file__).resolve().parent / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
"""The policy of the dashboard page: scripts and styles only from this origin's files."""

PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

FEED_SIZE = 300
FEED_SKIPPED = frozenset({"task.token"})
"""One event per streamed token would push everything else out of the feed within a run."""
MAX_DATA_CHARS = 400
SUBSCRIBER_ID = "tether.dashboard"
"""The subscriber name on the event bus (plugin ids cannot contain a dot)."""


class EventFeed:
    """The most recent notification events of a host, numbered so clients can ask for
    those after the last one they saw."""

    def __init__(self) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=FEED_SIZE)
        self._seq = itertools.count(1)
        self._bus: EventBus | None = None
        self._subs: list[Subscription] = []

    def attach(self, bus: EventBus) -> None:
        """Subscribe to every notification event on `bus` (again, if the host restarted)."""
        if bus is self._bus:
            return
        if self._bus is not None:
            for sub in self._subs:
                self._bus.unsubscribe(sub)
        self._bus = bus
        self._subs = [
            bus.subscribe(name, SUBSCRIBER_ID, self._on_event)
            for name in NOTIFICATION_EVENTS
            if name not in FEED_SKIPPED
        ]

    async def _on_event(self, event: Event) -> None:
        self.add(event.name, event.source, event.data)

    def add(self, name: str, source: str, data: dict[str, Any]) -> None:
        text = json.dumps(data, default=str, sort_keys=True)
        if len(text) > MAX_DATA_CHARS:
            text = text[: MAX_DATA_CHARS - 1] + "…"
        self._items.append(
            {
                "seq": next(self._seq),
                "ts": time.time(),
                "name": name,
                "source": source,
                "data": text,
            }
        )

    def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Events numbered above `seq`, oldest first, at most the newest `limit`."""
        newer = [e for e in self._items if e["seq"] > seq]
        return newer[-limit:]

    @property
    def newest(self) -> int:
        """The number of the newest event kept (0 when none)."""
        return self._items[-1]["seq"] if self._items else 0


_FEEDS: weakref.WeakKeyDictionary[Host, EventFeed] = weakref.WeakKeyDictionary()


def feed_of(host: Host) -> EventFeed:
    """The host's feed, shared by every app built over it; subscribed on first use."""
    feed = _FEEDS.get(host)
    if feed is None:
        feed = _FEEDS[host] = EventFeed()
    feed.attach(host.events)
    return feed


def _host(request: Request) -> Host:
    state = request.app.state.tether
    check_bearer(request, state.token)
    host: Host = state.host
    return host


def mount(app: FastAPI) -> None:
    """Add the page, its static files and the dashboard's endpoints to the app."""
    host: Host = app.state.tether.host
    if getattr(host, "events", None) is not None:  # started: collect from now on
        feed_of(host)

    @app.get("/", include_in_schema=False)
    async def dashboard_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")

    @app.get("/api/dashboard/widgets", tags=["dashboard"])
    async def dashboard_widgets(request: Request) -> dict[str, Any]:
        """Every active plugin's widgets, rendered now; HTML is sanitised, failures are
        reported per widget in `error`."""
        widgets = await _host(request).services.widgets.render_all()
        return {"widgets": [w.to_json() for w in widgets]}

    @app.get("/api/dashboard/events", tags=["dashboard"])
    async def dashboard_events(
        request: Request,
        after: int = Query(0, ge=0, description="only events numbered above this"),
        limit: int = Query(100, ge=1, le=FEED_SIZE),
    ) -> dict[str, Any]:
        """Recent notification events (oldest first) and the newest number to pass as
        `after` next time."""
        feed = feed_of(_host(request))
        items = feed.after(after, limit)
        # `last` goes back down when the host restarted, so the client starts over.
        return {"events": items, "last": items[-1]["seq"] if items else feed.newest}
