"""Tool input schemas derived from typed Python functions.

Validation lives in `tether.runtime.validator`; `compile_validator` is re-exported here.

JSON-native annotations take a hand-written fast path; everything else (models, dataclasses,
Enums, datetimes, tuples...) goes through pydantic, which also builds `ToolSignature.convert`.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import json
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_json

from tether.contract.errors import SchemaError, ToolInputError
from tether.runtime.validator import compile_validator

__all__ = ["ToolSignature", "compile_validator", "derive_tool_signature"]

Converter = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ToolSignature:
    """What the runtime needs to expose and call one tool function."""

    name: str
    description: str
    input_schema: dict[str, Any]
    injected: dict[str, type]
    """Parameter name -> injectable type; the runtime passes a context object there."""
    convert: Converter | None
    """Turns validated JSON arguments into Python objects; None when all are JSON-native."""
    is_async: bool


# --- derivation -------------------------------------------------------------------------------

_EMPTY = inspect.Parameter.empty
_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    types.NoneType: {"type": "null"},
}
_LITERAL_TYPES = {str: "string", int: "integer", bool: "boolean"}
_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Returns|Yields|Raises):[ \t]*$", re.M
)
_ARG_SECTIONS = frozenset({"Args", "Arguments", "Parameters", "Params", "Keyword Args"})
_ARG_ENTRY = re.compile(r"\*{0,2}([A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:\s*(.*)")
_NO_DEFAULT = object()
_UNRESOLVED = (str, typing.ForwardRef)


def _fast_schema(tp: Any) -> dict[str, Any] | None:
    """Schema for a JSON-native annotation, or None when pydantic has to handle it."""
    if tp is Any or tp is _EMPTY:
        return {}
    if tp is None or type(tp) is type:
        scalar = _SCALARS.get(types.NoneType if tp is None else tp)
        if scalar is not None:
            return dict(scalar)
        if tp is list:
            return {"type": "array", "items": {}}
        if tp is dict:
            return {"type": "object", "additionalProperties": {}}
        return None
    if tp is Sequence:
        return {"type": "array", "items": {}}
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is list or origin is Sequence:
        items = _fast_schema(args[0]) if args else {}
        return None if items is None else {"type": "array", "items": items}
    if origin is dict:
        if args and args[0] is not str:
            return None
        values = _fast_schema(args[1]) if args else {}
        return None if values is None else {"type": "object", "additionalProperties": values}
    if origin is Union or origin is types.UnionType:
        members = [_fast_schema(arg) for arg in args]
        return None if None in members else {"anyOf": members}
    if origin is Literal:
        kinds = {type(arg) for arg in args}
        if not kinds <= _LITERAL_TYPES.keys():
            return None
        if len(kinds) == 1:  # a "type" keeps Literal[1] from accepting True
            return {"type": _LITERAL_TYPES[kinds.pop()], "enum": list(args)}
        return {"enum": list(args)}
    if origin is Annotated:
        notes = tp.__metadata__
        if not all(isinstance(note, str) for note in notes):
            return None  # Field(...) and other metadata: pydantic knows what they mean
        inner = _fast_schema(args[0])
        if inner is not None:
            inner["description"] = " ".join(notes)
        return inner
    return None


def _json_default(value: Any) -> Any:
    """The default as JSON, or _NO_DEFAULT when it has no JSON form."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is float:
        return value if math.isfinite(value) else _NO_DEFAULT
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        return _NO_DEFAULT


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a cleaned docstring into its summary and Google-style `Args:` descriptions."""
    sections = list(_SECTION.finditer(doc))
    if not sections:
        return doc.strip(), {}
    summary = doc[: sections[0].start()].strip()
    described: dict[str, list[str]] = {}
    for index, header in enumerate(sections):
        if header.group(1) not in _ARG_SECTIONS:
            continue
        end = sections[index + 1].start() if index + 1 < len(sections) else len(doc)
        indent: int | None = None
        current: list[str] | None = None
        for line in doc[header.end() : end].splitlines():
            text = line.strip()
            if not text:
                continue
            depth = len(line) - len(line.lstrip())
            if indent is None:
                indent = depth
            if depth < indent or depth == 0:
                break  # text back at the margin ends the section
            entry = _ARG_ENTRY.fullmatch(text) if depth == indent else None
            if entry is not None:
                current = described.setdefault(entry.group(1), [])
                current.append(entry.group(2))
            elif current is not None:
                current.append(text)
    return summary, {key: " ".join(filter(None, parts)) for key, parts in described.items()}


def _hints_target(fn: Any) -> Any:
    """The object whose annotations describe `fn`'s parameters."""
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return fn
    if isinstance(fn, functools.partial):
        return _hints_target(fn.func)
    if isinstance(fn, type):
        return typing.cast(Any, fn).__init__
    return type(fn).__call__


