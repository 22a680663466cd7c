"""The JSON Schema of benchmark results, and a validator that needs no extra package."""

from __future__ import annotations

import json
import numbers
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["load_schema", "validate_report"]

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


@cache
def _schema_text() -> str:
    return resources.files("ssad.benchmarks").joinpath("schema.json").read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of what :meth:`EvaluationResult.to_dict` returns.

    Returns
    -------
    dict
        The schema, read from ``ssad/benchmarks/schema.json``.

    Examples
    --------
    >>> from ssad.benchmarks import load_schema
    >>> load_schema()["title"]
    'ssad benchmark result'
    """
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"Only local $ref are supported; got {ref!r}.")
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


def _check(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    """The subset of JSON Schema that schema.json uses."""
    schema = _resolve(schema, root)
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, t) for t in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is greater than the maximum {schema['maximum']}")
    if isinstance(value, dict):
        required = schema.get("required", [])
        errors += [f"{path}: missing {key!r}" for key in required if key not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                errors += _check(item, props[key], root, f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                errors += _check(item, extra, root, f"{path}.{key}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += _check(item, schema["items"], root, f"{path}[{i}]")
    return errors


def validate_report(report: dict[str, Any]) -> None:
    """Check a benchmark result against ``schema.json``.

    Uses :mod:`jsonschema` when it is installed, and otherwise a built-in
    check of the keywords the schema uses (type, required, properties,
    additionalProperties, items, minItems, enum, const, minimum, maximum,
    local ``$ref``).

    Parameters
    ----------
    report : dict
        What :meth:`EvaluationResult.to_dict` returned, or a loaded JSON file.

    Raises
    ------
    ValueError
        If the report does not validate; the message lists the problems.

    Examples
    --------
    >>> from ssad.benchmarks import validate_report
    >>> validate_report({"schema_version": "1.0"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The benchmark report does not match schema.json: ...
    """
    schema = load_schema()
    try:
        import jsonschema
    except ImportError:
        errors = _check(report, schema, schema, "$")
    else:
        validator = jsonschema.Draft202012Validator(schema)
        errors = [
            f"$.{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in validator.iter_errors(report)
        ]
    if errors:
        shown = "; ".join(errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise ValueError(f"The benchmark report does not match schema.json: {shown}{more}")
