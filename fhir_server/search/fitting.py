"""Fitting the flat part of a query to one declared index.

The store runs a query's flat field conditions as the first stage and its top-level operators as
the second (see `MongoStore`). The embedded development server's planner serves a flat filter only
when its fields are an index's leading fields, all equalities but maybe the last (`{patient, status,
_id}` serves `{patient, status}` and `{patient, status, _id > x}`, not `{patient, status, type}`).
When the flat part is more than any index serves, the criteria fields the best index leaves out
move to the second stage, as `{"$and": [...]}`: the index fetches the candidates and they are
checked there. MongoDB merges both stages and plans them as one: nothing changes for it.

Only search criteria (`_index.*`) and the fields every collection indexes (`_id`, `_lastUpdated`:
the keyset conditions of the following pages) move: other fields (the access data, a module's own
indexed fields) may be served by indexes this package does not declare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fhir_server.search.filters import and_filters, is_operator_dict
from fhir_server.search.query import Store

IndexFields = tuple[str, ...]
# Every collection has these besides the declared ones (see MongoStore.ensure_collections).
ALWAYS_INDEXED: tuple[IndexFields, ...] = (("_id",), ("_lastUpdated", "_id"))
_BOUNDS = frozenset({"$eq", "$gt", "$gte", "$lt", "$lte", "$in"})
_CRITERIA = "_index."
_ALWAYS_INDEXED_FIELDS = frozenset({"_id", "_lastUpdated"})


def fit_to_indexes(query: dict, indexes: Iterable[IndexFields]) -> dict:
    """`query` with the flat conditions the best of `indexes` does not serve moved into `$and`
    (the first of the best, on ties); `query` itself when an index serves all of them, or when
    none serves any."""
    flat = {name: condition for name, condition in query.items() if not name.startswith("$")}
    parts = [served_part(index, flat) for index in indexes]
    if not flat or any(len(part) == len(flat) for part in parts):
        return query
    best = max(parts, key=lambda part: _selectivity(part, flat), default=())
    left_out = {name: flat[name] for name in flat if name not in best}
    if not best or not all(name.startswith(_CRITERIA) or name in _ALWAYS_INDEXED_FIELDS for name in left_out):
        return query
    operators = {name: condition for name, condition in query.items() if name.startswith("$")}
    return and_filters({name: flat[name] for name in best}, operators, {"$and": [left_out]})


def served_part(index: IndexFields, flat: dict) -> IndexFields:
    """The fields of `flat` that `index` serves: its leading fields with equalities, then at most
    one with bounds (a range or `$in`)."""
    part: list[str] = []
    for name in index:
        if name not in flat:
            break
        condition = flat[name]
        if _is_equality(condition):
            part.append(name)
            continue
        if _is_bounds(condition):
            part.append(name)
        break
    return tuple(part)


def _selectivity(part: IndexFields, flat: dict) -> tuple[int, int]:
    """The most fields served, then the most point look-ups (equalities, `$in`) rather than ranges."""
    points = sum(_is_equality(flat[name]) or set(flat[name]) == {"$in"} for name in part)
    return len(part), points


def _is_equality(condition: Any) -> bool:
    if is_operator_dict(condition):
        return set(condition) == {"$eq"} and condition["$eq"] is not None
    return condition is not None and not isinstance(condition, dict | list)


def _is_bounds(condition: Any) -> bool:
    return is_operator_dict(condition) and set(condition) <= _BOUNDS and \
        not any(isinstance(v, dict) for v in condition.get("$in", ()))


class IndexFittedStore:
    """A store whose queries of search collections are fitted to their declared indexes."""

    def __init__(self, store: Store, indexes_of: Callable[[str], list[IndexFields]]) -> None:
        self.store = store
        self._indexes_of = indexes_of

    def fit(self, resource_type: str, query: dict) -> dict:
        # declared ones first: they win ties (a range on a criterion rather than on `_id`)
        return fit_to_indexes(query, [*self._indexes_of(resource_type), *ALWAYS_INDEXED])

    def find(self, resource_type: str, query: dict, sort: list[tuple[str, int]] | None = None,
             limit: int = 0, projection: dict | None = None) -> list[dict]:
        return self.store.find(resource_type, self.fit(resource_type, query), sort, limit, projection)

    def count(self, resource_type: str, query: dict, limit: int = 0) -> int:
        return self.store.count(resource_type, self.fit(resource_type, query), limit)

    def find_and_count(self, resource_type: str, query: dict, after: dict | None, sort: list[tuple[str, int]],
                       limit: int, projection: dict | None = None) -> tuple[list[dict], int]:
        """A page and the count of all matches. One pass serves both when the fitted query tests
        operators on each candidate it fetches (see `MongoStore.find_and_count`); an index-served
        query keeps its limited fetch and its index-only count."""
        fitted = self.fit(resource_type, query)
        if any(name.startswith("$") for name in fitted):
            return self.store.find_and_count(resource_type, fitted, after, sort, limit, projection)
        return (self.find(resource_type, and_filters(query, after), sort, limit, projection),
                self.store.count(resource_type, fitted))

    def update_many(self, resource_type: str, query: dict, update: dict) -> int:
        return self.store.update_many(resource_type, query, update)

    def get_meta(self, key: str, session: Any = None) -> dict | None:
        return self.store.get_meta(key, session)

    def put_meta(self, key: str, value: dict, session: Any = None) -> None:
        self.store.put_meta(key, value, session)
