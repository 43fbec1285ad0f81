"""Shared validation helpers for manifests and policy: did-you-mean, display strings, paths,
and turning pydantic errors into `Problem`s that name the field and the fix."""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import ValidationError

from tether.contract.errors import Problem

MAX_MANIFEST_BYTES = 64 * 1024

PLUGIN_ID = re.compile(r"^[a-z][a-z0-9-]*$")
PLUGIN_ID_MAX = 64

# Bidirectional overrides, embeddings, isolates and marks: they make text display in an
# order other than the one it is stored in (the "Trojan Source" trick).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def did_you_mean(
    word: str, candidates: Iterable[str], aliases: dict[str, str] | None = None
) -> str:
    """A ` (did you mean "x"?)` suffix, or "" when nothing is close.

    `aliases` maps names other ecosystems use (``permissions``) to ours (``capabilities``),
    so a misspelt alias still finds the right key.
    """
    pool = list(candidates)
    alias_map = aliases or {}
    lowered = word.lower().replace("-", "_")
    if lowered in alias_map:
        return f' (did you mean "{alias_map[lowered]}"?)'
    matches = difflib.get_close_matches(lowered, pool + list(alias_map), n=1, cutoff=0.6)
    if not matches:
        return ""
    best = alias_map.get(matches[0], matches[0])
    return f' (did you mean "{best}"?)'


def check_display_string(value: str, *, max_len: int, multiline: bool = False) -> str:
    """Refuse control characters and bidi overrides in text shown to operators."""
    if len(value) > max_len:
        raise ValueError(f"is {len(value)} characters long; keep it to at most {max_len}")
    for i, ch in enumerate(value):
        if ch in _BIDI:
            raise ValueError(
                f"contains the bidi control U+{ord(ch):04X} at position {i}; remove it "
                "(it can make the text display differently from what it says)"
            )
        if unicodedata.category(ch) in ("Cc", "Cf") and not (multiline and ch in "\n\t"):
            raise ValueError(
                f"contains the control character U+{ord(ch):04X} at position {i}; remove it"
            )
    if not value.strip():
        raise ValueError("is empty; give it some visible text")
    return value


def check_relative_path(value: str) -> str:
    """A path inside the plugin folder: relative, forward slashes, no traversal."""
    if not value:
        raise ValueError("is empty; give a file name inside the plugin folder")
    if "\\" in value or "\x00" in value:
        raise ValueError("must use forward slashes and no NUL; give a path like 'plugin.py'")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{value!r} is absolute; give a path relative to the plugin folder")
    if any(part in ("..", "") for part in value.split("/")) and value != ".":
        raise ValueError(
            f"{value!r} leaves or skips a folder level; keep it inside the plugin folder"
        )
    return value


def check_finite(obj: Any, path: str = "") -> None:
    """Refuse NaN and infinities anywhere in a parsed document."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"{path or 'value'}: {obj!r} is not a finite number; remove it")
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_finite(v, f"{path}[{i}]")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f'duplicate key "{key}"; keep one of them')
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; use a finite number")


def parse_document(
    data: bytes, fmt: Literal["toml", "json"], what: str = "a manifest"
) -> dict[str, Any]:
    """Parse a manifest or policy file strictly; raises ValueError with the reason and fix."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"is {len(data)} bytes; {what} may be at most {MAX_MANIFEST_BYTES} bytes")
    if data.startswith(b"\xef\xbb\xbf"):
        raise ValueError("starts with a byte-order mark; save the file as UTF-8 without BOM")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    if fmt == "toml":
        try:
            doc: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"is not valid TOML: {exc}") from None
    else:
        try:
            doc = json.loads(
                text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
            )
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("must be a JSON object at the top level")
    check_finite(doc)
    return dict(doc)


_PYDANTIC_MESSAGES = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "missing": "is required",
    "literal_error": "must be one of {expected}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "greater_than": "must be greater than {gt}",
    "int_from_float": "must be a whole number",
    "too_long": "has too many items (at most {max_length})",
}


def problems_from_validation(
    exc: ValidationError,
    where: str,
    allowed: Mapping[str, Iterable[str]],
    aliases: Mapping[str, dict[str, str]],
) -> list[Problem]:
    """Translate pydantic errors into `Problem`s; unknown keys get a did-you-mean.

    `allowed` maps a dotted parent path ("" for the top level) to the keys valid there, and
    `aliases` maps it to names other ecosystems use for those keys.
    """
    out: list[Problem] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            # List positions do not change which keys are allowed: env.0.to -> "env".
            parent = ".".join(p for p in loc[:-1] if not p.isdigit())
            hint = did_you_mean(loc[-1], allowed.get(parent, ()), aliases.get(parent))
            out.append(Problem(where, field, f"unknown key{hint}; remove it or fix its name"))
            continue
        if kind == "value_error":
            msg = str(err["msg"]).removeprefix("Value error, ")
        elif kind in _PYDANTIC_MESSAGES:
            ctx = err.get("ctx", {})
            try:
                msg = _PYDANTIC_MESSAGES[kind].format(**ctx)
            except (KeyError, IndexError):
                msg = _PYDANTIC_MESSAGES[kind]
        else:
            msg = str(err["msg"])
        if kind == "missing":
            msg = "is required; add it"
        out.append(Problem(where, field, msg))
    return out