def _refuse_kinds(where: str, posonly: str | None, star: str | None, double: str | None) -> None:
    """Refuse parameters that named JSON arguments cannot fill, saying what to write instead."""
    for shown, fix in (
        (posonly and repr(posonly), "is positional-only; remove the '/' from the signature"),
        (star and f"'*{star}'", f"is not supported; declare a list such as '{star}: list[str]'"),
        (double and f"'**{double}'", "is not supported; declare each argument explicitly"),
    ):
        if shown:
            raise SchemaError(f"{where}: parameter {shown} {fix} (tools take named JSON arguments)")


def _parameters(fn: Any, where: str) -> list[tuple[str, Any, Any]]:
    """(name, default, raw annotation) per parameter, `_EMPTY` where absent."""
    if type(fn) is types.FunctionType and not (
        "__wrapped__" in fn.__dict__ or "__signature__" in fn.__dict__
    ):
        # Plain functions: read the code object, several times cheaper than inspect.signature.
        code, anns = fn.__code__, fn.__annotations__
        npos, nkw, names = code.co_argcount, code.co_kwonlyargcount, code.co_varnames
        star = names[npos + nkw] if code.co_flags & inspect.CO_VARARGS else None
        double = (
            names[npos + nkw + (star is not None)]
            if code.co_flags & inspect.CO_VARKEYWORDS
            else None
        )
        _refuse_kinds(where, names[0] if code.co_posonlyargcount else None, star, double)
        defaults, kwdefaults = fn.__defaults__ or (), fn.__kwdefaults__ or {}
        first = npos - len(defaults)
        params = [
            (n, defaults[i - first] if i >= first else _EMPTY, anns.get(n, _EMPTY))
            for i, n in enumerate(names[:npos])
        ]
        kwonly = names[npos : npos + nkw]
        return params + [(n, kwdefaults.get(n, _EMPTY), anns.get(n, _EMPTY)) for n in kwonly]
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{where}: cannot read its signature ({exc})") from None
    first_of = {p.kind: p.name for p in reversed(list(sig.parameters.values()))}
    kind = inspect.Parameter
    _refuse_kinds(
        where,
        first_of.get(kind.POSITIONAL_ONLY),
        first_of.get(kind.VAR_POSITIONAL),
        first_of.get(kind.VAR_KEYWORD),
    )
    return [(p.name, p.default, p.annotation) for p in sig.parameters.values()]


@functools.lru_cache(maxsize=4096)
def _annotation_code(text: str) -> types.CodeType:
    return compile(text, "<annotation>", "eval")


def _eval_annotation(ann: Any, globalns: dict[str, Any]) -> Any:
    """Evaluate a string annotation the way get_type_hints would for a function."""
    if not isinstance(ann, str):
        return ann
    if ann.isidentifier() and ann != "None":  # the common case, a bare name: skip eval
        return globalns[ann] if ann in globalns else getattr(builtins, ann)
    return eval(_annotation_code(ann), globalns)


def _is_resolved(tp: Any) -> bool:
    """False if a forward reference (a string) is left anywhere inside `tp`."""
    if type(tp) is type:
        return True
    if isinstance(tp, _UNRESOLVED):
        return False
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return True
    return all(_is_resolved(arg) for arg in (args[:1] if origin is Annotated else args))


def _resolve(fn: Any, params: list[tuple[str, Any, Any]], where: str) -> list[Any]:
    """Annotations with strings (`from __future__ import annotations`) evaluated."""
    raw = [ann for _, _, ann in params]
    if not any(isinstance(ann, str) for ann in raw):
        return raw
    target = _hints_target(fn)
    globalns = getattr(inspect.unwrap(target), "__globals__", None)
    if isinstance(globalns, dict):
        # What get_type_hints does for a function, minus re-compiling each string every call.
        try:
            quick = [_eval_annotation(ann, globalns) for ann in raw]
            if all(map(_is_resolved, quick)):
                return quick
        except Exception:
            pass  # let get_type_hints produce the authoritative answer or error
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as exc:
        for pname, _, ann in params:
            try:
                probe = types.SimpleNamespace(__annotations__={pname: ann})
                typing.get_type_hints(probe, globalns=globalns or {}, include_extras=True)
            except Exception as inner:
                raise SchemaError(
                    f"{where}: parameter {pname!r}: cannot resolve annotation {ann!r} "
                    f"({inner}); import the type at module level so it resolves by name"
                ) from None
        raise SchemaError(f"{where}: cannot resolve annotations ({exc})") from None
    return [hints.get(pname, ann) for pname, _, ann in params]


