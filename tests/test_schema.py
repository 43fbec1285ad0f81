"""Tests for tether.runtime.schema: signature derivation and safe validator compilation."""

import datetime
import enum
import json
import math
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional

import pytest
from pydantic import BaseModel, Field, create_model

from tether.contract.errors import SchemaError, ToolInputError
from tether.runtime import schema as schema_module
from tether.runtime.schema import ToolSignature, compile_validator, derive_tool_signature

# --- helpers and fixtures -----------------------------------------------------------------------


class Context:
    """Stands in for the runtime's injectable context object."""


class PluginContext(Context):
    pass


class Point(BaseModel):
    x: int
    y: int = 0


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass
class Span:
    start: int
    end: int


def one_param(annotation: Any) -> Callable[..., Any]:
    """A function `tool(value)` whose only parameter carries `annotation`."""

    def tool(value):  # type: ignore[no-untyped-def]
        return value

    tool.__annotations__ = {"value": annotation}
    return tool


def property_of(fn: Callable[..., Any], name: str = "value") -> Any:
    return derive_tool_signature(fn).input_schema["properties"][name]


def object_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to open a URL."""

    def urlopen(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"urlopen called with {args!r}: a remote $ref was fetched")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


async def echo(ctx: Context, text: str, times: int = 1, loud: bool = False) -> str:
    """Repeat the text.

    Said twice if you ask.

    Args:
        text: The text
            to repeat.
        times (int): How many times.

    Returns:
        The repeated text.
    """
    return text * times


# --- derivation: fast path ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (type(None), {"type": "null"}),
        (Any, {}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (list, {"type": "array", "items": {}}),
        (Sequence[int], {"type": "array", "items": {"type": "integer"}}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (dict, {"type": "object", "additionalProperties": {}}),
        (str | None, {"anyOf": [{"type": "string"}, {"type": "null"}]}),
        (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
        (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, 2], {"type": "integer", "enum": [1, 2]}),
        (Literal["a", 1, True], {"enum": ["a", 1, True]}),
        (Annotated[str, "A city name"], {"type": "string", "description": "A city name"}),
        (
            list[dict[str, float | None]],
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                },
            },
        ),
    ],
)
def test_fast_path_schema(annotation: Any, expected: dict[str, Any]) -> None:
    signature = derive_tool_signature(one_param(annotation))
    assert signature.input_schema == object_schema({"value": expected}, ["value"])
    assert signature.convert is None


def test_missing_annotation_is_any() -> None:
    def tool(value):  # type: ignore[no-untyped-def]
        return value

    assert property_of(tool) == {}


def test_fast_path_never_touches_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pydantic used for a JSON-native signature")

    monkeypatch.setattr(schema_module, "TypeAdapter", explode)
    signature = derive_tool_signature(echo, injectable=(Context,))
    assert signature.convert is None


def test_full_signature_with_docstring_defaults_and_injection() -> None:
    signature = derive_tool_signature(echo, injectable=(Context,))
    assert isinstance(signature, ToolSignature)
    assert signature.name == "echo"
    assert signature.description == "Repeat the text.\n\nSaid twice if you ask."
    assert signature.input_schema == object_schema(
        {
            "text": {"type": "string", "description": "The text to repeat."},
            "times": {"type": "integer", "default": 1, "description": "How many times."},
            "loud": {"type": "boolean", "default": False},
        },
        ["text"],
    )
    assert signature.injected == {"ctx": Context}
    assert signature.is_async is True


def test_injectable_subclass_is_injected_and_not_in_schema() -> None:
    def tool(ctx: PluginContext, query: str) -> str:
        return query

    signature = derive_tool_signature(tool, injectable=(Context,))
    assert signature.injected == {"ctx": PluginContext}
    assert list(signature.input_schema["properties"]) == ["query"]
    assert signature.input_schema["required"] == ["query"]


def test_without_injectable_a_context_param_is_refused() -> None:
    def tool(ctx: Context) -> None:
        return None

    with pytest.raises(SchemaError, match="'ctx'"):
        derive_tool_signature(tool)


def test_name_and_description_overrides() -> None:
    def tool(text: str) -> str:
        """Docstring summary."""
        return text

    signature = derive_tool_signature(tool, name="shout", description="\n    Say it loud.\n  ")
    assert (signature.name, signature.description) == ("shout", "Say it loud.")
    assert signature.is_async is False


def test_no_docstring_gives_empty_description() -> None:
    def tool(text: str) -> str:
        return text

    assert derive_tool_signature(tool).description == ""


def test_args_section_variants() -> None:
    def tool(path: str, *, mode: str = "r", verbose: bool = False) -> None:
        """Open a file.

        Parameters:
            path (str): Where the file is.
            mode: How to open it;
                'r' or 'w'.

                Defaults to read.
            **verbose: Ignored here.

        Raises:
            OSError: never described as a parameter.
        """

    signature = derive_tool_signature(tool)
    properties = signature.input_schema["properties"]
    assert signature.description == "Open a file."
    assert properties["path"]["description"] == "Where the file is."
    assert properties["mode"]["description"] == "How to open it; 'r' or 'w'. Defaults to read."
    assert properties["verbose"]["description"] == "Ignored here."
    assert "OSError" not in json.dumps(signature.input_schema)


def test_annotated_description_wins_over_docstring() -> None:
    def tool(city: Annotated[str, "From the annotation"]) -> str:
        """Look up.

        Args:
            city: From the docstring.
        """
        return city

    assert property_of(tool, "city")["description"] == "From the annotation"


@pytest.mark.parametrize(
    ("default", "expected"),
    [
        ("x", "x"),
        (None, None),
        (2.5, 2.5),
        ([1, 2], [1, 2]),
        (float("nan"), "absent"),
        (object(), "absent"),
    ],
)
def test_defaults_are_kept_only_when_json(default: Any, expected: Any) -> None:
    def tool(value: Any = default) -> None:
        return None

    signature = derive_tool_signature(tool)
    assert signature.input_schema["required"] == []
    assert signature.input_schema["properties"]["value"].get("default", "absent") == expected


# --- derivation: string annotations -------------------------------------------------------------


def test_string_annotations_resolve() -> None:
    def tool(a, b, c, d):  # type: ignore[no-untyped-def]
        return None

    tool.__annotations__ = {"a": "list[str]", "b": "Optional[int]", "c": "Point", "d": "None"}
    signature = derive_tool_signature(tool)
    properties = signature.input_schema["properties"]
    assert properties["a"] == {"type": "array", "items": {"type": "string"}}
    assert properties["b"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert properties["c"] == {"$ref": "#/$defs/Point"}
    assert properties["d"] == {"type": "null"}
    assert signature.convert is not None


def test_nested_forward_reference_resolves_through_get_type_hints() -> None:
    tool = one_param("list['Point']")
    signature = derive_tool_signature(tool)
    assert signature.input_schema["properties"]["value"]["items"] == {"$ref": "#/$defs/Point"}
    assert signature.convert is not None
    assert signature.convert({"value": [{"x": 1}]}) == {"value": [Point(x=1)]}


def test_unresolvable_annotation_names_function_and_parameter() -> None:
    def lookup(ok, broken):  # type: ignore[no-untyped-def]
        return None

    lookup.__annotations__ = {"ok": "str", "broken": "NoSuchType"}
    with pytest.raises(SchemaError) as caught:
        derive_tool_signature(lookup)
    message = str(caught.value)
    assert "lookup" in message
    assert "'broken'" in message
    assert "NoSuchType" in message
    assert "import" in message


# --- derivation: pydantic path ------------------------------------------------------------------


def test_pydantic_model_parameter_schema_and_convert() -> None:
    def move(point: Point, steps: int = 1) -> None:
        return None

    signature = derive_tool_signature(move)
    schema = signature.input_schema
    assert schema["properties"]["point"] == {"$ref": "#/$defs/Point"}
    assert set(schema["$defs"]["Point"]["properties"]) == {"x", "y"}
    assert schema["required"] == ["point"]
    assert signature.convert is not None
    converted = signature.convert({"point": {"x": 3}, "steps": 2})
    assert converted == {"point": Point(x=3, y=0), "steps": 2}
    assert isinstance(converted["point"], Point)


def test_enum_parameter_converts_and_default_is_the_value() -> None:
    def paint(color: Color = Color.GREEN) -> None:
        return None

    signature = derive_tool_signature(paint)
    assert signature.input_schema["properties"]["color"]["default"] == "green"
    assert signature.input_schema["$defs"]["Color"]["enum"] == ["red", "green"]
    assert signature.convert is not None
    assert signature.convert({"color": "red"})["color"] is Color.RED
    assert signature.convert({}) == {}


def test_datetime_tuple_dataclass_and_field_convert() -> None:
    def plan(
        when: datetime.datetime,
        pair: tuple[int, str],
        span: Span,
        count: Annotated[int, Field(ge=0, description="How many")] = 0,
    ) -> None:
        return None

    signature = derive_tool_signature(plan)
    properties = signature.input_schema["properties"]
    assert properties["when"] == {"type": "string", "format": "date-time"}
    assert properties["count"] == {
        "type": "integer",
        "minimum": 0,
        "description": "How many",
        "default": 0,
    }
    assert signature.convert is not None
    converted = signature.convert(
        {"when": "2024-05-01T12:00:00Z", "pair": [1, "a"], "span": {"start": 1, "end": 2}}
    )
    assert converted["when"] == datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)
    assert converted["pair"] == (1, "a")
    assert converted["span"] == Span(1, 2)


def test_same_named_models_get_distinct_defs() -> None:
    first = create_model("Item", a=(int, ...))
    second = create_model("Item", b=(str, ...))

    def tool(x, y):  # type: ignore[no-untyped-def]
        return None

    tool.__annotations__ = {"x": first, "y": second}
    signature = derive_tool_signature(tool)
    properties = signature.input_schema["properties"]
    assert properties["x"] != properties["y"]
    assert len(signature.input_schema["$defs"]) == 2
    validate = compile_validator(signature.input_schema, where="t")
    validate({"x": {"a": 1}, "y": {"b": "s"}})
    with pytest.raises(ToolInputError, match=r"^y: "):
        validate({"x": {"a": 1}, "y": {"a": 1}})
    assert signature.convert is not None
    converted = signature.convert({"x": {"a": 1}, "y": {"b": "s"}})
    assert (type(converted["x"]), type(converted["y"])) == (first, second)


def test_convert_failure_is_tool_input_error_with_path() -> None:
    def move(point: Point) -> None:
        return None

    convert = derive_tool_signature(move).convert
    assert convert is not None
    with pytest.raises(ToolInputError, match=r"^point\.x: "):
        convert({"point": {"x": "not a number"}})


def test_unsupported_type_is_refused_naming_parameter() -> None:
    class Opaque:
        pass

    def tool(handle: Opaque) -> None:
        return None

    with pytest.raises(SchemaError, match=r"tool.*'handle'.*no JSON Schema"):
        derive_tool_signature(tool)


# --- derivation: refused signatures and callables -----------------------------------------------


def star_args(*items: str) -> None:
    return None


def star_kwargs(**options: str) -> None:
    return None


def positional_only(first: str, /, second: str) -> None:
    return None


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (star_args, ["star_args", "'*items'", "list"]),
        (star_kwargs, ["star_kwargs", "'**options'", "explicitly"]),
        (positional_only, ["positional_only", "'first'", "remove the '/'"]),
    ],
)
def test_refused_signatures(fn: Callable[..., Any], fragments: list[str]) -> None:
    with pytest.raises(SchemaError) as caught:
        derive_tool_signature(fn)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_refused_signature_through_inspect_signature_path() -> None:
    class Tool:
        def __call__(self, *items: str) -> None:
            return None

    with pytest.raises(SchemaError, match=r"'\*items'"):
        derive_tool_signature(Tool(), name="tool")


def test_callable_instance_with_async_call() -> None:
    class Search:
        """Search the web."""

        async def __call__(self, query: str, limit: int = 5) -> list[str]:
            return []

    signature = derive_tool_signature(Search(), name="search")
    assert signature.is_async is True
    assert signature.description == "Search the web."
    assert signature.input_schema["required"] == ["query"]


def test_callable_without_name_needs_name() -> None:
    class Tool:
        def __call__(self, query: str) -> None:
            return None

    with pytest.raises(SchemaError, match="name="):
        derive_tool_signature(Tool())


# --- validator ----------------------------------------------------------------------------------

ECHO_SCHEMA = object_schema(
    {
        "text": {"type": "string"},
        "times": {"type": "integer", "default": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    ["text"],
)


def test_validator_accepts_valid_input_without_filling_defaults() -> None:
    validate = compile_validator(ECHO_SCHEMA, where="plugin demo")
    arguments = {"text": "hi", "tags": ["a"]}
    assert validate(arguments) is None
    assert arguments == {"text": "hi", "tags": ["a"]}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "arguments: must contain ['text'] properties"),
        ({"text": 1}, "text: must be string"),
        ({"text": "a", "times": "2"}, "times: must be integer"),
        ({"text": "a", "times": True}, "times: must be integer"),
        ({"text": "a", "tags": ["x", 2]}, "tags[1]: must be string"),
        ({"text": "a", "extra": 1}, "arguments: must not contain {'extra'} properties"),
        ([], "arguments: must be object"),
    ],
)
def test_validator_rejects_with_field_named(arguments: Any, message: str) -> None:
    validate = compile_validator(ECHO_SCHEMA, where="plugin demo")
    with pytest.raises(ToolInputError) as caught:
        validate(arguments)
    assert str(caught.value) == message


def test_validator_for_derived_pydantic_schema_resolves_local_refs() -> None:
    def move(point: Point, color: Color) -> None:
        return None

    validate = compile_validator(derive_tool_signature(move).input_schema, where="t")
    validate({"point": {"x": 1}, "color": "red"})
    with pytest.raises(ToolInputError, match=r"^point\.x: must be integer"):
        validate({"point": {"x": "1"}, "color": "red"})
    with pytest.raises(ToolInputError, match=r"^color: must be one of"):
        validate({"point": {"x": 1}, "color": "blue"})


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -math.inf],
)
def test_non_finite_numbers_refused(value: float) -> None:
    validate = compile_validator(
        object_schema({"ratio": {"type": "number"}, "data": {}}, []), where="t"
    )
    with pytest.raises(ToolInputError, match=r"^ratio: must be a finite number"):
        validate({"ratio": value})
    with pytest.raises(ToolInputError, match=r"^data\.rows\[1\]: must be a finite number"):
        validate({"data": {"rows": [1.5, value]}})
    validate({"ratio": 1.5, "data": {"rows": [1.5]}})


def test_identical_schemas_share_one_compiled_function() -> None:
    first = compile_validator({"type": "object", "required": ["a"]}, where="one")
    second = compile_validator({"required": ["a"], "type": "object"}, where="two")
    other = compile_validator({"type": "object", "required": ["b"]}, where="three")
    assert first is second
    assert first is not other


def test_compiling_does_not_mutate_the_schema() -> None:
    schema = {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
    before = json.dumps(schema, sort_keys=True)
    compile_validator(schema, where="t")({"a": 1})
    assert json.dumps(schema, sort_keys=True) == before


# --- validator: refused schemas -----------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "http://example.com/schema.json",
        "https://example.com/schema.json#/defs/x",
        "file:///etc/passwd",
        "other.json#/x",
        "ftp://example.com/s.json",
    ],
)
def test_remote_refs_refused_before_fetching(no_network: None, ref: str) -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": ref}}}
    with pytest.raises(SchemaError, match=r"^plugin demo: \$ref .* is not local"):
        compile_validator(schema, where="plugin demo")


def test_id_rescoping_cannot_fetch_either(no_network: None) -> None:
    # A local-looking "#..." ref under an `$id` with a fragment resolves to a remote URI;
    # the catch-all handlers must refuse it instead of fetching.
    schema = {
        "definitions": {"x": {"type": "string"}},
        "properties": {
            "a": {
                "$id": "http://evil.example/s.json#frag",
                "properties": {"b": {"$ref": "#/definitions/x"}},
            }
        },
    }
    with pytest.raises(SchemaError, match="would fetch a remote document"):
        compile_validator(schema, where="t")


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"enum": ["x" * 70_000]}, "over the 65536-byte limit"),
        ({"enum": [[] for _ in range(6000)]}, "more than 5000 objects and arrays"),
        (
            json.loads('{"not": ' * 40 + "{}" + "}" * 40),
            "nested deeper than 32 levels",
        ),
        ({"enum": [float("nan")]}, "not plain JSON"),
        ({"enum": [object()]}, "not plain JSON"),
        ({"type": "object", "properties": {"a": {"$ref": 5}}}, "is not local"),
        ({"$ref": "#/nowhere"}, "schema is invalid"),
    ],
)
def test_bounds_refused(schema: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SchemaError) as caught:
        compile_validator(schema, where="plugin demo")
    assert str(caught.value).startswith("plugin demo: ")
    assert fragment in str(caught.value)


def test_cyclic_schema_is_refused_not_hung() -> None:
    schema: dict[str, Any] = {"type": "object"}
    schema["properties"] = {"self": schema}
    with pytest.raises(SchemaError, match="nested deeper than 32"):
        compile_validator(schema, where="t")


@pytest.mark.parametrize(
    "pattern",
    [
        "(a+)+$",
        "(a*)*b",
        r"(\w+\s?)*$",
        "(a|aa)+",
        "(.*a){20}",
        "(a|a)*c",
        "(?i)(ab|AB)+$",
        "(x+x+)+y",
        r"(\d{1,3}\.)+",
        r"(a)\1*(b)+",
    ],
)
def test_redos_patterns_refused(pattern: str) -> None:
    for schema in (
        {"type": "string", "pattern": pattern},
        {"type": "object", "patternProperties": {pattern: {}}},
    ):
        with pytest.raises(SchemaError, match="backtrack catastrophically"):
            compile_validator(schema, where="t")


@pytest.mark.parametrize(
    "pattern",
    ["^[a-z]+$", r"^\d{3}-\d{4}$", "(ab)+", "^(foo|bar)+$", r"(\d{3}-)+\d{4}", "(a+)?b"],
)
def test_safe_patterns_accepted(pattern: str) -> None:
    validate = compile_validator(
        object_schema({"v": {"type": "string", "pattern": pattern}}, ["v"]), where="t"
    )
    with pytest.raises(ToolInputError, match=r"^v: must match pattern"):
        validate({"v": "!"})


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("a" * 1001, "longer than 1000"),
        ("(unclosed", "not a valid regular expression"),
        (5, "must be a string"),
    ],
)
def test_bad_patterns_refused(pattern: Any, fragment: str) -> None:
    with pytest.raises(SchemaError, match=fragment):
        compile_validator({"type": "string", "pattern": pattern}, where="t")


def test_property_named_pattern_or_ref_is_not_a_keyword() -> None:
    schema = object_schema({"pattern": {"type": "string"}, "$ref": {"type": "integer"}}, [])
    validate = compile_validator(schema, where="t")
    validate({"pattern": "(a+)+", "$ref": 1})
