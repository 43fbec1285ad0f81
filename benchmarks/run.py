"""Run every benchmark and print a markdown report (docs/benchmarks.md explains them).

    python benchmarks/run.py            # full run: about three minutes on 2 shared cores
    python benchmarks/run.py --quick    # tiny loops, for a smoke test; figures meaningless
    python benchmarks/run.py --only hooks,dispatch

Each benchmark is also runnable on its own: `python benchmarks/bench_hooks.py` etc.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_activation
import bench_dispatch
import bench_hooks
from _timing import Settings, fmt_us, table

NAMES = ("hooks", "dispatch", "activation")


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    loadtxt = f"; load average {load[0]:.2f}" if load else ""
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs{loadtxt}"
    )


def _verdict(ok: bool, judge: bool) -> str:
    return ("met" if ok else "MISSED") if judge else "not judged"


def _hooks_summary(r: bench_hooks.HooksReport, judge: bool) -> list[list[str]]:
    rows = []
    for kind, data in (("sync", r.sync), ("async", r.async_), ("before_tool_call", r.guard)):
        for row in data:
            if row.size == 1:
                continue
            x = row.us("tether") / row.us("plain")
            targeted = kind != "before_tool_call"
            target = f"≤ {bench_hooks.TARGET_VS_PLAIN}x" if targeted else "-"
            ok = x <= bench_hooks.TARGET_VS_PLAIN
            verdict = _verdict(ok, judge) if targeted else ""
            rows.append(
                [
                    f"hooks: {kind}, {row.size} plugins, Tether / plain loop",
                    f"{fmt_us(row.us('tether'))} / {fmt_us(row.us('plain'))} = {x:.2f}x",
                    target,
                    verdict,
                ]
            )
    for row in r.sync:
        if row.size == 10:
            for key, name in (("pluggy", "method"), ("pluggy_fn", "fn")):
                x = row.us(key) / row.us("tether")
                ok = x >= bench_hooks.TARGET_VS_PLUGGY
                rows.append(
                    [
                        f"hooks: sync, 10 plugins, pluggy ({name}) / Tether",
                        f"{fmt_us(row.us(key))} / {fmt_us(row.us('tether'))} = {x:.2f}x",
                        f"≥ {bench_hooks.TARGET_VS_PLUGGY}x",
                        _verdict(ok, judge),
                    ]
                )
    return rows


def _dispatch_summary(r: bench_dispatch.DispatchReport) -> list[list[str]]:
    a, s = r.async_tool, r.sync_tool
    return [
        [
            "dispatch: async tool, call_tool / direct await",
            f"{fmt_us(a['call_tool'].best_us)} / {fmt_us(a['direct'].best_us)} = "
            f"{a['call_tool'].best_us / a['direct'].best_us:.1f}x",
            "-",
            "",
        ],
        [
            "dispatch: sync tool, call_tool / asyncio.to_thread",
            f"{fmt_us(s['call_tool'].best_us)} / {fmt_us(s['to_thread'].best_us)} = "
            f"{s['call_tool'].best_us / s['to_thread'].best_us:.2f}x",
            "-",
            "",
        ],
    ]


def _activation_summary(r: bench_activation.ActivationReport) -> list[list[str]]:
    best = min(x["total"] for x in r.host_cold)
    full = r.n == bench_activation.N_PLUGINS
    return [
        [
            f"activation: {r.n} plugins, cold Host(path) + start()",
            f"{fmt_us(best * 1e6)} (importlib alone: {fmt_us(min(r.import_cold) * 1e6)})",
            f"< {bench_activation.TARGET_S:g} s" if full else "-",
            _verdict(best < bench_activation.TARGET_S, True) if full else "",
        ]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny loops (smoke test)")
    parser.add_argument("--only", default=",".join(NAMES), help="comma-separated subset")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    settings = Settings.for_mode(args.quick)
    sections: list[str] = []
    summary: list[list[str]] = []
    started = time.perf_counter()
    runners: dict[str, Callable[[], None]] = {}

    def hooks() -> None:
        r = bench_hooks.run(settings)
        sections.append(r.markdown)
        summary.extend(_hooks_summary(r, judge=not args.quick))

    def dispatch() -> None:
        r = bench_dispatch.run(settings)
        sections.append(r.markdown)
        summary.extend(_dispatch_summary(r))

    def activation() -> None:
        r = bench_activation.run(args.quick)
        sections.append(r.markdown)
        summary.extend(_activation_summary(r))

    runners.update(hooks=hooks, dispatch=dispatch, activation=activation)
    header = machine()
    for name in NAMES:
        if name in chosen:
            print(f"running {name}...", file=sys.stderr, flush=True)
            runners[name]()
    elapsed = time.perf_counter() - started
    print("# Tether benchmarks" + (" (--quick: figures are meaningless)" if args.quick else ""))
    print()
    print(f"{header}; took {elapsed:.0f} s.")
    print()
    print("## Summary")
    print()
    print(table(["benchmark", "result", "target", "verdict"], summary))
    for section in sections:
        print()
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
