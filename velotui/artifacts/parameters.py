"""Binding parameters as Velociraptor binds them.

Values arrive as text (the command line's ``--param K=V``, the console's form) and stay text on
their way to the artifact, as in Velociraptor; each source converts them by type in VQL when it
starts (``conversions``), so an artifact called by another artifact with real values gets the same
treatment. Here the text is checked first, so a bad value is refused before a hunt is created:
``bool`` from Y/YES/TRUE/OK (case-insensitive), ``int`` a whole number, ``csv`` rows with a header,
``json`` and ``json_array`` parsed, ``choices`` one of the declared values, ``regex`` a pattern.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from velotui.artifacts.definition import Artifact, Parameter

TRUE_WORDS = ("Y", "YES", "TRUE", "OK")
INT_TYPES = ("int", "int64", "integer")


class ParameterError(ValueError):
    """A parameter value that the artifact cannot take; the message says which and why."""


def as_bool(text: str) -> bool:
    return text.strip().upper() in TRUE_WORDS


def check_value(artifact: Artifact, parameter: Parameter, text: str) -> str:
    """``text`` when the parameter's type accepts it; raises ParameterError otherwise."""
    where = f"{artifact.name}: parameter {parameter.name} ({parameter.type})"
    kind = parameter.type
    if kind in INT_TYPES:
        if text.strip() and not re.fullmatch(r"[-+]?(0x[0-9a-fA-F]+|\d+)", text.strip()):
            raise ParameterError(f"{where}: {text!r} is not a whole number")
    elif kind == "float":
        try:
            if text.strip():
                float(text)
        except ValueError:
            raise ParameterError(f"{where}: {text!r} is not a number") from None
    elif kind == "choices":
        if parameter.choices and text not in parameter.choices:
            raise ParameterError(f"{where}: {text!r} is not one of "
                                 f"{', '.join(parameter.choices)}")
    elif kind in ("json", "json_array"):
        if text.strip():
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                raise ParameterError(f"{where}: not JSON: {error.msg} "
                                     f"(line {error.lineno}, col {error.colno})") from None
            if kind == "json_array" and not isinstance(value, list):
                raise ParameterError(f"{where}: a JSON array is needed")
    elif kind in ("regex", "regex_array"):
        try:
            re.compile(text)
        except re.error as error:
            raise ParameterError(f"{where}: not a regular expression: {error}") from None
    elif kind == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        if text.strip() and not rows:
            raise ParameterError(f"{where}: no header row")
    return text


def bind(artifact: Artifact, given: Mapping[str, Any]) -> dict[str, str]:
    """Every parameter's value as text: the given one (checked) or the default. Raises
    ParameterError naming a parameter the artifact does not declare."""
    values: dict[str, str] = {}
    for name, value in given.items():
        parameter = artifact.parameter(name)
        if parameter is None:
            declared = ", ".join(p.name for p in artifact.parameters) or "none"
            raise ParameterError(f"{artifact.name} has no parameter {name!r} "
                                 f"(it declares: {declared})")
        values[name] = check_value(artifact, parameter, as_text(value))
    for parameter in artifact.parameters:
        values.setdefault(parameter.name, parameter.default)
    return values


def as_text(value: Any) -> str:
    """A value given for a parameter, as the text Velociraptor would have received."""
    if isinstance(value, bool):
        return "Y" if value else ""
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _vql_list(words: Iterable[str]) -> str:
    return "(" + ", ".join(f"'{w}'" for w in words) + ",)"


# What turns a parameter's text into its value, by type ({p}: the parameter).
_CONVERTERS = {
    **dict.fromkeys(INT_TYPES, "int(int={p})"),
    "float": "parse_float(string={p})",
    "bool": "upcase(string=strip(string={p})) IN " + _vql_list(TRUE_WORDS),
    "csv": "{{SELECT * FROM parse_csv(filename={p}, accessor='data')}}",
    "json": "parse_json(data={p})",
    "json_array": "parse_json_array(data={p})",
    "timestamp": "timestamp(string={p})",
}


def conversions(parameters: Iterable[Parameter]) -> str:
    """The LETs that turn each typed parameter's text into its value, at a source's start.
    A value that is already converted (an artifact called with a number, a list, a bool)
    passes through unchanged."""
    lines = []
    for parameter in parameters:
        converter = _CONVERTERS.get(parameter.type)
        if converter is None:
            continue
        name = f"`{parameter.name}`"
        is_text = f"format(format='%T', args={name}) = 'string'"
        # A bool given as a value is compared with TRUE; an empty timestamp stays empty.
        otherwise = f"{name} = TRUE" if parameter.type == "bool" else name
        condition = f"{name} AND {is_text}" if parameter.type == "timestamp" else is_text
        expression = (f"if(condition={condition}, then={converter.format(p=name)}, "
                      f"else={otherwise})")
        lines.append(f"LET {name} <= {expression}")
    return "\n".join(lines)


