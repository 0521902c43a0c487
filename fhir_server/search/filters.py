"""Combining MongoDB filters.

Filters are kept *flat* (`{field: condition, ...}`) whenever possible rather than nested in
`$and`: every MongoDB planner matches a flat filter against compound indexes, and simpler ones
(including the embedded development server) only look at top-level fields.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

NOTHING: dict = {"_id": {"$in": []}}          # matches no document

# The access filter: one filter for every collection, or a function giving it per resource type
# (access rules differ by type: the audit trail, reference data...).
ExtraFilter = dict | Callable[[str], dict | None] | None


def extra_for(extra: ExtraFilter, resource_type: str) -> dict | None:
    """The access filter to AND into a query on `resource_type`."""
    return extra(resource_type) if callable(extra) else extra


def is_operator_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(k.startswith("$") for k in value)


def and_filters(*filters: dict | None) -> dict:
    """The conjunction of filters, merged into one flat filter where the fields allow it."""
    merged: dict[str, Any] = {}
    rest: list[dict] = []
    for current in filters:
        if not current:
            continue
        for key, condition in current.items():
            if key == "$and":
                rest.extend(condition)
            elif key.startswith("$"):
                rest.append({key: condition})
            elif key not in merged:
                merged[key] = condition
            else:
                combined = _merge_conditions(merged[key], condition)
                if combined is None:
                    rest.append({key: condition})
                else:
                    merged[key] = combined
    if rest:
        merged["$and"] = rest
    return merged


def or_filters(filters: list[dict]) -> dict:
    if not filters:
        return dict(NOTHING)
    if len(filters) == 1:
        return filters[0]
    return {"$or": filters}


def _merge_conditions(first: Any, second: Any) -> Any | None:
    if first == second:
        return first
    first_ops, second_ops = is_operator_dict(first), is_operator_dict(second)
    if first_ops and second_ops:
        merged = dict(first)
        for op, bound in second.items():
            if op not in merged:
                merged[op] = bound
                continue
            tighter = _tighter(op, merged[op], bound)
            if tighter is None:
                return None
            merged[op] = tighter
        return merged
    # equality and a range it satisfies: the range adds nothing and the filter stays an equality
    if not first_ops and second_ops and satisfies(first, second):
        return first
    if first_ops and not second_ops and satisfies(second, first):
        return second
    return None


_COMPARABLE = (str, int, Decimal, datetime)


def _tighter(op: str, first: Any, second: Any) -> Any | None:
    """Two bounds of the same kind (`$gt` 2023 and `$gt` 2024): the stricter one."""
    if op not in ("$gt", "$gte", "$lt", "$lte") or not _comparable(first, second):
        return None
    if op in ("$gt", "$gte"):
        return max(first, second)
    return min(first, second)


def _comparable(first: Any, second: Any) -> bool:
    if isinstance(first, bool) or isinstance(second, bool):
        return False
    numbers = (int, Decimal)
    if isinstance(first, numbers) and isinstance(second, numbers):
        return True
    return isinstance(first, _COMPARABLE) and type(first) is type(second)


def satisfies(value: Any, operators: dict) -> bool:
    """Whether a scalar certainly satisfies simple comparison operators (False when unsure)."""
    if not isinstance(value, _COMPARABLE) or isinstance(value, bool):
        return False
    try:
        for op, bound in operators.items():
            if not isinstance(bound, _COMPARABLE) or type(bound) is not type(value) and not (
                    isinstance(bound, int | Decimal) and isinstance(value, int | Decimal)):
                return False
            if op == "$gt" and not value > bound or op == "$gte" and not value >= bound:
                return False
            if op == "$lt" and not value < bound or op == "$lte" and not value <= bound:
                return False
            if op not in ("$gt", "$gte", "$lt", "$lte"):
                return False
    except TypeError:
        return False
    return True


def field_names(query: dict) -> set[str]:
    """The document fields a filter tests, through `$and` / `$or` / `$nor`."""
    names: set[str] = set()
    for key, condition in query.items():
        if key in ("$and", "$or", "$nor"):
            for branch in condition:
                names |= field_names(branch)
        elif not key.startswith("$"):
            names.add(key)
    return names


def relative_to(query: dict, prefix: str) -> dict:
    """The filter with `prefix` taken off its field names (through `$and` / `$or` / `$nor`), to test
    the fields of an array element in `$elemMatch` rather than those of the document."""
    out: dict[str, Any] = {}
    for key, condition in query.items():
        if key in ("$and", "$or", "$nor"):
            out[key] = [relative_to(branch, prefix) for branch in condition]
        else:
            out[key[len(prefix):] if key.startswith(prefix) else key] = condition
    return out
