"""Compiled, bounded validators for tool input schemas.

A schema is checked before it is compiled: bounded size, depth and node count, only local
`$ref`s (nothing is ever fetched), and no regex pattern that can backtrack catastrophically.
Compiled validators are cached by the schema's canonical JSON.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import re
from collections.abc import Callable
from typing import Any

import fastjsonschema
from fastjsonschema import JsonSchemaDefinitionException, JsonSchemaValueException

from tether.contract.errors import SchemaError, ToolInputError

__all__ = [
    "MAX_PATTERN_LENGTH",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_NODES",
    "compile_validator",
]

MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_NODES = 5000
MAX_PATTERN_LENGTH = 1000


_sre: Any = importlib.import_module("re._parser")  # the stdlib regex parser; untyped
_REPEATS = tuple(
    getattr(_sre, op)
    for op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
    if hasattr(_sre, op)
)


class _Refused(Exception):
    """A schema broke one of the hard bounds; the message says what to change."""


class _RefuseEveryScheme(dict[str, Callable[[str], Any]]):
    """fastjsonschema `handlers` claiming every URI scheme, so no remote `$ref` is ever fetched."""

    def __contains__(self, scheme: object) -> bool:
        return True

    def __missing__(self, scheme: str) -> Callable[[str], Any]:
        return _refuse_fetch


def _refuse_fetch(uri: str) -> Any:
    raise _Refused(f"$ref to {uri!r} would fetch a remote document; inline it under $defs")


def _check_structure(schema: Any) -> list[str]:
    """Enforce depth, node-count and local-`$ref` bounds; return every regex pattern found.

    Iterative, and it stops at the node limit, so cyclic or huge inputs cannot hang it.
    """
    patterns: list[str] = []
    stack: list[tuple[Any, int]] = [(schema, 1)] if isinstance(schema, dict | list) else []
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise _Refused(
                f"schema has more than {MAX_SCHEMA_NODES} objects and arrays; "
                "simplify the parameters or split the tool"
            )
        if depth > MAX_SCHEMA_DEPTH:
            raise _Refused(
                f"schema is nested deeper than {MAX_SCHEMA_DEPTH} levels; "
                "flatten it or move shared parts under $defs"
            )
        if not isinstance(node, dict):
            stack.extend((item, depth + 1) for item in node if isinstance(item, dict | list))
            continue
        # Conservative: "$ref"/"pattern" keys are checked wherever they occur, even in data.
        for key, value in node.items():
            if isinstance(value, dict | list):
                stack.append((value, depth + 1))
                if key == "patternProperties" and isinstance(value, dict):
                    patterns.extend(value)
            elif key == "$ref":
                if not isinstance(value, str) or not value.startswith("#"):
                    raise _Refused(
                        f"$ref {value!r} is not local; only references inside the schema "
                        "('#/$defs/...') are allowed, so inline the referenced schema"
                    )
            elif key == "pattern":
                if not isinstance(value, str):
                    raise _Refused(f"pattern {value!r} must be a string")
                patterns.append(value)
    return patterns


def _ambiguous_alternation(alternatives: list[Any]) -> bool:
    """True unless each alternative starts with its own distinct literal character."""
    firsts: set[str] = set()
    for alternative in alternatives:
        if not alternative or alternative[0][0] is not _sre.LITERAL:
            return True
        first = chr(alternative[0][1]).casefold()  # (?i) could make 'a' and 'A' overlap
        if first in firsts:
            return True
        firsts.add(first)
    return False


def _regex_children(op: Any, arg: Any) -> list[Any]:
    """Sub-expressions of a group, lookaround or conditional node of a parsed regex."""
    if op is _sre.SUBPATTERN:
        return [arg[3]]
    if op is _sre.ASSERT or op is _sre.ASSERT_NOT:
        return [arg[1]]
    if op is _sre.ATOMIC_GROUP:
        return [arg]
    if op is _sre.GROUPREF_EXISTS:
        return [branch for branch in arg[1:] if branch is not None]
    return []


def _backtracks(items: Any, repeated: bool) -> bool:
    """True if a repeated part of a parsed regex nests a variable quantifier or overlap."""
    for op, arg in items:
        if op in _REPEATS:
            low, high, body = arg
            if (repeated and high > 1 and low != high) or _backtracks(body, repeated or high > 1):
                return True
        elif op is _sre.BRANCH:
            if (repeated and _ambiguous_alternation(arg[1])) or any(
                _backtracks(alternative, repeated) for alternative in arg[1]
            ):
                return True
        elif (op is _sre.GROUPREF and repeated) or any(
            _backtracks(child, repeated) for child in _regex_children(op, arg)
        ):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is refused, or None when it is safe to compile."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"pattern is longer than {MAX_PATTERN_LENGTH} characters; shorten it"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"pattern {pattern!r} is not a valid regular expression ({exc})"
    if _backtracks(_sre.parse(pattern), False):
        return (
            f"pattern {pattern!r} repeats a group that contains a quantifier or overlapping "
            "alternatives, which can backtrack catastrophically; rewrite it without nested "
            "repetition, e.g. '[\\w\\s]*' instead of '(\\w+\\s?)*'"
        )
    return None


def _translate(exc: JsonSchemaValueException) -> str:
    """`data.times must be integer` -> `times: must be integer`."""
    name: str = exc.name or "data"
    message: str = exc.message
    rest = message[len(name) :].lstrip() if message.startswith(name) else message
    path = name[4:].lstrip(".") if name.startswith("data") else name
    return f"{path or 'arguments'}: {rest}"


def _nonfinite_path(data: Any) -> str | None:
    """Path of the first NaN or infinite float in `data`, or None. Iterative: no recursion limit."""
    if type(data) is float:
        return None if math.isfinite(data) else "arguments"
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, container = stack.pop()
        if isinstance(container, dict):
            entries: Any = container.items()
        elif isinstance(container, list | tuple):
            entries = enumerate(container)
        else:
            continue
        for key, value in entries:
            kind = type(value)
            if kind is float:
                if not math.isfinite(value):
                    return _child(path, key) or "arguments"
            elif isinstance(value, dict | list | tuple):
                stack.append((_child(path, key), value))
    return None


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


@functools.lru_cache(maxsize=1024)
def _compiled(canonical: str) -> Callable[[Any], None]:
    """One wrapped fastjsonschema validator per canonical schema text."""
    try:
        check = fastjsonschema.compile(
            json.loads(canonical),  # a private copy: fastjsonschema rewrites $ref in place
            handlers=_RefuseEveryScheme(),
            use_default=False,  # never fill defaults into the caller's arguments
        )
    except JsonSchemaDefinitionException as exc:
        raise _Refused(f"schema is invalid ({exc})") from None

    def validate(data: Any) -> None:
        try:
            check(data)
        except JsonSchemaValueException as exc:
            raise ToolInputError(_translate(exc)) from None
        except RecursionError:
            raise ToolInputError("arguments: nested too deeply") from None
        bad = _nonfinite_path(data)
        if bad is not None:
            raise ToolInputError(f"{bad}: must be a finite number, not NaN or Infinity")

    return validate


# Keywords that never affect validation (`default` included: compiled with use_default=False).
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated"})
# Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_ONE_SCHEMA = frozenset(
    {
        "additionalProperties",
        "items",
        "additionalItems",
        "contains",
        "not",
        "propertyNames",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
_SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_SCHEMA_MAP = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def _without_annotations(node: Any) -> Any:
    """A copy of a schema without annotation keywords, recursing only into positions that
    hold schemas (so an `enum` value or a property named "title" is kept as it is)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ANNOTATIONS:
            continue
        if key in _SCHEMA_MAP and isinstance(value, dict):
            out[key] = {name: _without_annotations(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LIST and isinstance(value, list):
            out[key] = [_without_annotations(sub) for sub in value]
        elif key in _ONE_SCHEMA:
            out[key] = _without_annotations(value)
        else:
            out[key] = value
    return out


def compile_validator(schema: dict[str, Any], *, where: str) -> Callable[[Any], None]:
    """Compile `schema` into a function that raises ToolInputError for invalid input.

    Refuses, with SchemaError prefixed by `where`, schemas that are too big, too deep, have too
    many nodes, use non-local `$ref`s or use regex patterns prone to catastrophic
    backtracking. Identical schemas share one compiled function.
    """
    try:
        patterns = _check_structure(schema)
        try:
            canonical = json.dumps(schema, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise _Refused(f"schema is not plain JSON ({exc})") from None
        if len(canonical) > MAX_SCHEMA_BYTES:  # ensure_ascii: characters == bytes
            raise _Refused(
                f"schema is {len(canonical)} bytes, over the {MAX_SCHEMA_BYTES}-byte limit; "
                "simplify the parameters or split the tool"
            )
        for pattern in patterns:
            problem = _pattern_problem(pattern)
            if problem is not None:
                raise _Refused(problem)
        # Schemas that differ only in annotations validate alike; compile them once.
        return _compiled(json.dumps(_without_annotations(schema), sort_keys=True))
    except _Refused as exc:
        raise SchemaError(f"{where}: {exc}") from None
