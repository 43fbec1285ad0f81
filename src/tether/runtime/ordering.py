"""Load order: dependencies first, otherwise discovery order; cycles and missing
dependencies reported with their members, without stopping anyone else."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from tether.contract.errors import RefusalReason


@dataclass(frozen=True, slots=True)
class OrderResult:
    order: list[str]
    failures: dict[str, tuple[RefusalReason, str]]


def load_order(deps: dict[str, tuple[str, ...]], position: dict[str, int]) -> OrderResult:
    """Topologically sort plugin ids by `deps`, breaking ties by `position` (discovery order).

    A plugin whose dependency is missing, cyclic or itself failed is reported; dependents of
    a failed plugin fail too ("dependency_failed"), and every other plugin keeps its place.
    """
    failures: dict[str, tuple[RefusalReason, str]] = {}
    for pid, needs in deps.items():
        missing = [d for d in needs if d not in deps]
        if missing:
            failures[pid] = (
                RefusalReason.DEPENDENCY_MISSING,
                f"needs {', '.join(missing)}, which is not installed or not loadable; install "
                "it or remove it from dependencies",
            )
    for cycle in _cycles(deps):
        members = " -> ".join([*cycle, cycle[0]])
        for pid in cycle:
            failures.setdefault(
                pid,
                (RefusalReason.DEPENDENCY_CYCLE, f"dependency cycle {members}; break the cycle"),
            )
    # Kahn's algorithm with a heap keyed by discovery position for a stable order.
    indegree = {pid: sum(1 for d in needs if d in deps) for pid, needs in deps.items()}
    dependents: dict[str, list[str]] = {pid: [] for pid in deps}
    for pid, needs in deps.items():
        for d in needs:
            if d in deps:
                dependents[d].append(pid)
    ready = [(position[p], p) for p, n in indegree.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, pid = heapq.heappop(ready)
        order.append(pid)
        for child in dependents[pid]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, (position[child], child))
    # Anything not ordered sits on or behind a cycle.
    for pid in deps:
        if pid not in order and pid not in failures:
            failures[pid] = (
                RefusalReason.DEPENDENCY_FAILED,
                "depends on a plugin in a dependency cycle; break the cycle",
            )
    # Propagate failures to dependents, transitively, in order.
    for pid in order:
        if pid in failures:
            continue
        bad = [d for d in deps[pid] if d in failures]
        if bad:
            failures[pid] = (
                RefusalReason.DEPENDENCY_FAILED,
                f"its dependency {', '.join(bad)} failed to load",
            )
    return OrderResult([p for p in order if p not in failures], failures)


def _cycles(deps: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Elementary cycles found by depth-first search, each reported once."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(deps, WHITE)
    stack: list[str] = []
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        color[node] = GREY
        stack.append(node)
        for d in deps[node]:
            if d not in deps:
                continue
            if color[d] == GREY:
                cycle = stack[stack.index(d) :]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            elif color[d] == WHITE:
                visit(d)
        stack.pop()
        color[node] = BLACK

    for node in sorted(deps):
        if color[node] == WHITE:
            visit(node)
    return found
