"""A weather-style plugin: typed tools with schemas, a storage cache, an event
subscription and lifecycle hooks. The "forecast" is computed, not fetched, so the example
runs offline; a real plugin would use ctx.http (the http.outbound capability)."""

from __future__ import annotations

import hashlib
import time
from typing import Literal

from tether import Context, Event, Plugin

plugin = Plugin()

CACHE_SECONDS = 300


def _reading(city: str) -> dict[str, object]:
    # Deterministic stand-in for a weather API, so the example needs no network.
    seed = int(hashlib.sha256(city.lower().encode()).hexdigest()[:8], 16)
    return {
        "city": city,
        "celsius": seed % 35 - 5,
        "conditions": ["sunny", "cloudy", "rain"][seed % 3],
    }


@plugin.tool
async def current(
    ctx: Context, city: str, units: Literal["celsius", "fahrenheit"] = "celsius"
) -> dict[str, object]:
    """Current weather for a city.

    Args:
        city: The city name, e.g. "Lisbon".
        units: Temperature units.
    """
    key = f"current:{city.lower()}"
    cached = await ctx.storage.get(key)
    if cached is None or time.time() - cached["at"] > CACHE_SECONDS:
        cached = {"at": time.time(), "reading": _reading(city)}
        await ctx.storage.set(key, cached)
    reading = dict(cached["reading"])
    if units == "fahrenheit":
        reading["fahrenheit"] = round(reading.pop("celsius") * 9 / 5 + 32, 1)
    return reading


@plugin.tool
def forecast(city: str, days: int = 3) -> list[dict[str, object]]:
    """A forecast for the next days (a sync function: Tether runs it in a worker thread).

    Args:
        city: The city name.
        days: How many days, 1 to 7.
    """
    if not 1 <= days <= 7:
        raise ValueError("days must be between 1 and 7")
    return [_reading(f"{city}+{d}") | {"day": d} for d in range(1, days + 1)]


@plugin.on("message.received")
async def notice_weather_talk(event: Event) -> None:
    text = str(event.data.get("content", ""))
    if "weather" in text.lower():
        await plugin.context.storage.set("last_weather_message", text[:200])


@plugin.on_load
async def loaded(ctx: Context) -> None:
    ctx.log.info("weather plugin active (units default: %s)", ctx.config.get("units", "celsius"))


@plugin.on_unload
async def unloading() -> None:
    plugin.context.log.info("weather plugin unloading")
