"""Discovering, checking, importing and activating 100 folder plugins: `Host(path).start()`.

Each plugin folder holds a `plugin.toml` and a `plugin.py` with one `@plugin.tool` and one
hook; all are approved in a `tether.toml`. Every measurement runs in a fresh Python process
(so no module, cache or compiled validator survives from a previous run) on a fresh
temporary folder (so no `__pycache__` either) with fresh plugin ids. The child process
imports `tether` first (not timed), then times `Host(path)` and `await host.start()`.

Baseline: the same 100 `plugin.py` files imported with `importlib` alone (spec from file,
module from spec, exec), in a fresh process on a fresh folder, after importing `tether`.

"warm" rows run a second process on the same folder: bytecode caches exist (and, for the
host, the database too), as on a host restart.

The breakdown comes from separate runs that wrap the phases' functions with
`time.perf_counter` (inclusive times; nested phases are shown indented, with the rest of
their parent). Wall clock throughout: the work includes file and SQLite I/O.

Run: `python benchmarks/bench_activation.py [--quick] [--profile]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _timing import fmt_us, ratio, table

TARGET_S = 0.2
N_PLUGINS = 100
HERE = Path(__file__).resolve().parent

PLUGIN_TOML = """\
id = "{pid}"
name = "Plugin {pid}"
version = "1.0.0"
api_version = "1.0"
entry = "plugin.py"
description = "Benchmark plugin {i}."
capabilities = ["tools.register", "hooks.model"]
"""

PLUGIN_PY = '''\
from tether import Plugin

plugin = Plugin()


@plugin.tool
async def echo_{i}(text: str, times: int = {default}) -> str:
    """Repeat the text."""
    return " ".join([text] * times)


@plugin.transform_system_prompt
def house_style(prompt: str) -> str:
    return prompt + "\\nBe brief."
'''


def write_plugins(base: Path, tag: str, n: int, *, same_schema: bool = False) -> Path:
    """`base/plugins/<id>/...` for n plugins and `base/tether.toml` approving them all.

    Each tool has its own name and, unless `same_schema`, its own input schema (the
    default of `times` differs), as separate plugins' tools would: identical schemas share
    one compiled validator, which would hide the cost of compiling them."""
    plugins = base / "plugins"
    plugins.mkdir(parents=True)
    policy = ['[host]\nplugin_dirs = ["plugins"]\ndata_dir = ".tether"\nentry_points = false\n']
    for i in range(n):
        pid = f"{tag}p{i:03d}"
        folder = plugins / pid
        folder.mkdir()
        (folder / "plugin.toml").write_text(PLUGIN_TOML.format(pid=pid, i=i))
        default = 1 if same_schema else i + 1
        (folder / "plugin.py").write_text(PLUGIN_PY.format(i=i, default=default))
        policy.append(f'[plugins.{pid}]\ngrant = ["tools.register", "hooks.model"]\n')
    config = base / "tether.toml"
    config.write_text("\n".join(policy))
    return config


# Child processes ------------------------------------------------------------------------


class Phases:
    """Inclusive wall time per phase, by wrapping functions where they are looked up."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner: Any, attr: str, phase: str) -> None:
        fn = getattr(owner, attr, None)
        if fn is None:
            return  # the code moved on; the phase is reported as absent
        totals, calls = self.totals, self.calls
        totals.setdefault(phase, 0.0)
        calls.setdefault(phase, 0)
        perf = time.perf_counter

        if asyncio.iscoroutinefunction(fn):

            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = perf()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    totals[phase] += perf() - t0
                    calls[phase] += 1

            setattr(owner, attr, awrapper)
            return

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = perf()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[phase] += perf() - t0
                calls[phase] += 1

        setattr(owner, attr, wrapper)


def _instrument() -> Phases:
    from tether.runtime import context, discovery, host, inprocess, registry
    from tether.services import audit

    p = Phases()
    p.wrap(host.Host, "_candidates", "discovery")
    p.wrap(discovery, "_read_manifest", "discovery/manifest")
    p.wrap(discovery, "folder_digest", "discovery/digest")
    p.wrap(host.Host, "_load_all", "load")
    p.wrap(host.Host, "_resolve", "load/policy")
    p.wrap(host, "load_order", "load/order")
    p.wrap(host.Host, "_activate", "load/activate")
    p.wrap(inprocess, "import_plugin", "load/activate/import")
    p.wrap(host, "apply_declarations", "load/activate/declarations")
    p.wrap(context, "derive_tool_signature", "load/activate/declarations/schema")
    p.wrap(context, "compile_validator", "load/activate/declarations/validator")
    p.wrap(registry.Registry, "rebuild", "load/activate/hook plans")
    p.wrap(host, "run_lifecycle", "load/activate/lifecycle")
    p.wrap(audit.AuditLog, "record", "load/activate/audit")
    return p


