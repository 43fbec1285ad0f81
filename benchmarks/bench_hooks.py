"""Hook chains of 1, 10 and 100 plugins: Tether against a plain loop and against pluggy.

Every variant calls the SAME function objects (one distinct function per plugin, all with
the same body), so the only difference is the machinery around them:

- Tether: a real `Host(Policy(), base_dir=tmp, plugins=[...])` with N code-passed plugins,
  each registering one hook; measured as `await host.hooks.transform_system_prompt(p)`.
- plain loop: `for f in fns: x = f(x)` inside one `async def`, awaited per call (the least
  any async host could do; it has no error isolation and no type check).
- pluggy: a `PluginManager` with N registered plugin objects, measured as a synchronous
  `pm.hook.transform(prompt=p)`. pluggy collects results instead of threading a value, so
  it does slightly less work. Two registrations are shown: plugin objects whose hookimpl
  method calls the function (the issue's baseline; one extra Python frame per hook), and the
  function itself registered as the hookimpl (no extra frame: the stricter baseline).

The hook body: `return prompt if "x" in prompt else prompt` (a substring test and a
return; the same in every variant). before_tool_call uses a guard that looks the tool up
in an empty block list and returns None (pass-through).

Run: `python benchmarks/bench_hooks.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
import time
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from _timing import Settings, Timing, Variant, compare, fmt_us, ratio, table
from tether import Block, Host, Plugin, Policy, ToolCall
from tether.contract.policy import HostSettings

SIZES = (1, 10, 100)
AGAINST: Any = None
"""`--against FILE`: another hooks.py (e.g. an older revision), timed on the same plans."""
PROMPT = "You are a helpful assistant. Answer briefly."
CALL = ToolCall("plugin_files_read", {"path": "README.md"}, "call-1")
BLOCKED: frozenset[str] = frozenset()
TARGET_VS_PLAIN = 1.3
TARGET_VS_PLUGGY = 5.0

hookspec = pluggy.HookspecMarker("bench")
hookimpl = pluggy.HookimplMarker("bench")


class Spec:
    @hookspec
    def transform(self, prompt: str) -> str:
        """Rewrite the prompt."""

    @hookspec
    def before_tool_call(self, call: ToolCall) -> Any:
        """Inspect a tool call."""


def quiet_policy() -> Policy:
    """Default policy, but a watchdog threshold above any benchmark batch: a batch never
    yields to the event loop for its ~0.2 s (longer in wall time on a loaded machine), and
    a report about it would only add noise. The hot path is the same either way."""
    return Policy(host=HostSettings(watchdog_ms=5000))


# The hook functions. A factory per kind, so each plugin gets its own function object
# (as separate plugins would), with identical code.


def make_sync_hook() -> Callable[[str], str]:
    def transform(prompt: str) -> str:
        return prompt if "x" in prompt else prompt  # noqa: RUF034 - the same small work everywhere

    return transform


def make_async_hook() -> Callable[[str], Awaitable[str]]:
    async def transform(prompt: str) -> str:
        return prompt if "x" in prompt else prompt  # noqa: RUF034 - the same small work everywhere

    return transform


def make_guard() -> Callable[[ToolCall], Block | None]:
    def before_tool_call(call: ToolCall) -> Block | None:
        if call.name in BLOCKED:
            return Block(f"{call.name} is blocked")
        return None

    return before_tool_call


# Baselines.


def plain_chain(fns: tuple[Callable[[str], str], ...]) -> Callable[[str], Awaitable[str]]:
    async def chain(x: str) -> str:
        for f in fns:
            x = f(x)
        return x

    return chain


def plain_async_chain(
    fns: tuple[Callable[[str], Awaitable[str]], ...],
) -> Callable[[str], Awaitable[str]]:
    async def chain(x: str) -> str:
        for f in fns:
            x = await f(x)
        return x

    return chain


def plain_guard_chain(
    fns: tuple[Callable[[ToolCall], Block | None], ...],
) -> Callable[[ToolCall], Awaitable[ToolCall | Block]]:
    """None = unchanged, the least a chain with that convention can do."""

    async def chain(call: ToolCall) -> ToolCall | Block:
        for f in fns:
            r = f(call)
            if r is not None:
                return r
        return call

    return chain


class _Transform:
    def __init__(self, fn: Callable[[str], str]) -> None:
        self._fn = fn

    @hookimpl
    def transform(self, prompt: str) -> str:
        return self._fn(prompt)


class _Guard:
    def __init__(self, fn: Callable[[ToolCall], Block | None]) -> None:
        self._fn = fn

    @hookimpl
    def before_tool_call(self, call: ToolCall) -> Block | None:
        return self._fn(call)


def pluggy_manager(objects: list[object]) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(Spec)
    for i, obj in enumerate(objects):
        pm.register(obj, name=f"p{i}")
    return pm


def direct(hook: str, fn: Callable[..., Any]) -> object:
    """The function itself as the hookimpl: a namespace whose attribute is the marked fn."""
    return types.SimpleNamespace(**{hook: hookimpl(fn)})


# The benchmark.


@dataclass(slots=True)
class Row:
    size: int
    t: dict[str, Timing] = field(default_factory=dict)

    def us(self, key: str) -> float:
        return self.t[key].best_us


@dataclass(slots=True)
class HooksReport:
    sync: list[Row]
    async_: list[Row]
    guard: list[Row]
    markdown: str = ""


def _plugins(n: int, hook: str, fns: list[Callable[..., Any]], cap: str) -> list[Plugin]:
    plugins = []
    for i, fn in enumerate(fns):
        p = Plugin(id=f"p{i}", name=f"Plugin {i}", capabilities=[cap])
        p.hook(hook)(fn)  # type: ignore[arg-type]
        plugins.append(p)
    assert len(plugins) == n
    return plugins


async def _host(tmp: str, plugins: list[Plugin], hook: str) -> Host:
    host = Host(quiet_policy(), base_dir=tmp, plugins=plugins)
    await host.start()
    bad = [p for p in host.plugins() if p["state"] != "active"]
    assert not bad, bad
    assert len(host.hooks.plans[hook].fns) == len(plugins)
    return host


async def measure(settings: Settings) -> HooksReport:
    report = HooksReport([], [], [])
    for n in SIZES:
        sync_fns = [make_sync_hook() for _ in range(n)]
        async_fns = [make_async_hook() for _ in range(n)]
        guards = [make_guard() for _ in range(n)]
        with tempfile.TemporaryDirectory() as tmp:
            h_sync = await _host(
                f"{tmp}/sync",
                _plugins(n, "transform_system_prompt", sync_fns, "hooks.model"),
                "transform_system_prompt",
            )
            h_async = await _host(
                f"{tmp}/async",
                _plugins(n, "transform_system_prompt", async_fns, "hooks.model"),
                "transform_system_prompt",
            )
            h_guard = await _host(
                f"{tmp}/guard",
                _plugins(n, "before_tool_call", guards, "hooks.tools"),
                "before_tool_call",
            )
            try:
                report.sync.append(await _sync_row(n, h_sync, sync_fns, settings))
                report.async_.append(await _async_row(n, h_async, async_fns, settings))
                report.guard.append(await _guard_row(n, h_guard, guards, settings))
            finally:
                for h in (h_sync, h_async, h_guard):
                    await h.stop()
    report.markdown = render(report, settings)
    return report


async def _sync_row(n: int, host: Host, fns: list[Any], settings: Settings) -> Row:
    tether = host.hooks.transform_system_prompt
    plain = plain_chain(tuple(fns))
    pm = pluggy_manager([_Transform(f) for f in fns])
    pm_direct = pluggy_manager([direct("transform", f) for f in fns])
    assert await tether(PROMPT) == await plain(PROMPT) == PROMPT
    assert (
        pm.hook.transform(prompt=PROMPT) == pm_direct.hook.transform(prompt=PROMPT) == [PROMPT] * n
    )
    env = {
        "tether": tether,
        "plain": plain,
        "hc": pm.hook.transform,
        "hcd": pm_direct.hook.transform,
        "p": PROMPT,
    }
    variants = [
        Variant("tether", "await tether(p)", env, is_async=True),
        Variant("plain", "await plain(p)", env, is_async=True),
        Variant("pluggy", "hc(prompt=p)", env),
        Variant("pluggy_fn", "hcd(prompt=p)", env),
    ]
    if AGAINST is not None:
        other = AGAINST.Hooks(lambda *_: None)
        other.plans = host.hooks.plans
        env["other"] = other.transform_system_prompt
        assert await other.transform_system_prompt(PROMPT) == await tether(PROMPT)
        variants.append(Variant("other", "await other(p)", env, is_async=True))
    return Row(n, await compare(variants, settings))


async def _async_row(n: int, host: Host, fns: list[Any], settings: Settings) -> Row:
    tether = host.hooks.transform_system_prompt
    plain = plain_async_chain(tuple(fns))
    assert await tether(PROMPT) == await plain(PROMPT) == PROMPT
    assert host.hooks.plans["transform_system_prompt"].any_async
    env = {"tether": tether, "plain": plain, "p": PROMPT}
    variants = [
        Variant("tether", "await tether(p)", env, is_async=True),
        Variant("plain", "await plain(p)", env, is_async=True),
    ]
    if AGAINST is not None:
        other = AGAINST.Hooks(lambda *_: None)
        other.plans = host.hooks.plans
        env["other"] = other.transform_system_prompt
        assert await other.transform_system_prompt(PROMPT) == await tether(PROMPT)
        variants.append(Variant("other", "await other(p)", env, is_async=True))
    return Row(n, await compare(variants, settings))


async def _guard_row(n: int, host: Host, fns: list[Any], settings: Settings) -> Row:
    tether = host.hooks.before_tool_call
    plain = plain_guard_chain(tuple(fns))
    pm = pluggy_manager([_Guard(f) for f in fns])
    pm_direct = pluggy_manager([direct("before_tool_call", f) for f in fns])
    assert await tether(CALL) is CALL and await plain(CALL) is CALL
    assert pm.hook.before_tool_call(call=CALL) == pm_direct.hook.before_tool_call(call=CALL) == []
    env = {
        "tether": tether,
        "plain": plain,
        "hc": pm.hook.before_tool_call,
        "hcd": pm_direct.hook.before_tool_call,
        "c": CALL,
    }
    variants = [
        Variant("tether", "await tether(c)", env, is_async=True),
        Variant("plain", "await plain(c)", env, is_async=True),
        Variant("pluggy", "hc(call=c)", env),
        Variant("pluggy_fn", "hcd(call=c)", env),
    ]
    if AGAINST is not None:
        other = AGAINST.Hooks(lambda *_: None)
        other.plans = host.hooks.plans
        env["other"] = other.before_tool_call
        assert await other.before_tool_call(CALL) == await tether(CALL)
        variants.append(Variant("other", "await other(c)", env, is_async=True))
    return Row(n, await compare(variants, settings))


def _with_pluggy(rows: list[Row]) -> str:
    return table(
        [
            "plugins",
            "Tether",
            "plain loop",
            "Tether / plain",
            "pluggy (method)",
            "pluggy (method) / Tether",
            "pluggy (fn)",
            "pluggy (fn) / Tether",
        ],
        [
            [
                str(r.size),
                fmt_us(r.us("tether")),
                fmt_us(r.us("plain")),
                ratio(r.us("tether"), r.us("plain")),
                fmt_us(r.us("pluggy")),
                ratio(r.us("pluggy"), r.us("tether")),
                fmt_us(r.us("pluggy_fn")),
                ratio(r.us("pluggy_fn"), r.us("tether")),
            ]
            for r in rows
        ],
    )


def _medians(rows: list[Row]) -> str:
    parts = []
    for r in rows:
        inner = ", ".join(f"{k} {fmt_us(t.median_us)}" for k, t in r.t.items())
        parts.append(f"{r.size}: {inner}")
    return "Medians of the repeats — " + "; ".join(parts) + "."


def _verdicts(report: HooksReport, judge: bool) -> list[str]:
    def verdict(ok: bool) -> str:
        return ("met" if ok else "MISSED") if judge else "not judged (--quick)"

    out = []
    for kind, rows in (("sync", report.sync), ("async", report.async_)):
        for r in rows:
            if r.size < 10:
                continue
            x = r.us("tether") / r.us("plain")
            out.append(
                f"- {kind}, {r.size} plugins: Tether / plain loop = {x:.2f}x "
                f"(target ≤ {TARGET_VS_PLAIN}x): {verdict(x <= TARGET_VS_PLAIN)}"
            )
    for r in report.sync:
        if r.size != 10:
            continue
        for key, name in (
            ("pluggy", "pluggy (method), the issue's baseline"),
            ("pluggy_fn", "pluggy (fn), the stricter one"),
        ):
            x = r.us(key) / r.us("tether")
            out.append(
                f"- sync, 10 plugins: {name}: pluggy / Tether = {x:.2f}x "
                f"(target ≥ {TARGET_VS_PLUGGY}x): {verdict(x >= TARGET_VS_PLUGGY)}"
            )
    return out


def render(report: HooksReport, settings: Settings) -> str:
    return "\n\n".join(
        [
            "## Hook chains",
            f"Per-call minimum over {settings.repeats} interleaved repeats "
            f"(each batch about {settings.target_s:g} s of `{settings.timer_name}`). Tether and "
            "the plain loop are awaited coroutines; pluggy is a synchronous call. "
            "`a / b` columns are ratios of the minimums.",
            "### transform_system_prompt, sync hooks",
            _with_pluggy(report.sync),
            _medians(report.sync),
            "### transform_system_prompt, async hooks (pluggy has no async hooks)",
            table(
                ["plugins", "Tether", "plain loop", "Tether / plain"],
                [
                    [
                        str(r.size),
                        fmt_us(r.us("tether")),
                        fmt_us(r.us("plain")),
                        ratio(r.us("tether"), r.us("plain")),
                    ]
                    for r in report.async_
                ],
            ),
            _medians(report.async_),
            "### before_tool_call, pass-through hooks returning None",
            _with_pluggy(report.guard),
            _medians(report.guard),
            "### Targets",
            "\n".join(_verdicts(report, judge=not settings.quick)),
            *_against(report),
        ]
    )


def _against(report: HooksReport) -> list[str]:
    groups = (("sync", report.sync), ("async", report.async_), ("before_tool_call", report.guard))
    rows = [
        [
            kind,
            str(r.size),
            fmt_us(r.us("tether")),
            fmt_us(r.us("other")),
            ratio(r.us("tether"), r.us("plain")),
            ratio(r.us("other"), r.us("plain")),
            ratio(r.us("other"), r.us("tether")),
        ]
        for kind, data in groups
        for r in data
        if "other" in r.t
    ]
    if not rows:
        return []
    head = ["chain", "plugins", "this", "--against", "this / plain", "against / plain"]
    return [
        f"### Against `{getattr(AGAINST, '__file__', '?')}` (same plans, same functions)",
        table([*head, "against / this"], rows),
    ]


def load_module(path: str) -> Any:
    """Import a hooks.py from a file, e.g. `git show REV:src/tether/runtime/hooks.py`."""
    spec = importlib.util.spec_from_file_location("bench_hooks_against", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--against {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def run(settings: Settings) -> HooksReport:
    """CPU-bound and single-threaded: timed with the thread's CPU clock (see _timing)."""
    return asyncio.run(measure(settings.with_timer(time.thread_time)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny loops (smoke test)")
    parser.add_argument(
        "--against", metavar="FILE", help="also time another hooks.py on the same plans"
    )
    args = parser.parse_args(argv)
    if args.against:
        global AGAINST
        AGAINST = load_module(args.against)
    print(run(Settings.for_mode(args.quick)).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
