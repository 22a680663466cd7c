"""The JSON schema of benchmark reports (``schema.json``), checked with :mod:`jsonschema`."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["load_schema", "validate_report"]


def load_schema() -> dict[str, Any]:
    """The JSON schema of the reports the runner writes (draft 2020-12).

    Returns
    -------
    dict
        The parsed ``ssad/benchmarks/schema.json``.

    Examples
    --------
    >>> from ssad.benchmarks import load_schema
    >>> load_schema()["properties"]["schema_version"]["const"]
    '2.0'
    """
    text = resources.files("ssad.benchmarks").joinpath("schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_report(report: dict[str, Any]) -> None:
    """Check a benchmark report against ``schema.json`` with :mod:`jsonschema`.

    Parameters
    ----------
    report : dict
        What :meth:`EvaluationResult.to_dict` returned, or a loaded JSON file.

    Raises
    ------
    ValueError
        If the report does not validate; the message lists the problems.
    ImportError
        If :mod:`jsonschema` is not installed (``pip install "ssad[bench]"``).

    Examples
    --------
    >>> from ssad.benchmarks import validate_report
    >>> validate_report({"schema_version": "2.0"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The benchmark report does not match schema.json: ...
    """
    try:
        import jsonschema
    except ImportError as exc:
        raise ImportError(
            "Validating benchmark reports needs jsonschema: pip install 'ssad[bench]' "
            "(or pip install jsonschema)."
        ) from exc
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        shown = "; ".join(
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:10]
        )
        raise ValueError(f"The benchmark report does not match schema.json: {shown}")
