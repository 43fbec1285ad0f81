"""System-prompt composition, slash commands, skills and name clashes."""

from __future__ import annotations

from pathlib import Path

from tether import Host, Plugin, Policy, RefusalReason


def _plugin(pid: str, caps: list[str]) -> Plugin:
    return Plugin(id=pid, name=pid.title(), capabilities=caps)


async def test_system_prompt_contributions_then_transforms_in_load_order(tmp_path: Path) -> None:
    a = _plugin("a", ["prompts.contribute", "hooks.model"])
    b = _plugin("b", ["prompts.contribute", "hooks.model"])
    a.system_prompt("from a")
    b.system_prompt(lambda: "from b (computed)")

    @a.transform_system_prompt
    def mark_a(prompt: str) -> str:
        return prompt + " [a]"

    @b.transform_system_prompt
    async def mark_b(prompt: str) -> str:
        return prompt + " [b]"

    async with Host(Policy(), base_dir=tmp_path, plugins=[a, b], discover=False) as host:
        prompt = await host.system_prompt("base")
    assert prompt == "base\n\nfrom a\n\nfrom b (computed) [a] [b]"


async def test_failing_prompt_contribution_is_skipped_and_reported(tmp_path: Path) -> None:
    a = _plugin("a", ["prompts.contribute"])
    a.system_prompt(lambda: 1 / 0)
    a.system_prompt("still here")
    async with Host(Policy(), base_dir=tmp_path, plugins=[a], discover=False) as host:
        assert await host.system_prompt() == "still here"
        (info,) = host.plugins()
    assert "ZeroDivisionError" in info["error"]


async def test_slash_command_answers_without_model_and_reports_failures(tmp_path: Path) -> None:
    a = _plugin("a", ["commands.register"])

    @a.command("greet", description="Say hello.")
    def greet(args: str) -> str:
        return f"hello {args}"

    @a.command("boom")
    async def boom(args: str) -> str:
        raise RuntimeError("kaput")

    async with Host(Policy(), base_dir=tmp_path, plugins=[a], discover=False) as host:
        assert await host.run_command("/greet  world ") == "hello world"
        assert await host.run_command("/missing") is None
        assert await host.run_command("greet") is None
        failed = await host.run_command("/boom")
        assert failed is not None and "kaput" in failed
        assert host.registry.commands["greet"].description == "Say hello."


async def test_command_clash_fails_the_later_plugin_with_name_clash(tmp_path: Path) -> None:
    first, second = (
        _plugin("first", ["commands.register"]),
        _plugin("second", ["commands.register"]),
    )
    first.command("go")(lambda args: "first")
    second.command("go")(lambda args: "second")
    async with Host(Policy(), base_dir=tmp_path, plugins=[first, second], discover=False) as host:
        states = {p["id"]: p for p in host.plugins()}
        assert states["first"]["state"] == "active"
        assert states["second"]["state"] == "error"
        assert states["second"]["reason"] == RefusalReason.NAME_CLASH.value
        assert "already registered by plugin 'first'" in states["second"]["error"]
        assert await host.run_command("/go") == "first"


async def test_skills_resolve_inside_the_plugin_folder(tmp_path: Path) -> None:
    folder = tmp_path / "plugins" / "skilled"
    (folder / "skills" / "forecast").mkdir(parents=True)
    (folder / "skills" / "forecast" / "SKILL.md").write_text("# Forecasting\n")
    (folder / "plugin.toml").write_text(
        'id = "skilled"\nname = "Skilled"\nversion = "1.0.0"\napi_version = "1.0"\n'
        'capabilities = ["skills.register"]\nskills = ["skills/forecast"]\n'
    )
    (folder / "plugin.py").write_text("from tether import Plugin\nplugin = Plugin()\n")
    (tmp_path / "tether.toml").write_text('[plugins.skilled]\ngrant = ["skills.register"]\n')
    async with Host(tmp_path / "tether.toml") as host:
        ((pid, path),) = host.skills()
    assert pid == "skilled"
    assert (path / "SKILL.md").read_text() == "# Forecasting\n"


async def test_unknown_tool_hints_never_name_tools_the_caller_cannot_see(tmp_path: Path) -> None:
    from tether import Caller, UnknownToolError

    hidden = Plugin(id="vault", name="Vault", capabilities=["tools.register"], roles=["admin"])
    hidden.tool(name="open_vault")(lambda: "x")
    async with Host(Policy(), base_dir=tmp_path, plugins=[hidden], discover=False) as host:
        try:
            await host.call_tool(
                "plugin_vault_open_vaul", {}, caller=Caller("bob", frozenset({"member"}))
            )
        except UnknownToolError as exc:
            member_message = str(exc)
        try:
            await host.call_tool("plugin_vault_open_vaul", {})
        except UnknownToolError as exc:
            operator_message = str(exc)
    assert "did you mean" not in member_message and "open_vault" not in member_message
    assert 'did you mean "plugin_vault_open_vault"' in operator_message
