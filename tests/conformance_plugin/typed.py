"""A typed config model, kept apart from plugin.py because a tier that cannot offer config
models refuses the whole plugin that declares one."""

from typing import Any

from pydantic import BaseModel

from tether import Plugin

plugin = Plugin()


@plugin.config_model
class Settings(BaseModel):
    greeting: str
    limit: int = 10


@plugin.tool
async def typed_settings() -> dict[str, Any]:
    """The plugin's config and its type."""
    config = plugin.context.config
    return {"type": type(config).__name__, **config.model_dump()}
