"""Building the agent a host's config describes: provider, model, strategy, limits."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tether.agent.loop import Agent, AgentConfig
from tether.agent.openai import OpenAICompatibleProvider
from tether.agent.providers import Provider
from tether.agent.sessions import SessionStore
from tether.agent.strategy import DefaultStrategy, LoopStrategy
from tether.contract.errors import TetherError
from tether.contract.policy import AgentSettings
from tether.runtime.host import Host


class AgentConfigError(TetherError):
    """The `[agent]` settings name a provider or strategy that is not there."""


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line or API choices that win over the environment and the file."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None


def agent_config(settings: AgentSettings, model: str) -> AgentConfig:
    return AgentConfig(
        model=model,
        system_prompt=settings.system_prompt,
        max_turns=settings.max_turns,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        token_budget=settings.token_budget,
        cost_budget=settings.cost_budget,
        prompt_price=settings.prompt_price,
        completion_price=settings.completion_price,
        timeout_s=settings.timeout_s,
    )


def build_agent(host: Host, overrides: Overrides | None = None) -> Agent:
    """The agent for a started host: `[agent]` in tether.toml, then `$TETHER_BASE_URL`,
    `$TETHER_MODEL`, `$TETHER_API_KEY` (or the variable `api_key_env` names), then
    `overrides`."""
    settings = host.config.policy.agent
    o = overrides or Overrides()
    model = o.model or os.environ.get("TETHER_MODEL") or settings.model
    provider: Provider
    if settings.provider == "openai":
        base_url = o.base_url or os.environ.get("TETHER_BASE_URL") or settings.base_url
        key = o.api_key or os.environ.get("TETHER_API_KEY") or os.environ.get(settings.api_key_env)
        provider = OpenAICompatibleProvider(
            base_url, key, idle_timeout=settings.idle_timeout_s, retries=settings.retries
        )
    else:
        registered = host.services.agents.providers.get(settings.provider)
        if registered is None:
            known = ", ".join(["openai", *sorted(host.services.agents.providers)])
            raise AgentConfigError(
                f"[agent] provider = {settings.provider!r} is not registered by any active plugin; "
                f"known providers: {known}"
            )
        provider = registered[1]
    strategy: LoopStrategy = DefaultStrategy()
    if settings.strategy != "default":
        found = host.services.agents.strategies.get(settings.strategy)
        if found is None:
            known = ", ".join(["default", *sorted(host.services.agents.strategies)])
            raise AgentConfigError(
                f"[agent] strategy = {settings.strategy!r} is not registered by any active "
                f"plugin; known strategies: {known}"
            )
        strategy = found[1]
    assert host.db is not None
    return Agent(host, provider, agent_config(settings, model), SessionStore(host.db), strategy)
