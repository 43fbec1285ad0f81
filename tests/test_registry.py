"""The registry on its own: tool and command names, removal by plugin, batched plan rebuilds,
load-order ranking of hooks, and listings."""

from __future__ import annotations

from typing import Any

import pytest

from tether import Caller, NameClashError, RegistrationError
from tether.contract.names import HOOK_NAMES
from tether.runtime.dispatch import RegisteredTool
from tether.runtime.hooks import Hooks
from tether.runtime.registry import TOOL_NAME_MAX, Registry, full_tool_name


def make_registry() -> Registry:
    return Registry(Hooks(on_error=lambda pid, hook, exc: None))


def make_tool(pid: str, local: str, roles: frozenset[str] | None = None) -> RegisteredTool:
    return RegisteredTool(
        name=full_tool_name(pid, local),
        local_name=local,
        plugin_id=pid,
        description=f"{local} of {pid}",
        input_schema={"type": "object"},
        validate=lambda args: None,
        handler=lambda: local,
        is_async=False,
        convert=None,
        injected={},
        caller_param=None,
        timeout_s=1.0,
        roles=roles,
    )


def hook_owners(reg: Registry, name: str) -> list[str]:
    plan = reg.hooks.plans.get(name)
    return [plan.owners[fn] for fn in plan.fns] if plan else []


# --- tool names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid", "local", "full"),
    [
        ("weather", "forecast", "plugin_weather_forecast"),
        ("my-plugin", "get_item", "plugin_my-plugin_get_item"),
        ("a", "X-1_y", "plugin_a_X-1_y"),
    ],
)
def test_full_tool_name_prefixes_plugin_id(pid: str, local: str, full: str) -> None:
    assert full_tool_name(pid, local) == full


@pytest.mark.parametrize(
    "local", ["", "1abc", "_private", "-dash", "has space", "a.b", "ünï", "a/b"]
)
def test_full_tool_name_refuses_bad_local_names(local: str) -> None:
    with pytest.raises(RegistrationError) as err:
        full_tool_name("p", local)
    msg = str(err.value)
    assert "plugin 'p'" in msg and repr(local) in msg
    assert "must start with a letter" in msg and "letters, digits, _ and -" in msg


def test_full_tool_name_length_limit_is_64() -> None:
    assert TOOL_NAME_MAX == 64
    prefix = len("plugin_p_")
    fits = "x" * (64 - prefix)
    assert len(full_tool_name("p", fits)) == 64
    with pytest.raises(RegistrationError) as err:
        full_tool_name("p", fits + "y")
    msg = str(err.value)
    assert "65 characters" in msg and "at most 64" in msg and "shorten" in msg
    assert "plugin 'p'" in msg


def test_same_tool_twice_is_refused_naming_both() -> None:
    reg = make_registry()
    reg.add_tool(make_tool("a", "run"))
    with pytest.raises(NameClashError) as err:
        reg.add_tool(make_tool("a", "run"))
    msg = str(err.value)
    assert "'plugin_a_run'" in msg and "already registered by plugin 'a'" in msg
    assert list(reg.tools) == ["plugin_a_run"]
    assert issubclass(NameClashError, RegistrationError)


def test_remove_tool() -> None:
    reg = make_registry()
    reg.add_tool(make_tool("a", "run"))
    reg.add_tool(make_tool("a", "walk"))
    assert reg.remove_tool("plugin_a_run") is True
    assert reg.remove_tool("plugin_a_run") is False
    assert list(reg.tools) == ["plugin_a_walk"]


def test_tools_dict_is_copied_on_write() -> None:
    reg = make_registry()
    reg.add_tool(make_tool("a", "one"))
    snapshot = reg.tools
    reg.add_tool(make_tool("a", "two"))
    reg.remove_tool("plugin_a_one")
    assert list(snapshot) == ["plugin_a_one"]  # a reader's view never changes under it


