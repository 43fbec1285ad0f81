"""The event-loop watchdog: reports plugin code that blocks the host's event loop.

A callback on the loop stamps a heartbeat; a thread checks it. When the heartbeat is late,
the thread looks at the loop thread's current Python stack and names the innermost frame
that belongs to a plugin module, so the report says which plugin and which function, and
for how long, at no cost to any call.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FrameType

log = logging.getLogger("tether.watchdog")

PLUGIN_MODULE_PREFIX = "tether_plugins."


@dataclass(frozen=True, slots=True)
class BlockReport:
    plugin_id: str
    function: str
    seconds: float

    def __str__(self) -> str:
        return (
            f"plugin {self.plugin_id!r} blocked the event loop for {self.seconds:.2f}s in "
            f"{self.function}(); make it async or move the blocking work to a thread"
        )


CodeOwner = Callable[[CodeType], str | None]


def plugin_of_frame(
    frame: FrameType | None,
    resolve: Callable[[str], str | None],
    resolve_code: CodeOwner | None = None,
) -> tuple[str, str] | None:
    """(plugin id, function name) of the innermost plugin frame on a stack, if any.

    A frame belongs to a plugin when its module does (folder and package plugins) or when
    its code object is one of a plugin's registered functions (plugins passed in code live
    in the embedding program's modules).
    """
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        pid = resolve(module) if isinstance(module, str) else None
        if pid is None and resolve_code is not None:
            pid = resolve_code(frame.f_code)
        if pid is not None:
            return pid, frame.f_code.co_name
        frame = frame.f_back
    return None


class Watchdog:
    """Start with `start(loop)`; `reports` keeps what was seen; `on_report` is called too."""

    def __init__(
        self,
        threshold_s: float,
        on_report: Callable[[BlockReport], None],
        resolve_module: Callable[[str], str | None],
        resolve_code: CodeOwner | None = None,
    ) -> None:
        self.threshold_s = threshold_s
        self.reports: list[BlockReport] = []
        self._on_report = on_report
        self._resolve = resolve_module
        self._resolve_code = resolve_code
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id = 0
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread_id = threading.get_ident()
        self._beat = time.monotonic()
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="tether-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _tick(self) -> None:
        self._beat = time.monotonic()
        assert self._loop is not None
        self._handle = self._loop.call_later(self.threshold_s / 4, self._tick)

    def _watch(self) -> None:
        poll = self.threshold_s / 4
        while not self._stop.wait(poll):
            late = time.monotonic() - self._beat
            if late < self.threshold_s:
                continue
            frame = sys._current_frames().get(self._loop_thread_id)
            culprit = plugin_of_frame(frame, self._resolve, self._resolve_code)
            del frame
            started = self._beat
            # Wait for the loop to come back, then report the whole duration once.
            while not self._stop.wait(poll) and self._beat == started:
                if culprit is None:
                    frame = sys._current_frames().get(self._loop_thread_id)
                    culprit = plugin_of_frame(frame, self._resolve, self._resolve_code)
                    del frame
            if culprit is None:
                continue
            report = BlockReport(culprit[0], culprit[1], time.monotonic() - started)
            self.reports.append(report)
            log.warning("%s", report)
            try:
                self._on_report(report)
            except Exception:  # a reporting failure must not kill the watchdog
                log.exception("watchdog report handler failed")
