"""The subprocess tier, host side: one worker process per plugin, a proxy `Plugin` whose
callables are RPCs into it, host services for the worker, and restarts with back-off.

The worker runs `python -m tether.worker` in its own session (process group), with a
scrubbed environment, rlimits on address space, CPU time and open files, and — where the
kernel allows — its own empty network namespace. It talks to the host over a dedicated
socket (`pass_fds`), plus a second one for the host's synchronous calls (config
validation); its stdout and stderr go to the host log under the plugin's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from tether.authoring import Plugin
from tether.contract.errors import RefusalReason
from tether.contract.policy import Resolution
from tether.runtime.discovery import Candidate
from tether.runtime.inprocess import PluginImportError
from tether.runtime.lifecycle import State
from tether.runtime.subprocess_proxy import build_proxy, remote_error
from tether.runtime.subprocess_spawn import confinement_labels, spawn_worker
from tether.worker import protocol as p

if TYPE_CHECKING:
    from tether.runtime.host import Host

log = logging.getLogger("tether.subprocess")

START_TIMEOUT_S = 20.0
CANCEL_GRACE_S = 0.5
MAX_CRASHES, CRASH_WINDOW_S = 5, 60.0


class WorkerUnavailableError(Exception):
    """The plugin's worker is not running (crashed, restarting, or given up on)."""


