"""Plugin config: a pydantic config model built from tether.toml and `TETHER_<ID>_<FIELD>`
environment variables, and per-scope config keys with defaults and validators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, SecretStr

from conftest import write_policy
from tether import CapabilityViolationError, ConfigKeyError, Context, Host, Plugin, State
from tether.runtime.config_model import PluginConfigError, build_config, env_name, env_prefix


class WeatherConfig(BaseModel):
    units: Literal["metric", "imperial"] = "metric"
    max_days: int = Field(default=3, ge=1, le=10)
    cities: list[str] = []
    api_key: SecretStr | None = None
    label: str = "weather"


# Building the model ------------------------------------------------------------------


def test_env_names() -> None:
    assert env_prefix("weather-pro") == "TETHER_WEATHER_PRO_"
    assert env_name("weather", "units") == "TETHER_WEATHER_UNITS"


def test_toml_is_the_base_and_environment_wins() -> None:
    cfg = build_config(
        "weather",
        WeatherConfig,
        {"units": "imperial", "max_days": 5, "label": "from toml"},
        {
            "TETHER_WEATHER_MAX_DAYS": "7",
            "TETHER_WEATHER_CITIES": '["Oslo", "Rome"]',
            "TETHER_WEATHER_LABEL": "42",  # a str field stays text, not the number 42
            "TETHER_OTHER_UNITS": "imperial",  # another plugin's variable
        },
    )
    assert isinstance(cfg, WeatherConfig)
    assert cfg.units == "imperial"  # from the file
    assert cfg.max_days == 7  # the environment overrides the file
    assert cfg.cities == ["Oslo", "Rome"]  # JSON for structured fields
    assert cfg.label == "42"
    # A secret that looks like a number stays text.
    numeric = build_config("weather", WeatherConfig, {}, {"TETHER_WEATHER_API_KEY": "12345"})
    assert isinstance(numeric, WeatherConfig) and numeric.api_key is not None
    assert numeric.api_key.get_secret_value() == "12345"
    # Text first: a type that does not take text gets the JSON value ("null" -> None).

    class Limits(BaseModel):
        cap: int | None = 5
        note: str | None = None

    limits = build_config("w", Limits, {}, {"TETHER_W_CAP": "null", "TETHER_W_NOTE": "null"})
    assert limits == Limits(cap=None, note="null")
    assert build_config("weather", WeatherConfig, {}, {}) == WeatherConfig()


@pytest.mark.parametrize(
    ("table", "env", "expected"),
    [
        (
            {},
            {"TETHER_WEATHER_MAX_DAYS": "50"},
            "max_days: environment variable TETHER_WEATHER_MAX_DAYS",
        ),
        ({"max_days": 0}, {}, "max_days: [plugins.weather.config] max_days in tether.toml"),
        (
            {},
            {"TETHER_WEATHER_UNITS": "kelvin"},
            "units: environment variable TETHER_WEATHER_UNITS",
        ),
        ({"cities": "Oslo"}, {}, "cities: [plugins.weather.config] cities"),
    ],
)
def test_a_bad_value_names_its_variable_and_constraint(
    table: dict[str, object], env: dict[str, str], expected: str
) -> None:
    with pytest.raises(PluginConfigError) as caught:
        build_config("weather", WeatherConfig, table, env)
    message = str(caught.value)
    assert message.startswith("config for plugin 'weather' is invalid: ")
    assert expected in message


def test_constraint_text_and_missing_fields() -> None:
    class Needs(BaseModel):
        token: str
        retries: int = Field(default=1, le=5)

    with pytest.raises(PluginConfigError) as caught:
        build_config("my-bot", Needs, {}, {"TETHER_MY_BOT_RETRIES": "9"})
    message = str(caught.value)
    assert "token: TETHER_MY_BOT_TOKEN or [plugins.my-bot.config] token: Field required" in message
    assert "less than or equal to 5" in message and "(got '9')" in message


def test_a_secret_field_value_is_never_echoed() -> None:
    class Secretive(BaseModel):
        api_key: SecretStr = Field(min_length=20)

    with pytest.raises(PluginConfigError) as caught:
        build_config("w", Secretive, {}, {"TETHER_W_API_KEY": "hunter2"})
    assert "TETHER_W_API_KEY" in str(caught.value) and "hunter2" not in str(caught.value)


# Through the host --------------------------------------------------------------------


async def test_ctx_config_is_the_model_instance_before_on_load(
    tmp_path: Path, make_plugin: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin(
        "weather",
        """
        from typing import Literal
        from pydantic import BaseModel
        from tether import Context, Plugin

        plugin = Plugin()

        @plugin.config_model
        class WeatherConfig(BaseModel):
            units: Literal["metric", "imperial"] = "metric"
            max_days: int = 3

        seen = []

        @plugin.on_load
        def load(ctx: Context) -> None:
            seen.append((type(ctx.config).__name__, ctx.config.units, ctx.config.max_days))
        """,
        capabilities=[],
    )
    write_policy(
        tmp_path,
        "[host]\nentry_points = false\n"
        "[plugins.weather]\ngrant = []\n[plugins.weather.config]\nunits = 'imperial'\n",
    )
    monkeypatch.setenv("TETHER_WEATHER_MAX_DAYS", "9")
    async with Host(tmp_path / "tether.toml") as host:
        rec = host.records["weather"]
        assert rec.state is State.ACTIVE
        assert rec.plugin is not None and rec.plugin.declared.config_model is not None
        ctx = rec.context
        assert ctx is not None
        assert (type(ctx.config).__name__, ctx.config.units, ctx.config.max_days) == (
            "WeatherConfig",
            "imperial",
            9,
        )


async def test_a_bad_value_fails_that_plugin_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = Plugin(id="weather", name="Weather", capabilities=[])
    bad.config_model(WeatherConfig)
    loaded: list[str] = []
    bad.on_load(lambda ctx: loaded.append("weather"))
    plain = Plugin(id="plain", name="Plain", capabilities=[])
    write_policy(
        tmp_path,
        "[host]\nentry_points = false\n[plugins.plain]\ngrant = []\n"
        "[plugins.plain.config]\ncolour = 'red'\n",
    )
    monkeypatch.setenv("TETHER_WEATHER_MAX_DAYS", "11")
    async with Host(tmp_path / "tether.toml", plugins=[bad, plain]) as host:
        rec = host.records["weather"]
        assert rec.state is State.ERROR
        assert rec.reason is not None and rec.reason.value == "invalid_config"
        assert rec.error is not None
        assert "TETHER_WEATHER_MAX_DAYS" in rec.error and "less than or equal to 10" in rec.error
        assert loaded == []
        # A plugin without a model keeps the plain dict.
        assert host.records["plain"].state is State.ACTIVE
        assert plain.context.config == {"colour": "red"}
        assert plain.context.config.get("colour") == "red"
        (audit,) = host.audit.read(plugin="weather", kind="refused")
        assert audit.detail["reason"] == "invalid_config"
        # Fixing the environment and enabling again works without a restart.
        monkeypatch.setenv("TETHER_WEATHER_MAX_DAYS", "4")
        assert await host.enable("weather")
        assert bad.context.config.max_days == 4


def test_config_model_takes_only_pydantic_models() -> None:
    with pytest.raises(TypeError, match="pydantic model class"):
        Plugin().config_model(dict)  # type: ignore[type-var]


# Config keys -------------------------------------------------------------------------

KEY_CAPS = ["config.register"]


def keys_plugin(pid: str = "weather") -> Plugin:
    p = Plugin(id=pid, name=pid.title(), capabilities=KEY_CAPS)
    p.config_key("enabled", default="true", description="Answer weather questions.")

    @p.config_key("units", default="metric", description="Temperature units.")
    def units_ok(value: str) -> bool:
        return value in ("metric", "imperial")

    @p.config_key("days", default="3")
    def days_ok(value: str) -> bool:
        if int(value) > 10:  # raising is a rejection too
            raise ValueError("at most 10 days")
        return True

    return p


def host_for(tmp_path: Path, *plugins: Plugin) -> Host:
    write_policy(tmp_path, "[host]\nentry_points = false\nplugin_dirs = []\n")
    return Host(tmp_path / "tether.toml", plugins=list(plugins))


async def test_config_keys_defaults_scopes_and_fallback(tmp_path: Path) -> None:
    p = keys_plugin()
    async with host_for(tmp_path, p) as host:
        keys = p.context.config_keys
        assert await keys.get("units") == "metric"
        assert await keys.get("units", scope="space:main") == "metric"
        await keys.set("units", "imperial", scope="space:main")
        assert await keys.get("units", scope="space:main") == "imperial"
        assert await keys.get("units") == "metric"
        assert await keys.get("units", scope="space:other") == "metric"
        # A global value is the fallback for every scope without its own value.
        await keys.set("enabled", "false")
        assert await keys.get("enabled", scope="user:alice") == "false"
        await keys.set("enabled", "true", scope="user:alice")
        assert await keys.get("enabled", scope="user:alice") == "true"
        assert await keys.unset("enabled", scope="user:alice")
        assert await keys.get("enabled", scope="user:alice") == "false"
        # The host-level service sees the same, under the namespaced name.
        assert host.config_keys.get("weather.units", "space:main") == "imperial"
        assert host.config_keys.resolve("weather.days", "space:main") == ("3", "default")
        listed = {(e.name, e.scope): e for e in await keys.list(scope="space:main")}
        assert listed["weather.units", "space:main"].value == "imperial"
        assert listed["weather.days", "space:main"].is_default
        audit = host.audit.read(plugin="weather", kind="config_set")
        assert [r.message for r in audit][-1] == "weather.units set"
    # Values survive a restart.
    p = keys_plugin()
    async with host_for(tmp_path, p):
        assert await p.context.config_keys.get("units", scope="space:main") == "imperial"


async def test_validators_reject_with_key_and_value(tmp_path: Path) -> None:
    p = keys_plugin()
    async with host_for(tmp_path, p) as host:
        keys = p.context.config_keys
        with pytest.raises(ConfigKeyError, match=r"weather.units: value 'kelvin' rejected"):
            await keys.set("units", "kelvin")
        with pytest.raises(ConfigKeyError, match=r"weather.days: value '12' rejected.*at most 10"):
            await keys.set("days", "12", scope="space:main")
        with pytest.raises(ConfigKeyError, match="ValueError"):
            host.config_keys.set("weather.days", "many")
        assert await keys.get("days", scope="space:main") == "3"
        with pytest.raises(ConfigKeyError, match="not registered"):
            await keys.get("nope")
        with pytest.raises(ConfigKeyError, match="scope 'space'"):
            await keys.get("units", scope="space")
        with pytest.raises(ConfigKeyError, match="values are text"):
            await keys.set("units", 3)  # type: ignore[arg-type]
        with pytest.raises(ConfigKeyError, match="already registered"):
            keys.register("units")
        with pytest.raises(ConfigKeyError, match="1-64 characters"):
            keys.register("Bad Key")


async def test_a_default_that_fails_its_validator_fails_the_load(tmp_path: Path) -> None:
    p = Plugin(id="weather", name="Weather", capabilities=KEY_CAPS)
    p.config_key("units", default="kelvin", validate=lambda v: v in ("metric", "imperial"))
    async with host_for(tmp_path, p) as host:
        rec = host.records["weather"]
        assert rec.state is State.ERROR
        assert rec.error is not None and "value 'kelvin' rejected" in rec.error


async def test_config_keys_need_the_capability_and_stay_namespaced(tmp_path: Path) -> None:
    without = Plugin(id="quiet", name="Quiet", capabilities=[])
    without.config_key("enabled", default="true")
    other = keys_plugin("other")

    @without.on_load
    async def probe(ctx: Context) -> None:
        with pytest.raises(CapabilityViolationError, match=r"config.register"):
            await ctx.config_keys.get("enabled")

    p = keys_plugin()
    async with host_for(tmp_path, p, other, without) as host:
        assert host.records["quiet"].state is State.ACTIVE
        assert host.records["quiet"].warnings == [
            "config key enabled skipped: config.register is not granted"
        ]
        await other.context.config_keys.set("units", "imperial")
        assert await p.context.config_keys.get("units") == "metric"  # other.units is separate
        assert host.config_keys.get("other.units") == "imperial"
        # Disabling a plugin drops its live definitions: no validator, so no set.
        await host.disable("other")
        with pytest.raises(ConfigKeyError, match="its plugin is not active"):
            host.config_keys.set("other.units", "metric")
        assert host.config_keys.get("other.units") == "imperial"  # stored values stay
        with pytest.raises(ConfigKeyError, match="no plugin registered it"):
            host.config_keys.set("ghost.units", "x")
