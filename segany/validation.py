"""Checks of numbers and typed fields that come from users, files and requests.

Each check raises `SegAnyError` with one line naming the field, what it must be and what came.
"""

import dataclasses
import math
import typing
from numbers import Integral, Real
from typing import Any, Optional

from .errors import SegAnyError


def check_number(name: str, value: Any, *, integer: bool = False, low: Optional[float] = None,
                 high: Optional[float] = None, low_open: bool = False) -> None:
    """`value` must be a finite real (an integer with `integer`) in [low, high] ((low, high] with
    `low_open`); booleans are not numbers here."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, Integral if integer else Real):
        raise SegAnyError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise SegAnyError(f"{name} must be finite, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        left = "(" if low_open else "["
        bounds = f"{left}{low:g}, {high:g}]" if low is not None and high is not None else None
        rule = (f"in {bounds}" if bounds else f"{'above' if low_open else 'at least'} {low:g}" if low is not None
                else f"at most {high:g}")
        raise SegAnyError(f"{name} must be {rule}, got {value!r}")


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or null"
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(annotation, "a value")


def conforms(value: Any, annotation: Any) -> bool:
    """Whether a value read from JSON/YAML fits a type annotation (lists stand for tuples;
    integers for floats; floats must be finite)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin is typing.Union:
        return any(conforms(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        return all(conforms(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict) and all(conforms(k, args[0]) and conforms(v, args[1])
                                               for k, v in value.items())
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def check_field_types(obj: Any, where: str) -> None:
    """Every field of dataclass `obj` fits its annotation, or one error naming the field."""
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if not conforms(value, hints[field.name]):
            raise SegAnyError(f"{where}: {field.name} must be {_describe(hints[field.name])}, got {value!r}")