def test_visible_tools_by_role() -> None:
    reg = make_registry()
    reg.add_tool(make_tool("pub", "hello"))
    reg.add_tool(make_tool("adm", "purge", roles=frozenset({"admin"})))
    reg.add_tool(make_tool("all", "open", roles=frozenset({"*"})))
    names = lambda c: sorted(t.name for t in reg.visible_tools(c))  # noqa: E731
    member = Caller("u", frozenset({"member"}))
    assert names(member) == ["plugin_all_open", "plugin_pub_hello"]
    assert names(Caller("a", frozenset({"admin"}))) == [
        "plugin_adm_purge",
        "plugin_all_open",
        "plugin_pub_hello",
    ]
    assert len(names(Caller.operator())) == 3
    assert names(Caller("nobody")) == ["plugin_all_open", "plugin_pub_hello"]


# --- commands --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["help", "a", "do-it", "x_1", "a" * 32])
def test_valid_command_names(name: str) -> None:
    reg = make_registry()
    reg.add_command("p", name, lambda text: text, "  does things  ")
    assert reg.commands[name].plugin_id == "p"
    assert reg.commands[name].description == "does things"


@pytest.mark.parametrize("name", ["", "Help", "1go", "-x", "a b", "/help", "a" * 33, "ä"])
def test_invalid_command_names(name: str) -> None:
    reg = make_registry()
    with pytest.raises(RegistrationError) as err:
        reg.add_command("p", name, lambda text: text, "")
    msg = str(err.value)
    assert "plugin 'p'" in msg and repr(name) in msg and "at most 32 characters" in msg
    assert reg.commands == {}


def test_command_clash_names_the_owner() -> None:
    reg = make_registry()
    reg.add_command("first", "deploy", lambda text: "1", "")
    with pytest.raises(NameClashError) as err:
        reg.add_command("second", "deploy", lambda text: "2", "")
    msg = str(err.value)
    assert "plugin 'second'" in msg and "/deploy" in msg
    assert "already registered by plugin 'first'" in msg
    assert reg.commands["deploy"].plugin_id == "first"


# --- hooks -----------------------------------------------------------------------------


def test_add_hook_refuses_unknown_names_and_non_callables() -> None:
    reg = make_registry()
    with pytest.raises(RegistrationError) as err:
        reg.add_hook("p", "before_modle_call", lambda m, c: None)
    assert "unknown hook 'before_modle_call'" in str(err.value)
    assert all(name in str(err.value) for name in HOOK_NAMES)
    with pytest.raises(RegistrationError, match="must be a function"):
        reg.add_hook("p", "after_run", "not callable")
    assert reg.hooks.plans == {}


def test_hooks_follow_rank_not_registration_order() -> None:
    reg = make_registry()
    reg.set_rank("late", 2)
    reg.set_rank("early", 0)
    reg.set_rank("mid", 1)
    reg.add_hook("late", "after_run", lambda r: None)
    reg.add_hook("early", "after_run", lambda r: None)
    reg.add_hook("mid", "after_run", lambda r: None)
    reg.add_hook("early", "after_run", lambda r: None)  # a second hook of the same plugin
    assert hook_owners(reg, "after_run") == ["early", "early", "mid", "late"]


def test_plan_of_a_kind_exists_only_with_hooks() -> None:
    reg = make_registry()
    reg.add_hook("p", "filter_tools", lambda tools: tools)
    assert set(reg.hooks.plans) == {"filter_tools"}


async def test_async_hooks_are_flagged_in_the_plan() -> None:
    reg = make_registry()

    async def async_hook(prompt: str) -> str:
        return prompt

    reg.add_hook("a", "transform_system_prompt", lambda p: p)
    reg.add_hook("b", "transform_system_prompt", async_hook)
    plan = reg.hooks.plans["transform_system_prompt"]
    assert plan.is_async == (False, True) and plan.any_async


def test_batch_defers_rebuilds_until_the_outermost_block_ends() -> None:
    reg = make_registry()
    reg.add_hook("a", "after_run", lambda r: None)
    before = reg.hooks.plans
    with reg.batch():
        reg.add_hook("b", "after_run", lambda r: None)
        reg.add_hook("b", "filter_tools", lambda t: t)
        assert reg.hooks.plans is before  # not rebuilt yet
        with reg.batch():
            reg.add_hook("c", "after_run", lambda r: None)
        assert reg.hooks.plans is before  # the inner block does not rebuild either
        assert hook_owners(reg, "after_run") == ["a"]
    assert hook_owners(reg, "after_run") == ["a", "b", "c"]
    assert hook_owners(reg, "filter_tools") == ["b"]


