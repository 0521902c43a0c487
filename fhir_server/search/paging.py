"""Keyset paging: stable pages without server-side state.

A page ends on a document; the cursor in the `next` link holds that document's sort values and id.
The next page is "every match that sorts after those values", so inserts and deletes between two
requests neither duplicate nor skip the resources that were there all along, and a cursor never
expires. (Skip/offset paging would shift under writes; Blaze and HAPI keep paging state on the
server instead.)

"Sorts after (v1, v2, id)" is split into flat filters run in order, each of which an index can
serve on any MongoDB, instead of one `$or`:

    k1 = v1, k2 = v2, _id > id      (ties first)
    k1 = v1, k2 after v2
    k1 after v1

A multi-valued parameter sorts by its smallest value ascending and its largest descending, like
MongoDB does, so "after" and "equal" are written for that: `min > v` is "no value <= v".
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from fhir_server.engine.errors import bad_request
from fhir_server.search.filters import and_filters


@dataclass(frozen=True)
class SortKey:
    field: str
    descending: bool = False
    multi: bool = False

    def reversed(self) -> SortKey:
        return SortKey(self.field, not self.descending, self.multi)


# -- sort values of a document ------------------------------------------------------------------

def values_at(document: Any, path: str) -> list:
    """All values at a dotted path, arrays flattened (as MongoDB reads `a.b` through arrays)."""
    current = [document]
    for name in path.split("."):
        found = []
        for item in current:
            if isinstance(item, dict) and name in item:
                value = item[name]
                if isinstance(value, list):
                    found.extend(value)
                else:
                    found.append(value)
        current = found
    return [v for v in current if v is not None]


def sort_value(document: dict, key: SortKey) -> Any:
    values = values_at(document, key.field)
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return max(values, key=_order_key) if key.descending else min(values, key=_order_key)


def _order_key(value: Any) -> tuple:
    """MongoDB's order over the types we store: missing < numbers < strings < dates."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (4, value)
    if isinstance(value, int | float | Decimal):
        return (1, Decimal(value) if not isinstance(value, Decimal) else value)
    if isinstance(value, str):
        return (2, value.encode("utf-8"))
    if isinstance(value, datetime):
        return (3, value)
    return (5, json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True)
class Position:
    """Where a document sits in the result order."""

    values: tuple
    resource_id: str
    resource_type: str


def position_of(document: dict, keys: list[SortKey], resource_type: str) -> Position:
    return Position(tuple(sort_value(document, k) for k in keys), document["_id"], resource_type)


def compare_positions(first: Position, second: Position, keys: list[SortKey], id_descending: bool) -> int:
    for key, a, b in zip(keys, first.values, second.values, strict=True):
        order = _compare(_order_key(a), _order_key(b))
        if order:
            return -order if key.descending else order
    for a, b in ((first.resource_id, second.resource_id), (first.resource_type, second.resource_type)):
        order = _compare(a.encode("utf-8"), b.encode("utf-8"))
        if order:
            return -order if id_descending else order
    return 0


def _compare(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def merge_sorted(lists: Iterable[list[tuple[Position, Any]]], keys: list[SortKey], id_descending: bool,
                 limit: int) -> list[tuple[Position, Any]]:
    """Merge already sorted result lists, dropping duplicates (one resource found by two OR
    branches), keeping the first `limit`."""
    merged = sorted((item for items in lists for item in items),
                    key=functools.cmp_to_key(lambda x, y: compare_positions(x[0], y[0], keys, id_descending)))
    seen: set[tuple[str, str]] = set()
    out = []
    for position, document in merged:
        identity = (position.resource_type, position.resource_id)
        if identity in seen:
            continue
        seen.add(identity)
        out.append((position, document))
        if len(out) == limit:
            break
    return out


# -- "after this position" as flat filters ------------------------------------------------------

def _equal(key: SortKey, value: Any) -> dict:
    if value is None:                 # we never store null: `null` matches exactly the missing values
        return {key.field: None}
    if not key.multi:
        return {key.field: value}
    # the smallest (largest, descending) value is `value`: one equals it and none is below it
    return {key.field: {"$eq": value, "$not": {"$gt" if key.descending else "$lt": value}}}


def _after(key: SortKey, value: Any) -> list[dict]:
    """Alternatives, in result order, for "the key sorts after `value`"."""
    if value is None:
        return [] if key.descending else [{key.field: {"$exists": True}}]
    if key.multi:
        beyond = {key.field: {"$exists": True, "$not": {"$gte" if key.descending else "$lte": value}}}
    else:
        beyond = {key.field: {"$lt" if key.descending else "$gt": value}}
    # missing values sort first ascending, last descending
    return [beyond, {key.field: None}] if key.descending else [beyond]


def after_filters(keys: list[SortKey], position: Position, id_descending: bool,
                  id_inclusive: bool = False) -> list[dict]:
    """Flat filters, in result order, together matching what sorts after `position`.
    `id_inclusive`: an equal id still comes after (another collection later in type order)."""
    equal_all = [_equal(k, v) for k, v in zip(keys, position.values, strict=True)]
    operator = ("$lte" if id_inclusive else "$lt") if id_descending else ("$gte" if id_inclusive else "$gt")
    branches = [and_filters(*equal_all, {"_id": {operator: position.resource_id}})]
    for index in reversed(range(len(keys))):
        for condition in _after(keys[index], position.values[index]):
            branches.append(and_filters(*equal_all[:index], condition))
    return branches


# -- cursors ------------------------------------------------------------------------------------

def encode_cursor(position: Position, backwards: bool) -> str:
    payload = {"v": [_encode_value(v) for v in position.values], "i": position.resource_id,
               "t": position.resource_type, "b": backwards}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, key_count: int) -> tuple[Position, bool]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        values = tuple(_decode_value(v) for v in payload["v"])
        position = Position(values, str(payload["i"]), str(payload["t"]))
        backwards = bool(payload["b"])
    except (ValueError, KeyError, TypeError) as exc:
        raise bad_request("Invalid paging cursor: start the search again from its first page", "_cursor") from exc
    if len(values) != key_count:
        raise bad_request("The paging cursor does not belong to this search (its _sort changed)", "_cursor")
    return position, backwards


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"n": str(value)}
    if isinstance(value, str | int | bool) or value is None:
        return value
    return {"j": json.dumps(value, default=str)}


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if "d" in value:
            return datetime.fromisoformat(value["d"])
        if "n" in value:
            return Decimal(value["n"])
        raise ValueError("unsupported cursor value")
    return value