def _pydantic_schemas(
    where: str, complex_params: dict[str, Any]
) -> tuple[dict[str, TypeAdapter[Any]], dict[str, dict[str, Any]], dict[str, Any]]:
    """Adapters, per-parameter schemas and shared `$defs` for non-JSON-native parameters."""

    def refuse(pname: str, exc: Exception) -> SchemaError:
        return SchemaError(
            f"{where}: parameter {pname!r}: type {complex_params[pname]!r} has no JSON Schema "
            f"({exc}); use JSON types, a pydantic model, a dataclass or a TypedDict"
        )

    adapters: dict[str, TypeAdapter[Any]] = {}
    for pname, ann in complex_params.items():
        try:
            adapters[pname] = TypeAdapter(ann)
        except Exception as exc:
            raise refuse(pname, exc) from None
    # One pass over all parameters lets pydantic share and de-duplicate model `$defs`.
    inputs = [(pname, "validation", adapter) for pname, adapter in adapters.items()]
    try:
        schemas, top = TypeAdapter.json_schemas(inputs)  # type: ignore[arg-type]
    except Exception as exc:
        for pname, adapter in adapters.items():
            try:
                adapter.json_schema()
            except Exception as inner:
                raise refuse(pname, inner) from None
        raise SchemaError(f"{where}: cannot generate a JSON Schema ({exc})") from None
    by_param = {key: schema for (key, _mode), schema in schemas.items()}
    return adapters, by_param, top.get("$defs", {})


def _make_converter(where: str, adapters: dict[str, TypeAdapter[Any]]) -> Converter:
    """A function that turns validated JSON arguments into the annotated Python objects."""
    # JSON-mode validation, so strict models still accept ISO datetimes, Enum values, etc.
    validators = tuple((name, adapter.validate_json) for name, adapter in adapters.items())

    def convert(arguments: dict[str, Any]) -> dict[str, Any]:
        converted = dict(arguments)
        for name, validate in validators:
            if name in converted:
                try:
                    converted[name] = validate(to_json(converted[name]))
                except ValidationError as exc:
                    first = exc.errors()[0]
                    path = ".".join(str(part) for part in (name, *first["loc"]))
                    raise ToolInputError(f"{path}: {first['msg']}") from None
        return converted

    convert.__qualname__ = f"convert[{where}]"
    return convert


def derive_tool_signature(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    injectable: tuple[type, ...] = (),
) -> ToolSignature:
    """Derive a tool's name, description and input JSON Schema from a typed function.

    Parameters annotated with a subclass of one of `injectable` are left out of the schema
    and recorded in `injected`. Raises SchemaError naming the function and parameter when the
    signature cannot be called with named JSON arguments.
    """
    tool_name = name or getattr(fn, "__name__", None)
    if not tool_name:
        raise SchemaError(f"tool callable {fn!r} has no __name__; pass name=...")
    where = f"tool function {getattr(fn, '__qualname__', tool_name)!r}"
    params = _parameters(fn, where)
    annotations = _resolve(fn, params, where)
    doc_target = fn.func if isinstance(fn, functools.partial) else fn
    summary, arg_docs = _parse_docstring(inspect.getdoc(doc_target) or "")

    properties: dict[str, dict[str, Any]] = {}
    required: list[str] = []
    injected: dict[str, type] = {}
    complex_params: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    for (pname, default, _), ann in zip(params, annotations, strict=True):
        if injectable and isinstance(ann, type) and issubclass(ann, injectable):
            injected[pname] = ann
            continue
        schema = _fast_schema(ann)
        if schema is None:
            complex_params[pname] = ann
            notes = [n for n in getattr(ann, "__metadata__", ()) if isinstance(n, str)]
            schema = {"description": " ".join(notes)} if notes else {}
        elif default is not _EMPTY:
            json_default = _json_default(default)
            if json_default is not _NO_DEFAULT:
                schema["default"] = json_default
        if default is _EMPTY:
            required.append(pname)
        else:
            defaults[pname] = default
        if pname in arg_docs and "description" not in schema:
            schema["description"] = arg_docs[pname]
        properties[pname] = schema

    convert: Converter | None = None
    defs: dict[str, Any] = {}
    if complex_params:
        adapters, by_param, defs = _pydantic_schemas(where, complex_params)
        for pname, generated in by_param.items():
            schema = properties[pname]  # holds a docstring or Annotated description, if any
            if pname in defaults:
                try:
                    dumped = adapters[pname].dump_python(
                        defaults[pname], mode="json", warnings=False
                    )
                except Exception:  # a default of the wrong type is allowed, just not shown
                    dumped = _NO_DEFAULT
                dumped = _json_default(dumped)
                if dumped is not _NO_DEFAULT:
                    generated["default"] = dumped
            if "description" in schema and "description" not in generated:
                generated["description"] = schema["description"]
            properties[pname] = generated
        convert = _make_converter(tool_name, adapters)

    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if defs:
        input_schema["$defs"] = defs
    return ToolSignature(
        name=tool_name,
        description=inspect.cleandoc(description) if description is not None else summary,
        input_schema=input_schema,
        injected=injected,
        convert=convert,
        is_async=inspect.iscoroutinefunction(fn)
        or (not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)),
    )
