"""Validator caching: schemas differing only in annotations share one compiled function,
and stripping annotations never changes what is accepted."""

from __future__ import annotations

import pytest

from tether.contract.errors import ToolInputError
from tether.runtime.validator import _without_annotations, compile_validator


def _schema(description: str, default: int) -> dict[str, object]:
    return {
        "type": "object",
        "title": "Args",
        "properties": {
            "text": {"type": "string", "description": description},
            "times": {"type": "integer", "default": default, "minimum": 1},
        },
        "required": ["text"],
        "additionalProperties": False,
    }


def test_annotation_only_differences_share_one_compiled_validator() -> None:
    a = compile_validator(_schema("first", 1), where="a")
    b = compile_validator(_schema("second", 2), where="b")
    assert a is b
    a({"text": "x", "times": 3})
    with pytest.raises(ToolInputError, match="times"):
        b({"text": "x", "times": 0})


def test_structural_differences_do_not_share() -> None:
    loose = _schema("d", 1)
    strict = _schema("d", 1)
    strict["properties"]["times"]["maximum"] = 5  # type: ignore[index]
    assert compile_validator(loose, where="x") is not compile_validator(strict, where="y")


def test_values_and_property_names_that_look_like_annotations_are_kept() -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"enum": [{"title": "kept"}], "description": "dropped"},
            "description": {"const": "default", "default": "dropped"},
        },
        "anyOf": [{"required": ["title"], "$comment": "dropped"}],
    }
    assert _without_annotations(schema) == {
        "type": "object",
        "properties": {
            "title": {"enum": [{"title": "kept"}]},
            "description": {"const": "default"},
        },
        "anyOf": [{"required": ["title"]}],
    }
    check = compile_validator(schema, where="x")
    check({"title": {"title": "kept"}, "description": "default"})
    with pytest.raises(ToolInputError):
        check({"title": {"title": "other"}})
