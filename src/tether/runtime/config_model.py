"""Building a plugin's typed config (`plugin.config_model(Model)`) at activation.

Sources, later wins: the model's defaults, the operator's `[plugins.<id>.config]` table in
tether.toml, then environment variables `TETHER_<ID>_<FIELD>` (id upper-cased, `-` -> `_`),
so a deployment can override the file without editing it. An environment value is handed
to pydantic as text when the field's type accepts text (`imperial`, `8`, `true`), and as
JSON otherwise (`["a", "b"]`, `{"k": 1}`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError


class PluginConfigError(ValueError):
    """A plugin's config did not validate; the message names each variable and constraint."""


def env_prefix(plugin_id: str) -> str:
    """`weather-pro` -> `TETHER_WEATHER_PRO_`."""
    return "TETHER_" + plugin_id.upper().replace("-", "_") + "_"


def env_name(plugin_id: str, field: str) -> str:
    """The environment variable for one field: `TETHER_WEATHER_UNITS`."""
    return env_prefix(plugin_id) + field.upper()


def _from_env(raw: str, annotation: Any) -> Any:
    """The text itself when the field's type accepts it (str, SecretStr, Literal, and the
    numbers and booleans pydantic converts from text); else its JSON value when it is JSON
    (lists, dicts, models, `null`); else the text, for pydantic to reject by name."""
    try:
        TypeAdapter(annotation).validate_python(raw)
    except Exception:
        pass
    else:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _is_secret(model: type[BaseModel], field: str) -> bool:
    """Secret fields (`SecretStr`, `SecretBytes`) never have their value echoed."""
    info = model.model_fields.get(field)
    return info is not None and "Secret" in repr(info.annotation)


def is_config_model(obj: object) -> bool:
    """True for a pydantic model class (what `plugin.config_model` accepts)."""
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def build_config(
    plugin_id: str,
    model: type[BaseModel],
    table: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> BaseModel:
    """Validate the merged config; raises `PluginConfigError` naming every bad source."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = dict(table)
    source: dict[str, str] = {k: f"[plugins.{plugin_id}.config] {k} in tether.toml" for k in table}
    for name, info in model.model_fields.items():
        var = env_name(plugin_id, name)
        if var in env:
            data[name] = _from_env(env[var], info.annotation)
            source[name] = f"environment variable {var}"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = err.get("loc", ())
            top = str(loc[0]) if loc else ""
            where = source.get(top)
            if where is None:
                where = (
                    f"{env_name(plugin_id, top)} or [plugins.{plugin_id}.config] {top}"
                    if top in model.model_fields
                    else f"[plugins.{plugin_id}.config]"
                )
            inner = ".".join(str(p) for p in loc[1:])
            field = f"{top}{'.' + inner if inner else ''}"
            hidden = err.get("type") == "missing" or _is_secret(model, top)
            value = "" if hidden else f" (got {err.get('input')!r})"
            lines.append(f"{field}: {where}: {err.get('msg', 'invalid')}{value}")
        raise PluginConfigError(
            f"config for plugin {plugin_id!r} is invalid: " + "; ".join(lines)
        ) from None