class Supervisor:
    """Owns one plugin's worker: spawns, talks to, restarts and finally stops it."""

    def __init__(self, cand: Candidate, res: Resolution, host: Host) -> None:
        assert cand.id is not None and cand.manifest is not None
        self.plugin_id = cand.id
        self.cand, self.res, self.host = cand, res, host
        self.loop = asyncio.get_running_loop()
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: p.Channel | None = None
        self.sync: p.SyncClient | None = None
        self.config_request: list[Any] | None = None  # replayed into a restarted worker
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 0
        self.generation = 0
        self.crashes: deque[float] = deque()
        self.failed: str | None = None
        self.closing = False
        self.loaded = False  # on_load ran: a restarted worker runs it again
        self.ready = asyncio.Event()
        self.hello: dict[str, Any] = {}
        self.confinement: list[str] = []
        self._restart: asyncio.Task[None] | None = None
        self._hello: asyncio.Future[Any] | None = None
        self.log = logging.getLogger(f"tether.plugin.{self.plugin_id}")

    # Spawning -------------------------------------------------------------------------

    async def spawn(self) -> None:
        """Start a worker and wait for its declarations; raises PluginImportError."""
        entry = self.host.config.policy.plugins.get(self.plugin_id)
        parent, child = socket.socketpair()
        sync_parent, sync_child = socket.socketpair()
        sync_fd = sync_child.fileno()  # the same number in the worker (pass_fds)
        try:
            self.proc, wanted = spawn_worker(self.cand, self.res, entry, child.fileno(), sync_fd)
        except OSError as exc:
            parent.close()
            sync_parent.close()
            raise PluginImportError(f"cannot start the worker: {exc}") from exc
        finally:
            child.close()
            sync_child.close()
        self.generation += 1
        gen = self.generation
        self._hello = self.loop.create_future()
        self.channel = p.Channel(parent, self._message, lambda why: self._lost(gen, why))
        self.sync = p.SyncClient(sync_parent)
        self._capture(self.proc)
        spec = _spec(self.cand, self.res, entry)
        spec.update(
            sync_fd=sync_fd,
            max_result_bytes=self.host.config.policy.host.max_result_bytes,
            config_request=self.config_request,
        )
        self.channel.send([p.CALL, 0, "init", spec])
        try:
            kind, value = await asyncio.wait_for(self._hello, START_TIMEOUT_S)
        except TimeoutError:
            self.kill()
            raise PluginImportError(
                f"the worker did not start within {START_TIMEOUT_S:g}s"
            ) from None
        if kind == p.FATAL:
            self.kill()
            raise PluginImportError(f"importing the plugin in its worker failed: {value}")
        self.hello = value
        self.confinement = confinement_labels(value.get("confinement", {}), wanted)
        self.ready.set()

    def _capture(self, proc: subprocess.Popen[bytes]) -> None:
        for stream, level in ((proc.stdout, logging.INFO), (proc.stderr, logging.WARNING)):
            if stream is None:
                continue
            os.set_blocking(stream.fileno(), False)
            self.loop.add_reader(stream.fileno(), self._drain, stream, level)

    def _drain(self, stream: Any, level: int) -> None:
        try:
            data = os.read(stream.fileno(), 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(stream.fileno())
            stream.close()
            return
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                log.log(level, "plugin %s: %s", self.plugin_id, line[:2000])

    # Messages from the worker ---------------------------------------------------------

    def _message(self, msg: list[Any]) -> None:
        kind = msg[0]
        if kind == p.RESULT:
            fut = self.pending.pop(msg[1], None)
            if not msg[2] and msg[3][0] == "__stuck__":
                self._stuck()
            elif fut is None or fut.done():
                return
            elif msg[2]:
                fut.set_result(msg[3])
            else:
                fut.set_exception(remote_error(msg[3]))
        elif kind == p.SERVICE:
            self.loop.create_task(self._serve(msg[1], msg[2], msg[3], msg[4]))
        elif kind == p.LOG:
            self.log.log(int(msg[1]), "%s", str(msg[2])[:4000])
        elif kind in (p.HELLO, p.FATAL) and self._hello is not None and not self._hello.done():
            self._hello.set_result((kind, msg[1]))

    async def _serve(self, rid: int, method: str, args: Any, kwargs: Any) -> None:
        from tether.runtime.subprocess_proxy import serve

        rec = self.host.records.get(self.plugin_id)
        ctx = rec.context if rec is not None else None
        try:
            if ctx is None:
                raise WorkerUnavailableError("the plugin is not active")
            reply = [p.REPLY, rid, True, await serve(ctx, method, args, kwargs)]
        except Exception as exc:
            reply = [p.REPLY, rid, False, [type(exc).__name__, str(exc)]]
        if rid and self.channel is not None:
            try:
                self.channel.send(reply)
            except (TypeError, ValueError, OverflowError) as exc:  # too large, not encodable
                self.channel.send([p.REPLY, rid, False, [type(exc).__name__, str(exc)]])

    # Calls ----------------------------------------------------------------------------

    async def call(self, target: str, args: Any, timeout: float | None = None) -> Any:
        """Run `target` in the worker; raises the worker's error, or WorkerUnavailableError."""
        if self.channel is None or self.channel.closed:
            if self.failed is not None:
                raise WorkerUnavailableError(f"plugin {self.plugin_id!r}: {self.failed}")
            try:
                await asyncio.wait_for(self.ready.wait(), timeout or START_TIMEOUT_S)
            except TimeoutError:
                raise WorkerUnavailableError(
                    f"plugin {self.plugin_id!r}: its worker is restarting"
                ) from None
            if self.channel is None:
                raise WorkerUnavailableError(f"plugin {self.plugin_id!r}: {self.failed}")
        self.next_id += 1
        cid = self.next_id
        fut = self.loop.create_future()
        self.channel.send([p.CALL, cid, target, args])  # raises when the args are too large
        self.pending[cid] = fut
        try:
            if timeout is None:
                return await fut
            return await asyncio.wait_for(fut, timeout)
        except (asyncio.CancelledError, TimeoutError):
            self._cancel(cid)
            raise

    def call_sync(self, target: str, args: Any) -> Any:
        """Run `target` in the worker's sync thread and wait without the event loop (the
        host's config validation is synchronous), bounded by the plugin's timeout; a worker
        that does not answer in time is restarted."""
        sync, timeout, gen = self.sync, self.res.timeout_ms / 1000, self.generation
        if sync is None or sync.closed or self.channel is None or self.channel.closed:
            why = self.failed or "its worker is not running (restarting)"
            raise WorkerUnavailableError(f"plugin {self.plugin_id!r}: {why}")
        try:
            return sync.call(target, p.to_wire(args), timeout)
        except p.RemoteFailure as exc:
            raise remote_error(exc.value) from None
        except TimeoutError:
            self._kill_from_any_thread(gen)
            raise WorkerUnavailableError(
                f"plugin {self.plugin_id!r}: its worker did not answer within {timeout:g}s; "
                "it is being restarted"
            ) from None
        except (OSError, p.ProtocolError) as exc:
            self._kill_from_any_thread(gen)
            raise WorkerUnavailableError(f"plugin {self.plugin_id!r}: its worker: {exc}") from None

    def _kill_from_any_thread(self, gen: int) -> None:
        """Kill worker generation `gen` (a later, restarted worker is left alone)."""

        def kill() -> None:
            if gen == self.generation:
                self.kill()

        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self.loop:
            kill()
        else:
            self.loop.call_soon_threadsafe(kill)

    def _cancel(self, cid: int) -> None:
        """Ask the worker to cancel; kill it if the call is not over within the grace."""
        if cid not in self.pending or self.channel is None:
            return
        self.channel.send([p.CANCEL, cid])
        gen = self.generation
        self.loop.call_later(CANCEL_GRACE_S, self._overdue, cid, gen)

    def _overdue(self, cid: int, gen: int) -> None:
        fut = self.pending.pop(cid, None)
        if fut is not None and gen == self.generation:
            if not fut.done():
                fut.cancel()
            self.log.warning("worker did not stop a cancelled call: killing it")
            self.kill()

    def _stuck(self) -> None:
        self.log.warning("a cancelled sync handler cannot be stopped: restarting the worker")
        self.kill()

    # Crashes and restarts -------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL the worker's whole process group; the channel's close starts recovery."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self.channel is not None:
            self.channel.close("killed")

    def _lost(self, gen: int, why: str) -> None:
        if gen != self.generation:
            return
        self.ready.clear()
        if self.sync is not None:
            self.sync.close()
        proc = self.proc
        code = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(0.1)  # it closed its channel: it is exiting
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it spawned goes with it
            if code is None:
                self.loop.run_in_executor(None, proc.wait)
        # A protocol error is the cause even when the worker then exits on the closed channel.
        broke = why.startswith("protocol error")
        detail = (
            f"exited with code {code}" if code is not None and not broke else f"stopped ({why})"
        )
        give_up = None
        if not self.closing:
            now = time.monotonic()
            self.crashes.append(now)
            while self.crashes and now - self.crashes[0] > CRASH_WINDOW_S:
                self.crashes.popleft()
            if len(self.crashes) >= MAX_CRASHES:
                give_up = f"its worker crashed {len(self.crashes)} times within a minute"
        message = f"plugin {self.plugin_id!r}: its worker {detail}"
        if give_up:
            message += f"; {give_up}, so the plugin is now in error"
            self._give_up(give_up)
        error = WorkerUnavailableError(message)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(error)
        self.pending.clear()
        if self._hello is not None and not self._hello.done():
            self._hello.set_result((p.FATAL, f"the worker {detail}"))
        if self.closing or give_up:
            return
        self.log.warning("worker %s; restarting", detail)
        delay = min(0.05 * 2 ** (len(self.crashes) - 1), 5.0)
        self._restart = self.loop.create_task(self._restart_after(delay))

    async def _restart_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.closing or self.failed:
            return
        try:
            await self.spawn()
            if self.loaded:
                for i in range(self.hello.get("lifecycle", {}).get("load", 0)):
                    timeout = self.host.config.policy.host.teardown_timeout_ms / 1000
                    await self.call(f"life:load:{i}", [], timeout)
        except Exception as exc:
            self.log.warning("restart failed: %s", exc)
            self.kill()
            self._lost(self.generation, f"restart failed: {exc}")

    def _give_up(self, reason: str) -> None:
        self.failed = reason
        self.ready.set()  # waiting calls wake up and see the failure
        rec = self.host.records.get(self.plugin_id)
        if rec is not None and rec.state is State.ACTIVE:
            self.host._withdraw(rec)
            self.host._fail(rec, RefusalReason.ACTIVATION_FAILED, reason)

    async def close(self) -> None:
        """Stop the worker for good (unload or host stop)."""
        self.closing = True
        if self._restart is not None:
            self._restart.cancel()
        proc = self.proc
        self.kill()
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, 5)


