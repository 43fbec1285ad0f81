"""`tether run` and `tether chat`: the agent loop on the command line.

`run` exits 0 when the run completes and 1 when it fails or is blocked (the reason on
stderr); `chat` is an interactive session with streaming, slash commands and history.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from tether.agent.factory import AgentConfigError, Overrides, build_agent
from tether.agent.loop import Agent, RunHandle, RunResult, SessionEvent
from tether.cli_support import ConfigOpt, JsonOpt, err, load_or_exit, out
from tether.runtime.host import Host

BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1."),
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model name.")]
SessionOpt = Annotated[str | None, typer.Option("--session", help="Continue this session.")]


def _show(event: SessionEvent) -> None:
    """Stream tokens to stdout and tool activity to stderr, as they happen."""
    if event.kind == "token":
        out.print(event.data["text"], end="", markup=False)
    elif event.kind == "tool_use":
        args = json.dumps(event.data.get("input", {}), ensure_ascii=False)
        err.print(f"\n→ {event.data['tool']} {args}", style="dim", markup=False)
    elif event.kind == "tool_result" and event.data.get("is_error"):
        err.print(f"  {event.data['tool']} returned an error", style="yellow", markup=False)


def _finish_line(handle: RunHandle, result: RunResult) -> None:
    streamed = any(e.kind == "token" for e in handle.history)
    if result.reply and not streamed:
        out.print(result.reply, markup=False)
    elif streamed:
        out.print()
    if result.reply is None and result.ok:
        err.print("(the reply was suppressed by a plugin)", style="dim", markup=False)
    if not result.ok:
        err.print(f"run {result.reason.value}: {result.error or 'no reply'}", markup=False)


async def _agent(host: Host, base_url: str | None, model: str | None) -> Agent:
    try:
        return build_agent(host, Overrides(base_url=base_url, model=model))
    except AgentConfigError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None


def run(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    session: SessionOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the agent once, streaming the answer (exit 1 if it fails or is blocked)."""
    cfg = load_or_exit(config)

    async def main() -> RunResult:
        async with Host(cfg) as host:
            agent = await _agent(host, base_url, model)
            try:
                handle = agent.start(prompt, session_id=session)
            except KeyError as exc:
                err.print(f"{exc.args[0]}; check the --session id", markup=False)
                raise typer.Exit(2) from None
            if not as_json:
                handle.on_event(_show)
            result = await handle.wait()
            if not as_json:
                _finish_line(handle, result)
            await agent.provider.aclose()
            return result

    result = asyncio.run(main())
    if as_json:
        out.print(json.dumps(result.to_json()), markup=False)
    raise typer.Exit(0 if result.ok else 1)


def chat(
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    session: SessionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Chat with the agent: streaming, slash commands, history (/exit leaves)."""
    cfg = load_or_exit(config)

    async def main() -> None:
        async with Host(cfg) as host:
            agent = await _agent(host, base_url, model)
            sid = session
            if sid is not None and not (agent.sessions and agent.sessions.exists(sid)):
                err.print(f"no session {sid!r}", markup=False)
                raise typer.Exit(2)
            err.print("tether chat — /exit to leave", style="dim", markup=False)
            while True:
                try:
                    line = await asyncio.to_thread(input, "you> ")
                except EOFError:
                    break
                text = line.strip()
                if not text:
                    continue
                if text in ("/exit", "/quit"):
                    break
                handle = agent.start(text, session_id=sid)
                handle.on_event(_show)
                result = await handle.wait()
                _finish_line(handle, result)
                sid = result.session_id or sid
            if sid:
                err.print(f"session {sid}", style="dim", markup=False)
            await agent.provider.aclose()

    asyncio.run(main())
