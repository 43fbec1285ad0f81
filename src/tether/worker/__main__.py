"""`python -m tether.worker --fd N`: one plugin's worker process at the subprocess tier.

It reads its plugin spec from the channel (fd N, a socket the host passed), imports the
plugin, reports its declarations and then answers calls until the channel closes. A thread
answers the host's synchronous calls (config validation) on a second socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import sys
import threading
import types
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from tether.authoring import Plugin
from tether.contract.types import Caller, NotificationResult, RunEndReason, ToolResult
from tether.runtime.dispatch import normalise_result
from tether.worker import protocol as p
from tether.worker.context import WorkerContext

Target = tuple[Callable[..., Any], str]  # (function, kind)


class _Forward(logging.Handler):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        msg = [p.LOG, record.levelno, record.getMessage()]
        self.worker.loop.call_soon_threadsafe(self.worker.channel.send, msg)


class Worker:
    """The worker's state: the plugin, its targets, calls in flight and pending RPCs."""

    def __init__(self, sock: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.channel = p.Channel(sock, self._message, self._closed)
        self.done = self.loop.create_future()
        self.targets: dict[str, Target] = {}
        self.tools: dict[str, Any] = {}
        self.sync_targets: set[str] = set()
        self.sync_tools: set[str] = set()
        self.calls: dict[int, tuple[asyncio.Task[Any], bool]] = {}
        self.rpcs: dict[int, asyncio.Future[Any]] = {}
        self.next_rpc = 0
        self.ctx: WorkerContext | None = None
        self.plugin: Plugin | None = None
        self.max_result = 1 << 20

    def _closed(self, why: str) -> None:
        if not self.done.done():
            self.done.set_result(why)

    def _message(self, msg: list[Any]) -> None:
        kind = msg[0]
        if kind == p.CALL:
            cid, target, args = msg[1], msg[2], msg[3]
            if cid == 0:
                self._init(args)
                return
            # Run the call eagerly: most finish without waiting, and need no task at all.
            coro = self._run(cid, target, args)
            try:
                first = coro.send(None)
            except StopIteration:
                return
            task = self.loop.create_task(_resume(coro, first))
            self.calls[cid] = (task, target in self.sync_targets)
        elif kind == p.CANCEL:
            entry = self.calls.get(msg[1])
            if entry is not None:
                task, in_thread = entry
                task.cancel()
                if in_thread:  # a thread cannot be stopped: ask the host for a restart
                    self.channel.send([p.RESULT, msg[1], False, ["__stuck__", "thread"]])
        elif kind == p.REPLY:
            fut = self.rpcs.pop(msg[1], None)
            if fut is not None and not fut.done():
                if msg[2]:
                    fut.set_result(msg[3])
                else:
                    fut.set_exception(_remote(msg[3]))

    # Host services --------------------------------------------------------------------

    async def rpc(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        self.next_rpc += 1
        rid = self.next_rpc
        fut = self.loop.create_future()
        self.rpcs[rid] = fut
        self.channel.send([p.SERVICE, rid, method, p.to_wire(args), p.to_wire(kwargs)])
        return p.from_wire(await fut)

    def notify(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        msg = [p.SERVICE, 0, method, p.to_wire(args), p.to_wire(kwargs)]
        if threading.get_ident() == self.thread:  # at once: ahead of the call's result
            self.channel.send(msg)
        else:
            self.loop.call_soon_threadsafe(self.channel.send, msg)

    # Start-up -------------------------------------------------------------------------

    def _init(self, spec: dict[str, Any]) -> None:
        self.max_result = int(spec.get("max_result_bytes", self.max_result))
        try:
            plugin = self.plugin = _import(spec)
            self.ctx = WorkerContext(
                spec["id"], frozenset(spec["granted"]), spec["config"], self.rpc, self.notify
            )
            plugin._context = self.ctx  # type: ignore[assignment]
            hello = self._declare(plugin)
            if spec.get("config_request") is not None:  # a restart: the config as validated
                self._validate_config(*spec["config_request"])
            if spec.get("sync_fd") is not None:
                sync = socket.socket(fileno=int(spec["sync_fd"]))
                threading.Thread(
                    target=p.serve_sync, args=(sync, self._sync), name="tether-sync", daemon=True
                ).start()
        except BaseException as exc:  # the plugin's failure, reported, never our exit
            self.channel.send([p.FATAL, f"{type(exc).__name__}: {exc}"])
            return
        hello["confinement"] = _confinement(spec.get("host_netns"))
        self.channel.send([p.HELLO, hello])

    # Synchronous calls: config validation -------------------------------------------

    def _sync(self, target: str, args: Any) -> Any:
        """Answer one synchronous call from the host (runs in the sync thread)."""
        if target == "config:validate":
            return self._validate_config(*args)
        kind, _, index = target.rpartition(":")
        if kind == "key:validate" and self.plugin is not None:
            fn = self.plugin.declared.config_keys[int(index)].validate
            if fn is not None:
                ok = fn(*args)
                return ok if ok is None or isinstance(ok, bool) else True
        raise LookupError(f"the worker has no {target!r}")

    def _validate_config(self, table: dict[str, Any], environ: dict[str, str]) -> Any:
        """Build the config model exactly as in-process; `ctx.config` becomes the instance.
        Returns the model's name and its JSON dump (secrets masked) for the host's copy."""
        from tether.runtime.config_model import build_config

        assert self.plugin is not None and self.ctx is not None
        model = self.plugin.declared.config_model
        if model is None:
            raise LookupError("the plugin declares no config model")
        instance = build_config(self.ctx.plugin_id, model, table, environ)
        self.ctx.config = instance
        return [model.__name__, instance.model_dump(mode="json")]

    def _declare(self, plugin: Plugin) -> dict[str, Any]:
        from tether.runtime.context import Context
        from tether.runtime.schema import derive_tool_signature

        d = plugin.declared
        tools = []
        for t in d.tools:
            local = t.name or str(getattr(t.fn, "__name__", ""))
            sig = derive_tool_signature(
                t.fn, name=local, description=t.description, injectable=(Context, Caller)
            )
            desc = sig.description or ""
            schema = t.input_schema if t.input_schema is not None else sig.input_schema
            self.tools[local] = (sig, t.input_schema is None)
            self.targets[f"tool:{local}"] = (t.fn, "tool")
            tools.append([local, desc, schema, t.timeout_ms])
        for i, (hook, fn) in enumerate(d.hooks):
            self.targets[f"hook:{i}"] = (fn, "run-end" if hook == "after_run" else "hook")
        for i, (_, fn) in enumerate(d.events):
            self.targets[f"event:{i}"] = (fn, "event")
        for i, c in enumerate(d.commands):
            self.targets[f"command:{i}"] = (c.fn, "command")
        for i, pr in enumerate(d.prompts):
            if callable(pr):
                self.targets[f"prompt:{i}"] = (pr, "prompt")
        for i, j in enumerate(d.jobs):
            self.targets[f"job:{i}"] = (j.fn, "job")
        for name, fns in d.lifecycle.items():
            for i, fn in enumerate(fns):
                self.targets[f"life:{name}:{i}"] = (fn, "life")
        for i, (_, fn) in enumerate(d.channels):
            self.targets[f"channel:{i}"] = (fn, "channel")
        self.sync_targets = {t for t, (fn, _) in self.targets.items() if not _is_async(fn)}
        self.sync_tools = {t[5:] for t in self.sync_targets if t.startswith("tool:")}
        return {
            "tools": tools,
            "hooks": [n for n, _ in d.hooks],
            "events": [e for e, _ in d.events],
            "commands": [[c.name, c.description] for c in d.commands],
            "prompts": [None if callable(pr) else pr for pr in d.prompts],
            "skills": list(d.skills),
            "jobs": [[j.name, j.cron, j.interval, j.delay] for j in d.jobs],
            "lifecycle": {n: len(fns) for n, fns in d.lifecycle.items()},
            "migrations": [list(m) for m in d.migrations],
            "config_keys": [
                [k.key, k.description, k.default, k.validate is not None] for k in d.config_keys
            ],
            "channels": [kind for kind, _ in d.channels],
            "config_model": d.config_model.__name__ if d.config_model is not None else None,
        }

    # Calls ----------------------------------------------------------------------------

    async def _run(self, cid: int, target: str, args: Any) -> None:
        try:
            value = await self._invoke(target, args)
            reply = [p.RESULT, cid, True, value]
        except asyncio.CancelledError:
            reply = [p.RESULT, cid, False, ["CancelledError", "the call was cancelled"]]
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: this call's error only
            reply = [p.RESULT, cid, False, [type(exc).__name__, str(exc)]]
        finally:
            self.calls.pop(cid, None)
        try:
            self.channel.send(reply)
        except (TypeError, ValueError, OverflowError) as exc:  # not encodable
            self.channel.send([p.RESULT, cid, False, [type(exc).__name__, str(exc)]])

    async def _invoke(self, target: str, args: Any) -> Any:
        entry = self.targets.get(target)
        if entry is None:
            raise LookupError(f"the worker has no {target!r}")
        fn, kind = entry
        if kind == "tool":
            return await self._tool(target[5:], fn, args)
        if kind == "life" and target.startswith("life:load"):
            call_args: list[Any] = [self.ctx]
        else:
            call_args = p.from_wire(args)
        if kind == "run-end":  # the wire carries the reason's value; hand back the enum
            call_args = [RunEndReason(call_args[0])]
        value = await _call(fn, *call_args)
        if kind == "channel":
            return _notification(value)
        return p.to_wire(value)

    async def _tool(self, local: str, fn: Callable[..., Any], args: list[Any]) -> list[Any]:
        arguments, who = args
        caller = Caller(who[0], frozenset(who[1])) if who else Caller("host")
        sig, derived = self.tools[local]
        kwargs = sig.convert(arguments) if (derived and sig.convert) else dict(arguments)
        for pname, tp in sig.injected.items():
            kwargs[pname] = caller if issubclass(tp, Caller) else self.ctx
        if local in self.sync_tools:
            value = await asyncio.to_thread(fn, **kwargs)
        else:
            value = await fn(**kwargs)
        if type(value) is str and len(value) * 4 <= self.max_result:  # fits even as UTF-8
            return [value, False, None]
        # The host's limit, checked here: an oversize result never becomes a giant frame.
        r: ToolResult = normalise_result(value, self.max_result)
        return [r.content, r.is_error, r.data]


@types.coroutine
def _resume(coro: Any, first: Any) -> Generator[Any, Any, Any]:
    """Continue a coroutine already stepped once (what `yield from` does after its first
    step), so a task can take over a call that did not finish eagerly."""
    pending = first
    while True:
        try:
            value = yield pending
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(value)
            except StopIteration as stop:
                return stop.value


def _notification(value: Any) -> Any:
    """A channel handler's result for the wire; anything but a `NotificationResult` goes as
    its type name, so the host's bus refuses it with the same message as in-process."""
    if isinstance(value, NotificationResult):
        return p.to_wire(value)
    return {"__not_a_result__": type(value).__name__}


def _is_async(fn: Callable[..., Any]) -> bool:
    from tether.services.calls import is_async_callable

    return is_async_callable(fn)


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if _is_async(fn):
        return await fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


_NAMED: dict[str, type[Exception]] = {}


def _remote(value: list[Any]) -> BaseException:
    """The host's error as the plugin sees it: Tether's own error classes by name (so
    `except ConfigKeyError` works as in-process), else a RuntimeError subclass of that name,
    so messages read as in-process ("ValueError: ...")."""
    from tether.contract import errors
    from tether.services.config_keys import ConfigKeyError

    kind, message = str(value[0]), str(value[1])
    known = ConfigKeyError if kind == "ConfigKeyError" else getattr(errors, kind, None)
    if isinstance(known, type) and issubclass(known, errors.TetherError):
        exc = known.__new__(known)
        Exception.__init__(exc, message)  # their constructors take parts, not the message
        return exc
    cls = _NAMED.get(kind)
    if cls is None:
        cls = _NAMED.setdefault(
            kind, type(kind if kind.isidentifier() else "RemoteError", (RuntimeError,), {})
        )
    return cls(message)


def _import(spec: dict[str, Any]) -> Plugin:
    from tether.runtime import inprocess

    sys.path.extend(entry for entry in spec.get("sys_path", ()) if entry not in sys.path)
    if spec["source"] == "package":
        import importlib

        return inprocess._find_plugin(importlib.import_module(spec["module"]), spec["module"])
    return inprocess._import_folder(spec["id"], Path(spec["folder"]), spec["entry"])


def _confinement(host_netns: str | None) -> dict[str, Any]:
    """What this process can observe about its own confinement."""
    try:
        netns = os.readlink("/proc/self/ns/net")
    except OSError:
        netns = None
    limits = {
        name: resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))[0]
        for name in ("AS", "CPU", "NOFILE")
    }
    return {
        "own_group": os.getpgid(0) == os.getpid(),
        "netns": netns is not None and host_netns is not None and netns != host_netns,
        "rlimits": {k: v for k, v in limits.items() if v != resource.RLIM_INFINITY},
    }


async def _main(fd: int) -> None:
    import socket

    sock = socket.socket(fileno=fd)
    worker = Worker(sock)
    logging.getLogger("tether.plugin").addHandler(_Forward(worker))
    logging.getLogger("tether.plugin").setLevel(logging.INFO)
    await worker.done


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--fd":
        sys.exit("usage: python -m tether.worker --fd N (started by the Tether host)")
    try:
        asyncio.run(_main(int(sys.argv[2])))
    finally:
        os._exit(0)  # do not wait for a plugin's runaway threads