def _spec(cand: Candidate, res: Resolution, entry: Any) -> dict[str, Any]:
    assert cand.manifest is not None
    try:
        netns: str | None = os.readlink("/proc/self/ns/net")
    except OSError:
        netns = None
    return {
        "id": cand.id,
        "source": cand.source,
        "folder": str(cand.folder) if cand.folder else None,
        "entry": cand.manifest.entry,
        "module": cand.module,
        "granted": sorted(res.granted),
        "config": dict(entry.config) if entry else {},
        "host_netns": netns,
        "sys_path": list(sys.path),
    }


async def start(cand: Candidate, res: Resolution, host: Host) -> Plugin:
    """Start the plugin's worker and return its proxy `Plugin`."""
    if cand.source == "code" or (cand.folder is None and cand.module is None):
        raise PluginImportError(
            f"plugin {cand.id!r} was passed to Host in code, so it is an object in the "
            "host's memory that a worker process cannot import: it cannot run at the "
            "subprocess tier. Put it in a plugin folder (plugin.toml and plugin.py) or an "
            'installed package, or run it with tier = "inprocess"'
        )
    sup = Supervisor(cand, res, host)
    await sup.spawn()
    return build_proxy(sup, cand)


async def stop(plugin: Plugin | None) -> None:
    """Stop a proxy plugin's worker; nothing for anything else."""
    sup = getattr(plugin, "_tether_worker", None)
    if isinstance(sup, Supervisor):
        await sup.close()


def confinement_of(plugin: Plugin | None) -> list[str]:
    """The confinements active for a proxy plugin's worker ([] for other plugins)."""
    sup = getattr(plugin, "_tether_worker", None)
    return list(sup.confinement) if isinstance(sup, Supervisor) else []
