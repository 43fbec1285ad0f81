"""Load order: dependencies first, discovery order otherwise; cycles, missing and failed
dependencies are reported per plugin without stopping unrelated ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether import Host, Plugin, Policy, RefusalReason
from tether.runtime.ordering import OrderResult, load_order

R = RefusalReason


def order(*specs: tuple[str, tuple[str, ...]]) -> OrderResult:
    """`specs` in discovery order: (id, dependencies)."""
    deps = dict(specs)
    position = {pid: i for i, (pid, _) in enumerate(specs)}
    return load_order(deps, position)


def test_no_dependencies_keeps_discovery_order() -> None:
    result = order(("z", ()), ("a", ()), ("m", ()))
    assert result.order == ["z", "a", "m"]
    assert result.failures == {}


def test_dependencies_come_first() -> None:
    result = order(("app", ("lib",)), ("lib", ("core",)), ("core", ()))
    assert result.order == ["core", "lib", "app"]
    assert result.failures == {}


def test_ties_keep_discovery_order() -> None:
    # x, y and w all wait for base; once it is loaded they follow in discovery order
    result = order(("x", ("base",)), ("w", ()), ("y", ("base",)), ("base", ()), ("v", ()))
    assert result.order == ["w", "base", "x", "y", "v"]


def test_diamond_dependencies() -> None:
    result = order(("d", ("b", "c")), ("c", ("a",)), ("b", ("a",)), ("a", ()))
    assert result.order == ["a", "c", "b", "d"]
    assert result.failures == {}
    result2 = order(("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ("c", "b")))
    assert result2.order == ["a", "b", "c", "d"]


def test_two_cycle_reports_both_members() -> None:
    result = order(("a", ("b",)), ("b", ("a",)), ("free", ()))
    assert result.order == ["free"]
    assert set(result.failures) == {"a", "b"}
    for pid in ("a", "b"):
        reason, message = result.failures[pid]
        assert reason is R.DEPENDENCY_CYCLE
        assert "dependency cycle" in message and "a" in message and "b" in message
        assert "a -> b -> a" in message or "b -> a -> b" in message
        assert "break the cycle" in message


def test_three_cycle_reports_all_members() -> None:
    result = order(("x", ("y",)), ("y", ("z",)), ("z", ("x",)))
    assert result.order == []
    assert {pid: r for pid, (r, _) in result.failures.items()} == dict.fromkeys(
        "xyz", R.DEPENDENCY_CYCLE
    )
    message = result.failures["y"][1]
    assert message.count("->") == 3
    assert all(f"{p} ->" in message for p in "xyz")


def test_self_dependency_is_a_cycle() -> None:
    # Manifests refuse it, but the sorter must not loop or drop the plugin silently.
    result = order(("a", ("a",)), ("b", ()))
    assert result.order == ["b"]
    assert result.failures["a"][0] is R.DEPENDENCY_CYCLE


def test_missing_dependency_names_it() -> None:
    result = order(("a", ("ghost", "b")), ("b", ()))
    assert result.order == ["b"]
    reason, message = result.failures["a"]
    assert reason is R.DEPENDENCY_MISSING
    assert message.startswith("needs ghost,")  # only the missing one is named
    assert "install" in message


def test_dependents_of_failed_plugins_fail_transitively() -> None:
    result = order(
        ("broken", ("ghost",)),
        ("mid", ("broken",)),
        ("top", ("mid",)),
        ("ok", ()),
    )
    assert result.order == ["ok"]
    assert result.failures["broken"][0] is R.DEPENDENCY_MISSING
    assert result.failures["mid"] == (R.DEPENDENCY_FAILED, "its dependency broken failed to load")
    assert result.failures["top"] == (R.DEPENDENCY_FAILED, "its dependency mid failed to load")


def test_dependent_of_a_cycle_fails_and_unrelated_plugins_are_unaffected() -> None:
    result = order(
        ("u1", ()),
        ("a", ("b",)),
        ("needs_a", ("a",)),
        ("b", ("a",)),
        ("u2", ("u1",)),
        ("u3", ()),
    )
    assert result.order == ["u1", "u2", "u3"]
    assert result.failures["a"][0] is R.DEPENDENCY_CYCLE
    assert result.failures["b"][0] is R.DEPENDENCY_CYCLE
    reason, message = result.failures["needs_a"]
    assert reason is R.DEPENDENCY_FAILED and "cycle" in message


def test_every_plugin_is_either_ordered_or_failed_exactly_once() -> None:
    result = order(
        ("a", ("b",)),
        ("b", ("c",)),
        ("c", ("a",)),
        ("d", ("c",)),
        ("e", ("missing",)),
        ("f", ("e",)),
        ("g", ()),
        ("h", ("g",)),
    )
    assert sorted([*result.order, *result.failures]) == list("abcdefgh")
    assert not set(result.order) & set(result.failures)
    assert result.order == ["g", "h"]


# --- through a host --------------------------------------------------------------------


def info(host: Host, pid: str) -> dict[str, Any]:
    return next(p for p in host.plugins() if p["id"] == pid)


async def test_host_activates_dependencies_first_and_fails_dependents(tmp_path: Path) -> None:
    started: list[str] = []

    def mk(pid: str, deps: list[str], fail: bool = False) -> Plugin:
        p = Plugin(id=pid, name=pid, dependencies=deps)

        @p.on_load
        def load(ctx: Any) -> None:
            started.append(pid)
            if fail:
                raise RuntimeError(f"{pid} cannot start")

        return p

    plugins = [
        mk("app", ["lib"]),
        mk("lib", []),
        mk("uses-broken", ["broken"]),
        mk("broken", [], fail=True),
        mk("loop-a", ["loop-b"]),
        mk("loop-b", ["loop-a"]),
        mk("asks-ghost", ["ghost"]),
    ]
    async with Host(Policy(), base_dir=tmp_path, plugins=plugins) as host:
        assert host.active_ids() == ["lib", "app"]
        assert started == ["lib", "app", "broken"]
        assert info(host, "broken")["reason"] == "activation_failed"
        dependent = info(host, "uses-broken")
        assert (dependent["state"], dependent["reason"]) == ("error", "dependency_failed")
        assert "broken" in dependent["error"]
        assert info(host, "loop-a")["reason"] == "dependency_cycle"
        assert "loop-a" in info(host, "loop-b")["error"]
        ghost = info(host, "asks-ghost")
        assert ghost["reason"] == "dependency_missing" and "ghost" in ghost["error"]
        audit = host.audit.read(plugin="uses-broken", kind="refused")
        assert audit and audit[0].detail["reason"] == "dependency_failed"
