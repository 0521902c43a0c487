"""Comparing instance values with `fixed[x]` and `pattern[x]` values of a profile.

Instances are parsed with `parse_float=Decimal` while definitions are loaded with floats, so numbers
are compared by value. Fixed means exactly equal (no extra content); pattern means every element of
the pattern is present with that value, and each item of a pattern array is matched by some item of
the instance array (the instance may hold more).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import orjson


def equals_fixed(value: object, fixed: object) -> bool:
    if isinstance(fixed, dict):
        return (isinstance(value, dict) and value.keys() == fixed.keys()
                and all(equals_fixed(value[k], fixed[k]) for k in fixed))
    if isinstance(fixed, list):
        return (isinstance(value, list) and len(value) == len(fixed)
                and all(equals_fixed(v, f) for v, f in zip(value, fixed, strict=True)))
    return _primitive_equal(value, fixed)


def matches_pattern(value: object, pattern: object) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and matches_pattern(value[key], expected) for key, expected in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(item, expected) for item in items) for expected in pattern)
    return _primitive_equal(value, pattern)


def _primitive_equal(value: object, expected: object) -> bool:
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is expected
    if _is_number(value) and _is_number(expected):
        try:
            return Decimal(str(value)) == Decimal(str(expected))
        except InvalidOperation:
            return False
    return value == expected


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


_STRING_CODED = frozenset({"code", "string", "uri", "url", "canonical", "id", "oid", "uuid", "markdown"})
_QUANTITIES = frozenset({"Quantity", "Age", "Count", "Distance", "Duration", "MoneyQuantity", "SimpleQuantity"})


def codes_in(value: object, type_code: str | None = None) -> list[tuple[str | None, str]] | None:
    """The (system, code) pairs a coded value carries: a code (no system), Coding, CodeableConcept
    or Quantity. None when the type is not a coded one; without a type, the value's shape decides.
    A system that is not a string (broken input) matches nothing rather than everything."""
    if type_code in _STRING_CODED or (type_code is None and isinstance(value, str)):
        return [(None, value)] if isinstance(value, str) else []
    if not isinstance(value, dict):
        return None
    if type_code == "CodeableConcept" or (type_code is None and "coding" in value):
        codings = value.get("coding")
        return [pair for coding in (codings if isinstance(codings, list) else [])
                for pair in codes_in(coding, "Coding") or []]
    if type_code in ("Coding", None) or type_code in _QUANTITIES:
        code, system = value.get("code"), value.get("system")
        if not isinstance(code, str):
            return []
        return [(system if isinstance(system, str) or system is None else "", code)]
    return None


def show(value: object, limit: int = 200) -> str:
    """A compact rendering of a value for diagnostics."""
    if isinstance(value, str):
        text = f"'{value}'"
    else:
        text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."
