"""Checks of the values a user gives (spec sections, method parameters, command-line options): by type hint and by
range, each failure a :class:`~etlbench.errors.ConfigError` that names the key, the value and what was expected.
Free of heavy imports, so the command line checks its options before importing torch."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from etlbench.errors import ConfigError

#: The largest compression ratio a budget may ask for: a larger one is a typo, not a budget (VGG-16 would keep 138
#: parameters). Ratios below it that a network cannot reach are tried and stored as ``infeasible``, saying why.
MAX_COMPRESSION = 1_000_000.0

#: A range check: the test a value must pass and how to say what was expected.
Rule = tuple[Callable[[Any], bool], str]
POSITIVE: Rule = (lambda v: v > 0, "greater than 0")
AT_LEAST_1: Rule = (lambda v: v >= 1, "at least 1")
NON_NEGATIVE: Rule = (lambda v: v >= 0, "at least 0")
INPUT_SIZE: Rule = (lambda v: v >= 16, "at least 16 (px)")  # the smallest input (and image) side


def fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the simple type ``hint``: numbers (finite; an integer is a float too), strings,
    booleans, literals, unions, ``None`` and variable-length tuples of them (YAML gives lists)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, h) for h in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return isinstance(value, tuple | list) and all(fits(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str, type(None)):
        return isinstance(value, hint)
    return True  # a type this check does not know: the owner's own validation decides


def describe(hint: Any) -> str:
    """What a value of type ``hint`` is, in words (for error messages)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(h) for h in args)
    if origin is tuple:
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return {float: "a finite number", int: "an integer", bool: "true or false", str: "a string",
            type(None): "null"}.get(hint, str(hint))


def check_value(key: str, value: Any, hint: Any, rule: Rule | None = None) -> None:
    """``value`` of ``key`` must be of type ``hint`` and (where given, and not ``None``) pass ``rule``; each item of a
    list is checked against the rule."""
    if hint is not None and not fits(value, hint):
        raise ConfigError(f"{key}: expected {describe(hint)}, got {value!r}{_text_hint(value)}", key=key)
    if rule is None or value is None:
        return
    test, expected = rule
    for item in value if isinstance(value, tuple | list) else (value,):
        if not test(item):
            each = " for each item" if item is not value else ""
            raise ConfigError(f"{key}: expected {expected}{each}, got {value!r}", key=key)


def check_fields(obj: Any, rules: dict[str, Rule]) -> None:
    """Every field of the dataclass ``obj`` by its type hint, and those named in ``rules`` by range."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        check_value(f.name, getattr(obj, f.name), hints.get(f.name), rules.get(f.name))


def check_compression(value: Any) -> float | None:
    """A target compression as given (``auto`` is ``None``: the method's own point): a finite ratio in
    [1, :data:`MAX_COMPRESSION`]."""
    if value == "auto":
        return None
    if not fits(value, float) or not 1 <= value <= MAX_COMPRESSION:
        raise ConfigError(f"expected a finite ratio of at least 1 and at most {MAX_COMPRESSION:,.0f} (or 'auto'), got "
                          f"{value!r}{_text_hint(value)}")
    return float(value)


def _text_hint(value: Any) -> str:
    """A hint where YAML read a number as text (PyYAML reads ``1e-3`` as a string, ``1.0e-3`` as a float)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            float(value)
            return " (YAML reads this as text: write a number with a dot and a signed exponent, e.g. 1.0e-3)"
    return ""