def test_batch_rebuilds_even_when_the_block_raises() -> None:
    reg = make_registry()
    with pytest.raises(RuntimeError), reg.batch():
        reg.add_hook("a", "after_run", lambda r: None)
        raise RuntimeError("activation failed")
    assert hook_owners(reg, "after_run") == ["a"]


def test_batch_without_changes_does_not_swap_plans() -> None:
    reg = make_registry()
    reg.add_hook("a", "after_run", lambda r: None)
    before = reg.hooks.plans
    with reg.batch():
        reg.add_command("a", "go", lambda text: text, "")
    assert reg.hooks.plans is before


# --- removal and listings --------------------------------------------------------------


def populate(reg: Registry, pid: str) -> None:
    reg.add_tool(make_tool(pid, "alpha"))
    reg.add_tool(make_tool(pid, "beta"))
    reg.add_command(pid, f"{pid}-cmd", lambda text: text, "")
    reg.add_hook(pid, "before_tool_call", lambda call: None)
    reg.add_hook(pid, "after_run", lambda reason: None)
    reg.add_prompt(pid, f"prompt of {pid}")
    reg.add_skill(pid, f"skills/{pid}")


def test_owned_by_lists_everything_a_plugin_registered() -> None:
    reg = make_registry()
    populate(reg, "a")
    populate(reg, "b")
    assert reg.owned_by("a") == {
        "tools": ["plugin_a_alpha", "plugin_a_beta"],
        "commands": ["a-cmd"],
        "hooks": ["before_tool_call", "after_run"],
        "skills": ["skills/a"],
    }
    assert reg.owned_by("nobody") == {"tools": [], "commands": [], "hooks": [], "skills": []}


def test_remove_plugin_removes_tools_commands_hooks_prompts_and_skills() -> None:
    reg = make_registry()
    reg.set_rank("a", 0)
    reg.set_rank("b", 1)
    populate(reg, "a")
    populate(reg, "b")
    assert hook_owners(reg, "after_run") == ["a", "b"]

    reg.remove_plugin("a")
    assert sorted(reg.tools) == ["plugin_b_alpha", "plugin_b_beta"]
    assert list(reg.commands) == ["b-cmd"]
    assert hook_owners(reg, "after_run") == ["b"]
    assert hook_owners(reg, "before_tool_call") == ["b"]
    assert reg.prompt_sources() == [("b", "prompt of b")]
    assert reg.skills() == [("b", "skills/b")]
    assert reg.owned_by("a") == {"tools": [], "commands": [], "hooks": [], "skills": []}

    reg.remove_plugin("b")
    assert reg.tools == {} and reg.commands == {}
    assert reg.hooks.plans == {}
    assert reg.prompt_sources() == [] and reg.skills() == []
    reg.remove_plugin("b")  # removing again cannot fail


def test_removed_plugin_re_registers_in_its_rank_position() -> None:
    reg = make_registry()
    for rank, pid in enumerate("abc"):
        reg.set_rank(pid, rank)
        reg.add_hook(pid, "after_run", lambda r: None)
    reg.remove_plugin("a")
    reg.add_hook("a", "after_run", lambda r: None)  # re-enabled later: same rank
    assert hook_owners(reg, "after_run") == ["a", "b", "c"]


def test_prompt_sources_follow_rank() -> None:
    reg = make_registry()
    reg.set_rank("second", 1)
    reg.set_rank("first", 0)
    fn: Any = lambda: "dynamic"  # noqa: E731
    reg.add_prompt("second", "two")
    reg.add_prompt("first", fn)
    reg.add_prompt("unranked", "last")  # no rank: after every ranked plugin
    assert reg.prompt_sources() == [("first", fn), ("second", "two"), ("unranked", "last")]