def child_host(config: str, breakdown: bool) -> dict[str, Any]:
    import tether  # noqa: F401  (imported before timing, like the baseline)

    phases = _instrument() if breakdown else None
    from tether import Host

    async def go() -> dict[str, Any]:
        t0 = time.perf_counter()
        host = Host(config)
        t1 = time.perf_counter()
        await host.start()
        t2 = time.perf_counter()
        out: dict[str, Any] = {}
        if phases is not None:  # what start() did, before stop() adds to the totals
            out["phases"], out["calls"] = dict(phases.totals), dict(phases.calls)
        states = [p["state"] for p in host.plugins()]
        t3 = time.perf_counter()
        await host.stop()
        t4 = time.perf_counter()
        out.update(
            construct=t1 - t0,
            start=t2 - t1,
            total=t2 - t0,
            stop=t4 - t3,
            active=states.count("active"),
            plugins=len(states),
        )
        return out

    return asyncio.run(go())


def child_import(plugins_dir: str) -> dict[str, Any]:
    import importlib.util

    import tether  # noqa: F401

    files = sorted(Path(plugins_dir).glob("*/plugin.py"))
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        name = f"bench_baseline_{i}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    elapsed = time.perf_counter() - t0
    return {"import": elapsed, "modules": len(files)}


def child_profile(config: str) -> str:
    import cProfile
    import io
    import pstats

    import tether  # noqa: F401
    from tether import Host

    async def go() -> None:
        host = Host(config)
        await host.start()

    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(go())
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(25)
    return buf.getvalue()


def _spawn(*args: str) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("TETHER_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, str(HERE / "bench_activation.py"), "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# Parent -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ActivationReport:
    n: int
    repeats: int
    host_cold: list[dict[str, Any]] = field(default_factory=list)
    host_warm: list[dict[str, Any]] = field(default_factory=list)
    import_cold: list[float] = field(default_factory=list)
    import_warm: list[float] = field(default_factory=list)
    host_same_schema: list[dict[str, Any]] = field(default_factory=list)
    breakdowns: list[dict[str, Any]] = field(default_factory=list)
    markdown: str = ""


def measure(n: int, repeats: int) -> ActivationReport:
    report = ActivationReport(n, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            host_dir = Path(tmp) / f"host{r}"
            config = write_plugins(host_dir, f"h{r}", n)
            report.host_cold.append(_spawn("host", str(config)))
            report.host_warm.append(_spawn("host", str(config)))
            import_dir = Path(tmp) / f"import{r}"
            write_plugins(import_dir, f"i{r}", n)
            report.import_cold.append(_spawn("import", str(import_dir / "plugins"))["import"])
            report.import_warm.append(_spawn("import", str(import_dir / "plugins"))["import"])
            same_dir = Path(tmp) / f"same{r}"
            config = write_plugins(same_dir, f"s{r}", n, same_schema=True)
            report.host_same_schema.append(_spawn("host", str(config)))
            bd_dir = Path(tmp) / f"breakdown{r}"
            config = write_plugins(bd_dir, f"b{r}", n)
            report.breakdowns.append(_spawn("host", str(config), "--breakdown"))
    for run in report.host_cold + report.host_warm + report.host_same_schema + report.breakdowns:
        if run["active"] != n or run["plugins"] != n:
            raise RuntimeError(f"expected {n} active plugins, got {run}")
    report.markdown = render(report)
    return report


def _s(seconds: float) -> str:
    return fmt_us(seconds * 1e6)


def _breakdown_table(run: dict[str, Any]) -> str:
    phases: dict[str, float] = run["phases"]
    calls: dict[str, int] = run["calls"]
    rows = [["Host(path): read and check tether.toml", _s(run["construct"]), "1", ""]]
    start = run["start"]

    def children(parent: str) -> list[str]:
        depth = parent.count("/") + 1 if parent else 0
        return [
            k
            for k in phases
            if k.count("/") == depth and (not parent or k.startswith(parent + "/"))
        ]

    def emit(key: str, depth: int) -> None:
        label = ("  " * depth) + ("└ " if depth else "") + key.rsplit("/", 1)[-1]
        rows.append([label, _s(phases[key]), str(calls[key]), f"{phases[key] / start:.0%}"])
        kids = children(key)
        for kid in kids:
            emit(kid, depth + 1)
        if kids:
            rest = phases[key] - sum(phases[k] for k in kids)
            pad = "  " * (depth + 1) + "└ "
            rows.append([f"{pad}rest of {label.strip('└ ')}", _s(rest), "", f"{rest / start:.0%}"])

    rows.append(["host.start() total", _s(start), "1", "100%"])
    top = children("")
    for key in top:
        emit(key, 1)
    setup = start - sum(phases[k] for k in top)
    rows.append(
        ["  └ database, services, watchdog, startup event", _s(setup), "", f"{setup / start:.0%}"]
    )
    return table(["phase", "time", "calls", "of start()"], rows)


def render(report: ActivationReport) -> str:
    n = report.n
    cold = [r["total"] for r in report.host_cold]
    warm = [r["total"] for r in report.host_warm]
    best_cold, best_warm = min(cold), min(warm)
    ic, iw = min(report.import_cold), min(report.import_warm)
    fastest = min(report.breakdowns, key=lambda r: r["total"])
    verdict = "met" if best_cold < TARGET_S else "MISSED"
    stop = min(r["stop"] for r in report.host_cold)
    lines = [
        "## Activation",
        f"{n} folder plugins, each with one tool and one hook; {report.repeats} repeats, each "
        "in a fresh process on a fresh folder. Minimum (and median) wall time.",
        table(
            ["what", "min", "median", "per plugin", "vs importlib alone"],
            [
                [
                    "`Host(path)` + `start()`, cold (no bytecode cache)",
                    _s(best_cold),
                    _s(statistics.median(cold)),
                    _s(best_cold / n),
                    ratio(best_cold, ic),
                ],
                [
                    "`Host(path)` + `start()`, warm (second run, same folder)",
                    _s(best_warm),
                    _s(statistics.median(warm)),
                    _s(best_warm / n),
                    ratio(best_warm, iw),
                ],
                [
                    "`Host(path)` + `start()`, cold, every tool with the same schema",
                    _s(same := min(r["total"] for r in report.host_same_schema)),
                    _s(statistics.median(r["total"] for r in report.host_same_schema)),
                    _s(same / n),
                    ratio(same, ic),
                ],
                [
                    "importlib alone, cold",
                    _s(ic),
                    _s(statistics.median(report.import_cold)),
                    _s(ic / n),
                    "1.00x",
                ],
                [
                    "importlib alone, warm",
                    _s(iw),
                    _s(statistics.median(report.import_warm)),
                    _s(iw / n),
                    "1.00x",
                ],
                [
                    "`host.stop()` (not targeted; for reference)",
                    _s(stop),
                    _s(statistics.median(r["stop"] for r in report.host_cold)),
                    _s(stop / n),
                    "",
                ],
            ],
        ),
        f"Target: cold start of {n} plugins under {TARGET_S:g} s"
        + (f": {_s(best_cold)}, {verdict}." if n == N_PLUGINS else " (quick run: not judged)."),
        f"### Breakdown (fastest of {len(report.breakdowns)} instrumented cold runs)",
        _breakdown_table(fastest),
    ]
    return "\n\n".join(lines)


def run(quick: bool) -> ActivationReport:
    return measure(10 if quick else N_PLUGINS, 1 if quick else 7)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 plugins, one repeat")
    parser.add_argument("--profile", action="store_true", help="cProfile one cold start")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--breakdown", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, target = args.child
        out = child_import(target) if kind == "import" else child_host(target, args.breakdown)
        print(json.dumps(out))
        return 0
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            config = write_plugins(Path(tmp), "prof", N_PLUGINS)
            proc = subprocess.run(
                [sys.executable, "-c", _PROFILE_SNIPPET, str(HERE), str(config)],
                capture_output=True,
                text=True,
                check=True,
            )
            print(proc.stdout)
        return 0
    print(run(args.quick).markdown)
    return 0


_PROFILE_SNIPPET = """
import sys
sys.path.insert(0, sys.argv[1])
import bench_activation
print(bench_activation.child_profile(sys.argv[2]))
"""

if __name__ == "__main__":
    sys.exit(main())
